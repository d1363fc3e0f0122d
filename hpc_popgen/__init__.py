"""hpc_popgen: simulation-based inference for population genomics at cluster scale."""

__version__ = "0.1.0"
