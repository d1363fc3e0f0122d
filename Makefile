# Two commands do all set-up on a fresh machine:
#   make run   - create .venv, install, run jobs/quickstart.yaml on the local profile
#   make test  - install, start a SLURM cluster on this machine (two node names), run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOROVOD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
PYTEST_ARGS ?=
# two test processes (pytest-xdist); tests on the SLURM cluster or with Horovod ranks stay in one of them,
# one after another (tests/conftest.py groups them and puts the longest groups first; --no-loadscope-reorder
# keeps that order). PYTEST_XDIST= runs everything in one process.
PYTEST_XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder

.PHONY: install run test slurm-up slurm-down lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml scripts/build-cyvcf2.sh scripts/cyvcf2_pgo_workload.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel uv
	# uv installs from its cache in seconds where pip unpacks every wheel again (55 s against 5 s here, most of it
	# TensorFlow's 1.7 GB), and compiles the bytecode on all cores (38 s in all against 100 s for pip then
	# compileall). The bytecode must exist before the tests: with PYTHONDONTWRITEBYTECODE set (as in CI) every
	# process would compile TensorFlow again (34 s against 12 s for one import of tensorflow, dask.distributed,
	# msprime and zarr on a loaded machine). pip, used below, compiles what it installs itself.
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -e '.[test]'
	bash scripts/build-cyvcf2.sh $(PY)
	# Horovod builds against the installed TensorFlow: without --no-build-isolation pip cannot see it and fails.
	# The first build takes ~10 min on 2 cores; pip caches the wheel afterwards.
	$(PY) -c 'import horovod.tensorflow' 2>/dev/null || \
		$(HOROVOD_ENV) $(PIP) install --no-build-isolation 'horovod==0.28.1'
	# numba's kernels into their cache next to our sources, once: else the first shards of a fresh checkout
	# compile them in every worker (about 10 s a process)
	$(PY) -m hpc_popgen.simulate.warmup
	touch $@

run: install
	$(VENV)/bin/hpcpop submit jobs/quickstart.yaml --profile local

slurm-up:
	bash scripts/slurm-up.sh

slurm-down:
	bash scripts/slurm-down.sh

test: install slurm-up
	$(VENV)/bin/ruff check hpc_popgen tests
	$(PY) -m compileall -q -j 0 hpc_popgen tests > /dev/null  # our bytecode too, for the same reason as in install
	$(VENV)/bin/pytest -ra $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check hpc_popgen tests

clean:
	rm -rf $(VENV) runs hpcpop-runs
