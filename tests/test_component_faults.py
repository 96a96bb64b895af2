"""The component on hostile model output and inputs: every item the model named is grounded
or reported, nothing is lost, no backend call is wasted, nothing grows quadratically."""

from __future__ import annotations

import json

from spacy.tokens import Span

from spacy_reasoningner.alignment import REASON_NO_WORD
from spacy_reasoningner.protocol import ISSUE_NON_STRING, ISSUE_OUT_OF_SCHEMA, ISSUE_PROSE

from ._timing import grows_linearly
from .test_component import make_nlp


def test_items_that_are_not_mentions_are_reported_and_counted():
    answer = '{"entities": {"person": [["Ada Lovelace"], {"text": "Bob"}, true, "."], "x": ["y"]}}'
    nlp, pipe = make_nlp(lambda text: answer)
    doc = nlp("Ada Lovelace met Bob. It costs 3.14 here.")
    assert doc.ents == ()
    assert doc._.ner_unaligned == [
        {"text": ".", "label": "person", "reason": REASON_NO_WORD},
        {"text": "y", "label": "x", "reason": "label not in the schema"},
        {"text": '["Ada Lovelace"]', "label": "person", "reason": "not a string mention"},
        {"text": '{"text": "Bob"}', "label": "person", "reason": "not a string mention"},
        {"text": "true", "label": "person", "reason": "not a string mention"},
    ]
    assert doc._.ner_issues == [ISSUE_NON_STRING, ISSUE_OUT_OF_SCHEMA]
    assert pipe.stats["mentions"] == pipe.stats["unaligned"] == 5


def test_parse_issues_are_on_the_doc_once_each():
    nlp, _ = make_nlp(lambda text: 'Sure: {"entities": {"person": ["Ada"]}} ok', max_chars=100)
    doc = nlp("Ada was here. " * 20)  # several windows, the same issue in each
    assert doc._.ner_issues == [ISSUE_PROSE]


def test_empty_and_blank_docs_cost_no_backend_call():
    nlp, pipe = make_nlp()
    docs = list(nlp.pipe(["", "   ", "\n\t \n", "Ada Lovelace."]))
    assert pipe.backend.calls == [1]  # one prompt: the one doc with text
    assert [d._.ner_unaligned for d in docs[:3]] == [[], [], []]
    assert [e.text for e in docs[3].ents] == ["Ada Lovelace"]
    assert pipe.stats["docs"] == 4


def test_a_mention_grounded_in_one_window_is_not_reported_from_another():
    def answer(text: str) -> str:  # names Ada in every window; only the first holds her
        return json.dumps({"entities": {"person": ["Ada Lovelace", "Nobody Atall"]}})

    nlp, _ = make_nlp(answer, max_chars=200, window_overlap=0)
    doc = nlp("Ada Lovelace wrote notes. " + "Then others came along. " * 30)
    assert [e.text for e in doc.ents] == ["Ada Lovelace"]
    assert doc._.ner_unaligned == [
        {"text": "Nobody Atall", "label": "person", "reason": "not found in the text"}
    ]


def test_merging_with_many_existing_entities_is_not_quadratic():
    def run(n: int) -> None:
        nlp, pipe = make_nlp(
            lambda text: json.dumps({"entities": {"person": ["b"]}}), max_chars=10**7
        )
        doc = nlp.make_doc("a b " * n)
        doc.ents = [Span(doc, 2 * i, 2 * i + 1, label="X") for i in range(n)]
        assert len(pipe(doc).ents) == 2 * n

    assert grows_linearly(run, 500, 8_000)  # 8k existing + 8k new took 57 s
