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
