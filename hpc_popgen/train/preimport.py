"""TensorFlow imported, quietly and with Keras 2, by the process local workers fork from (see
:func:`hpc_popgen.cluster.forkserver.fork_local_workers`): each worker then starts with it loaded instead of
spending 6-8 s importing it. Only the import: no op runs, so no thread starts and no device (cuInit) is
touched before a fork; workers initialise their devices through :func:`hpc_popgen.train.tfenv.tf`."""

from __future__ import annotations

from .tfenv import keras2_env, quiet_stderr

keras2_env()
with quiet_stderr():
    import tensorflow  # noqa: F401
