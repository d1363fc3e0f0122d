"""CNN training for selection inference: model presets, labels, the shard loader, the training loop.

Science code only: no Dask, no click. TensorFlow is imported lazily with Keras 2 (tf-keras), which
Horovod needs (see :mod:`hpc_popgen.train.tfenv`).
"""
