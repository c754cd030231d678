# `make train` and `make test` set everything up on first use (a .venv with torch and rnnexp).
PYTHON ?= python3
VENV ?= .venv
# Installed before rnnexp into a fresh .venv (the release the project is developed on).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup train test lint mutate clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	@# A .venv made before the project's own Optuna sweeper holds hydra-optuna-sweeper (optuna 2): not used now.
	$(BIN)/pip uninstall -y -q hydra-optuna-sweeper 2>/dev/null || true
	touch $@

# Extra options go in ARGS, e.g. make train ARGS="cell=gru unroll=40"
train: setup
	$(BIN)/python train.py $(ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto $(ARGS)  # one worker per core (pytest-xdist)

lint: setup
	$(BIN)/ruff check .

# Mutation testing, not in CI (hours on 2 cores): mutmut, one core module at a time, each against the
# fast tests that cover it (pyproject.toml [tool.mutmut.modules]), then each module's score. Options in
# ARGS, e.g. make mutate ARGS="rnnexp/summary.py --budget 900" (docs/development.md, "Mutation testing").
mutate: setup
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/pip install "mutmut>=3.8,<4"
	$(BIN)/python scripts/mutate.py $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
