# infprof: one-command setup, run and test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
HAS_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo 1)
EXTRA := $(if $(HAS_GPU),gpu,cpu)

.PHONY: setup run test lint bench clean demo-sweep

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[$(EXTRA),dev]'
ifeq ($(EXTRA),cpu)
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
endif
	touch $(STAMP)

run: setup
	$(BIN)/infprof run

test: setup
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check profiler tests
	$(BIN)/ruff format --check profiler tests
	$(BIN)/mypy profiler

bench: setup
	$(BIN)/python -m tests.bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache runs bench-results
