"""Schemas of training samples, built as the reference builds them.

Type names are lowercased, stripped, de-duplicated and sorted; misc-like types (``misc``,
``else``, ``other``, ...) are dropped from the schema and from gold. Closed-type corpora
(CoNLL, CrossNER) give every sentence the corpus's full type list. Open-type corpora
(Pile-NER) list only the types asked about a passage. ``SchemaSampling`` varies schemas:
negative types (absent from the record) drawn from the corpus or a type list teach the model
to answer "none", and subsets of a closed corpus's types teach it to answer only what is
asked.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import MISC_LIKE_LABELS, label_key


def clean_types(names: Iterable[str], drop: Iterable[str] = MISC_LIKE_LABELS) -> list[str]:
    """Lowercased, stripped, de-duplicated and sorted names, without the ``drop`` types."""
    dropped = {label_key(d) for d in drop}
    return sorted({label_key(n) for n in names} - dropped - {""})


@dataclass(frozen=True)
class SchemaSampling:
    """How a source's schemas vary, so that the model sees schemas of many sizes and learns
    that most asked types are absent (at inference a schema is whatever the user lists).

    negatives: (fewest, most) types absent from the record added to its schema, the number
        drawn uniformly per record; (0, 0) adds none.
    pool: the types negatives are drawn from (cleaned); None: the corpus's own types.
    exclude: types never drawn as negatives: types a record of this corpus may contain
        without their being annotated (a CoNLL sentence naming a country has it as a
        location), and the evaluation datasets' types, so that no training schema imitates
        an evaluation schema.
    subsets: closed-type corpora (every record annotated for every corpus type) ask a random
        non-empty subset of their types, gold restricted to it, so that the model learns to
        answer only what is asked.
    plain_share: the share of records that get no negatives at all, whatever ``negatives``
        says: a closed corpus's own schema is what an evaluation of that corpus asks, and a
        small model that rarely sees it learns to fill short schemas with junk.
    """

    negatives: tuple[int, int] = (0, 0)
    pool: tuple[str, ...] | None = None
    exclude: frozenset[str] = frozenset()
    subsets: bool = False
    plain_share: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.negatives
        if not 0 <= low <= high:
            raise ValueError(
                f"negative_types must be a count >= 0 or [fewest, most] with 0 <= fewest <= "
                f"most, got {list(self.negatives)}"
            )
        if not 0.0 <= self.plain_share <= 1.0:
            raise ValueError(f"plain_schema_share must be in [0, 1], got {self.plain_share}")

    @classmethod
    def from_counts(cls, negatives: int | Sequence[int], **options: Any) -> SchemaSampling:
        """``negatives``: a count, or [fewest, most] (the source setting ``negative_types``)."""
        pair = (negatives, negatives) if isinstance(negatives, int) else tuple(negatives)
        if len(pair) != 2:
            raise ValueError(f"negative_types must be a count or [fewest, most], got {negatives}")
        exclude = {label_key(t) for t in options.pop("exclude", ())}
        return cls(negatives=pair, exclude=frozenset(exclude), **options)


def with_schema(
    record: NERRecord,
    corpus_types: Sequence[str],
    *,
    sampling: SchemaSampling = SchemaSampling(),
    rng: random.Random | None = None,
    drop: Iterable[str] = MISC_LIKE_LABELS,
) -> NERRecord:
    """``record`` with its final schema and with gold restricted to it.

    ``corpus_types`` is every type of the corpus (already cleaned). A record that brings its
    own schema (open-type corpora) keeps it; one without gets the corpus types (a subset of
    them with ``sampling.subsets``). Then ``sampling.negatives`` absent types are added,
    except to a ``sampling.plain_share`` of records.
    """
    drop = list(drop)
    varied = sampling.subsets or sampling.negatives != (0, 0)
    if varied and rng is None:
        raise ValueError("varied schemas need an rng (seeded for determinism)")
    if record.schema is None:
        schema = clean_types(corpus_types, drop)
        if sampling.subsets and len(schema) > 1:
            schema = sorted(rng.sample(schema, rng.randint(1, len(schema))))
    else:
        schema = clean_types(record.schema, drop)
    low, high = sampling.negatives
    # The draw only where a share is set: profiles without one keep their exact samples.
    if high and not (sampling.plain_share and rng.random() < sampling.plain_share):
        present = {label_key(t) for *_, t in record.entities} | set(schema)
        candidates = clean_types(corpus_types if sampling.pool is None else sampling.pool, drop)
        pool = [t for t in candidates if t not in present and t not in sampling.exclude]
        schema = sorted(schema + rng.sample(pool, min(rng.randint(low, high), len(pool))))
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
