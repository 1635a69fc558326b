# pythia_sweep: `make demo` runs the whole pipeline offline; `make test` runs the offline test suite.
SHELL := /bin/bash
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
HF_CACHE := $(CURDIR)/.cache/hf/hub

MODEL ?= EleutherAI/pythia-160m
CHECKPOINTS ?= log
LAYER ?= 6
PRESET ?= robust
CONFIG ?= jobs/configs/pythia160m-log.toml
SWEEP ?=
METRIC ?= strength

.PHONY: setup test demo sweep report refine ui bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest

demo: setup
	HF_HUB_OFFLINE=1 HF_HUB_CACHE=$(HF_CACHE) $(PY) -m jobs.demo

sweep: setup
	$(PY) -m jobs.sweep $(CONFIG) --model $(MODEL) --checkpoints $(CHECKPOINTS) --layer $(LAYER) --preset $(PRESET)

report: setup
	HF_HUB_OFFLINE=1 $(PY) -m jobs.report $(if $(SWEEP),--sweep $(SWEEP))

refine: setup
	$(if $(findstring demo,$(CONFIG)),HF_HUB_OFFLINE=1 HF_HUB_CACHE=$(HF_CACHE)) $(PY) -m jobs.refine $(CONFIG) --metric $(METRIC)

bench: setup
	RAY_AUTH_MODE=disabled $(PY) -m jobs.bench --checkpoints $(or $(N),4)

ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf reports .pytest_cache
