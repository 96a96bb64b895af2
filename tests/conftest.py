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
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, bundled_model_dir: Path) -> Path:
    """A randomly initialised 2-layer Qwen3 with the SmolLM2 tokenizer and chat template."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def nlp() -> spacy.language.Language:
    return spacy.blank("en")
