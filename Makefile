# Two commands on a fresh machine:
#   make demo   set up .venv and run the whole pipeline on the embedded tiny default (no downloads)
#   make test   set up .venv, lint, and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint format demo clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -r requirements-dev.txt
	touch $@

lint: setup
	$(BIN)/ruff check code tests bench
	$(BIN)/ruff format --check code tests bench

format: setup
	$(BIN)/ruff format code tests bench
	$(BIN)/ruff check --fix code tests bench

test: lint
	$(BIN)/pytest

# The demo's base-model evaluation lands in saved_models/base-<model>/eval/<data>_k2; the trained one is compared to it.
DEMO_CONFIG ?= configs/tiny.yaml
DEMO_BASE_EVAL ?= saved_models/base-tiny-qwen2/eval/test_k2
MAIN := $(BIN)/python code/main.py

demo: setup
	$(MAIN) --task download --config $(DEMO_CONFIG)
	$(MAIN) --task evaluate --config $(DEMO_CONFIG) --set eval.model=base
	$(MAIN) --task train --config $(DEMO_CONFIG) --set train.resume=true
	$(MAIN) --task evaluate --config $(DEMO_CONFIG) --set eval.compare=[$(DEMO_BASE_EVAL)]
	@echo
	@echo "This demo ran a tiny model built on this machine: it shows the pipeline working end to end,"
	@echo "not the paper's numbers. A real run (GPU, network for the download):"
	@echo "  python code/main.py --task download && python code/main.py --task train && python code/main.py --task evaluate"
