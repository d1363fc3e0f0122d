"""One root error for everything a user can get wrong, so the CLI prints it in one line."""


class HpcPopError(ValueError):
    """Root of all errors caused by user input or state; the CLI prints these without a traceback."""


class ManifestError(HpcPopError):
    """A job manifest (or a value in it) is invalid."""


class ProfileError(HpcPopError):
    """A cluster profile is unknown or invalid."""


class RunDirError(HpcPopError):
    """A run directory is missing, incomplete or belongs to another run."""


class StoreError(HpcPopError):
    """An image store is missing, malformed, or does not match what a stage expects."""


class InputDataError(HpcPopError):
    """User-supplied data (VCF, ms output, AFS, demes file) cannot be read."""
