"""Deterministic allele-frequency trajectory of an additive beneficial allele (logistic growth).

With fitnesses 1, 1+s/2, 1+s the allele frequency obeys dp/dt = (s/2) p (1-p) per generation, so
logit p rises linearly at rate s/2. This fixes the present-day frequency msprime's
SweepGenicSelection must end at (the paper's S=200, onset 600 generations, p0 = 0.01: about 0.80).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass(frozen=True)
class SweepTiming:
    """When the sweep is: frequency at onset, frequency at its end, and when it ends (generations ago).

    ``end_time`` is 0 for a sweep still under way today; a sweep that reached ``end_frequency`` before
    today is followed by ``end_time`` generations of neutral coalescence.
    """

    start_frequency: float
    end_frequency: float
    end_time: float
    onset: float

    @property
    def complete(self) -> bool:
        return self.end_time > 0


def frequency_after(s: float, start_frequency: float, generations: float) -> float:
    """Deterministic frequency after ``generations`` of additive selection with msprime's ``s``."""
    return _expit(_logit(start_frequency) + 0.5 * s * generations)


def generations_between(s: float, p0: float, p1: float) -> float:
    """Generations for the deterministic trajectory to go from p0 to p1 (s > 0, p0 < p1)."""
    return (_logit(p1) - _logit(p0)) / (0.5 * s)


def sweep_timing(s: float, start_frequency: float, onset: float, ne: float) -> SweepTiming:
    """Present-day (or completion) frequency and end time of a sweep that began ``onset`` generations ago.

    Frequencies are capped at 1 - 1/(2 Ne): a trajectory that gets there before today is complete,
    and ends ``onset - duration`` generations ago.
    """
    if s <= 0:
        raise ValueError("a sweep needs s > 0")
    cap = 1.0 - 1.0 / (2.0 * ne)
    if not 0 < start_frequency < cap:
        raise ValueError(f"start frequency {start_frequency} must be in (0, {cap})")
    duration = generations_between(s, start_frequency, cap)
    if duration < onset:
        return SweepTiming(start_frequency, cap, onset - duration, onset)
    return SweepTiming(start_frequency, frequency_after(s, start_frequency, onset), 0.0, onset)
