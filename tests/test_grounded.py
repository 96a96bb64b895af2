"""Grounded answers: the grammar accepts exactly the protocol's answers whose mentions are
spans of the text, and every accepted mention grounds."""

from __future__ import annotations

import json
import re

import pytest

from spacy_reasoningner.alignment import find_word_occurrences
from spacy_reasoningner.grounded import grounded_answer_grammar
from spacy_reasoningner.protocol import Schema, parse_completion, render_answer

xgrammar = pytest.importorskip("xgrammar")

TEXT = 'Ada Lovelace met "Charles" Babbage of Apple Inc. in the U.S., then Zürich.\nNext line.'
SCHEMA = Schema.from_config(["person", "organization", "location"])


def accepts(grammar: str, answer: str) -> bool:
    """Whether the grammar accepts ``answer`` as a complete answer."""
    # A token vocabulary is needed to compile; accept_string works on characters.
    info = xgrammar.TokenizerInfo(["<eos>", "a"], stop_token_ids=[0])
    matcher = xgrammar.GrammarMatcher(xgrammar.GrammarCompiler(info).compile_grammar(grammar))
    return matcher.accept_string(answer) and matcher.is_completed()


def answer(entities: dict[str, list[str]], schema: Schema = SCHEMA) -> str:
    return render_answer(entities, schema)


def spans_by_brute_force(text: str) -> set[str]:
    """Every substring from the start of a word to the end of a word or of a full stop
    attached to one: what the grammar is meant to allow."""
    tokens = list(re.finditer(r"\w+|[^\w\s]", text))
    spans = set()
    for i, first in enumerate(tokens):
        if not re.match(r"\w", first.group()):
            continue
        for j in range(i, len(tokens)):
            last = tokens[j]
            stop = last.group() == "." and tokens[j - 1].end() == last.start() and j > i
            if re.match(r"\w", last.group()) or stop:
                spans.add(text[first.start() : last.end()])
    return spans


@pytest.fixture(scope="module")
def grammar() -> str:
    return grounded_answer_grammar(SCHEMA, TEXT)


def test_every_span_of_the_text_is_accepted_and_grounds(grammar: str) -> None:
    spans = sorted(spans_by_brute_force(TEXT))
    assert {"Ada Lovelace", "Apple Inc.", "U.S.", "Zürich", 'met "Charles'} <= set(spans)
    for mention in spans:
        text = answer({"person": [mention]})
        assert accepts(grammar, text), mention
        parsed = parse_completion(text, SCHEMA)
        assert parsed.valid and parsed.entities == {"person": [mention]}
        assert find_word_occurrences(TEXT, mention), mention


@pytest.mark.parametrize(
    "mention",
    [
        "Grace Hopper",  # not in the text
        "da Lovelace",  # starts inside a word
        "Ada Lovelac",  # ends inside a word
        " Ada",  # starts on a space
        "Ada  Lovelace",  # spacing differs from the text
        "ada lovelace",  # case differs from the text
        "Babbage of",  # fine: ends on a word (checked below as accepted)
        "Zürich.",  # a sentence's full stop is attached: accepted too
        'Charles"',  # ends on a quote
        "U.S.,",  # ends on a comma
        "Next line. ",  # ends on a space
        "",  # empty
    ],
)
def test_mentions_that_are_not_spans_are_refused(grammar: str, mention: str) -> None:
    expected = mention in spans_by_brute_force(TEXT)
    assert accepts(grammar, answer({"location": [mention]})) is expected
    assert expected == (mention in ("Babbage of", "Zürich."))


def test_labels_in_schema_order_at_most_once(grammar: str) -> None:
    assert accepts(grammar, '{"entities": {}}')
    assert accepts(grammar, answer({"location": ["Zürich"], "person": ["Ada"]}))
    both = '{"entities": {"location": ["Zürich"], "organization": ["Apple Inc."], "person": []}}'
    assert accepts(grammar, both)
    assert not accepts(grammar, '{"entities": {"person": ["Ada"], "location": ["Zürich"]}}')
    assert not accepts(grammar, '{"entities": {"person": ["Ada"], "person": ["Babbage"]}}')
    assert not accepts(grammar, '{"entities": {"city": ["Zürich"]}}')
    assert not accepts(grammar, '{"entities": {"person": "Ada"}}')


def test_rendered_answers_are_accepted_whatever_order_the_entities_come_in(grammar: str) -> None:
    entities = {"person": ["Ada Lovelace"], "location": ["Zürich"], "organization": ["Apple Inc."]}
    assert accepts(grammar, answer(entities))
    assert accepts(grammar, answer(dict(reversed(list(entities.items())))))


