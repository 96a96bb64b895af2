"""Shared fixtures: a tiny random model for mechanics, the bundled SmolLM2 for behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import spacy
import torch

from . import _scripted_backend  # noqa: F401  (registers the "tests.Scripted.v1" backend)

# Two cores: keep torch from oversubscribing when tests run beside other work.
torch.set_num_threads(int(os.environ.get("TORCH_NUM_THREADS", "2")))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct, converted to safetensors (cached across runs)."""
    from spacy_reasoningner.models import bundled_model_folder

    return bundled_model_folder("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(bundled_model_dir: Path) -> Path:
    """``bundled:tiny-random-qwen3``: a randomly initialised 2-layer Qwen3 with the SmolLM2
    tokenizer and chat template (built once, cached beside the converted models)."""
    from spacy_reasoningner.models import bundled_model_folder

    return bundled_model_folder("tiny-random-qwen3")


@pytest.fixture
def nlp() -> spacy.language.Language:
    return spacy.blank("en")
