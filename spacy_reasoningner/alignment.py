"""Ground generated mentions in the original text: mention -> every occurrence -> token span.

The model answers with strings grouped by label, in any order and with any duplication, so
every mention is searched in the whole text region it was generated from (never from a moving
cursor). Exact matches win; otherwise a case-insensitive, whitespace-tolerant regular
expression is matched against the original text, so offsets always refer to the unmodified
text (no lowercased copy whose length could differ). Character spans are then snapped to
spaCy tokens, and overlapping candidates are resolved deterministically.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter

from spacy.tokens import Doc, Span
from spacy.util import registry

ALIGNMENT_MODES = ("strict", "contract", "expand")


@dataclass(frozen=True)
class Unaligned:
    """A mention the model produced that could not become a span, and why."""

    text: str
    label: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "label": self.label, "reason": self.reason}


REASON_NOT_FOUND = "not found in the text"
REASON_INSIDE_WORD = "found only inside other words"
REASON_NO_TOKENS = "does not cover a whole token"
REASON_NOT_IN_SCHEMA = "label not in the schema"


@lru_cache(maxsize=4096)
def _fuzzy_pattern(mention: str) -> re.Pattern[str]:
    words = mention.split()
    return re.compile(r"\s+".join(map(re.escape, words)), re.IGNORECASE)


def find_occurrences(
    text: str, mention: str, start: int = 0, end: int | None = None, *, fuzzy: bool = False
) -> list[tuple[int, int]]:
    """Character offsets of every occurrence of ``mention`` in ``text[start:end]``: exact
    ones, or with ``fuzzy`` those that may differ in case and in whitespace."""
    end = len(text) if end is None else end
    if fuzzy:
        if not mention.split():
            return []
        return [m.span() for m in _fuzzy_pattern(mention).finditer(text, start, end)]
    found = []
    position = text.find(mention, start, end)
    while position >= 0:
        found.append((position, position + len(mention)))
        position = text.find(mention, position + 1, end)
    return found


def find_word_occurrences(text: str, mention: str, *, fuzzy: bool = False) -> list[tuple[int, int]]:
    """Occurrences of ``mention`` that do not start or end inside a word ("a" as a letter
    does not occur in "was"); none for an empty mention, which would occur everywhere."""
    if not mention:
        return []
    found = find_occurrences(text, mention, fuzzy=fuzzy)
    return [(s, e) for s, e in found if not cuts_word(text, s, e)]


def cuts_word(text: str, start: int, end: int) -> bool:
    """True when the match starts or ends in the middle of a word of the text."""
    before = start > 0 and text[start - 1].isalnum() and text[start].isalnum()
    after = end < len(text) and text[end].isalnum() and text[end - 1].isalnum()
    return before or after


def _snap(
    doc: Doc, text: str, occurrences: list[tuple[int, int]], label: str, alignment_mode: str
) -> tuple[list[Span], str]:
    """Token spans of the usable occurrences, and the reason when there are none."""
    spans, reason = [], REASON_NOT_FOUND
    for char_start, char_end in occurrences:
        span = doc.char_span(char_start, char_end, label=label)
        if span is None:
            if cuts_word(text, char_start, char_end):
                reason = REASON_INSIDE_WORD if reason == REASON_NOT_FOUND else reason
                continue
            span = doc.char_span(char_start, char_end, label=label, alignment_mode=alignment_mode)
            if span is None or not len(span):
                reason = REASON_NO_TOKENS
                continue
        spans.append(span)
    return spans, reason


def ground_mentions(
    doc: Doc,
    mentions: Iterable[tuple[str, str]],
    *,
    start: int = 0,
    end: int | None = None,
    fuzzy: bool = True,
    alignment_mode: str = "expand",
    text: str | None = None,
) -> tuple[list[Span], list[Unaligned]]:
    """Spans for every occurrence of every (mention, label) within ``doc.text[start:end]``.

    Exact occurrences are used when one of them is usable; otherwise, with ``fuzzy``, those
    differing in case or whitespace. An occurrence off token boundaries is snapped with
    ``alignment_mode`` unless it sits inside a longer word (``"Al"`` in ``"Algeria"`` is not a
    mention of ``"Al"``). Mentions with no usable occurrence come back as ``Unaligned`` with
    the reason. ``text`` may pass ``doc.text`` in, which spaCy rebuilds on every access.
    """
    text = doc.text if text is None else text
    spans: list[Span] = []
    unaligned: list[Unaligned] = []
    for mention, label in dict.fromkeys(mentions):
        found, reason = _snap(
            doc, text, find_occurrences(text, mention, start, end), label, alignment_mode
        )
        if not found and fuzzy:
            fuzzy_occurrences = find_occurrences(text, mention, start, end, fuzzy=True)
            found, fuzzy_reason = _snap(doc, text, fuzzy_occurrences, label, alignment_mode)
            reason = reason if fuzzy_reason == REASON_NOT_FOUND else fuzzy_reason
        if found:
            spans.extend(found)
        else:
            unaligned.append(Unaligned(mention, label, reason))
    return spans, unaligned


def dedupe_spans(spans: Iterable[Span]) -> list[Span]:
    """One span per (start, end, label), in text order."""
    unique = {(s.start, s.end, s.label_): s for s in spans}
    return [unique[key] for key in sorted(unique)]


def resolve_overlaps(spans: Iterable[Span], label_order: Sequence[str] = ()) -> list[Span]:
    """Non-overlapping spans: longest first, then leftmost, then by ``label_order``, then in
    the order given.

    With a label order the result is the same for any input order, so the model's ordering
    of its answer cannot change which entities are set.
    """
    rank = {label: i for i, label in enumerate(label_order)}
    unranked = len(rank)
    # A stable sort: spans equal under the key keep the order given.
    ordered = sorted(spans, key=lambda s: (s.start - s.end, s.start, rank.get(s.label_, unranked)))
    taken: set[int] = set()
    kept = []
    for span in ordered:
        tokens = range(span.start, span.end)
        if taken.isdisjoint(tokens):  # no intermediate set, unlike intersection()
            taken.update(tokens)
            kept.append(span)
    kept.sort(key=_START)
    return kept


_START = attrgetter("start")


# --------------------------------------------------------------------------- overlap policy
# Filters with the signature of spaCy's span_ruler ``ents_filter``: (entities already set,
# new candidates) -> the Doc's entities. The component passes the candidates in text order,
# equal spans in the schema's label order, so that ``resolve_overlaps`` breaks ties by it.


def _overlaps(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def prefer_existing_ents(entities: Iterable[Span], spans: Iterable[Span]) -> list[Span]:
    """Earlier entities stay; candidates, resolved among themselves, fill the gaps."""
    kept = list(entities)
    new = [n for n in resolve_overlaps(spans) if not any(_overlaps(e, n) for e in kept)]
    return sorted([*kept, *new], key=_START)


def prefer_new_ents(entities: Iterable[Span], spans: Iterable[Span]) -> list[Span]:
    """Candidates, resolved among themselves, replace the earlier entities they overlap."""
    new = resolve_overlaps(spans)
    kept = [e for e in entities if not any(_overlaps(e, n) for n in new)]
    return sorted([*kept, *new], key=_START)


@registry.misc("reasoning_ner.prefer_existing_ents.v1")
def make_prefer_existing_ents() -> Callable[[Iterable[Span], Iterable[Span]], list[Span]]:
    return prefer_existing_ents


@registry.misc("reasoning_ner.prefer_new_ents.v1")
def make_prefer_new_ents() -> Callable[[Iterable[Span], Iterable[Span]], list[Span]]:
    return prefer_new_ents
