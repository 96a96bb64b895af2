"""Keep evaluation sentences out of training data: normalized-sentence hashes and the guard.

Sentences are compared by a hash of their normalized form (case, punctuation, articles and
spacing do not matter, as in the string-level metric), so a copy that differs only by
tokenization or casing is still caught. The data stage removes overlapping training text
(``training/decontamination.py``); evaluation refuses to score sentences found in training.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .readers import NERRecord, read_records

if TYPE_CHECKING:
    from .datasets import EvalSet

CG_LOG_NAME = "samples.jsonl"  # the CG stage's log of every sample it produced

MIN_PIECE_WORDS = 4  # shorter pieces of a passage ("Sharp", "v.") match by chance


@functools.cache
def _unicode_punctuation() -> dict[int, None]:
    """Every Unicode punctuation character (categories P*), for ``str.translate``."""
    return dict.fromkeys(
        c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("P")
    )


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_sentence(text: str) -> str:
    """Lowercase, drop punctuation (Unicode punctuation of any script, so that curly and
    straight quotes are alike) and the articles a/an/the, squash spacing."""
    text = _ARTICLES.sub(" ", text.lower().translate(_unicode_punctuation()))
    return " ".join(text.split())


def sentence_hash(text: str) -> str:
    """Hash of a sentence's normalized form (``normalize_sentence``), so that re-tokenized or
    re-cased copies still match."""
    return hashlib.sha1(normalize_sentence(text).encode()).hexdigest()


def text_pieces(text: str) -> list[str]:
    """The text and, for multi-line or multi-sentence passages, its lines and sentences, so
    that an evaluation sentence inside a training passage is found too."""
    pieces = set(text.splitlines())
    for line in text.splitlines():
        pieces.update(line.replace("? ", ". ").replace("! ", ". ").split(". "))
    return [text, *(p for p in pieces if len(p.split()) >= MIN_PIECE_WORDS)]


class OverlapError(ValueError):
    """Evaluation sentences appear in the training data."""


def read_training_texts(path: str | Path) -> list[str]:
    """Texts of training data: a CG output folder or its ``samples.jsonl`` (kept samples,
    the ones training uses), or any file the readers accept."""
    path = Path(path)
    if path.is_dir():
        path = path / CG_LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training data to check overlap against")
    if path.name != CG_LOG_NAME:
        return [record.text for record in read_records(path)]
    with path.open(encoding="utf-8") as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    return [e["text"] for e in entries if e.get("kept", True)]


def find_overlap(
    eval_sets: Sequence[EvalSet], training: Iterable[str | NERRecord]
) -> dict[str, list[NERRecord]]:
    """Evaluation records, by dataset, whose sentence is a training text or a sentence of
    one (compared by ``sentence_hash``)."""
    index = {sentence_hash(r.text): (s.name, r) for s in eval_sets for r in s.records}
    hits: dict[str, dict[str, NERRecord]] = {}
    for item in training:
        text = item if isinstance(item, str) else item.text
        for digest in map(sentence_hash, text_pieces(text)):
            if digest in index:
                dataset, record = index[digest]
                hits.setdefault(dataset, {})[record.source] = record
    return {dataset: list(found.values()) for dataset, found in hits.items()}


def overlap_message(overlap: Mapping[str, list[NERRecord]]) -> str:
    parts = [
        f"{dataset}: {len(records)} (e.g. {records[0].source}: {records[0].text[:80]!r})"
        for dataset, records in overlap.items()
    ]
    return "evaluation sentences found in the training data: " + "; ".join(parts)
