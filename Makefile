# birads-calc developer entry points. `make test` is what CI runs (.ci/run) and what the README tells newcomers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/demo
# The SR reader OHIF uses (@cornerstonejs/adapters), which the clinical tests run on every SR they write; npm
# installs it into tests/viewer/node_modules (ignored by git). Without npm or the registry the step only says so
# and those tests skip with the reason.
VIEWER := tests/viewer
VIEWER_STAMP := $(VIEWER)/node_modules/.installed

.PHONY: install test demo reproduce reproduce-alpha bench lint format clean

install: $(STAMP) $(VIEWER_STAMP)

# Reinstall only when the dependency list changes; the package itself is editable. The sweeps extra (a small
# pure-Python validator) lets tests/test_sweep.py check configs/alpha/sweep.yaml against W&B's schema.
# torch/torchvision: pip's constraint file on the development machines caps them at the pair on local disk
# (torch 2.14.1 + torchvision 0.29.1); elsewhere pip takes the newest pair that matches pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[dev,sweeps]"
	touch $(STAMP)

$(VIEWER_STAMP): $(VIEWER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		(cd $(VIEWER) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) && touch $@ \
		|| echo "viewer: npm ci failed: the viewer tests will skip"; \
	else echo "viewer: npm not found: the viewer tests will skip (apt-get install nodejs npm)"; fi

test: install
	WANDB_MODE=offline $(BIN)/python -m pytest -q

demo: install
	test -f $(DEMO_DIR)/manifest.csv || $(BIN)/birads-calc synth --out $(DEMO_DIR) --patients 100 --seed 0
	WANDB_MODE=offline $(BIN)/birads-calc fit --config configs/proposed.yaml --config configs/demo.yaml --data.manifest $(DEMO_DIR)/manifest.csv
	WANDB_MODE=offline $(BIN)/birads-calc test --config configs/proposed.yaml --config configs/demo.yaml --data.manifest $(DEMO_DIR)/manifest.csv
	$(BIN)/birads-calc compare runs/proposed --out runs/proposed/compare
	@echo "demo: data in $(DEMO_DIR); run folder $$(ls -td runs/proposed/version_* | head -1) (metrics.json, predictions.csv, checkpoints/, metrics.csv); table and chart in runs/proposed/compare"

# Table 3: 6 methods x 5 seeds on 140 patients split 3:1:3 (60 test), sized by a power calculation for 2 idle cores
# in 90 min (docs/reproduction.md); the Fig. 3 sweep is a second command there
reproduce: install
	WANDB_MODE=offline $(BIN)/python bench/reproduce.py --patients 140 --split_ratios 3 1 3 --seed 1 --seeds 0 1 2 3 4 --jobs 2 --methods mc mse mamse mc_attention mse_attention proposed

reproduce-alpha: install  # Fig. 3 after Table 3: six more alphas, the same data and seeds; alpha 0.2 is the proposed runs
	WANDB_MODE=offline $(BIN)/python bench/reproduce.py --patients 140 --split_ratios 3 1 3 --seed 1 --seeds 0 1 2 3 4 --jobs 2 --methods proposed alpha/alpha_0.05 alpha/alpha_0.1 alpha/alpha_0.3 alpha/alpha_0.5 alpha/alpha_0.7 alpha/alpha_1.0

bench: install
	WANDB_MODE=offline $(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs data/demo .pytest_cache $(VIEWER)/node_modules
