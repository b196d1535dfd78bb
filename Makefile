# StreamGuard developer commands. `make demo` and `make test` work on a fresh machine with
# Python 3.11: they create .venv, install everything (torch pinned first: an unpinned torch
# pulls a multi-GB CUDA build), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
DEMO_DIR ?= runs/demo

# apt-get as root, else through sudo
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

export HF_HUB_OFFLINE ?= 1
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
# the embedded Prefect server can take longer than the default 20 s to start on a busy laptop
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: setup demo test test-fast test-gpu lint format bench clean

$(VENV)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "StreamGuard needs Python >= 3.11 (set PYTHON=python3.11)"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[torch,onnx,serve,orchestration,aws,dask,dev]"
	@touch $@

setup: $(VENV)/.installed  ## create .venv and install StreamGuard with all extras

demo: setup  ## the main job: streamguard-pipeline on the embedded synthetic data (no data, GPU or cloud)
	$(PY) -m flows.pipeline --preset demo --output-root $(DEMO_DIR)

.PHONY: chromium
chromium:  ## headless Chromium for the integration test's flow-run screenshot (Debian package)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

.PHONY: postgresql
postgresql:  ## PostgreSQL server binaries for the Prefect-on-PostgreSQL test and bench (Debian package)
	@test -x "$$STREAMGUARD_PG_BIN/initdb" || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  command -v initdb >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql; }

# Two pytest-xdist workers, one test file each at a time (module fixtures: servers, trained
# tiny models, stay in one process): most of the suite waits on subprocesses and servers, so
# two workers on two cores take well under the serial time. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2

test: setup chromium postgresql  ## every test that can run here (unit, slow real-data, integration)
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test-fast: setup  ## skip slow, integration and GPU tests
	$(PY) -m pytest -q -m "not slow and not integration and not gpu"

test-gpu: setup  ## the CUDA checks (AMP bf16/fp16, memory probe, one GPU per seed) before a long run
	$(PY) -m pytest -q -m gpu

lint: setup  ## ruff check, ruff format --check, mypy on the core
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup  ## benchmarks: one JSON line each
	$(PY) bench/preprocess.py
	$(PY) bench/train.py
	$(PY) bench/pipeline.py

clean:
	rm -rf runs .pytest_cache .ruff_cache .mypy_cache
