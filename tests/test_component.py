"""The reasoning_ner component with a scripted backend: config, batching, annotations, scoring."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest
import spacy
from confection import ConfigValidationError
from spacy.tokens import Span
from spacy.training import Example

from spacy_reasoningner.backends import Completion, GenerationSettings
from spacy_reasoningner.grounded import grounded_answer_grammar
from spacy_reasoningner.models import DEFAULT_MODEL
from spacy_reasoningner.protocol import render_completion
from spacy_reasoningner.settings import ComponentSettings
from spacy_reasoningner.task import NERTask

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


def test_equal_spans_under_two_labels_follow_the_reasoning_first():
    """A mention answered under two labels gets the one its reasoning gives it; the schema
    order decides only where the reasoning gives none."""
    answer = '{"entities": {"location": ["Jordan", "Amman"], "person": ["Jordan", "Amman"]}}'
    reasoning = '"Jordan" is a location.\nAmman is the capital.'
    nlp, _ = make_nlp(lambda t: render_completion(reasoning, answer), labels=["person", "location"])
    doc = nlp("Jordan won in Amman.")
    assert [(e.text, e.label_) for e in doc.ents] == [("Jordan", "location"), ("Amman", "person")]


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


class RequestSpy(ScriptedBackend):
    """A scripted backend that also receives the requests (a ``Constrainable``)."""

    def __init__(self, answer):
        super().__init__(answer)
        self.requested = []

    def generate_constrained(self, requests, settings, *, reasoning):
        self.requested.append((requests, settings, reasoning))
        return self.generate([r.messages for r in requests], settings)


@pytest.mark.parametrize("reasoning", [True, False])
def test_reasoning_and_answer_shapes_reach_backends_explicitly(reasoning):
    nlp, pipe = make_nlp(reasoning=reasoning, max_chars=100, window_overlap=0)
    pipe.backend = spy = RequestSpy(oracle)
    nlp("Ada Lovelace wrote notes in London. " * 2 + "Grace Hopper wrote code in Paris. " * 2)
    [(requests, settings, asked_reasoning)] = spy.requested
    assert asked_reasoning is reasoning
    assert settings.chat_template_kwargs == {}  # nothing smuggled through template kwargs
    # One request per window, each with the protocol's answer schema with the labels and the
    # grammar of its own window's spans.
    assert len(requests) > 1 and [r.sample for r in requests] == [0] * len(requests)
    for request in requests:
        schema = request.answer.schema
        assert set(schema["properties"]["entities"]["properties"]) == {"location", "person"}
        window = prompt_text(request.messages)
        assert request.answer.grammar == grounded_answer_grammar(pipe.task.schema, window)
    direct = "Answer with the JSON only."
    assert all((direct in r.messages[0]["content"]) is not reasoning for r in requests)


def test_samples_are_numbered_requests_sharing_their_window_shape():
    nlp, pipe = make_nlp(samples=3, spans_key="sc", generation={"temperature": 0.7, "seed": 1})
    pipe.backend = spy = RequestSpy(oracle)
    nlp("Ada Lovelace wrote notes in London.")
    [(requests, _, _)] = spy.requested
    assert [r.sample for r in requests] == [0, 1, 2]
    assert len({id(r.answer) for r in requests}) == 1  # one grammar for the window's samples
    assert all(r.messages == requests[0].messages for r in requests)


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


# --------------------------------------------------------------------------- streaming


def test_nlp_pipe_calls_the_backend_in_chunks_of_the_components_batch_size():
    nlp, pipe = make_nlp(batch_size=3)
    consumed = []

    def texts():
        for i in range(8):
            consumed.append(i)
            yield f"Grace Hopper visited Paris on day {i}."

    stream = nlp.pipe(texts())  # spaCy passes its own batch_size (1000) to the component
    first = next(stream)
    assert first.text.endswith("day 0.") and len(first.ents) == 2
    assert len(consumed) <= 4  # yielded after the first chunk, not after all 8 texts
    rest = list(stream)
    assert pipe.backend.calls == [3, 3, 2] and len(rest) == 7
    list(nlp.pipe([f"Ada Lovelace {i}." for i in range(4)], batch_size=2))
    assert pipe.backend.calls[3:] == [2, 2]  # a smaller batch_size from nlp.pipe is kept


def test_progress_bar_goes_to_stderr(capsys):
    nlp, _ = make_nlp(progress=True, batch_size=2)
    list(nlp.pipe(["Ada Lovelace.", "Paris.", "London."]))
    err = capsys.readouterr().err
    assert "reasoning_ner" in err and "3doc" in err.replace(" ", "")


def test_prompts_and_completions_are_logged_at_debug_level(caplog):
    nlp, _ = make_nlp()
    with caplog.at_level("DEBUG", logger="spacy_reasoningner.component"):
        nlp("Ada Lovelace in Paris.")
    assert "Text: Ada Lovelace in Paris." in caplog.text
    assert oracle("Ada Lovelace in Paris.") in caplog.text


# --------------------------------------------------------------------------- prompt control

EXAMPLES = [
    {
        "text": "Marie Curie worked in Paris.",
        "entities": {"person": ["Marie Curie"], "location": ["Paris"]},
        "reasoning": "Marie Curie is a scientist; Paris is a city.",
    },
    {"text": "It rained.", "entities": {}},
]


def captured_prompts(nlp, pipe, text="Ada came."):
    seen = []
    original = pipe.backend.generate

    def spy(prompts, settings):
        seen.extend(prompts)
        return original(prompts, settings)

    pipe.backend.generate = spy
    nlp(text)
    return seen[0]


def test_the_default_prompt_is_the_papers_single_user_turn():
    nlp, pipe = make_nlp()
    [turn] = captured_prompts(nlp, pipe)
    assert turn["role"] == "user"
    assert turn["content"].startswith(
        "Extract the named entities of the types listed in the schema from the text below"
    )


def test_few_shot_examples_are_earlier_turns_and_the_instruction_is_replaced():
    instruction = "Find the names of people and places."
    nlp, pipe = make_nlp(examples=EXAMPLES, instruction=instruction)
    messages = captured_prompts(nlp, pipe)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"].startswith(instruction)
    assert messages[0]["content"].endswith("Text: Marie Curie worked in Paris.")
    assert messages[1]["content"] == (
        "<think>\nMarie Curie is a scientist; Paris is a city.\n</think>\n"
        # Labels in the schema's order, as every answer is rendered.
        '{"entities": {"location": ["Paris"], "person": ["Marie Curie"]}}'
    )
    assert messages[3]["content"] == '{"entities": {}}'
    assert messages[4]["content"].startswith(instruction)
    assert messages[4]["content"].endswith("Text: Ada came.")


def test_examples_without_reasoning_when_reasoning_is_off():
    nlp, pipe = make_nlp(examples=EXAMPLES, reasoning=False)
    messages = captured_prompts(nlp, pipe)
    assert messages[1]["content"] == (
        '{"entities": {"location": ["Paris"], "person": ["Marie Curie"]}}'
    )


def test_prompt_control_is_saved_with_the_pipeline(tmp_path):
    nlp, pipe = make_nlp(examples=EXAMPLES, instruction="Find names.")
    before = pipe.task.prompt("Ada came.")
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline").get_pipe("reasoning_ner")
    assert loaded.task.prompt("Ada came.") == before


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({"text": "Ada.", "entities": {"city": ["Ada"]}}, "label 'city' is not one of"),
        ({"text": "Ada.", "entities": {"person": ["Bob"]}}, "'Bob' of 'person' is not in"),
        ({"text": "Ada.", "entites": {}}, r"unknown key\(s\) \['entites'\]"),
        ("Ada.", "must be an object"),
    ],
)
def test_bad_examples_say_what_to_fix(example, message):
    with pytest.raises(ValueError, match=message):
        NERTask.from_labels(LABELS, examples=[example])
    if isinstance(example, dict):  # the component's config is checked the same way
        with pytest.raises(ValueError, match=message):
            make_nlp(examples=[example])


# --------------------------------------------------------------------------- accounting


def test_usage_per_window_per_doc_and_running_totals():
    nlp, pipe = make_nlp(max_chars=100, window_overlap=0, keep_raw=True)
    text = "Ada Lovelace wrote notes in London. " * 2 + "Grace Hopper wrote code in Paris. " * 2
    doc = nlp(text)
    usage = doc._.ner_usage
    assert usage["backend"] == "ScriptedBackend"
    assert len(usage["windows"]) == pipe.backend.calls[0] > 1
    assert usage["prompt_tokens"] is None  # this backend does not count tokens
    assert usage["seconds"] == pytest.approx(sum(w["seconds"] for w in usage["windows"]))
    assert usage["seconds"] > 0 and pipe.stats["seconds"] == pytest.approx(usage["seconds"])
    # keep_raw records the messages sent, whatever the backend.
    assert [r["messages"] for r in doc._.ner_raw] == [
        pipe.task.prompt(text[w["start"] : w["end"]]) for w in usage["windows"]
    ]


def test_token_counts_of_a_real_model(tiny_model_dir):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person"],
            "backend": {"model": str(tiny_model_dir), "structured_output": False},
            "generation": {"max_new_tokens": 5},
            "keep_raw": True,
        },
    )
    doc = nlp("Ada Lovelace.")
    [window] = doc._.ner_usage["windows"]
    [raw] = doc._.ner_raw
    assert window["completion_tokens"] == 5  # the random model runs to the budget
    assert window["prompt_tokens"] == pipe.backend.count_tokens(raw["prompt"])
    assert doc._.ner_usage["backend"].startswith("transformers:")
    assert doc._.ner_usage["constraints"] == {"none": 1}  # structured_output false
    assert pipe.stats["completion_tokens"] == 5


def test_usage_names_the_model_as_configured_not_its_cache_folder():
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("reasoning_ner", config={"labels": ["person"]})
    # The default: a bundled model, resolved to a cache folder when it loads.
    assert pipe.backend_name == f"transformers:{DEFAULT_MODEL}"


def test_extensions_keep_lists_after_a_docbin_round_trip():
    from spacy.tokens import DocBin

    answer = '{"entities": {"person": ["Ada", "Zed"]}}'
    nlp, _ = make_nlp(lambda t: answer, keep_raw=True, spans_key="sc")
    doc = nlp("Ada came.")
    again = next(DocBin(docs=[doc], store_user_data=True).get_docs(nlp.vocab))
    for name in ("ner_unaligned", "ner_raw"):
        assert again._.get(name) == doc._.get(name) and isinstance(again._.get(name), list)
    assert again._.ner_unaligned == [
        {"text": "Zed", "label": "person", "reason": "not found in the text"}
    ]
    assert isinstance(again._.ner_usage["windows"], list)
    assert list(again.spans["sc"].attrs["scores"]) == [1.0]


# --------------------------------------------------------------------------- confidence


class Sampler(ScriptedBackend):
    """Answers the n-th copy of a prompt within one call with ``answers[n]``."""

    def __init__(self, answers):
        super().__init__(lambda text: "")
        self.answers = answers

    def generate(self, prompts, settings):
        self.calls.append(len(prompts))
        seen = Counter()
        out = []
        for prompt in prompts:
            text = prompt_text(prompt)
            out.append(Completion(self.answers[seen[text] % len(self.answers)]))
            seen[text] += 1
        return out


def test_sampled_completions_vote_and_scores_go_to_doc_spans():
    answers = [
        '<think>one</think>{"entities": {"person": ["Ada"], "location": ["London"]}}',
        '<think>two</think>{"entities": {"person": ["Ada"]}}',
        '<think>three</think>{"entities": {"person": ["Ada"], "location": ["Paris"]}}',
    ]
    nlp, pipe = make_nlp(samples=3, spans_key="sc", generation={"temperature": 0.7}, keep_raw=True)
    pipe.backend = Sampler(answers)
    doc = nlp("Ada went from London to Paris.")
    assert pipe.backend.calls == [3]  # the samples of the window share one backend call
    assert [(e.text, e.label_) for e in doc.ents] == [("Ada", "person")]
    group = doc.spans["sc"]
    scored = {(s.text, s.label_): x for s, x in zip(group, group.attrs["scores"], strict=True)}
    assert scored == pytest.approx(
        {("Ada", "person"): 1.0, ("London", "location"): 1 / 3, ("Paris", "location"): 1 / 3}
    )
    assert doc._.ner_reasoning == "two"  # the sample that agrees with the majority
    assert len(doc._.ner_raw) == 3 and pipe.stats["completions"] == 3
    assert doc._.ner_usage["windows"][0]["completions"] == 3


def test_a_lower_threshold_admits_minority_entities():
    answers = ['{"entities": {"person": ["Ada"], "location": ["London"]}}', '{"entities": {}}']
    nlp, pipe = make_nlp(samples=2, spans_key="sc", threshold=0.5, generation={"temperature": 1.0})
    pipe.backend = Sampler(answers)
    assert [e.text for e in nlp("Ada in London.").ents] == ["Ada", "London"]  # 1/2 >= 0.5
    nlp, pipe = make_nlp(samples=2, spans_key="sc", threshold=0.6, generation={"temperature": 1.0})
    pipe.backend = Sampler(answers)
    assert nlp("Ada in London.").ents == ()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"samples": 3, "spans_key": "sc"}, "needs sampling: set generation.temperature"),
        ({"samples": 3, "generation": {"temperature": 0.7}}, "set spans_key"),
        ({"threshold": 1.5}, r"threshold must be in \[0, 1\]"),
        ({"samples": 0}, "samples must be >= 1"),
        ({"instruction": " "}, "instruction is empty"),
    ],
)
def test_confidence_and_prompt_settings_are_checked(config, message):
    with pytest.raises(ValueError, match=message):
        make_nlp(**config)


def test_to_json_reads_the_components_own_extensions():
    """What ``predict`` and ``annotate`` write: the text, the entities with character offsets,
    and this component's reasoning, unaligned mentions and truncation flag, under the
    extension names it was configured with."""

    def answer(text):
        return '<think>Ada is a person.</think>{"entities": {"person": ["Ada Lovelace", "Zed"]}}'

    nlp, pipe = make_nlp(answer, reasoning_attr="why", unaligned_attr="lost", truncated_attr="cut")
    doc = nlp("Hi, Ada Lovelace.")
    assert pipe.to_json(doc) == {
        "text": "Hi, Ada Lovelace.",
        "entities": [{"text": "Ada Lovelace", "label": "person", "start": 4, "end": 16}],
        "reasoning": "Ada is a person.",
        "unaligned": [{"text": "Zed", "label": "person", "reason": "not found in the text"}],
        "truncated": False,
    }


@pytest.mark.parametrize("method, args", [("to_bytes", ()), ("from_bytes", (b"",))])
def test_bytes_serialization_names_the_component_and_the_way_that_works(method, args):
    _, pipe = make_nlp()
    with pytest.raises(NotImplementedError, match=r"^reasoning_ner .*nlp\.to_disk / spacy\.load"):
        getattr(pipe, method)(*args)


@pytest.mark.parametrize("reasoning", ["Ada is a person.", None])
def test_the_target_completion_is_what_the_parser_reads_back(reasoning):
    """The completion a perfect model writes (the SFT target): the think block when there is
    reasoning, then the answer as the protocol renders it, labels in the schema's (sorted)
    order whatever the order given."""
    task = NERTask.from_labels(LABELS)
    target = task.target({"person": ["Ada", "Ada Lovelace"], "location": ["London"]}, reasoning)
    answer = '{"entities": {"location": ["London"], "person": ["Ada", "Ada Lovelace"]}}'
    assert target == (f"<think>\n{reasoning}\n</think>\n{answer}" if reasoning else answer)
    parsed = task.parse(target)
    assert parsed.reasoning == (reasoning or "")
    assert sorted(parsed.mentions()) == [
        ("Ada", "person"),
        ("Ada Lovelace", "person"),
        ("London", "location"),
    ]


def test_the_backend_is_named_once_per_batch_not_per_doc():
    """``ner_usage`` names the engine; its identity is asked once per ``pipe`` batch."""

    class Named(ScriptedBackend):
        asked = 0

        @property
        def identity(self):
            Named.asked += 1
            return {"backend": "scripted", "model": "oracle"}

    nlp, pipe = make_nlp(batch_size=4)
    pipe.backend = Named(oracle)
    docs = list(nlp.pipe([f"Ada Lovelace in Paris, day {i}." for i in range(8)]))
    assert {d._.ner_usage["backend"] for d in docs} == {"scripted:oracle"}
    assert Named.asked == 2