def test_special_characters_are_escaped_as_json_escapes_them() -> None:
    text = 'He said "Ada\\Byron" and\tleft\nDr. Who\u2019s box'
    grammar = grounded_answer_grammar(SCHEMA, text)
    for mention in ['said "Ada\\Byron', "and\tleft\nDr. Who", "Who\u2019s"]:
        encoded = answer({"person": [mention]})
        assert "\\" in json.dumps(mention) or "\u2019" in mention
        assert accepts(grammar, encoded), mention
        assert parse_completion(encoded, SCHEMA).entities == {"person": [mention]}
    # The raw control character is not valid JSON and not allowed.
    assert not accepts(grammar, '{"entities": {"person": ["and\tleft"]}}')


def test_number_of_mentions_is_bounded() -> None:
    grammar = grounded_answer_grammar(SCHEMA, "Ada and Bob and Cy", max_items=2)
    assert accepts(grammar, answer({"person": ["Ada", "Bob"]}))
    assert not accepts(grammar, answer({"person": ["Ada", "Bob", "Cy"]}))


def test_mentions_per_type_are_bounded_by_the_words_they_can_start_on() -> None:
    # "Lotte 46 6 54": four words, so a fifth mention can only repeat one (a looping model).
    grammar = grounded_answer_grammar(SCHEMA, "Lotte 46 6 54")
    assert accepts(grammar, answer({"organization": ["Lotte", "46", "6", "54"]}))
    looping = '{"entities": {"organization": ["Lotte", "46", "6", "54", "46"]}}'
    assert not accepts(grammar, looping)
    assert accepts(grammar, answer({"person": ["46"], "organization": ["Lotte", "46"]}))


def test_text_without_words_allows_only_the_empty_answer() -> None:
    grammar = grounded_answer_grammar(SCHEMA, " -- ... ")
    assert accepts(grammar, '{"entities": {}}')
    assert not accepts(grammar, '{"entities": {"person": []}}')


def test_grammar_grows_linearly_with_the_text() -> None:
    sentence = "Ada Lovelace worked with Charles Babbage in London on the Analytical Engine. "
    one = len(grounded_answer_grammar(SCHEMA, sentence))
    twenty = len(grounded_answer_grammar(SCHEMA, sentence * 20))
    assert twenty < 25 * one


def test_the_task_gives_each_text_its_grammar_when_grounded() -> None:
    from spacy_reasoningner.task import NERTask

    texts = ["Ada met Babbage.", "Grace Hopper."]
    requests = NERTask(SCHEMA).requests(texts)
    assert [r.answer.grammar for r in requests] == [
        grounded_answer_grammar(SCHEMA, t) for t in texts
    ]
    assert requests[1].answer.constraint == requests[1].answer.grammar
    assert requests[1].answer.schema == NERTask(SCHEMA).answer_schema(texts[1])
    plain = NERTask(SCHEMA, grounded=False).requests(texts)
    assert plain[0].answer.grammar is None and plain[0].answer.constraint == plain[0].answer.schema
    assert (
        "grammar" in requests[0].answer.describe() and "grammar" not in plain[0].answer.describe()
    )


def test_grammars_are_written_only_for_backends_that_read_them(monkeypatch) -> None:
    """A backend that takes no grammar (here a plain scripted one, as for a rerun over stored
    completions) makes the component write none; one that reads them gets each text's grammar
    written once, however often it reads it and however many samples repeat it."""
    import spacy

    from spacy_reasoningner import task as task_module
    from spacy_reasoningner.task import NERTask

    from ._scripted_backend import ScriptedBackend

    written = []

    def counted(schema, text):
        written.append(text)
        return grounded_answer_grammar(schema, text)

    monkeypatch.setattr(task_module, "grounded_answer_grammar", counted)
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("reasoning_ner", config={"labels": ["person"]})
    pipe.backend = ScriptedBackend(lambda text: '{"entities": {"person": ["Ada"]}}')
    docs = list(nlp.pipe(["Ada met Babbage.", "Ada ran."]))
    assert [e.text for d in docs for e in d.ents] == ["Ada", "Ada"] and written == []
    requests = NERTask(SCHEMA).requests(["Ada met Babbage.", "Grace Hopper."])
    for _ in range(3):
        requests[1].answer.grammar, requests[1].answer.describe(), requests[1].answer.constraint
    assert written == ["Grace Hopper."]
    # The samples of a window, and equal windows, share one shape: one grammar serves them all.
    samples = NERTask(SCHEMA).requests(["Ada ran.", "Ada ran."], samples=3)
    assert [r.sample for r in samples] == [0, 1, 2, 0, 1, 2]
    assert len({id(r.answer.grammar) for r in samples}) == 1
    assert written == ["Grace Hopper.", "Ada ran."]
