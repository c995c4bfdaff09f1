# bastion: `make demo` runs the main job, `make test` passes the tests; each sets itself up first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test lint format reproduce bench clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)

## the main job: train/load the zoo, run every quick reproduction, write report/index.html
demo: $(STAMP)
	$(VENV)/bin/bastion reproduce all --quick --out report

## the default test run (fast tests and doctests; < 15 min on 2 cores)
test: $(STAMP)
	$(PY) -m pytest -m "not slow" --doctest-modules src/bastion tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## the full reproductions and the slow tests
reproduce: $(STAMP)
	$(VENV)/bin/bastion reproduce all --out report
	$(PY) -m pytest -m slow tests $(PYTEST_ARGS)

## every benchmark script (benchmarks/_*.py are helpers they call, not benchmarks)
bench: $(STAMP)
	@set -e; for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf report .pytest_cache .ruff_cache benchmarks/results
