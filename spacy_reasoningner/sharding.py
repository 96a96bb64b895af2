"""Long documents: split into overlapping windows of whole sentences, each within a budget.

A window is a character range of the Doc's text; the component prompts the model with that
range and grounds its mentions inside the same range, so results are already in document
offsets and windows merge by plain union (an entity in the overlap of two windows is found
twice at the same offsets and kept once). Sentences come from the Doc when a previous
component set them, otherwise from spaCy's rule-based sentencizer (the Doc is not modified).
A single sentence longer than the budget is cut at whitespace with a character overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

from spacy.pipeline import Sentencizer
from spacy.tokens import Doc

_SENTENCIZER = Sentencizer()


@dataclass(frozen=True)
class Window:
    start: int
    end: int


def sentence_ranges(doc: Doc) -> list[tuple[int, int]]:
    """Character ranges of the sentences of ``doc``, covering its text without gaps."""
    if doc.has_annotation("SENT_START"):
        starts = [sent.start_char for sent in doc.sents]
    else:
        tags = _SENTENCIZER.predict([doc])[0]
        starts = [doc[i].idx for i, is_start in enumerate(tags) if is_start or i == 0]
    starts = sorted(set([0, *starts]))
    return list(zip(starts, [*starts[1:], len(doc.text)], strict=True))


def _cut_long(
    start: int, end: int, text: str, max_chars: int, overlap: int
) -> list[tuple[int, int]]:
    """Pieces of at most ``max_chars`` ending at whitespace where possible, overlapping."""
    pieces = []
    while end - start > max_chars:
        cut = text.rfind(" ", start + max_chars // 2, start + max_chars)
        cut = cut if cut > start else start + max_chars
        pieces.append((start, cut))
        next_start = text.find(" ", max(cut - overlap, start + 1), cut)
        start = next_start + 1 if next_start >= 0 else cut
    pieces.append((start, end))
    return pieces


def plan_windows(
    doc: Doc, max_chars: int, overlap_sentences: int = 1, text: str | None = None
) -> list[Window]:
    """Windows covering ``doc.text``; the whole text when it fits in ``max_chars``.

    Consecutive windows share ``overlap_sentences`` sentences so that context around a
    window border is seen by both windows. ``text`` may pass ``doc.text`` in (spaCy rebuilds
    it on every access).
    """
    text = doc.text if text is None else text
    if len(text) <= max_chars:
        return [Window(0, len(text))]
    units: list[tuple[int, int]] = []
    for start, end in sentence_ranges(doc):
        units.extend(_cut_long(start, end, text, max_chars, overlap=max_chars // 5))
    windows: list[Window] = []
    first = 0
    while first < len(units):
        last = first
        while last + 1 < len(units) and units[last + 1][1] - units[first][0] <= max_chars:
            last += 1
        windows.append(Window(units[first][0], units[last][1]))
        if last + 1 >= len(units):
            break
        first = max(first + 1, last + 1 - overlap_sentences)
    return windows
