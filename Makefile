# `make train` and `make test` set everything up on first use (a .venv with torch and rnnexp).
PYTHON ?= python3
VENV ?= .venv
# Installed before rnnexp into a fresh .venv (the release the project is developed on).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup train test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	touch $@

# Extra options go in ARGS, e.g. make train ARGS="cell=gru unroll=40"
train: setup
	$(BIN)/python train.py $(ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto $(ARGS)  # one worker per core (pytest-xdist)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
