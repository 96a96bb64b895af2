"""What must hold for any text and any model answer, and odd material to try it with.

Shared by the property tests (``tests/test_properties.py``) and ``bench/robustness.py``:

* ``HARD_WORDS``, ``SEPARATORS``: text that trips grounding (case, combining marks in both
  normal forms, folding that changes length, URLs, punctuation-only tokens, scripts without
  spaces, odd whitespace);
* ``FRAGMENTS``: pieces of model output to glue into completions (structure, tags, fences,
  escapes, literals, text);
* ``violations``: the invariants an annotated Doc breaks.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from spacy.tokens import Doc

from spacy_reasoningner.alignment import REASON_NOT_FOUND

HARD_WORDS = [
    *("Ada", "Lovelace", "ada", "LOVELACE", "London", "New", "York", "U.S.", "3.14", "the"),
    *("Amélie", unicodedata.normalize("NFD", "Amélie"), "Straße", "STRASSE", "İstanbul"),
    *("北京大学", "😀", "https://example.com/a/b", "-", ".", "/", "(", ")", "don't", "ﬁne", "Ǆ"),
]
SEPARATORS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", ", ", ". ", "\u3000"]
FRAGMENTS = [
    *("{", "}", "[", "]", '"', "'", ":", ",", " ", "\n", "\\", "\\u", "\\ud800", "d83d"),
    *('"entities"', "entities", '"person"', "'location'", "Person", "null", "true", "None"),
    *("NaN", "1e999", "-", "42", "<think>", "</think>", "```json", "```", "<answer>"),
    *("</answer>", "Ada", "Lovelace", "Zoë", "北京", "😀", "\u0301", "\x00"),
]


def violations(doc: Doc, pipe: Any, completion: str, alignment_mode: str) -> list[str]:
    """The invariants ``doc`` breaks, after ``pipe`` (a reasoning_ner component with a
    ``spans_key``, statistics cleared before the Doc) annotated it from ``completion``
    (the answer of every window): entities and candidates are the text at their offsets
    with no whitespace at an edge; every item the answer named is grounded somewhere in the
    Doc or reported in ``ner_unaligned``; the statistics count every named item."""
    found = []
    text = doc.text
    spans = [*doc.ents, *doc.spans[pipe.settings.spans_key]]
    for span in spans:
        if span.text != text[span.start_char : span.end_char]:
            found.append(f"entity {span.text!r} is not the text at its offsets")
        if not span.text or span.text != span.text.strip():
            found.append(f"entity {span.text!r} has whitespace at an edge")
    parsed = pipe.task.parse(completion)
    unaligned = doc._.get(pipe.ext["unaligned"])
    reasons = {(u["text"], u["label"]): u.get("reason") for u in unaligned}
    reported = set(reasons)
    # Checked against the Doc itself, not by grounding again: a named mention is a span of
    # its label in doc.ents or doc.spans, or reported with a reason; "not found" is checked
    # by str.find where the Doc was one window (a window's answer is grounded in that
    # window: a mention across a window boundary, or in another window only, is not in it).
    one_window = pipe.stats["windows"] == 1
    for mention, label in parsed.mentions():
        if (mention, label) in reasons:
            reason = reasons[(mention, label)]
            if not reason:
                found.append(f"mention {mention!r} ({label}) reported without a reason")
            elif reason == REASON_NOT_FOUND and one_window and mention.strip() and mention in text:
                found.append(f"mention {mention!r} reported not found, but it is in the text")
        elif not any(span.label_ == label and _same(span.text, mention) for span in spans):
            found.append(f"mention {mention!r} ({label}) neither in the Doc nor reported")
    for label, mention in parsed.out_of_schema:
        if (mention, label) not in reported:
            found.append(f"{mention!r} under {label!r}, outside the schema, not reported")
    for label, item, _ in parsed.rejected:
        if (item, label) not in reported:
            found.append(f"non-mention {item!r} ({label}) not reported")
    named = len(parsed.mentions()) + len(parsed.out_of_schema) + len(parsed.rejected)
    if pipe.stats["mentions"] != named * pipe.stats["windows"]:
        found.append("statistics: named items do not add up")
    return found


def _same(span_text: str, mention: str) -> bool:
    """The span shows the mention, up to case, Unicode form and spacing; token alignment may
    widen or narrow it by a piece of a word, so either may hold the other."""

    def fold(value: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", value).casefold().split())

    span, named = fold(span_text), fold(mention)
    return bool(span) and (span in named or named in span)
