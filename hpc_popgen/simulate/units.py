"""Unit conversions between the papers' conventions (msms, 2Ne/4Ne units) and msprime's."""

from __future__ import annotations


def selection_coefficient(S: float, ne: float) -> float:
    """msprime's ``s`` for the papers' S = 2Ne*s_het with additive dominance (msms -SAa S -SAA 2S).

    msprime's fitnesses are 1, 1+s/2, 1+s, so s_het = s/2 and S = 2*Ne*s/2 = Ne*s: s = S / Ne.
    """
    return float(S) / float(ne)


def years_to_generations(years: float, generation_time: float) -> float:
    """A time in years before present, in generations."""
    return float(years) / float(generation_time)


def onset_generations(onset: float, unit: str, generation_time: float) -> float:
    """Selection onset in generations from a value in ``generations`` or ``years``."""
    if unit == "generations":
        return float(onset)
    if unit == "years":
        return years_to_generations(onset, generation_time)
    raise ValueError(f"unknown time unit {unit!r}")


def msms_time_to_generations(t: float, ne: float) -> float:
    """ms/msms times are in units of 4Ne generations."""
    return 4.0 * float(ne) * float(t)
