"""Every error a user can cause, under one root, so the CLI prints it in one line.

Each class also inherits the built-in it resembles (``ValueError``), as zarr's and msprime's do.
Science modules raise :class:`ParamError` naming the key relative to their own config (``maf``);
the stage layer adds where that config sits in the manifest (``jobs/x.yaml: stages[0].simulate.image.``)
with :func:`hpc_popgen.stages.base.located`.
"""

from __future__ import annotations


class HpcPopError(ValueError):
    """Root of all errors caused by user input or state; the CLI prints these without a traceback."""


class ManifestError(HpcPopError):
    """A job manifest (or a value in it) is invalid."""


class ParamError(ManifestError):
    """A value of a science module's config is invalid; ``key`` is relative to that config."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)

    def __reduce__(self) -> tuple:
        """Pickled with its two fields, so a task's ParamError reaches the driver as it was raised."""
        return type(self), (self.key, self.reason)

    def within(self, prefix: str) -> ParamError:
        """The same error one level up: ``maf`` inside ``image`` becomes ``image.maf``."""
        return ParamError(f"{prefix}.{self.key}" if self.key else prefix, self.reason)


class ProfileError(HpcPopError):
    """A cluster profile is unknown or invalid."""


class RunDirError(HpcPopError):
    """A run directory is missing, incomplete or belongs to another run."""


class StoreError(HpcPopError):
    """An image store is missing, malformed, or does not match what a stage expects."""


class InputDataError(HpcPopError):
    """User-supplied data (VCF, ms output, AFS, demes file) cannot be read."""


class StageFailed(HpcPopError):
    """A stage ended with units not done; its failures are in the ledger and ``hpcpop rerun`` retries them."""


class LabelStoreError(ParamError, StoreError):
    """The store cannot give the labels asked for (e.g. binary labels without neutral images)."""
