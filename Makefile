# ForgeML — every target creates .venv and installs what it needs; nothing else to set up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
RUN_STAMP := $(VENV)/.installed-server
# onnxruntime-web (the dashboard runs models in the browser with it), from npm into the static folder;
# its VERSION file, written last, is the stamp. The version and its integrity hash live in the script.
ORT_WEB := src/forgeml/server/static/vendor/onnxruntime-web
ORT_WEB_STAMP := $(ORT_WEB)/VERSION

.PHONY: help install vendor system-deps run test lint format bench clean

PORT ?=  # make run PORT=5001; default: 5000, or FORGEML_PORT

help:
	@echo "make run    - start the platform (REST API and dashboard) at http://localhost:5000 (make run PORT=5001)"
	@echo "make test   - run the test suite (installs dev dependencies, PyTorch included, into .venv, and the"
	@echo "             system packages its tests drive: chromium, postgresql, curl, npm; see make system-deps)"
	@echo "make lint   - ruff lint and format check"
	@echo "make bench  - benchmarks/bench_ops.py and bench_mlp.py: ForgeML against PyTorch"
	@echo "make vendor - fetch onnxruntime-web from npm into the dashboard's static folder (run and test do it)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[server]"
	touch $(RUN_STAMP)

$(ORT_WEB_STAMP): tools/vendor_onnxruntime_web.py tools/npm_package.py | system-deps
	$(PYTHON) tools/vendor_onnxruntime_web.py
	touch $(ORT_WEB_STAMP)

install: $(STAMP)

vendor: $(ORT_WEB_STAMP)

# chromium, postgresql, curl, npm: installed with apt-get when missing and it can (root or passwordless sudo),
# else it prints the command to run and their tests skip naming it. Quick when all are present.
system-deps:
	@tools/system_deps.sh

run: $(RUN_STAMP) $(ORT_WEB_STAMP)
	$(VENV)/bin/forgeml serve $(if $(strip $(PORT)),--port $(PORT))

test: system-deps $(STAMP) $(ORT_WEB_STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples tools
	$(VENV)/bin/ruff format --check src tests benchmarks examples tools

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks examples tools
	$(VENV)/bin/ruff check --fix src tests benchmarks examples tools

bench: $(STAMP)
	$(PY) benchmarks/bench_ops.py
	$(PY) benchmarks/bench_mlp.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info $(ORT_WEB)
