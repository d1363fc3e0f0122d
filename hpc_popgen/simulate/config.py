"""The simulate stage's parameters as a typed, frozen config (defaults: the stage's JSON Schema)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ParamError
from ..images import ImageConfig


@dataclass(frozen=True, kw_only=True)
class PriorConfig:
    """S ~ U(min, max) for n replicates (or uniform on ``grid`` evenly spaced values, batched per value);
    n_bins is recorded for binning S later."""

    min: float
    max: float
    n: int
    n_bins: int
    grid: int | None

    def __post_init__(self) -> None:
        if self.min >= self.max:
            raise ParamError("min", f"{self.min:g} must be below prior.max ({self.max:g})")


@dataclass(frozen=True, kw_only=True)
class ClassSpec:
    """One class of a simulate stage: its S and, where it names them, its own sweep settings (None: the
    stage's ``sweep``)."""

    name: str
    S: float
    start_frequency: float | None = None
    end_frequency: float | None = None  # a partial sweep: the allele's frequency today
    onset: float | None = None
    dominance: float | None = None

    @property
    def own_sweep(self) -> bool:
        """Whether the class changes any of the stage's sweep settings."""
        return any(v is not None for v in (self.start_frequency, self.end_frequency, self.onset, self.dominance))

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def class_specs(items: tuple[float | dict, ...]) -> tuple[ClassSpec, ...]:
    """The ``classes`` of a manifest (numbers, or mappings naming their own sweep) as ClassSpecs; refuses
    repeated names, a neutral class with a sweep, and a partial sweep that also gives its onset."""
    out: list[ClassSpec] = []
    for k, item in enumerate(items):
        if isinstance(item, dict):
            spec = ClassSpec(**{"name": f"S={float(item['S']):g}", **item, "S": float(item["S"])})
            if spec.S == 0 and spec.own_sweep:
                raise ParamError(f"classes[{k}]", f"{spec.name!r} is neutral (S = 0): it takes no sweep settings")
            if spec.end_frequency is not None and spec.onset is not None:
                raise ParamError(f"classes[{k}].onset", "a partial sweep's onset follows from its end_frequency, "
                                 "S and start_frequency: give one of onset and end_frequency")
        else:
            spec = ClassSpec(name=f"S={float(item):g}", S=float(item))
        if spec.name in [c.name for c in out]:
            raise ParamError(f"classes[{k}]", f"the name {spec.name!r} is already a class's (names must differ)")
        out.append(spec)
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """The additive hard sweep at the region centre: onset, start frequency, msprime settings."""

    onset: float
    onset_unit: str
    generation_time: float
    start_frequency: float
    standing: str
    dominance: float
    start_frequency_rtol: float
    end_frequency_atol: float
    end_condition: str
    position: float
    dt: float
    max_attempts: int


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """Validation and test fractions; the rest is train."""

    validation: float
    test: float

    def __post_init__(self) -> None:
        if self.validation + self.test > 1.0:
            raise ParamError("", "validation + test must be at most 1")

    def fractions(self) -> dict[str, float]:
        return {"train": round(1.0 - self.validation - self.test, 12), "validation": self.validation,
                "test": self.test}


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """ms/msms/discoal files simulated elsewhere: the files (or glob patterns), where each file's S comes
    from (``{from_name: regex}`` or ``{table: file}``), and whether the S values are classes."""

    ms: tuple[str, ...]
    s: dict
    s_kind: str


@dataclass(frozen=True, kw_only=True)
class SimulateConfig:
    """Everything a simulate stage is given; see storage_schemas/stages/simulate.schema.json."""

    store: str
    seed: int | None
    source: SourceConfig | None
    demography: str | dict
    reference_ne: float
    n_haplotypes: int
    sequence_length: float
    mutation_rate: float
    recombination_rate: float
    engine: str
    scaling: str | float
    classes: tuple[float | dict, ...] | None  # as the manifest gives them; see :meth:`class_specs`
    n_per_class: int | None
    prior: PriorConfig | None
    sweep: SweepConfig
    image: ImageConfig
    split: SplitConfig
    shard_images: int
    chunk_images: int

    def __post_init__(self) -> None:
        if self.source is not None:
            if self.classes is not None or self.prior is not None:
                raise ParamError("source", "ms files bring their own S: give no classes, n_per_class or prior")
        elif (self.classes is None) == (self.prior is None):
            raise ParamError("classes", "give either classes (with n_per_class) or prior, not both and not neither")
        if self.classes is not None:
            self.class_specs()  # refuses what the schema cannot
        if self.shard_images % min(self.chunk_images, self.shard_images):
            raise ParamError("chunk_images", f"{self.chunk_images} must divide shard_images ({self.shard_images})")

    def class_specs(self) -> tuple[ClassSpec, ...]:
        """The classes as ClassSpecs (empty without classes)."""
        return class_specs(self.classes) if self.classes is not None else ()
