"""Early stopping and the learning-rate schedule, each a small object whose state goes into checkpoints.

As pytorch-ignite's handlers: the loop calls ``step`` once per epoch, and ``state_dict()`` /
``load_state_dict()`` carry the counters across a restart, so a resumed training stops and cuts the
learning rate exactly where an uninterrupted one would.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import EarlyStoppingConfig, ReduceLRConfig

log = logging.getLogger(__name__)


class EarlyStopping:
    """Tracks the best epoch of the monitored loss; stops after ``patience`` epochs without improving it.

    An improvement is a decrease by more than ``min_delta``; patience 0 never stops.
    """

    def __init__(self, config: EarlyStoppingConfig):
        self.patience = config.patience
        self.min_delta = config.min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.stopped = False

    def step(self, epoch: int, monitor: float) -> bool:
        """Record epoch ``epoch``'s monitored loss; True when it is a new best."""
        if self.best is None or monitor < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = monitor, epoch, 0
            return True
        self.wait += 1
        if self.patience and self.wait >= self.patience:
            self.stopped = True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], int(state["best_epoch"])
        self.wait, self.stopped = int(state["wait"]), bool(state["stopped"])


class ReduceLROnPlateau:
    """Multiplies the optimizer's learning rate by ``factor`` after ``patience`` epochs without a new best.

    ``variable`` is the optimizer's learning rate, already scaled by the rank count ``scale``, which
    scales ``min_lr`` too. Without a config the rate is only recorded (``lr``, for the history).
    """

    def __init__(self, config: ReduceLRConfig | None, variable: Any, *, scale: int, announce: bool):
        self.config = config
        self.variable = variable
        self.scale = scale
        self.announce = announce  # log the cuts (rank 0)
        self.lr = float(variable.numpy())
        self.wait = 0

    def step(self, epoch: int, improved: bool) -> None:
        """Count epoch ``epoch`` (a new best or not); cut the rate when the plateau lasted ``patience`` epochs."""
        if improved:
            self.wait = 0
            return
        self.wait += 1
        if self.config is None or self.wait < self.config.patience:
            return
        lr = max(self.config.min_lr * self.scale, self.lr * self.config.factor)
        if lr < self.lr:
            self.variable.assign(lr)
            if self.announce:
                log.info("epoch %d: validation loss flat for %d epoch(s); learning rate %.3g -> %.3g",
                         epoch, self.wait, self.lr, lr)
            self.lr = lr
        self.wait = 0

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters and the rate (as the optimizer holds it); a rate of None keeps the current one."""
        if state["lr"] is not None:
            self.variable.assign(float(state["lr"]))
            self.lr = float(self.variable.numpy())
        self.wait = int(state["wait"])
