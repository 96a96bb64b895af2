"""Keep evaluation text out of training data, by content.

The evaluation data is every split of every dataset the profile evaluates on (``[evaluate]``
``data`` and ``datasets``): dev and test files where the user has them, the seeded dev slice
carved out of train where a dataset has no dev split (MIT), and, for the zero-shot
evaluation domains (``forbidden_datasets``), their training splits too: a zero-shot claim
must keep every text of those domains out of every training stage. Sentences are compared by
a hash of their normalized form (case, punctuation, articles and spacing do not matter), so a
copy that differs only by tokenization or casing is still caught; passages are checked
sentence by sentence.

A training record whose text is in the evaluation data is removed and reported. A source
that is mostly the data of a zero-shot domain is refused whatever its name: its content is
that domain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spacy_reasoningner.benchmark.datasets import load_eval_set
from spacy_reasoningner.benchmark.overlap import sentence_hash, text_pieces
from spacy_reasoningner.benchmark.readers import NERRecord, read_records

from .config import require

# The split files of a dataset folder (<split>.<suffix>); other files there (labels.json,
# definitions, READMEs) hold no sentences.
SPLITS = ("train", "dev", "valid", "validation", "test")
DATA_SUFFIXES = (".txt", ".bio", ".conll", ".tsv", ".json", ".jsonl", ".spacy")
TRAIN_SPLIT = "train"


@dataclass
class DecontaminationConfig:
    """``[<stage>.decontamination]``: the evaluation data training text must stay out of."""

    # The benchmark folder (<data>/<dataset>/<split>.txt), e.g. ${evaluate.data}.
    data: Path | None = None
    # The evaluation datasets, e.g. ${evaluate.datasets}.
    datasets: list[str] = field(default_factory=list)
    # The seed of the evaluation's dev slices (datasets without a dev split).
    seed: int = 0
    # Further evaluation files by name (test sets kept elsewhere).
    files: dict[str, Path] = field(default_factory=dict)
    # A source with at least this share of its texts in a zero-shot domain's data is refused.
    max_domain_share: float = 0.5

    def __post_init__(self) -> None:
        require(
            not self.datasets or self.data is not None,
            "[decontamination] datasets need data (the benchmark folder)",
        )
        require(0.0 < self.max_domain_share <= 1.0, "max_domain_share must be in (0, 1]")


def evaluation_splits(
    config: DecontaminationConfig, forbidden: Sequence[str]
) -> dict[str, list[NERRecord]]:
    """``{"<dataset>/<split>": records}`` of every evaluation split ``config`` names, the
    training splits of the ``forbidden`` datasets included."""
    splits: dict[str, list[NERRecord]] = {}
    for dataset in config.datasets:
        folder = Path(config.data or ".") / dataset
        if not folder.is_dir():
            raise FileNotFoundError(
                f"evaluation dataset {dataset!r}: no folder {folder}; fix the decontamination "
                "data/datasets (they follow [evaluate]) or pass --paths.data"
            )
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix in DATA_SUFFIXES and p.stem in SPLITS
        )
        for path in files:
            if path.stem != TRAIN_SPLIT or dataset in forbidden:
                splits[f"{dataset}/{path.stem}"] = read_records(path)
        if not any(p.stem == "dev" for p in files) and dataset not in forbidden:
            # The evaluation's dev slice of train (a forbidden domain's train is all in).
            carved = load_eval_set(folder.parent, dataset, "dev", seed=config.seed)
            splits[f"{dataset}/dev"] = carved.records
    for name, path in config.files.items():
        splits[name] = read_records(path)
    return splits


def evaluation_index(evaluation: Mapping[str, Iterable[NERRecord]]) -> dict[str, str]:
    """Sentence hash -> the first evaluation split holding that sentence."""
    owner: dict[str, str] = {}
    for split, split_records in evaluation.items():
        for record in split_records:
            owner.setdefault(sentence_hash(record.text), split)
    return owner


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


def domain_key(name: str) -> str:
    """A dataset name compared across spellings: InstructUIE's ``mit-movie`` is ``mit_movie``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def refuse_evaluation_domains(records: Iterable[NERRecord], forbidden: Sequence[str]) -> None:
    """Raise if a training record is labelled as coming from a zero-shot evaluation domain
    (names compared by ``domain_key``)."""
    keys = {domain_key(name) for name in forbidden}
    names = {r.dataset for r in records if domain_key(r.dataset) in keys}
    if names:
        raise ValueError(
            f"training sources {sorted(names)} are evaluation domains of the zero-shot "
            "benchmark (forbidden_datasets); remove them from the sources, or take them out "
            "of forbidden_datasets if you do not claim zero-shot results"
        )


def refuse_domain_content(
    source: str,
    total: int,
    result: Decontamination,
    forbidden: Sequence[str],
    max_share: float,
) -> None:
    """Raise if at least ``max_share`` of a source's ``total`` texts are in the data of one
    zero-shot domain: the source is that domain under another name."""
    hits: dict[str, int] = {}
    for _, split in result.removed:
        dataset = split.split("/", 1)[0]
        if dataset in forbidden:
            hits[dataset] = hits.get(dataset, 0) + 1
    for dataset, count in hits.items():
        if total and count / total >= max_share:
            raise ValueError(
                f"training source {source!r}: {count} of its {total} texts are in the data of "
                f"the zero-shot evaluation domain {dataset!r}; its content is that domain "
                "whatever its name: remove it from the sources"
            )
