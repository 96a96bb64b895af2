"""spacy-llm models (``@llm_models``) as engines, through the ``reasoning_ner.SpacyLLM.v1``
bridge: spacy-llm's own NoOp model, and a model function registered in spacy-llm's registry
as users register theirs. (spacy-llm 0.7.4's Hugging Face models cannot load under
transformers 5: they pass ``resume_download`` to ``from_pretrained``; its REST models check
credentials against the hosted API at construction, which cannot be reached here.)"""

from __future__ import annotations

import json

import pytest
import spacy

pytest.importorskip("spacy_llm", reason="spacy-llm is not installed (pip install spacy-llm)")
from spacy_llm.registry import registry as llm_registry

RECEIVED: list[str] = []


@llm_registry.llm_models("tests.KnowsAda.v1")
def make_knows_ada():
    """A spacy-llm model function: prompts per document in, one answer per prompt out."""

    def model(prompts):
        answers = []
        for prompts_for_doc in prompts:
            answers.append([])
            for prompt in prompts_for_doc:
                RECEIVED.append(prompt)
                text = prompt.rsplit("Text: ", 1)[1]
                found = [name for name in ("Ada Lovelace", "London") if name in text]
                answers[-1].append(
                    "<think>I know Ada.</think>" + json.dumps({"entities": {"person": found}})
                )
        return answers

    return model


def make_nlp(model: dict, **config) -> spacy.language.Language:
    nlp = spacy.blank("en")
    backend = {"@reasoning_ner_backends": "reasoning_ner.SpacyLLM.v1", "model": model}
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person"],
            "backend": {**backend, **config.pop("backend", {})},
            **config,
        },
    )
    return nlp


def test_a_registered_spacy_llm_model_answers_through_the_bridge():
    RECEIVED.clear()
    nlp = make_nlp({"@llm_models": "tests.KnowsAda.v1"}, keep_raw=True)
    docs = list(nlp.pipe(["Ada Lovelace was born in 1815.", "Nobody here."]))
    assert [[e.text for e in d.ents] for d in docs] == [["Ada Lovelace"], []]
    assert docs[0]._.ner_reasoning == "I know Ada."
    pipe = nlp.get_pipe("reasoning_ner")
    assert [pipe.task.prompt(d.text)[0]["content"] for d in docs] == RECEIVED  # the user turn
    assert docs[0]._.ner_raw[0]["prompt"] == RECEIVED[0]


def test_few_shot_turns_reach_a_string_model_as_a_transcript():
    RECEIVED.clear()
    example = {"text": "Ada Lovelace wrote.", "entities": {"person": ["Ada Lovelace"]}}
    nlp = make_nlp({"@llm_models": "tests.KnowsAda.v1"}, examples=[example])
    nlp("Ada Lovelace in London.")
    [prompt] = RECEIVED
    assert prompt.startswith("User: ") and prompt.endswith(
        "Text: Ada Lovelace in London.\n\nAssistant:"
    )
    assert '\n\nAssistant: {"entities": {"person": ["Ada Lovelace"]}}\n\nUser: ' in prompt


def test_spacy_llms_own_noop_model():
    nlp = make_nlp({"@llm_models": "spacy.NoOp.v1"})
    doc = nlp("Ada Lovelace.")
    pipe = nlp.get_pipe("reasoning_ner")
    assert doc.ents == () and pipe.stats["unparsed"] == 1  # NoOp answers ""


def test_caching_needs_a_name(tmp_path):
    cached = make_nlp(
        {"@llm_models": "tests.KnowsAda.v1"},
        backend={"name": "knows-ada"},
        cache_path=str(tmp_path / "cache"),
    )
    RECEIVED.clear()
    cached("Ada Lovelace.")
    cached("Ada Lovelace.")
    assert len(RECEIVED) == 1  # the second answer came from the cache
    unnamed = make_nlp({"@llm_models": "tests.KnowsAda.v1"}, cache_path=str(tmp_path / "c2"))
    with pytest.raises(ValueError, match="has no 'identity' property"):
        unnamed("Ada Lovelace.")
