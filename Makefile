# The two commands of the README. Each creates/updates the local virtualenv as needed, from the
# committed lock (lock/requirements.txt): every package is pinned, so an install cannot drift.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ragrec-installed
LOCK := lock/requirements.txt
# torch is pinned here, installed first and outside the lock: pip takes a CPU build where the
# machine has one (a local wheel or an index given with PIP_EXTRA_INDEX_URL), so the lock never
# pulls the multi-GB CUDA wheels. Override with e.g. `make TORCH=torch==2.13.0+cu128 test`.
TORCH ?= torch==2.13.0

.PHONY: demo test test-all lint lock bench-data clean-venv llamacpp

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet '$(TORCH)'
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ragrec demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Regenerate the lock from pyproject.toml's ranges (Python 3.10-3.12+, any platform; markers pick
# per version). Needs the package index; commit the result.
lock: $(STAMP)
	$(PY) -m uv pip compile pyproject.toml lock/torch-deps.in --extra dev --extra langchain --extra ray \
		--override lock/overrides.txt --no-emit-package torch \
		--universal --python-version 3.10 --quiet -o $(LOCK)

bench-data: $(STAMP)
	$(PY) benchmarks/prepare_data.py

clean-venv:
	rm -rf $(VENV)

# The optional llama.cpp backend: llama-cpp-python has no wheel on PyPI, so pip builds it (cmake and a
# C++ compiler; about 10 min on 2 cores). Not in the lock; `make test-all` then runs its slow test.
llamacpp: $(STAMP)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install 'llama-cpp-python==0.3.36' 'sentencepiece>=0.1.98,<0.3'
