"""The paper's string-level metric: normalized (mention, type) sets and their P/R/F1."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")


# The reference removes ASCII punctuation only (Python's ``string.punctuation``): curly
# quotes, dashes and other Unicode punctuation stay part of a mention.
_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_mention(text: str) -> str:
    """The reference's normalization: lowercase, drop ASCII punctuation and the articles
    a/an/the, squash whitespace."""
    text = text.lower().translate(_ASCII_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def entity_set(pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Set of (normalized mention, lowercased label) from (mention, label) pairs."""
    return {(normalize_mention(m), label.strip().lower()) for m, label in pairs}


@dataclass
class PRF:
    """Micro counts; add them over sentences, read precision/recall/F1 at the end."""

    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0

    def __add__(self, other: PRF) -> PRF:
        return PRF(self.tp + other.tp, self.n_pred + other.n_pred, self.n_gold + other.n_gold)

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_gold if self.n_gold else 0.0

    @property
    def f1(self) -> float:
        denominator = self.n_pred + self.n_gold
        return 2 * self.tp / denominator if denominator else 0.0


def string_prf(predicted: Iterable[tuple[str, str]], gold: Iterable[tuple[str, str]]) -> PRF:
    """Counts of the paper's metric for one sentence, from (mention, label) pairs."""
    pred_set, gold_set = entity_set(predicted), entity_set(gold)
    return PRF(len(pred_set & gold_set), len(pred_set), len(gold_set))
