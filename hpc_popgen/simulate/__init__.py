"""Simulation science: demography catalogue, sweep trajectory, unit conversion, replicates. No Dask here."""

from .demographies import DemographyModel, demes_model, load_demography, msms_model
from .plan import Plan
from .replicate import SimConfig, SimulationRefused, simulate_replicate
from .shard import simulate_range
from .trajectory import SweepTiming, sweep_timing
from .units import onset_generations, selection_coefficient

__all__ = ["DemographyModel", "Plan", "SimConfig", "SimulationRefused", "SweepTiming", "demes_model",
           "load_demography", "msms_model", "onset_generations", "selection_coefficient", "simulate_range",
           "simulate_replicate", "sweep_timing"]
