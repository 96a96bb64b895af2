"""Ground generated mentions in the original text: mention -> every occurrence -> token span.

The model answers with strings grouped by label, in any order and with any duplication, so
every mention is searched in the whole text region it was generated from (never from a moving
cursor). Exact matches win; otherwise the mention is searched case- and whitespace-insensitively
in a case-folded copy of the region that records, for each of its characters, the offset of
the original character (folding can change lengths: "ß" is "ss"), so offsets always refer to
the unmodified text. Character spans are then snapped to spaCy tokens, trimmed of whitespace
tokens at their edges, and overlapping candidates are resolved deterministically.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
REASON_NO_WORD = "has no letter or digit"


_NON_SPACE = re.compile(r"\S+")


class FoldedText:
    """``text[start:end]`` case-folded, with every run of whitespace as one space, and the
    offset in ``text`` of the character each of its characters came from; built once per
    region, it serves every mention's case- and whitespace-insensitive search."""

    def __init__(self, text: str, start: int = 0, end: int | None = None):
        parts: list[str] = []
        origins: list[int] = []
        for match in _NON_SPACE.finditer(text, start, len(text) if end is None else end):
            if parts:  # the space stands for the first whitespace character of the run
                parts.append(" ")
                origins.append(origins[-1] + 1)
            word = match.group()
            folded = word.casefold()
            if len(folded) == len(word):
                origins.extend(range(match.start(), match.end()))
            else:
                for offset, char in enumerate(word):
                    origins.extend([match.start() + offset] * len(char.casefold()))
            parts.append(folded)
        self.text = "".join(parts)
        self.origins = origins

    def find_all(self, mention: str) -> list[tuple[int, int]]:
        """Original character offsets of every occurrence of ``mention`` (folded likewise)."""
        needle = " ".join(mention.casefold().split())
        found: list[tuple[int, int]] = []
        if not needle or len(needle) > len(self.text):  # longer than the region: no match
            return found
        position = self.text.find(needle)
        while position >= 0:
            last = position + len(needle) - 1
            found.append((self.origins[position], self.origins[last] + 1))
            position = self.text.find(needle, position + 1)
        return found


def find_occurrences(
    text: str, mention: str, start: int = 0, end: int | None = None, *, fuzzy: bool = False
) -> list[tuple[int, int]]:
    """Character offsets of every occurrence of ``mention`` in ``text[start:end]``: exact
    ones, or with ``fuzzy`` those that may differ in case and in whitespace."""
    end = len(text) if end is None else end
    if fuzzy:
        return FoldedText(text, start, end).find_all(mention)
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


def is_word_char(char: str) -> bool:
    """Letters, digits and marks: a combining accent belongs to the word it sits in."""
    return unicodedata.category(char)[0] in "LNM"


def has_word_char(text: str) -> bool:
    return any(map(is_word_char, text))


def cuts_word(text: str, start: int, end: int) -> bool:
    """True when the match starts or ends in the middle of a word of the text."""
    before = start > 0 and is_word_char(text[start - 1]) and is_word_char(text[start])
    after = end < len(text) and is_word_char(text[end]) and is_word_char(text[end - 1])
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
        span = _trim_space(span) if span is not None else None
        if span is None:
            reason = REASON_NO_TOKENS
            continue
        spans.append(span)
    return spans, reason


def _trim_space(span: Span) -> Span | None:
    """``span`` without whitespace tokens at its edges (contracting a match over a line
    break keeps the break's token); None when nothing else is left."""
    doc, start, end = span.doc, span.start, span.end
    while start < end and doc[start].is_space:
        start += 1
    while end > start and doc[end - 1].is_space:
        end -= 1
    if start == end:
        return None
    return span if (start, end) == (span.start, span.end) else Span(doc, start, end, span.label)


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
    mention of ``"Al"``; accents and other marks belong to their word), and loses whitespace
    tokens at its edges. Mentions with no letter or digit, and mentions with no usable
    occurrence, come back as ``Unaligned`` with the reason. ``text`` may pass ``doc.text`` in,
    which spaCy rebuilds on every access.
    """
    text = doc.text if text is None else text
    end = len(text) if end is None else end
    spans: list[Span] = []
    unaligned: list[Unaligned] = []
    folded: FoldedText | None = None  # built on the first fuzzy search, shared by the rest
    for mention, label in dict.fromkeys(mentions):
        if not has_word_char(mention):  # "." or "/" would label whatever token holds it
            unaligned.append(Unaligned(mention, label, REASON_NO_WORD))
            continue
        found, reason = _snap(
            doc, text, find_occurrences(text, mention, start, end), label, alignment_mode
        )
        if not found and fuzzy:
            folded = folded or FoldedText(text, start, end)
            found, fuzzy_reason = _snap(doc, text, folded.find_all(mention), label, alignment_mode)
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


def merge_entities(existing: Sequence[Span], new: Sequence[Span], *, overwrite: bool) -> list[Span]:
    """Entities of an earlier component merged with new ones (each list free of overlaps):
    the winning side (``new`` with ``overwrite``, else ``existing``) is kept whole, the other
    side's spans only where they overlap none of it. Linear in tokens plus n log n sorting."""
    winners, others = (new, existing) if overwrite else (existing, new)
    if not winners or not others:
        return sorted([*winners, *others], key=_START)
    taken = bytearray(max(s.end for s in [*winners, *others]))
    for span in winners:
        taken[span.start : span.end] = b"\x01" * (span.end - span.start)
    kept = [s for s in others if not any(taken[s.start : s.end])]
    return sorted([*winners, *kept], key=_START)


# --------------------------------------------------------------------------- overlap policy
# Filters with the signature of spaCy's span_ruler ``ents_filter``: (entities already set,
# new candidates) -> the Doc's entities. The component passes the candidates in text order,
# equal spans in the schema's label order, so that ``resolve_overlaps`` breaks ties by it.


def prefer_existing_ents(entities: Iterable[Span], spans: Iterable[Span]) -> list[Span]:
    """Earlier entities stay; candidates, resolved among themselves, fill the gaps."""
    return merge_entities(list(entities), resolve_overlaps(spans), overwrite=False)


def prefer_new_ents(entities: Iterable[Span], spans: Iterable[Span]) -> list[Span]:
    """Candidates, resolved among themselves, replace the earlier entities they overlap."""
    return merge_entities(list(entities), resolve_overlaps(spans), overwrite=True)


@registry.misc("reasoning_ner.prefer_existing_ents.v1")
def make_prefer_existing_ents() -> Callable[[Iterable[Span], Iterable[Span]], list[Span]]:
    return prefer_existing_ents


@registry.misc("reasoning_ner.prefer_new_ents.v1")
def make_prefer_new_ents() -> Callable[[Iterable[Span], Iterable[Span]], list[Span]]:
    return prefer_new_ents
