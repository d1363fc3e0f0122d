"""Demographic inference from allele frequency spectra (GADMA-style), free of Dask, SLURM and click.

Modules: ``afs`` (spectra from .fs files or VCF + popmap), ``model`` (structures, parameters, bounds,
structure increase), ``engine`` (moments/dadi spectra and log-likelihoods; failures never raise),
``ga`` (one island's genetic algorithm as ask/tell, local search), ``islands`` (ring migration of K
islands), ``outputs`` (demes YAML, standalone moments/dadi code, plots). The ``demography`` stage
drives the islands over Dask futures.
"""
