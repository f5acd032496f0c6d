# sftsweep: `make sweep` runs the main job, `make test` the test suite. Both set up .venv first.
SHELL := /bin/bash
PYTHON_SYS ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Leave empty to keep an importable torch (a cluster's CUDA build) or else install the CPU build
# pinned here; set it to install a specific build, e.g. TORCH_SPEC="torch==2.13.0".
TORCH_SPEC ?=
TORCH_DEFAULT := torch==2.13.0
# STAMP: the package and what it needs to run (sweep, report, optuna); DEV_STAMP: also the test and
# benchmark tools (pytest, pytest-xdist, ruff, import-linter, peft, lm_eval, deepspeed, trl)
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

EXPERIMENT ?= default
# LAUNCHER: conf/launcher/<name>.yaml; empty = the experiment's own (default: joblib, the others: local)
LAUNCHER ?=
LAUNCHER_ARG = $(if $(LAUNCHER),launcher=$(LAUNCHER))
ARGS ?=
# SWEEP_DIR: the sweep directory of every target (sweep, optuna, report, report-check, dashboard);
# rerunning the same command resumes it. SWEEP= and OPTUNA_DIR= are older spellings of it.
SWEEP ?=
OPTUNA_DIR ?=
DEFAULT_DIR = $(or $(SWEEP),outputs/sweeps/$(EXPERIMENT))
SWEEP_DIR ?= $(DEFAULT_DIR)
# make splits words at spaces (SWEEP_DIR would reach Hydra and the report as two paths): refused, status 2
CHECK_DIR = $(if $(word 2,$(SWEEP_DIR)),$(error SWEEP_DIR='$(SWEEP_DIR)' has a space, which make cannot pass on; use a directory without spaces, e.g. SWEEP_DIR=$(subst $(eval) ,_,$(SWEEP_DIR))))
REPORT_ARGS ?=
BENCH_ARGS ?=
DASHBOARD_ARGS ?=
STATUS_ARGS ?=
PYTEST_WORKERS ?= auto
METHOD ?= minor_sft
N_TRIALS ?= 6
optuna: DEFAULT_DIR = $(or $(OPTUNA_DIR),$(SWEEP),outputs/optuna/$(EXPERIMENT)-$(METHOD))

.PHONY: install plan sweep optuna status train test lint report report-check world bench dashboard bench-gpu \
	gpu-check gpu-kit gpu-kit-check mutate

install: $(STAMP)

# torch goes in first: a loose torch range asked for by another package would pull CUDA wheels.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q "$(TORCH_SPEC)"; \
	 elif ! $(PY) -c "import torch" 2>/dev/null; then $(PY) -m pip install -q "$(TORCH_DEFAULT)"; fi
	@$(PY) -m pip install -q -e .
	@touch $(STAMP)
	@echo "environment ready: $(VENV)"

# `make sweep` on a fresh clone does not wait for the test tools (about 30 s of installing)
$(DEV_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e ".[dev]"
	@$(PY) tests/deepspeed_cpu_op.py 2>&1 | tail -1
	@touch $(DEV_STAMP)
	@echo "test tools ready: $(VENV)"

## the embedded base model and data (world 0 shipped in the repo and copied on first use by every command;
## this only does it ahead of time and prints the world's sha256);
## another world: make world ARGS="--seed 1"
world: $(STAMP)
	$(PY) -m trainers.world $(ARGS)

## one training job: make train ARGS="method=minor_sft train.lr=2e-4 method.beta=0.1"
train: $(STAMP)
	$(PY) -m trainers.train $(ARGS)

## the main job: the experiment's grid through the chosen launcher, then the report.
## Exit status: 0 all ok or diverged, 1 some jobs failed or missing (report still written), 2 nothing ran (bad input
## or a failed prepare step).
sweep: $(STAMP)
	@: $(CHECK_DIR)
	@status=0; $(PY) -m trainers.train -m experiment=$(EXPERIMENT) $(LAUNCHER_ARG) \
	  hydra.sweep.dir=$(abspath $(SWEEP_DIR)) $(ARGS) || status=$$?; \
	if [ $$status -le 1 ]; then $(PY) -m analysis.report $(SWEEP_DIR) $(REPORT_ARGS) || status=$$?; fi; \
	exit $$status

## every job's resource plan and the sweep's (memory per GPU and per node, checkpoint size, steps, GPU-hours with
## ARGS="plan.tokens_per_s=N", disk at peak; the SLURM request it makes), checked as `make sweep` checks it; runs nothing
plan: $(STAMP)
	@: $(CHECK_DIR)
	$(PY) -m trainers.train -m experiment=$(EXPERIMENT) $(LAUNCHER_ARG) hydra.sweep.dir=$(abspath $(SWEEP_DIR)) \
	  hydra.sweeper.plan_only=true $(ARGS)

## Optuna (TPE) search over β for one method; rerunning continues the study up to N_TRIALS in total.
optuna: $(STAMP)
	@: $(CHECK_DIR)
	@status=0; $(PY) -m trainers.train -m experiment=$(EXPERIMENT) hparams_search=beta_optuna method=$(METHOD) \
	  $(LAUNCHER_ARG) hydra.sweeper.n_trials=$(N_TRIALS) hydra.sweep.dir=$(abspath $(SWEEP_DIR)) $(ARGS) \
	  || status=$$?; \
	if [ $$status -le 1 ]; then $(PY) -m analysis.report $(SWEEP_DIR) $(REPORT_ARGS) || status=$$?; fi; \
	exit $$status

## where every point of SWEEP_DIR is (running: step, loss, ETA; ok; failed: why; pending), from its files alone;
## works for any launcher and after the sweeper has died: make status SWEEP_DIR=… STATUS_ARGS=--watch
status: $(STAMP)
	@: $(CHECK_DIR)
	$(PY) -m sweep.status $(SWEEP_DIR) $(STATUS_ARGS)

## PYTEST_WORKERS: pytest-xdist workers (auto: one per core); the SLURM tests share one worker
test: $(DEV_STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

## ruff, then the import contracts of pyproject.toml (trainers/ in floors, sweep and analysis independent)
lint: $(DEV_STAMP)
	$(PY) -m ruff check trainers sweep analysis bench hydra_plugins tests
	$(VENV)/bin/lint-imports

## tables, figures and report.html for SWEEP_DIR (also a W&B summary run, offline by default)
report: $(STAMP)
	@: $(CHECK_DIR)
	$(PY) -m analysis.report $(SWEEP_DIR) $(REPORT_ARGS)

## the W&B report and workspace comparing SWEEP_DIR's methods; offline it writes SWEEP_DIR/report/wandb_dashboard.json
## and prints the command that publishes it: make dashboard SWEEP_DIR=… DASHBOARD_ARGS="--entity E --project P"
dashboard: $(STAMP)
	@: $(CHECK_DIR)
	$(PY) -m analysis.dashboard $(SWEEP_DIR) $(DASHBOARD_ARGS)

## render SWEEP_DIR's report.html in headless Chromium and save a screenshot
report-check: $(STAMP)
	@: $(CHECK_DIR)
	$(PY) -m analysis.browser_check $(SWEEP_DIR)/report/report.html --screenshot $(SWEEP_DIR)/report/screenshot.png

## the benchmark rows of docs/benchmarks.md (not part of `make test`); writes bench/results.json.
## On a machine shared with other jobs: make bench BENCH_ARGS="--threads 1"
bench: $(DEV_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

## the training step on one GPU (Qwen2-0.5B shape from a config, bf16 mixed precision): tokens/s, MFU, memory
bench-gpu: $(DEV_STAMP)
	$(PY) -m bench.gpu $(BENCH_ARGS)

## the project's mutation run (tests/mutate.py): one-line bugs planted one at a time in a copy of the checkout,
## each against the tests that should catch it; prints the kill rate (not part of `make test`: minutes)
mutate: $(DEV_STAMP)
	$(PY) tests/mutate.py $(MUTATE_ARGS)

## the GPU check on an offline GPU node as it is (its own python3 and torch; needs gpu-kit/ carried along): jobs
## through the real job path within BUDGET_S (480 s), into OUT/gpu_check.json. Installs nothing from a registry.
gpu-check:
	bash bench/gpu_check.sh $(OUT)

## the wheels such a node lacks for the check (Hydra, OmegaConf, antlr4; CPython 3.12, x86-64) into gpu-kit/,
## and their size with the repository's (a device run carries at most 64 MiB)
gpu-kit:
	PY=$(PY) bash bench/gpu_kit.sh

## the check's CPU parts in a simulated offline node: a Python 3.12 venv with the node's torch 2.11, transformers
## 5.17, accelerate 1.15 and no Hydra (built once into .cache/gpu-node, network needed then), the kit offline
gpu-kit-check:
	bash bench/gpu_node.sh $(OUT)
