"""Schemas of training samples, built as the reference builds them.

Type names are lowercased, stripped, de-duplicated and sorted; misc-like types (``misc``,
``else``, ``other``, ...) are dropped from the schema and from gold. Closed-type corpora
(CoNLL, CrossNER) give every sentence the corpus's full type list. Open-type corpora
(Pile-NER) list only the types asked about a passage, so a configurable number of negative
types, sampled from the rest of the corpus, teaches the model to answer "none" as well.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence

from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import MISC_LIKE_LABELS, label_key


def clean_types(names: Iterable[str], drop: Iterable[str] = MISC_LIKE_LABELS) -> list[str]:
    """Lowercased, stripped, de-duplicated and sorted names, without the ``drop`` types."""
    dropped = {label_key(d) for d in drop}
    return sorted({label_key(n) for n in names} - dropped - {""})


def with_schema(
    record: NERRecord,
    corpus_types: Sequence[str],
    *,
    negatives: int = 0,
    rng: random.Random | None = None,
    drop: Iterable[str] = MISC_LIKE_LABELS,
) -> NERRecord:
    """``record`` with its final schema and with gold restricted to it.

    ``corpus_types`` is every type of the corpus (already cleaned). A record that brings its
    own schema (open-type corpora) keeps it and gets ``negatives`` types drawn from the
    corpus types it does not mention; one without gets the corpus types.
    """
    drop = list(drop)
    if record.schema is None:
        schema = clean_types(corpus_types, drop)
    else:
        schema = clean_types(record.schema, drop)
        pool = sorted(set(corpus_types) - set(schema))
        if negatives and pool:
            if rng is None:
                raise ValueError("sampling negative types needs an rng (seeded for determinism)")
            schema = sorted(schema + rng.sample(pool, min(negatives, len(pool))))
    kept = set(schema)
    definitions = {
        label_key(k): v for k, v in (record.definitions or {}).items() if label_key(k) in kept
    }
    return dataclasses.replace(
        record,
        entities=[(s, e, label_key(t)) for s, e, t in record.entities if label_key(t) in kept],
        schema=schema,
        definitions=definitions or None,
        unaligned=[(m, label_key(t)) for m, t in record.unaligned if label_key(t) in kept],
    )
