"""Import TensorFlow with Keras 2 (tf-keras), which Horovod needs; quiet its start-up logging."""

from __future__ import annotations

import os
from functools import cache
from typing import Any


@cache
def tf() -> Any:
    """The tensorflow module with ``tf.keras`` being Keras 2 (``TF_USE_LEGACY_KERAS=1`` set first)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf_mod

    if not tf_mod.keras.__name__.startswith("tf_keras"):
        raise RuntimeError("TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set; "
                           "hpc_popgen needs Keras 2 (tf-keras) for Horovod")
    return tf_mod


def horovod() -> Any | None:
    """``horovod.tensorflow.keras`` when Horovod is installed, else None (training runs as one process)."""
    tf()
    try:
        import horovod.tensorflow.keras as hvd
    except ImportError:
        return None
    return hvd
