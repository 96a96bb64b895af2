"""Read CoNLL/BIO files into sentences with character-offset entities.

One reader covers the layouts of the benchmark data: ``token<TAB>tag`` (CrossNER),
``tag<TAB>token`` (MIT Movie/Restaurant) and CoNLL-2003's ``token POS chunk tag``. The tag
column is detected per file; tags may be IOB1, IOB2 or BIOES. ``labels.json`` files (see the
data README) map BIO tags to the type names of a naming convention and give definitions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_TAG = re.compile(r"^(O|[BIES]-.+)$")
_SPACES = re.compile(r" +")
DOCSTART = "-DOCSTART-"
# The five CrossNER domains, as the data folders of the benchmark data name them.
CROSSNER_DATASETS = (
    "crossner_ai",
    "crossner_literature",
    "crossner_music",
    "crossner_politics",
    "crossner_science",
)


@dataclass
class NERRecord:
    """One sentence: ``text`` is ``tokens`` joined by single spaces, entities are
    ``(start_char, end_char, label)`` into ``text``, ``source`` is ``path:line``."""

    text: str
    entities: list[tuple[int, int, str]]
    source: str
    tokens: list[str]


def decode_bio(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Token spans ``(start, end, type)`` from IOB1, IOB2 or BIOES tags.

    One decoder serves all schemes: an ``I-`` that does not continue an open entity of its
    type starts one (IOB1; never happens in valid IOB2), ``B-`` always starts one, ``S-`` is
    a one-token entity and ``E-`` closes the open one.
    """
    spans: list[tuple[int, int, str]] = []
    start, kind = -1, ""  # the open entity, if start >= 0
    for i, tag in enumerate(tags):
        prefix, label = tag[:1], tag[2:]
        continues = start >= 0 and label == kind and prefix in ("I", "E")
        if start >= 0 and not continues:
            spans.append((start, i, kind))
            start = -1
        if prefix != "O" and not continues:
            start, kind = i, label
        if prefix in ("S", "E") and start >= 0:
            spans.append((start, i + 1, kind))
            start = -1
    if start >= 0:
        spans.append((start, len(tags), kind))
    return spans


def read_bio(path: str | Path) -> list[NERRecord]:
    """Sentences of a BIO file (blank lines between sentences, ``-DOCSTART-`` lines skipped).

    Raises ``ValueError`` naming the file and line on inconsistent columns, empty fields, or
    when no column holds a tag on every line.
    """
    path = Path(path)
    rows: list[tuple[int, list[str]]] = []  # (line number, fields); [] ends a sentence
    n_cols = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith(DOCSTART):
                rows.append((number, []))
                continue
            # Tab-separated lines may hold spaces inside a field; otherwise split on spaces.
            fields = line.split("\t") if "\t" in line else _SPACES.split(line.strip(" "))
            if not all(fields):
                raise ValueError(f"{path}:{number}: empty field in {line!r}")
            if n_cols and len(fields) != n_cols:
                raise ValueError(
                    f"{path}:{number}: {len(fields)} columns, expected {n_cols} as on the "
                    f"first line: {line!r}"
                )
            if len(fields) < 2:
                raise ValueError(f"{path}:{number}: one column, need a token and a tag: {line!r}")
            n_cols = len(fields)
            rows.append((number, fields))
    tag_col, token_col = _tag_columns(path, [r for r in rows if r[1]], n_cols)
    records: list[NERRecord] = []
    sentence: list[tuple[int, list[str]]] = []
    for row in [*rows, (0, [])]:
        if row[1]:
            sentence.append(row)
        elif sentence:
            tokens = [fields[token_col] for _, fields in sentence]
            tags = [fields[tag_col] for _, fields in sentence]
            records.append(_record(tokens, tags, f"{path}:{sentence[0][0]}"))
            sentence = []
    return records


def _tag_columns(path: Path, rows: list[tuple[int, list[str]]], n_cols: int) -> tuple[int, int]:
    """(tag column, token column): the last column if it is all tags (CoNLL puts POS and
    chunk tags, which also look like BIO, in between), else the first one."""
    if not rows:
        return n_cols - 1, 0
    first_bad: dict[int, tuple[int, str]] = {}
    for col in (n_cols - 1, 0):
        bad = next(((n, f[col]) for n, f in rows if not _TAG.match(f[col])), None)
        if bad is None:
            return (col, 0) if col else (0, n_cols - 1)
        first_bad[col] = bad
    # Report the column that looks most like tags: its first non-tag comes latest.
    number, value = max(first_bad.values())
    raise ValueError(
        f"{path}:{number}: {value!r} is not a BIO tag (O, or B-/I-/E-/S- and a type), and "
        "neither the first nor the last column holds a tag on every line"
    )


def _record(tokens: list[str], tags: list[str], source: str) -> NERRecord:
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token) + 1
    entities = [
        (starts[a], starts[b - 1] + len(tokens[b - 1]), label) for a, b, label in decode_bio(tags)
    ]
    return NERRecord(" ".join(tokens), entities, source, tokens)


def relabel(records: Sequence[NERRecord], label_map: dict[str, str]) -> list[NERRecord]:
    """Records with entity types renamed by ``label_map``; types not in it are dropped."""
    return [
        NERRecord(
            r.text,
            [(s, e, label_map[t]) for s, e, t in r.entities if t in label_map],
            r.source,
            r.tokens,
        )
        for r in records
    ]


def _load_types(path: str | Path, naming: str) -> list[dict]:
    types = list(json.loads(Path(path).read_text(encoding="utf-8"))["types"].values())
    for entry in types:
        if naming not in entry:
            known = sorted(k for k in entry if k.endswith("_name"))
            raise ValueError(
                f"{path}: type {entry.get('bio_tag')!r} has no {naming!r}; use {known}"
            )
    return types


def load_label_map(
    labels_json_path: str | Path, naming: str = "instructuie_name"
) -> dict[str, str]:
    """``{bio_tag: name}`` under a naming convention of a ``labels.json``; types the
    convention leaves out (name null, e.g. misc under ``uniner_name``) are dropped."""
    return {t["bio_tag"]: t[naming] for t in _load_types(labels_json_path, naming) if t[naming]}


def load_definitions(
    labels_json_path: str | Path,
    naming: str = "instructuie_name",
    field: str = "definition_slimer",
) -> dict[str, str]:
    """``{name: definition}``, for types with a name and a non-empty ``field``."""
    return {
        t[naming]: t[field]
        for t in _load_types(labels_json_path, naming)
        if t[naming] and t.get(field)
    }
