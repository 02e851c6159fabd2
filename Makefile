# The two commands of CONTRACT §1: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml client/pyproject.toml | $(PY)
	$(PY) -m pip install -q -e . -e ./client
	touch $@

$(VENV)/.dev-installed: pyproject.toml client/pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]' -e ./client
	touch $@ $(VENV)/.run-installed

$(VENV)/.bench-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[bench]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(VENV)/bin/bps dev

test: $(VENV)/.dev-installed
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.bench-installed
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
