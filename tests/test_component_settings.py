"""Every setting of the README's configuration table that changes what the component does,
set on the component and seen to change it (each test fails when the component ignores its
setting). The scripted backend records what it was asked; the OpenAI backend's own settings
are in test_openai_backend.py."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any, get_type_hints

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_reasoningner.backends import Completion, GenerationSettings
from spacy_reasoningner.protocol import ChatMessages, render_completion
from spacy_reasoningner.settings import ComponentSettings, forwards_settings, setting

from ._scripted_backend import prompt_text

TEXT = "Ada Lovelace met Charles Babbage in London."


class Recording:
    """Answers every prompt with ``answer(text)``; keeps the prompts and settings it got."""

    def __init__(self, answer):
        self.answer = answer
        self.prompts: list[ChatMessages] = []
        self.settings: list[GenerationSettings] = []

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        self.prompts += prompts
        self.settings.append(settings)
        return [Completion(text=self.answer(prompt_text(p))) for p in prompts]


def answering(entities: dict[str, list[str]], reasoning: str = "They are named.") -> Recording:
    return Recording(lambda text: render_completion(reasoning, json.dumps({"entities": entities})))


def make_nlp(backend: Recording, labels=("person", "location"), **config):
    nlp = spacy.blank("en")
    scripted = {"@reasoning_ner_backends": "tests.Scripted.v1"}
    pipe = nlp.add_pipe(
        "reasoning_ner", config={"labels": list(labels), "backend": scripted, **config}
    )
    pipe.backend = backend
    return nlp


@pytest.mark.parametrize("fuzzy", [True, False])
def test_fuzzy_match_grounds_mentions_that_differ_in_case_and_spacing(fuzzy):
    backend = answering({"person": ["ada  lovelace", "Charles Babbage"]})
    doc = make_nlp(backend, fuzzy_match=fuzzy)(TEXT)
    found = [e.text for e in doc.ents]
    if fuzzy:
        assert found == ["Ada Lovelace", "Charles Babbage"] and doc._.ner_unaligned == []
    else:
        assert found == ["Charles Babbage"]
        assert [u["text"] for u in doc._.ner_unaligned] == ["ada  lovelace"]


@pytest.mark.parametrize("lowercase", [True, False])
def test_lowercase_schema_shows_the_types_as_trained_entities_keep_your_spelling(lowercase):
    backend = answering({"person": ["Ada Lovelace"]} if lowercase else {"Person": ["Ada Lovelace"]})
    doc = make_nlp(backend, labels=["Person", "Location"], lowercase_schema=lowercase)(TEXT)
    shown = '["location", "person"]' if lowercase else '["Person", "Location"]'
    assert f"Schema: {shown}\n" in backend.prompts[0][-1]["content"]
    assert [(e.text, e.label_) for e in doc.ents] == [("Ada Lovelace", "Person")]


@pytest.mark.parametrize("instruction", [True, False])
def test_reasoning_instruction_adds_or_leaves_out_the_line_asking_to_reason(instruction):
    backend = answering({})
    make_nlp(backend, reasoning_instruction=instruction)(TEXT)
    turn = backend.prompts[0][-1]["content"]
    assert ("First reason step by step inside <think> </think>" in turn) == instruction
    assert turn.endswith(f"Text: {TEXT}")


def test_generation_settings_reach_the_backend():
    backend = answering({})
    generation = {"top_p": 0.8, "temperature": 0.7, "stop_reasoning_loops": False, "seed": 3}
    make_nlp(backend, generation=generation)(TEXT)
    [settings] = backend.settings
    assert (settings.top_p, settings.temperature, settings.seed) == (0.8, 0.7, 3)
    assert settings.stop_reasoning_loops is False


def test_one_seed_rule_gives_each_prompt_position_its_own_seed():
    """Every backend seeds the prompt at position i of a call with seed + i (transformers a
    sub-batch as its first row), so repeats of a prompt sample differently."""
    seeded = GenerationSettings(temperature=0.7, seed=5)
    assert [seeded.at_position(i).seed for i in range(3)] == [5, 6, 7]
    assert seeded.at_position(2).temperature == 0.7
    assert GenerationSettings().at_position(2).seed is None  # unseeded stays unseeded


def test_renamed_extensions_hold_the_annotations_the_defaults_stay_unset():
    backend = answering({"person": ["Ada Lovelace", "Nobody Here"]})
    names = {
        "usage_attr": "my_usage",
        "issues_attr": "my_issues",
        "reasoning_attr": "my_reasoning",
        "unaligned_attr": "my_unaligned",
    }
    doc = make_nlp(backend, **names)(TEXT)
    assert doc._.my_usage["windows"][0]["completions"] == 1
    assert doc._.my_reasoning == "They are named."
    assert [u["text"] for u in doc._.my_unaligned] == ["Nobody Here"]
    assert doc._.my_issues == []
    unset = {"ner_usage": None, "ner_issues": None, "ner_reasoning": "", "ner_unaligned": None}
    for default, value in unset.items():
        assert not Doc.has_extension(default) or doc._.get(default) == value


def test_issues_attr_lists_departures_from_the_protocol():
    backend = Recording(lambda text: '{"entities": {"person": ["Ada Lovelace"]}')  # unclosed
    doc = make_nlp(backend, issues_attr="answer_issues")(TEXT)
    assert doc._.answer_issues  # named, not swallowed
    assert all(isinstance(issue, str) for issue in doc._.answer_issues)


@spacy.registry.scorers("tests.count_scorer.v1")
def make_count_scorer():
    def score(examples: Sequence[Example], **kwargs) -> dict[str, float]:
        return {"predicted_ents": float(sum(len(e.predicted.ents) for e in examples))}

    return score


def test_a_custom_scorer_scores_nlp_evaluate():
    backend = answering({"person": ["Ada Lovelace", "Charles Babbage"]})
    nlp = make_nlp(backend, scorer={"@scorers": "tests.count_scorer.v1"})
    reference = nlp.make_doc(TEXT)
    reference.ents = [Span(reference, 0, 2, label="person")]
    scores = nlp.evaluate([Example(nlp.make_doc(TEXT), reference)])
    assert scores["predicted_ents"] == 2.0 and "ents_f" not in scores


# The settings machinery runs at import (the dataclass body, the factory's decorator), where
# mutmut's forked runs cannot reach it; these tests call it themselves.


def test_a_setting_carries_its_documentation_and_its_config_default():
    plain = setting("A number.", 3)
    assert (plain.default, plain.metadata) == (3, {"doc": "A number.", "config": 3})
    mutable = setting("A list.", [1, [2]])
    first, second = mutable.default_factory(), mutable.default_factory()
    assert first == [1, [2]] and first is not second and first[1] is not second[1]
    assert mutable.metadata["config"] == [1, [2]]
    required = setting("Needed.")
    assert required.default is MISSING and required.default_factory is MISSING
    assert required.metadata == {"doc": "Needed.", "config": MISSING}
    registered = setting("A function.", None, config={"@misc": "my.fn.v1"})
    assert registered.default is None and registered.metadata["config"] == {"@misc": "my.fn.v1"}


def test_forwards_settings_gives_a_factory_the_settings_as_signature_and_docstring():
    def factory(nlp: Language, name: str, **settings: Any) -> dict:
        """Make it."""
        return settings

    forwarded = forwards_settings(factory)
    parameters = list(inspect.signature(forwarded).parameters.values())
    names = [f.name for f in fields(ComponentSettings)]
    assert [p.name for p in parameters] == ["nlp", "name", *names]
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters[2:])
    hints = get_type_hints(ComponentSettings)
    assert [p.annotation for p in parameters[2:]] == [hints[n] for n in names]
    assert list(forwarded.__annotations__) == ["nlp", "name", *names, "return"]
    assert forwarded.__annotations__["return"] == "dict"
    assert forwarded.__doc__ == f"Make it.\n\n{ComponentSettings.docstring()}\n"
    documentation = ComponentSettings.documentation()
    assert ComponentSettings.docstring().splitlines() == [f"{n}: {documentation[n]}" for n in names]
    assert list(ComponentSettings.default_config()) == names
    table = ComponentSettings.markdown_table().splitlines()
    assert table[:2] == ["| setting | default | meaning |", "|---|---|---|"]
    assert len(table) == 2 + len(names) and table[2].startswith(f"| `{names[0]}` |")
