"""Demographic inference from allele frequency spectra (GADMA-style), free of Dask, SLURM and click.

Modules: ``config`` (the stage's typed parameters), ``afs`` (spectra from .fs files or VCF + popmap),
``model`` (structures, parameters, bounds, structure increase), ``engine`` (moments/dadi spectra and
log-likelihoods; failures never raise), ``ga`` (one island's genetic algorithm as ask/tell, local
search), ``islands`` (ring migration of K islands), ``search`` (structures, islands, local searches,
checkpoints, driven by an evaluations interface), ``outputs`` (results.json, demes YAML, standalone
moments/dadi code, plots). The ``demography`` stage maps the search's evaluations onto Dask futures.
"""
