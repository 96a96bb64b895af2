"""Keep evaluation text out of training data.

Sentences are compared by a hash of their normalized form (case, punctuation, articles and
spacing do not matter, as in the string-level metric), so a training sentence that differs
from an evaluation sentence only by tokenization or casing is still caught.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# The hashing lives in the package, whose evaluation guards against the same overlap.
from spacy_reasoningner.benchmark.overlap import sentence_hash, text_pieces
from spacy_reasoningner.benchmark.readers import NERRecord


@dataclass
class Decontamination:
    """Which training records overlap which evaluation split."""

    kept: list[NERRecord]
    removed: list[tuple[NERRecord, str]] = field(default_factory=list)  # (record, split)

    def report(self) -> dict[str, dict[str, int]]:
        """``{training dataset: {evaluation split: removed sentences}}``."""
        counts: dict[str, dict[str, int]] = {}
        for record, split in self.removed:
            per_split = counts.setdefault(record.dataset, {})
            per_split[split] = per_split.get(split, 0) + 1
        return counts


def refuse_evaluation_domains(records: Iterable[NERRecord], forbidden: Sequence[str]) -> None:
    """Raise if a training record comes from a zero-shot evaluation domain."""
    names = {r.dataset for r in records} & set(forbidden)
    if names:
        raise ValueError(
            f"training sources {sorted(names)} are evaluation domains of the zero-shot "
            "benchmark (cg.forbidden_datasets); remove them from cg.sources, or take them out "
            "of forbidden_datasets if you do not claim zero-shot results"
        )


def evaluation_index(evaluation: Mapping[str, Iterable[NERRecord]]) -> dict[str, str]:
    """Sentence hash -> the first evaluation split holding that sentence."""
    owner: dict[str, str] = {}
    for split, split_records in evaluation.items():
        for record in split_records:
            owner.setdefault(sentence_hash(record.text), split)
    return owner


def decontaminate(records: Sequence[NERRecord], index: Mapping[str, str]) -> Decontamination:
    """Drop training records whose normalized text is a sentence of an evaluation split.

    Passages (Pile-NER) are checked sentence by sentence as well: an evaluation sentence
    inside a training passage is an overlap too.
    """
    result = Decontamination(kept=[])
    for record in records:
        hashes = map(sentence_hash, text_pieces(record.text))
        hit = next((index[h] for h in hashes if h in index), None)
        if hit is None:
            result.kept.append(record)
        else:
            result.removed.append((record, hit))
    return result
