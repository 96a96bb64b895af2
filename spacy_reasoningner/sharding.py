"""Long documents: split into overlapping windows of whole sentences, each within a budget.

A window is a character range of the Doc's text; the component prompts the model with that
range and grounds its mentions inside the same range, so results are already in document
offsets and windows merge by plain union (an entity in the overlap of two windows is found
twice at the same offsets and kept once). Sentences come from the Doc when a previous
component set them, otherwise from spaCy's rule-based sentencizer (the Doc is not modified).
A single sentence longer than the budget is cut at whitespace (any: spaces, tabs, line
breaks), or failing that at a token boundary (Chinese, Japanese and other text written
without spaces), with a character overlap that starts at a token so that a mention across
the cut is whole in the next piece.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from spacy.pipeline import Sentencizer
from spacy.tokens import Doc

_SENTENCIZER = Sentencizer()
_UP_TO_LAST_SPACE = re.compile(r".*\s", re.DOTALL)


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
    start: int, end: int, text: str, max_chars: int, overlap: int, token_starts: Sequence[int]
) -> list[tuple[int, int]]:
    """Pieces of at most ``max_chars``, overlapping by up to ``overlap`` characters, each
    ending at the last whitespace of its second half, else at the last token start there,
    else at the budget; each next piece starts at the first token of the overlap."""
    pieces = []
    while end - start > max_chars:
        low, high = start + max_chars // 2, start + max_chars
        space = _UP_TO_LAST_SPACE.match(text, low, high)
        if space:
            cut = space.end() - 1
        else:
            index = bisect.bisect_right(token_starts, high) - 1
            cut = token_starts[index] if index >= 0 and token_starts[index] > low else high
        pieces.append((start, cut))
        index = bisect.bisect_left(token_starts, max(cut - overlap, start + 1))
        start = (
            token_starts[index] if index < len(token_starts) and token_starts[index] < cut else cut
        )
    pieces.append((start, end))
    return pieces


def plan_windows(
    doc: Doc, max_chars: int, overlap_sentences: int = 1, text: str | None = None
) -> list[Window]:
    """Windows covering ``doc.text``; the whole text when it fits in ``max_chars``.

    Consecutive windows share up to ``overlap_sentences`` sentences so that context around a
    window border is seen by both windows, but never more than half a window, so the number
    of windows stays about twice the text's length over ``max_chars`` at most. ``text`` may
    pass ``doc.text`` in (spaCy rebuilds it on every access).
    """
    text = doc.text if text is None else text
    if len(text) <= max_chars:
        return [Window(0, len(text))]
    units: list[tuple[int, int]] = []
    token_starts: list[int] | None = None  # needed only to cut an over-long sentence
    for start, end in sentence_ranges(doc):
        if end - start > max_chars and token_starts is None:
            token_starts = [token.idx for token in doc if not token.is_space]
        units.extend(_cut_long(start, end, text, max_chars, max_chars // 5, token_starts or []))
    windows: list[Window] = []
    first = 0
    while first < len(units):
        last = first
        while last + 1 < len(units) and units[last + 1][1] - units[first][0] <= max_chars:
            last += 1
        windows.append(Window(units[first][0], units[last][1]))
        if last + 1 >= len(units):
            break
        following = max(first + 1, last + 1 - overlap_sentences)
        while following <= last and units[last][1] - units[following][0] > max_chars // 2:
            following += 1
        first = following
    return windows
