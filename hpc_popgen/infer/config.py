"""The scan stage's parameters as a typed, frozen config (defaults: the stage's JSON Schema)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class WindowConfig:
    """Scan windows: ``size`` and ``step`` in bp or sites; windows with fewer sites are skipped."""

    unit: str
    size: int
    step: int
    min_sites: int


@dataclass(frozen=True, kw_only=True)
class NullConfig:
    """Calibration of a scan: ``chromosomes`` neutral chromosomes under ``demography`` (None: the last
    simulate stage's), with rates and Ne from that stage where left None."""

    demography: str | dict | None
    chromosomes: int
    mutation_rate: float | None
    recombination_rate: float | None
    reference_ne: float | None


@dataclass(frozen=True, kw_only=True)
class ModelCheckConfig:
    """The scan's model check (:mod:`hpc_popgen.infer.modelcheck`): on or off, and its verdict's threshold."""

    enabled: bool
    threshold: float


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    """Everything a scan stage is given; see storage_schemas/stages/scan.schema.json."""

    model: str | None
    vcf: str
    chrom: str | None
    samples: str | tuple[str, ...] | None
    mask: str | None
    min_accessible: float
    ancestral_fasta: str | None
    window: WindowConfig
    chunk_windows: int
    hpdi_level: float
    mc_samples: int
    fdr: float
    fdr_method: str
    model_check: ModelCheckConfig
    null: NullConfig | None
