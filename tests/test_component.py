"""The reasoning_ner component with a scripted backend: config, batching, annotations, scoring."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import spacy
from confection import ConfigValidationError
from spacy.tokens import Span
from spacy.training import Example

from spacy_reasoningner.backends import Completion, GenerationSettings
from spacy_reasoningner.protocol import render_completion
from spacy_reasoningner.settings import ComponentSettings

from ._scripted_backend import ScriptedBackend, prompt_text

LABELS = ["person", "location"]
PEOPLE = ["Ada Lovelace", "Charles Babbage", "Grace Hopper"]
PLACES = ["London", "New York", "Paris"]


def oracle(text: str) -> str:
    """A model that knows every name of PEOPLE and PLACES occurring in the text."""
    found = {
        "person": [p for p in PEOPLE if p in text],
        "location": [p for p in PLACES if p in text],
    }
    head = " ".join(text.split()[:3])
    return render_completion(f"Window starting '{head}'.", json.dumps({"entities": found}))


def make_nlp(answer=oracle, **config):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": LABELS,
            "backend": {"@reasoning_ner_backends": "tests.Scripted.v1"},
            **config,
        },
    )
    pipe.backend = ScriptedBackend(answer)
    return nlp, pipe


def test_readme_configuration_table_is_written_from_the_settings():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert ComponentSettings.markdown_table() in readme


def test_settings_are_written_once_and_spacy_validates_them():
    nlp = spacy.blank("en")
    backend = {"@reasoning_ner_backends": "tests.Scripted.v1"}
    nlp.add_pipe("reasoning_ner", config={"labels": ["person"], "backend": backend})
    config = nlp.config["components"]["reasoning_ner"]
    assert set(config) - {"factory"} == {f.name for f in fields(ComponentSettings)}
    assert config["generation"]["max_new_tokens"] == GenerationSettings().max_new_tokens
    with pytest.raises(ConfigValidationError, match="batch_size"):
        spacy.blank("en").add_pipe(
            "reasoning_ner", config={"labels": ["a"], "backend": backend, "batch_size": "many"}
        )
    with pytest.raises(ConfigValidationError, match="unexpected argument: 'overwrite'"):
        spacy.blank("en").add_pipe("reasoning_ner", config={"backend": backend, "overwrite": True})


def test_factory_is_found_through_the_entry_point_without_import():
    code = (
        "import spacy  # no import of spacy_reasoningner: the entry point finds it\n"
        "nlp = spacy.blank('en')\n"
        "pipe = nlp.add_pipe('reasoning_ner', config={'labels': ['person']})\n"
        "print(type(pipe).__name__, pipe.labels, nlp.get_pipe_meta('reasoning_ner').assigns)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip()
        == "ReasoningNER ('person',) ['doc.ents', 'token.ent_iob', 'token.ent_type']"
    )


def test_entities_reasoning_and_unaligned_mentions():
    def answer(text):
        return '<think>Ada is a person; Atlantis is made up.</think>{"entities": {"person": ["Ada Lovelace"], "location": ["Atlantis", "London"], "date": ["1843"]}}'

    nlp, _ = make_nlp(answer)
    doc = nlp("Ada Lovelace lived in London. London was big.")
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Ada Lovelace", "person"),
        ("London", "location"),
        ("London", "location"),
    ]
    assert doc._.ner_reasoning == "Ada is a person; Atlantis is made up."
    assert doc._.ner_unaligned == [
        {"text": "Atlantis", "label": "location", "reason": "not found in the text"},
        {"text": "1843", "label": "date", "reason": "label not in the schema"},
    ]
    assert doc._.ner_truncated is False


def test_labels_keep_the_users_spelling():
    nlp, _ = make_nlp(lambda t: '{"entities": {"person": ["Ada"]}}', labels=["PERSON", "LOCATION"])
    assert [e.label_ for e in nlp("Ada came.").ents] == ["PERSON"]


def test_definitions_reach_the_prompt():
    seen = []
    nlp, _ = make_nlp(
        lambda t: '{"entities": {}}',
        labels={"person": "a human", "location": "a place"},
        keep_raw=True,
    )
    pipe = nlp.get_pipe("reasoning_ner")
    original = pipe.backend.generate

    def spy(prompts, settings):
        seen.extend(prompts)
        return original(prompts, settings)

    pipe.backend.generate = spy
    nlp("Ada came.")
    assert "- person: a human\n- location: a place" in seen[0][0]["content"]


def test_pipe_sends_each_batch_as_one_backend_call():
    nlp, pipe = make_nlp()
    texts = [f"Grace Hopper visited Paris on day {i}." for i in range(10)]
    docs = list(nlp.pipe(texts, batch_size=4))
    assert pipe.backend.calls == [4, 4, 2]
    assert [d.text for d in docs] == texts
    assert all(len(d.ents) == 2 for d in docs)


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "<think>never closed",
        "not json at all",
        '{"entities": [1, 2',
        "[[[[",
        '{"entities": {"person": [null]}}',
    ],
)
def test_malformed_output_never_crashes_or_loses_a_doc(completion):
    nlp, pipe = make_nlp(lambda t: completion)
    docs = list(nlp.pipe(["Ada Lovelace.", "London.", "Paris."], batch_size=2))
    assert len(docs) == 3 and all(d.ents == () for d in docs)
    assert pipe.stats["docs"] == 3


def test_backend_failure_raises_and_leaves_docs_untouched():
    nlp, pipe = make_nlp()

    def fail(prompts, settings):
        raise ConnectionError("server down")

    pipe.backend.generate = fail
    doc = nlp.make_doc("Ada Lovelace in London.")
    with pytest.raises(ConnectionError):
        pipe(doc)
    assert doc.ents == () and doc._.ner_reasoning == ""


def test_backend_returning_too_few_completions_is_an_error():
    nlp, pipe = make_nlp()
    pipe.backend.generate = lambda prompts, settings: []
    with pytest.raises(RuntimeError, match="returned 0 completions for 1 prompts"):
        nlp("Ada")


def test_truncated_completion_is_flagged(caplog):
    nlp, pipe = make_nlp()
    pipe.backend.generate = lambda prompts, settings: [
        Completion("<think>Ada is", finish_reason="length")
    ]
    doc = nlp("Ada Lovelace.")
    assert doc._.ner_truncated is True
    assert pipe.stats["truncated"] == 1
    assert "hit max_new_tokens" in caplog.text


@pytest.mark.parametrize(
    ("ents_filter", "expected"),
    [
        (
            "reasoning_ner.prefer_existing_ents.v1",
            [("York", "ORG"), ("Grace Hopper", "person"), ("Lovelace", "ORG")],
        ),
        (
            "reasoning_ner.prefer_new_ents.v1",
            [("New York", "location"), ("Grace Hopper", "person"), ("Lovelace", "ORG")],
        ),
        # spaCy's own filters have the same signature and plug in alike.
        (
            "spacy.prioritize_new_ents_filter.v1",
            [("New York", "location"), ("Grace Hopper", "person"), ("Lovelace", "ORG")],
        ),
    ],
)
def test_the_ents_filter_merges_with_earlier_entities(ents_filter, expected):
    def answer(text):
        return '{"entities": {"location": ["New York"], "person": ["Grace Hopper"]}}'

    nlp, pipe = make_nlp(answer, ents_filter={"@misc": ents_filter})
    doc = nlp.make_doc("New York met Grace Hopper and Ada Lovelace.")
    doc.ents = [Span(doc, 1, 2, label="ORG"), Span(doc, 7, 8, label="ORG")]
    doc = pipe(doc)
    assert [(e.text, e.label_) for e in doc.ents] == expected


def test_equal_spans_under_two_labels_follow_the_schema_order():
    answer = '{"entities": {"location": ["Jordan"], "person": ["Jordan"]}}'
    for labels, label in ((["person", "location"], "person"), (["location", "person"], "location")):
        nlp, _ = make_nlp(lambda t: answer, labels=labels)
        assert [e.label_ for e in nlp("Jordan won.").ents] == [label]


def test_all_candidates_go_to_doc_spans_when_asked():
    answer = '{"entities": {"location": ["New York", "New York City"], "person": ["York"]}}'
    nlp, _ = make_nlp(lambda t: answer, spans_key="candidates")
    doc = nlp("He loves New York City.")
    assert [(e.text, e.label_) for e in doc.ents] == [("New York City", "location")]
    assert sorted((s.text, s.label_) for s in doc.spans["candidates"]) == [
        ("New York", "location"),
        ("New York City", "location"),
        ("York", "person"),
    ]


def test_keep_raw_and_custom_extension_names():
    nlp, _ = make_nlp(keep_raw=True, reasoning_attr="why", unaligned_attr="lost", raw_attr="raw_io")
    doc = nlp("Ada Lovelace in Paris.")
    assert doc._.why.startswith("Window starting")
    assert doc._.lost == []
    (raw,) = doc._.raw_io
    assert raw["completion"] == oracle("Ada Lovelace in Paris.")
    assert (raw["start"], raw["end"], raw["finish_reason"]) == (0, len(doc.text), "stop")


class FormatSpy(ScriptedBackend):
    """A scripted backend that also receives the answer format (a ``Constrainable``)."""

    def __init__(self, answer):
        super().__init__(answer)
        self.formats = []

    def generate_constrained(self, prompts, settings, answer_format):
        self.formats.append((settings, answer_format))
        return self.generate(prompts, settings)


@pytest.mark.parametrize("reasoning", [True, False])
def test_reasoning_and_answer_schemas_reach_backends_explicitly(reasoning):
    nlp, pipe = make_nlp(reasoning=reasoning, max_chars=100, window_overlap=0)
    pipe.backend = spy = FormatSpy(oracle)
    seen = []
    spy.generate = lambda prompts, settings: (
        seen.extend(prompts) or [Completion(oracle(prompt_text(p))) for p in prompts]
    )
    nlp("Ada Lovelace wrote notes in London. " * 2 + "Grace Hopper wrote code in Paris. " * 2)
    [(settings, answer_format)] = spy.formats
    assert answer_format.reasoning is reasoning
    assert settings.chat_template_kwargs == {}  # nothing smuggled through template kwargs
    # One schema per prompt (windows), each the protocol's answer schema with the labels.
    assert len(answer_format.schemas) == len(seen) > 1
    for schema in answer_format.schemas:
        assert set(schema["properties"]["entities"]["properties"]) == {"location", "person"}
    direct = "Answer with the JSON only."
    assert all((direct in p[0]["content"]) is not reasoning for p in seen)


def test_a_plain_backend_gets_prompts_and_settings_only():
    nlp, pipe = make_nlp(reasoning=False)
    captured = {}

    def generate(prompts, settings):
        captured["settings"] = settings
        return [Completion('{"entities": {"person": ["Ada"]}}') for _ in prompts]

    pipe.backend.generate = generate
    assert [e.text for e in nlp("Ada came.").ents] == ["Ada"]
    assert captured["settings"] == pipe.generation


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"labels": []}, "labels is empty"),
        ({"labels": ["a", "A"]}, "are duplicates"),
        ({"alignment_mode": "fuzzy"}, "alignment_mode 'fuzzy' is not one of"),
        ({"generation": {"max_tokens": 5}}, r"unknown generation setting\(s\) \['max_tokens'\]"),
        ({"generation": {"max_new_tokens": 0}}, "max_new_tokens must be a positive integer"),
        ({"max_chars": 10}, "max_chars must be at least 100"),
        ({"reasoning_attr": "not valid"}, "not a valid Python identifier"),
    ],
)
def test_config_errors_say_what_to_fix(config, message):
    nlp = spacy.blank("en")
    full = {"labels": LABELS, "backend": {"@reasoning_ner_backends": "tests.Scripted.v1"}, **config}
    with pytest.raises(ValueError, match=message):
        nlp.add_pipe("reasoning_ner", config=full)


def test_missing_labels_error_names_the_fix():
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner", config={"backend": {"@reasoning_ner_backends": "tests.Scripted.v1"}}
    )
    with pytest.raises(ValueError, match="has no labels"):
        nlp("Ada")


def test_pipe_routes_a_failing_batch_to_the_error_handler():
    nlp, pipe = make_nlp()

    def generate(prompts, settings):
        if any("Atlantis" in prompt_text(p) for p in prompts):
            raise ConnectionError("server down")
        return [Completion(oracle(prompt_text(p))) for p in prompts]

    pipe.backend.generate = generate
    failures = []
    nlp.set_error_handler(lambda name, proc, docs, error: failures.append((name, docs, error)))
    texts = ["Ada Lovelace.", "Atlantis.", "Grace Hopper.", "Paris."]
    docs = list(nlp.pipe(texts, batch_size=2))
    assert [d.text for d in docs] == ["Grace Hopper.", "Paris."]
    assert [e.text for e in docs[0].ents] == ["Grace Hopper"]
    [(name, failed, error)] = failures
    assert name == "reasoning_ner" and isinstance(error, ConnectionError)
    assert [d.text for d in failed] == texts[:2] and all(d.ents == () for d in failed)


def test_initialize_reads_labels_from_examples():
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner", config={"backend": {"@reasoning_ner_backends": "tests.Scripted.v1"}}
    )
    doc = nlp.make_doc("Ada in Paris")
    example = Example.from_dict(doc, {"entities": [(0, 3, "PER"), (7, 12, "LOC")]})
    nlp.initialize(lambda: [example])
    assert pipe.labels == ("LOC", "PER")


def test_nlp_evaluate_reports_spacy_entity_scores():
    nlp, _ = make_nlp()
    examples = []
    for text, ents in [
        (
            "Ada Lovelace met Charles Babbage in London.",
            [(0, 12, "person"), (17, 32, "person"), (36, 42, "location")],
        ),
        ("Grace Hopper flew to Tokyo.", [(0, 12, "person"), (21, 26, "location")]),
    ]:
        examples.append(Example.from_dict(nlp.make_doc(text), {"entities": ents}))
    scores = nlp.evaluate(examples)
    assert scores["ents_p"] == 1.0
    assert scores["ents_r"] == pytest.approx(4 / 5)
    assert scores["ents_per_type"]["location"]["r"] == pytest.approx(0.5)
    assert scores["ents_per_type"]["person"]["f"] == 1.0


# --------------------------------------------------------------------------- long documents


def long_text(n_chars: int) -> tuple[str, list[tuple[int, int, str]]]:
    """Sentences with names; returns the text and the character span of every name."""
    parts, spans, position, i = [], [], 0, 0
    while position < n_chars:
        person, place = PEOPLE[i % 3], PLACES[(i // 3) % 3]
        sentence = f"On day {i} {person} wrote a long letter about {place} and the weather. "
        spans.append(
            (
                position + sentence.index(person),
                position + sentence.index(person) + len(person),
                "person",
            )
        )
        spans.append(
            (
                position + sentence.index(place),
                position + sentence.index(place) + len(place),
                "location",
            )
        )
        parts.append(sentence)
        position += len(sentence)
        i += 1
    return "".join(parts), spans


def test_a_100k_character_document_is_windowed_and_merged_exactly():
    text, expected = long_text(100_000)
    nlp, pipe = make_nlp(max_chars=1000, window_overlap=1)
    doc = nlp(text)
    assert len(text) >= 100_000
    assert pipe.backend.calls[0] > 100  # one call for all windows of the doc
    assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == expected
    reasoning = doc._.ner_reasoning.split("\n\n")
    assert len(reasoning) == pipe.backend.calls[0]
    assert reasoning[0] == "Window starting 'On day 0'."
    days = [int(r.split()[4].rstrip("'.")) for r in reasoning]
    assert days == sorted(days)  # windows kept in text order


def test_a_sentence_longer_than_the_budget_is_cut_with_overlap():
    # No sentence boundary at all: the window planner must cut inside the sentence.
    text = " ".join(f"then {PEOPLE[i % 3]} saw {PLACES[i % 3]}" for i in range(120))
    expected = sorted(
        (m.start(), m.end())
        for name in PEOPLE + PLACES
        for m in __import__("re").finditer(name, text)
    )
    nlp, pipe = make_nlp(max_chars=300)
    doc = nlp(text)
    assert pipe.backend.calls[0] > 10
    assert [(e.start_char, e.end_char) for e in doc.ents] == expected


def test_sentences_set_by_an_earlier_component_are_used():
    """Boundaries no sentencizer would find (after "wrote", mid-sentence): windows follow them."""
    nlp, pipe = make_nlp(max_chars=100, window_overlap=0)
    windows = []
    original = pipe.backend.generate

    def spy(prompts, settings):
        windows.extend(prompt_text(p) for p in prompts)
        return original(prompts, settings)

    pipe.backend.generate = spy
    text = "Ada Lovelace wrote notes. " * 3 + "Grace Hopper wrote code in New York. " * 3
    doc = nlp.make_doc(text)
    cuts = {i + 1 for i, token in enumerate(doc[:-1]) if token.text == "wrote"}
    for token in doc:
        token.is_sent_start = token.i == 0 or token.i in cuts
    pipe(doc)
    assert all(w.split()[-1] == "wrote" for w in windows[:-1]), windows
    assert "".join(windows) == text
    names = [e.text for e in doc.ents]
    assert names == ["Ada Lovelace"] * 3 + ["Grace Hopper", "New York"] * 3
