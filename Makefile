# ForgeML — every target creates .venv and installs what it needs; nothing else to set up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: help install run test lint format bench clean

help:
	@echo "make run    - train a small demo model and print its loss falling"
	@echo "make test   - run the test suite (installs dev dependencies, PyTorch included, into .venv)"
	@echo "make lint   - ruff lint and format check"
	@echo "make bench  - benchmarks/bench_ops.py: ForgeML against PyTorch"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) examples/demo_regression.py

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks examples
	$(VENV)/bin/ruff check --fix src tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/bench_ops.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
