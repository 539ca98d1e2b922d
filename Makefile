# normexp: `make run-sweep` and `make test` do everything on a fresh machine.
# The profile of record (the committed reproduction) is set once, in normexp/tracking/store.py.
RECORD_PROFILE := $(shell sed -n 's/^RECORD_PROFILE = "\(.*\)".*/\1/p' normexp/tracking/store.py)
PROFILE    ?= $(RECORD_PROFILE)# smoke (seconds), quick (under an hour on 2 CPU cores), standard (about 6 h on 2 cores, resumable), paper (GPU / cluster); each its own results/<profile>/
EXPERIMENT ?= all# one experiment name from experiments/, or all
WORKERS    ?= -1# parallel runs; -1 = one per core (LAUNCHER=local)
LAUNCHER   ?= local# local (processes on this machine) or slurm (see docs/cluster-and-gpu.md)
ARGS       ?=# more overrides, e.g. ARGS="hydra.launcher.partition=gpu"
PYTHON     ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
LAUNCH      = hydra/launcher=$(LAUNCHER) $(if $(filter local,$(LAUNCHER)),hydra.launcher.n_jobs=$(WORKERS))
# The grid (docs/results.md "The grid"): its own target and budget, so `make run-sweep` stays within the
# quick profile's hour: the MLP and LSTM batch grids, every norm pre/post, PTB words.
GRID_EXPERIMENTS := mlp_small_batch norm_position rnn_small_batch rnn_words
# The GPU bundle's experiments (normexp/gpu_bundle.py) run on a CUDA machine: bash bundle/run_gpu.sh.
GPU_EXPERIMENTS := $(basename $(notdir $(wildcard experiments/gpu_*.yaml)))
# Experiments whose outcome others read when they plan, run before them: gn_grouping decides GN's
# grouping, which bn_small_batch, bn_small_batch_resnet and bn_small_batch_remedies train GN with
# (their GN jobs wait for it: normexp/protocol/grouping.py).
FIRST_EXPERIMENTS := gn_grouping
ALL_EXPERIMENTS := $(FIRST_EXPERIMENTS) $(filter-out $(GRID_EXPERIMENTS) $(GPU_EXPERIMENTS) $(FIRST_EXPERIMENTS),$(basename $(notdir $(wildcard experiments/*.yaml))))
EXPERIMENTS := $(if $(filter all,$(EXPERIMENT)),$(ALL_EXPERIMENTS),$(EXPERIMENT))

.DEFAULT_GOAL := help
.PHONY: help setup run-sweep run-grid figures notebook migrate screenshot test lint bench clean-outputs wandb-sync dashboards

help: ## list the commands
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=$(PROFILE) EXPERIMENT=$(EXPERIMENT) WORKERS=$(WORKERS) LAUNCHER=$(LAUNCHER) ARGS=$(ARGS)"

setup: $(VENV)/.installed ## create .venv and install the suite with its pinned dependencies

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run-sweep: setup ## train every experiment but the grid's (or EXPERIMENT=name) at PROFILE; resumes
	@for e in $(EXPERIMENTS); do \
		echo "== $$e ($(PROFILE) profile)"; \
		$(PY) -m normexp.run -m experiment=$$e profile=$(PROFILE) $(LAUNCH) $(ARGS) || exit $$?; \
	done

run-grid: setup ## train the grid's experiments (MLP batch sizes, every norm pre/post) at PROFILE
	@$(MAKE) --no-print-directory run-sweep EXPERIMENT="$(GRID_EXPERIMENTS)"

figures: setup ## collect PROFILE's runs, draw every figure, write its report (results/PROFILE/), run the notebook
	$(PY) -m normexp.analysis.figures --profile $(PROFILE)
	$(MAKE) --no-print-directory notebook PROFILE=$(PROFILE)

notebook: setup ## execute notebooks/explore_results.ipynb against PROFILE's results (another profile's copy: results/PROFILE/)
	$(PY) -m normexp.analysis.explore --profile $(PROFILE)

migrate: setup ## bring a store up to date: rekey its runs, move an old layout (results/runs/) into results/<profile>/runs/
	$(PY) -m normexp.tracking.migrate

screenshot: setup ## results/PROFILE/report_screenshot.png: report.html's first screen in headless Chromium
	$(PY) -m normexp.analysis.report.browser --page results/$(PROFILE)/report.html --out results/$(PROFILE)/report_screenshot.png

wandb-sync: setup ## replay PROFILE's stored runs that have no W&B run into offline ones, upload them when logged in ($NORMEXP_RESULTS_DIR or results/)
	$(PY) -m normexp.analysis.report.dashboards --sync --profile $(PROFILE) $(ARGS)

dashboards: setup ## publish one W&B report per claim on PROFILE's runs (needs `wandb login`); ARGS="--entity me"
	$(PY) -m normexp.analysis.report.dashboards --publish --profile $(PROFILE) $(ARGS)

test: setup ## run the test suite (one worker per core; PYTEST_ARGS="-n 0" runs it in one process)
	$(PY) -m pytest -q -n auto --dist loadgroup $(PYTEST_ARGS)

lint: setup ## ruff
	$(PY) -m ruff check .

clean-outputs: ## delete Hydra's per-job logs under outputs/ (the results store is kept)
	rm -rf outputs

bench: setup ## benchmark ratios (norms, data, harness, FLOP utilization, replicas, sweep, RNN) -> results/bench/
	$(PY) -m normexp.bench
