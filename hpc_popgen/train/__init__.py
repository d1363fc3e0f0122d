"""CNN training for selection inference: the stage config, model presets (a catalogue), labels, the shard
loader, the training loop and its handlers (early stopping, the learning-rate schedule).

Science code only: no Dask, no click. TensorFlow is imported lazily with Keras 2 (tf-keras), which
Horovod needs (see :mod:`hpc_popgen.train.tfenv`).
"""
