"""Benchmark datasets as evaluation sets: gold relabelled to a naming convention, misc-like
types dropped, MIT's missing dev split carved out of train with a seed."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..protocol import is_misc_like, label_key
from .readers import (
    CROSSNER_DATASETS,
    NERRecord,
    load_definitions,
    load_label_map,
    read_records,
    relabel,
)

logger = logging.getLogger(__name__)

# The seven zero-shot sets of the paper's headline average.
ZERO_SHOT_DATASETS = (*CROSSNER_DATASETS, "mit_movie", "mit_restaurant")
DEFAULT_NAMING = "instructuie_name"
# CoNLL-2003's instructuie names in labels.json are placeholders (the IE_INSTRUCTIONS file
# was not retrievable), so it is evaluated under its natural names.
NAMING_BY_DATASET = {"conll2003": "natural_name"}
# Share of train.txt carved out as a dev split where a dataset has none (MIT).
DEV_FRACTION = 0.1
LABELS_FILE = "labels.json"


@dataclass
class EvalSet:
    """The sentences of one dataset, gold relabelled to ``labels`` and misc-like types
    dropped. ``labels`` is what the component is given: names, or names -> definitions."""

    name: str
    records: list[NERRecord]
    labels: list[str] | dict[str, str]
    source: str
    note: str = ""


def default_naming(dataset: str) -> str:
    return NAMING_BY_DATASET.get(dataset, DEFAULT_NAMING)


def _label_map(
    labels_json: Path | None, naming: str, records: Sequence[NERRecord]
) -> dict[str, str]:
    """``{type in the file: evaluated name}`` without misc-like types; without a labels.json,
    the types the records use keep their names."""
    if labels_json is None:
        found = {t for r in records for t in (r.schema or [])}
        found.update(t for r in records for _, _, t in r.entities)
        mapping = {t: t for t in sorted(found)}
    else:
        mapping = load_label_map(labels_json, naming)
    mapping = {tag: name for tag, name in mapping.items() if not is_misc_like(name)}
    where = labels_json or "the data"
    names = Counter(label_key(n) for n in mapping.values())
    if shared := [n for n, count in names.items() if count > 1]:
        raise ValueError(
            f"{where}: naming {naming!r} gives several types the same name {shared[0]!r}; "
            "choose another naming (e.g. natural_name)"
        )
    if not mapping:
        raise ValueError(f"{where}: no entity types left to evaluate")
    return mapping


def sample(records: Sequence[NERRecord], limit: int | None, seed: int) -> list[NERRecord]:
    """``limit`` records drawn with ``seed``, in their file order (all when None)."""
    if limit is None or limit >= len(records):
        return list(records)
    picked = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in picked]


def eval_set_from_file(
    path: str | Path,
    labels_json: str | Path | None = None,
    *,
    name: str | None = None,
    naming: str | None = None,
    definitions: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    format: str = "auto",
) -> EvalSet:
    """An evaluation set from any file the readers accept.

    ``labels_json`` maps the file's types to the names of ``naming`` (default: see
    ``default_naming``); without it the types keep the file's names. ``definitions`` names a
    definition field of labels.json (e.g. ``definition_slimer``) to give the component
    definitions too; the paper gives names only.
    """
    path = Path(path)
    name = name or path.parent.name or path.stem
    naming = naming or default_naming(name)
    records = read_records(path, format=format, dataset=name)
    return _eval_set(name, records, str(path), labels_json, naming, definitions, limit, seed, "")


def _eval_set(
    name: str,
    records: list[NERRecord],
    source: str,
    labels_json: str | Path | None,
    naming: str,
    definitions: str | None,
    limit: int | None,
    seed: int,
    note: str,
) -> EvalSet:
    labels_json = Path(labels_json) if labels_json else None
    mapping = _label_map(labels_json, naming, records)
    labels: list[str] | dict[str, str] = list(dict.fromkeys(mapping.values()))
    if definitions:
        if labels_json is None:
            raise ValueError("definitions need a labels.json to read them from")
        found = load_definitions(labels_json, naming, definitions)
        labels = {label: found.get(label, "") for label in labels}
    records = relabel(sample(records, limit, seed), mapping)
    return EvalSet(name, records, labels, source, note)


def load_eval_set(
    data: str | Path,
    dataset: str,
    split: str = "dev",
    *,
    naming: str | None = None,
    definitions: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> EvalSet:
    """``<data>/<dataset>/<split>.txt`` with ``<data>/<dataset>/labels.json``.

    A dataset without a dev split (MIT Movie and Restaurant) gets a seeded ``DEV_FRACTION``
    slice of its train split, and the set's ``note`` says so.
    """
    folder = Path(data) / dataset
    path = folder / f"{split}.txt"
    train = folder / "train.txt"
    note = ""
    if not path.is_file() and split == "dev" and train.is_file():
        records = read_records(train, dataset=dataset)
        carved = sample(records, max(1, round(DEV_FRACTION * len(records))), seed)
        note = (
            f"no dev split: dev is a seeded slice of train.txt "
            f"({len(carved)} of {len(records)} sentences, seed {seed})"
        )
        logger.warning("%s: %s", dataset, note)
        records, path = carved, train
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: no {split} split of {dataset!r} in {data}")
    else:
        records = read_records(path, dataset=dataset)
    labels_json = folder / LABELS_FILE
    return _eval_set(
        dataset,
        records,
        str(path),
        labels_json if labels_json.is_file() else None,
        naming or default_naming(dataset),
        definitions,
        limit,
        seed,
        note,
    )
