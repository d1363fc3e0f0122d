"""Entry point of one training process: ``python -m hpc_popgen.train.worker JOB.json`` (a Horovod rank)."""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the training job described by the JSON file given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m hpc_popgen.train.worker JOB.json\n")
        return 2
    from .tfenv import keras2_env

    keras2_env()
    rank = int(os.environ.get("HOROVOD_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    from .config import TrainJob
    from .loop import run_training

    with open(args[0]) as fh:
        job = TrainJob.from_json(fh.read())
    run_training(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
