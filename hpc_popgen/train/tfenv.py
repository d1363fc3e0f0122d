"""Import TensorFlow with Keras 2 (tf-keras), which Horovod needs; quiet its start-up logging."""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

# what TensorFlow, absl and CUDA write straight to the C stderr at start-up (not through Python logging)
_NOISE = re.compile(r"absl::InitializeLog|^[EWI]\d{4} |external/local_xla|tensorflow/|Unable to register|cuInit|"
                    r"cuda|oneDNN|TF_ENABLE_ONEDNN_OPTS|rebuild TensorFlow|This TensorFlow binary", re.I)


def verbose() -> bool:
    """Whether start-up lines should show (``hpcpop -v`` sets HPCPOP_VERBOSE for its workers and jobs too)."""
    try:
        return int(os.environ.get("HPCPOP_VERBOSE", "0")) >= 1
    except ValueError:
        return False


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Catch what C code writes to file descriptor 2 meanwhile: start-up noise goes to the debug log,
    any other line back to stderr. A no-op when verbose, or when fd 2 cannot be redirected."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
    for line in text.splitlines():
        if _NOISE.search(line):
            log.debug("tensorflow start-up: %s", line)
        elif line.strip():
            sys.stderr.write(line + "\n")


def keras2_env() -> None:
    """Environment TensorFlow must see before its import: ``tf.keras`` as Keras 2 (tf-keras, which Horovod
    needs) and C++ logging at errors only; values already set are kept."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@cache
def tf() -> Any:
    """The tensorflow module with ``tf.keras`` being Keras 2 (``TF_USE_LEGACY_KERAS=1`` set first).

    Its start-up lines (absl, CUDA plugin registration, cuInit) are silent unless verbose.
    """
    keras2_env()
    with quiet_stderr():
        import tensorflow as tf_mod

        gpus = tf_mod.config.list_physical_devices("GPU")  # initialises the devices (cuInit) inside the quiet part
    if not verbose():
        tf_mod.get_logger().setLevel(logging.ERROR)
    log.debug("TensorFlow %s, GPUs: %s", tf_mod.__version__, [g.name for g in gpus])
    if not tf_mod.keras.__name__.startswith("tf_keras"):
        raise RuntimeError("TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set; "
                           "hpc_popgen needs Keras 2 (tf-keras) for Horovod")
    return tf_mod


class _IntBoundsRandom(random.Random):
    """``random.Random`` whose ``randint`` takes whole-number floats: tf_keras draws layer seeds with
    ``randint(1, 1e9)``, a DeprecationWarning on Python 3.10-3.11 and a TypeError from 3.12 on."""

    def randint(self, a: float, b: float) -> int:
        return super().randint(int(a), int(b))


def set_random_seed(seed: int) -> None:
    """Seed Python, numpy, TensorFlow and Keras's layer seeds as ``tf.keras.utils.set_random_seed`` does
    (same draws), with a seed generator that accepts tf_keras's float bound (see :class:`_IntBoundsRandom`)."""
    tf().keras.utils.set_random_seed(seed)
    try:
        from tf_keras.src import backend as keras_backend
    except ImportError:  # another Keras 2 layout: leave its own generator
        return
    holder = getattr(keras_backend, "_SEED_GENERATOR", None)
    if isinstance(getattr(holder, "generator", None), random.Random):
        holder.generator = _IntBoundsRandom(seed)  # thread-local, as set_random_seed set it


def horovod() -> Any | None:
    """``horovod.tensorflow.keras`` when Horovod is installed, else None (training runs as one process)."""
    tf()
    try:
        import horovod.tensorflow.keras as hvd
    except ImportError:
        return None
    return hvd
