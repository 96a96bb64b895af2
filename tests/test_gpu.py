"""On a CUDA GPU (skipped elsewhere; run with `pytest -m gpu` where one is lent): the
transformers backend picks the GPU and bfloat16 by itself, and in float32 on the GPU the
default pipeline answers the demo sentences as it does on the CPU."""

from __future__ import annotations

import pytest
import spacy
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DEMO = [
    "Ada Lovelace worked with Charles Babbage in London on the Analytical Engine.",
    "Tim Cook met Sundar Pichai at Google headquarters in Mountain View.",
]
LABELS = ["person", "organization", "location"]


def pipeline(**backend):
    nlp = spacy.blank("en")
    config = {"labels": LABELS, "backend": {"structured_output": False, **backend}}
    nlp.add_pipe("reasoning_ner", config={**config, "keep_raw": True})
    return nlp


def entities(nlp) -> list[list[tuple[str, str]]]:
    return [[(e.text, e.label_) for e in nlp(text).ents] for text in DEMO]


def test_auto_picks_the_gpu_and_bfloat16():
    nlp = pipeline()
    found = entities(nlp)
    model = nlp.get_pipe("reasoning_ner").backend.model
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    assert sum(map(len, found)) > 0


def test_float32_on_the_gpu_answers_as_on_the_cpu():
    assert entities(pipeline(device="cuda", dtype="float32")) == entities(
        pipeline(device="cpu", dtype="float32")
    )
