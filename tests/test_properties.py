"""Properties of the parser and of grounding over generated inputs (hypothesis).

Derandomized with a bounded number of examples and no deadline, so CI runs the same inputs
every time in a few seconds: the parser never raises and its time grows linearly with the
text; every item the model named is grounded or reported; entities are the text at their
offsets, with no whitespace at their edges.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from typing import Any

import spacy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spacy_reasoningner.protocol import (
    THINK_CLOSE,
    THINK_OPEN,
    Schema,
    parse_completion,
    reference_answer,
    render_answer,
    render_completion,
)

from ._invariants import (
    FRAGMENTS,
    HARD_WORDS,
    SEPARATORS,
    violations,
)
from ._scripted_backend import ScriptedBackend
from ._timing import grows_linearly

SCHEMA = Schema.from_config(["person", "location", "organisation"])


def budget(examples: int):
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- completions

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
answers = st.builds(
    lambda entities, head, tail: head + json.dumps({"entities": entities}) + tail,
    st.dictionaries(
        st.sampled_from(["person", "Location", "organisation", "date", "PERSON "]),
        st.lists(json_values, max_size=5) | json_values,
        max_size=4,
    ),
    st.text(max_size=20),
    st.text(max_size=20),
)
hostile = st.builds(  # deep nesting, long runs, long numbers
    lambda head, unit, n: head + unit * n,
    st.sampled_from(["", '{"entities": {"person": ', "<think>x</think>"]),
    st.sampled_from(["[", "{", '{"a":[', "1", '"', "<think>", "```json"]),
    st.integers(0, 6000),
)
completions = st.one_of(
    hostile,
    st.text(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=80).map("".join),
    answers,
    st.builds(lambda r, a: f"{THINK_OPEN}{r}{THINK_CLOSE}{a}", st.text(max_size=40), answers),
    answers.map(lambda a: a[: len(a) // 2]),  # cut off
)


@budget(400)
@given(completions)
def test_the_parser_never_raises_and_keeps_its_promises(completion):
    parsed = parse_completion(completion, SCHEMA)
    assert len(parsed.issues) == len(set(parsed.issues))
    assert set(parsed.entities) <= set(SCHEMA.labels)
    for mentions in parsed.entities.values():
        assert len(mentions) == len(set(mentions))
        assert all(m and m == m.strip() for m in mentions)
    for text in [parsed.reasoning, *(m for _, m in parsed.mentions())]:
        text.encode("utf-8")  # no unpaired surrogates: every output is writable
    reference_answer(completion)


@budget(12)
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12).map("".join))
def test_parse_time_grows_linearly_with_the_text(unit):
    def parse(size: int) -> None:
        parse_completion(unit * (size // len(unit) + 1), SCHEMA)

    assert grows_linearly(parse, 1_000, 16_000)


@budget(100)
@given(
    st.dictionaries(
        st.sampled_from(SCHEMA.labels),
        st.lists(st.text(min_size=1, max_size=20).filter(str.strip), max_size=4),
        max_size=3,
    ),
    st.text(max_size=60).filter(lambda r: THINK_CLOSE not in r and THINK_OPEN not in r),
)
def test_rendered_answers_read_back(entities, reasoning):
    completion = render_completion(reasoning or None, render_answer(entities, SCHEMA))
    expected = {k: list(dict.fromkeys(m.strip() for m in v)) for k, v in entities.items() if v}
    assert parse_completion(completion, SCHEMA).entities == expected


_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_JSON_FENCE = re.compile(r"```json(.*?)```", re.DOTALL)


def reference_regex_reading(completion: str) -> str | None:
    """The reference implementation's own steps, with its regular expressions."""
    text = _THINK_BLOCK.sub("", completion).replace("<think>", "").replace("</think>", "")
    if "<answer>" in text:
        blocks = _ANSWER_BLOCK.findall(text)
        text = blocks[0] if blocks else text.replace("<answer>", "").replace("</answer>", "")
    if "```json" in text:
        fenced = _JSON_FENCE.findall(text)
        if not fenced:
            return None
        text = fenced[0]
    return text.strip()


@budget(300)
@given(
    st.lists(st.sampled_from([*FRAGMENTS, '{"entities": {"person": ["Ada"]}}']), max_size=30).map(
        "".join
    )
)
def test_the_linear_reference_reading_equals_the_reference_regexes(completion):
    assert reference_answer(completion).loads == loads(reference_regex_reading(completion))


def loads(text: str | None) -> bool:
    try:
        json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


# --------------------------------------------------------------------------- grounding

words_and_separators = st.lists(
    st.tuples(st.sampled_from(HARD_WORDS), st.sampled_from(SEPARATORS)), min_size=1, max_size=60
)


@st.composite
def documents(draw):
    """A text, and what a model might name about it: pieces cut anywhere (edges inside
    words or whitespace), words running into the start of the next one across a line break
    or a tab (the contract and expand modes must not keep the whitespace), words, invented
    strings, and items that are not strings."""
    pairs = draw(words_and_separators)
    text = "".join(w + s for w, s in pairs)
    cut = st.tuples(st.integers(0, len(text)), st.integers(0, 40)).map(
        lambda p: text[p[0] : p[0] + p[1]]
    )
    ends = list(itertools.accumulate(len(w) + len(sep) for w, sep in pairs))
    starts = [0, *ends[:-1]]
    across = st.tuples(st.integers(0, len(pairs) - 1), st.integers(0, 4)).map(
        lambda p: text[starts[p[0]] : ends[p[0]] + p[1]]  # a word, its separator, a bit more
    )
    item = st.one_of(
        cut,
        across,
        across.map(str.upper),
        st.sampled_from(HARD_WORDS),
        st.text(max_size=15),
        json_values,
    )
    items = draw(
        st.dictionaries(
            st.sampled_from(["person", "location", "date"]), st.lists(item, max_size=6), max_size=3
        )
    )
    return text, items


@functools.cache
def pipeline(mode: str, max_chars: int) -> tuple[spacy.language.Language, Any]:
    nlp = spacy.blank("en")
    config = {
        "labels": ["person", "location"],
        "backend": {"@reasoning_ner_backends": "tests.Scripted.v1"},
        "alignment_mode": mode,
        "max_chars": max_chars,
        "spans_key": "candidates",
    }
    return nlp, nlp.add_pipe("reasoning_ner", config=config)


@budget(150)
@given(documents(), st.sampled_from(["strict", "contract", "expand"]), st.sampled_from([100, 2000]))
# The campaign's cases, always run: a contracted match kept the line break it ran over.
@example(
    ("Ada Lovelace\n\nhttp://example.com/a", {"person": ["Lovelace\n\nhttp"]}), "contract", 2000
)
@example(("It costs 3.14 in the\tU.S. now", {"location": ["the\tU"]}), "contract", 2000)
def test_every_named_item_is_grounded_or_reported(document, mode, max_chars):
    """Entities are the text at their offsets, without whitespace at an edge; every item
    the answer named is grounded or reported, and counted."""
    text, items = document
    completion = json.dumps({"entities": items})
    nlp, pipe = pipeline(mode, max_chars)
    pipe.backend = ScriptedBackend(lambda window: completion)
    pipe.stats.clear()
    assert violations(nlp(text), pipe, completion, mode) == []
