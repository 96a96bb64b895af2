"""The reference implementation's reading of a completion (``reference_answer``) and its
normalization, on the cases where it differs from the component's tolerant parser."""

from __future__ import annotations

import pytest

from spacy_reasoningner.protocol import normalize_mention, reference_answer, string_prf

ANSWER = '{"entities": {"Person ": [" Ada Lovelace", "Babbage"], "location": ["London"]}}'
PAIRS = (("Ada Lovelace", "person"), ("Babbage", "person"), ("London", "location"))


@pytest.mark.parametrize(
    "completion",
    [
        ANSWER,
        f"<think>\nAda is a person.\n</think>\n{ANSWER}",
        f"<think>a</think><think>b</think>{ANSWER}",
        f"</think>{ANSWER}",  # the template opened the block
        f"<think>{ANSWER}",  # a stray tag is dropped, what follows is read
        f"Here it is: <answer>{ANSWER}</answer> Done.",
        f"<answer>{ANSWER}",  # unclosed: the tag is dropped
        f"Sure.\n```json\n{ANSWER}\n```\nThat is all.",
    ],
)
def test_answers_the_reference_reads(completion: str) -> None:
    answer = reference_answer(completion)
    assert (answer.loads, answer.readable, answer.mentions) == (True, True, PAIRS)


@pytest.mark.parametrize(
    "completion",
    [
        f"The entities: {ANSWER}",  # prose around bare JSON
        f"<think>\nAda is a person.\n{ANSWER}",  # unclosed think: the reasoning stays
        f"```\n{ANSWER}\n```",  # a fence without the json tag
        f"```json\n{ANSWER}",  # an unclosed json fence
        "{'entities': {'person': ['Ada Lovelace']}}",  # single quotes
        '{"entities": {"person": ["Ada Lovelace"],}}',  # trailing comma
        '{"entities": {"person": ["Ada Lov',  # cut by the token budget
        "",
    ],
)
def test_answers_the_reference_does_not_read(completion: str) -> None:
    answer = reference_answer(completion)
    assert not answer.loads and answer.mentions == ()
    assert not answer.in_schema(["person"])


def test_shapes_of_the_value() -> None:
    assert reference_answer("[1, 2]") == reference_answer("{}")  # no entities, no failure
    assert reference_answer("[1, 2]").in_schema([])
    assert not reference_answer('{"entities": [{"text": "Ada"}]}').readable
    assert not reference_answer('{"entities": {"person": 3}}').readable
    assert not reference_answer('{"entities": {"person": null}}').readable
    # The reference iterates what a label holds: a string gives its characters, an object
    # its keys, and non-string list items are skipped.
    assert reference_answer('{"entities": {"person": "Ada"}}').mentions == (
        ("A", "person"),
        ("d", "person"),
        ("a", "person"),
    )
    assert reference_answer('{"entities": {"person": {"Ada": 1}}}').mentions == (("Ada", "person"),)
    assert reference_answer('{"entities": {"person": ["Ada", 7, null]}}').mentions == (
        ("Ada", "person"),
    )


def test_schema_check_counts_every_label() -> None:
    answer = reference_answer('{"entities": {"person": ["Ada"], "date": ["1843"]}}')
    assert not answer.in_schema(["person", "location"])
    assert answer.in_schema(["Person", "date"])
    # Out-of-schema mentions are predictions like any other in the metric.
    assert string_prf(answer.mentions, [("Ada", "person")]).n_pred == 2


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("U.S.", "us"),
        ("The Beatles", "beatles"),
        ("\u201cHello\u201d", "\u201chello\u201d"),  # Unicode quotes are not ASCII punctuation
        ("Caf\u00e9 \u2013 Bar", "caf\u00e9 \u2013 bar"),
        ("rock-n-roll", "rocknroll"),
    ],
)
def test_normalization_removes_ascii_punctuation_only(raw: str, normalized: str) -> None:
    assert normalize_mention(raw) == normalized
