"""The demography stage's parameters as a typed, frozen config (defaults live in its JSON schema).

Built by :func:`hpc_popgen.config.from_params` from schema-filled parameters. ``__post_init__``
rejects what the schema cannot express with a :class:`ParamError` naming the key relative to this
config (``input.popmap``, ``final_structure``, ``initial_guesses[0]``); the stage adds the manifest's
file and stage position.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParamError
from .ga import GAConfig, LocalSearchConfig
from .model import ModelSpace

SCHEMA = "stages/demography.schema.json"


@dataclass(frozen=True, kw_only=True)
class InputConfig:
    """The data: an AFS file, or a VCF with a popmap projected to sample sizes."""

    afs: str | None
    vcf: str | None
    popmap: str | None
    populations: tuple[str, ...] | None
    projections: tuple[int, ...] | None
    polarized: bool
    ancestral_fasta: str | None

    def __post_init__(self) -> None:
        if bool(self.afs) == bool(self.vcf):
            raise ParamError("", "give exactly one of afs or vcf")
        if self.ancestral_fasta and not (self.vcf and self.polarized):
            raise ParamError("ancestral_fasta", "polarises a VCF's spectrum: give it with input.vcf and polarized: true")
        if not self.vcf:
            return
        for key in ("popmap", "populations", "projections"):
            if not getattr(self, key):
                raise ParamError(key, "required with input.vcf")
        if len(self.projections) != len(self.populations):  # type: ignore[arg-type]
            raise ParamError("projections", f"one sample size per population ({len(self.populations)} populations)")  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class EvalTimeoutConfig:
    """When an evaluation that does not end is given up (the stage's ``eval_timeout``)."""

    multiple: float
    floor_seconds: float

    def limit(self, median_seconds: float | None) -> float:
        """Seconds an evaluation may run: the floor, or ``multiple`` times the median so far if that is longer."""
        return max(self.floor_seconds, self.multiple * (median_seconds or 0.0))


@dataclass(frozen=True, kw_only=True)
class BootstrapConfig:
    """Block bootstrap spectra of a VCF input (the stage's ``bootstrap``): blocks of ``block_bp`` bp, ``n`` bootstraps."""

    block_bp: int
    n: int


@dataclass(frozen=True, kw_only=True)
class DemographyConfig:
    """Everything a demographic inference needs besides the data (keys as in the stage schema)."""

    seed: int | None
    input: InputConfig
    engine: str
    pts: tuple[int, ...] | None
    likelihood: str
    mu: float | None
    sequence_length: float | None
    generation_time: float
    initial_structure: tuple[int, ...]
    final_structure: tuple[int, ...]
    dynamics: tuple[str, ...]
    migration: bool
    sym_migration: bool
    split_sizes: str
    bounds: dict[str, tuple[float, float]]
    fixed: dict[str, float]
    max_split_years: float | None
    dt_fac: float
    ga_dt_fac: float | None  # the islands' moments time step (None: dt_fac)
    ga_projection: tuple[int, ...] | None  # the islands' sample sizes (None: the data's)
    initial_guesses: tuple[dict[str, float], ...]
    islands: int
    migrate_every: int
    deterministic: bool
    target_loglik: float | None
    stop_at_target: bool
    retries: int
    eval_timeout: EvalTimeoutConfig
    plots: bool
    uncertainty: str  # auto | godambe | fim | none
    bootstrap: BootstrapConfig
    ga: GAConfig
    local_search: LocalSearchConfig

    def __post_init__(self) -> None:
        first, final = self.initial_structure, self.final_structure
        if len(first) != len(final) or any(a > b for a, b in zip(first, final, strict=False)):
            raise ParamError("final_structure", f"{list(final)} must have the length of initial_structure "
                                                f"{list(first)} and no smaller entry")
        if self.ga_projection is not None:
            if len(self.ga_projection) != len(first):
                raise ParamError("ga_projection", f"one sample size per population ({len(first)} populations)")
        if self.engine == "dadi" and len(first) > 3:
            raise ParamError("engine", f"dadi handles at most 3 populations (structure {list(first)})")
        if (self.likelihood == "poisson" or self.max_split_years) and not (self.mu and self.sequence_length):
            raise ParamError("mu", "mu and sequence_length are required for the Poisson likelihood "
                                   "and for max_split_years")
        if self.uncertainty == "godambe" and not self.input.vcf:
            raise ParamError("uncertainty", "godambe needs block bootstrap spectra, which come from a VCF "
                                            "(input.vcf); for a spectrum file use fim or auto")
        self.initial_points(self.space(first))

    def space(self, structure: tuple[int, ...]) -> ModelSpace:
        """The model space of ``structure`` with this config's dynamics, migration, bounds and fixed values."""
        try:
            return self._space(structure, bounds=dict(self.bounds), fixed=dict(self.fixed))
        except KeyError as exc:
            name = exc.args[0]
            names = ", ".join(p.name for p in self._space(structure, bounds={}, fixed={}).params)
            raise ParamError("fixed" if name in self.fixed else "bounds",
                             f"unknown parameter {name!r} (parameters of structure {list(structure)}: {names})"
                             ) from None

    def _space(self, structure: tuple[int, ...], *, bounds: dict[str, tuple[float, float]],
               fixed: dict[str, float]) -> ModelSpace:
        return ModelSpace(structure=tuple(structure), sym_migration=self.sym_migration, migration=self.migration,
                          dynamics=self.dynamics, bounds=bounds, fixed=fixed, poisson=self.likelihood == "poisson",
                          split_sizes=self.split_sizes)

    def initial_points(self, space: ModelSpace) -> list[list[float]]:
        """``initial_guesses`` as free-parameter vectors of ``space`` (the initial structure's)."""
        for i, guess in enumerate(self.initial_guesses):
            missing = [n for n in space.names if n not in guess]
            if missing:
                raise ParamError(f"initial_guesses[{i}]", f"missing {', '.join(missing)}")
        return [list(space.vector(g)) for g in self.initial_guesses]
