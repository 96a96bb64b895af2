"""Training sources and the planner that turns them into records, shared by the CG stage
(``[cg.sources]``) and the GRPO stage (``[grpo.sources]``): the same label maps, schema rules,
evaluation-domain refusal and decontamination for every text a model trains on.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spacy_reasoningner.benchmark.datasets import ZERO_SHOT_DATASETS
from spacy_reasoningner.benchmark.readers import (
    READ_FORMATS,
    NERRecord,
    load_definitions,
    load_label_map,
    read_records,
    relabel,
)
from spacy_reasoningner.protocol import MISC_LIKE_LABELS

from .config import ConfigError, require
from .decontamination import (
    DecontaminationConfig,
    decontaminate,
    evaluation_index,
    evaluation_splits,
    refuse_domain_content,
    refuse_evaluation_domains,
)
from .schemas import SchemaSampling, clean_types, with_schema


def default_drop_types() -> list[str]:
    """Types dropped from schema and gold, as the reference does (misc-like types)."""
    return sorted(MISC_LIKE_LABELS)


def default_forbidden_datasets() -> list[str]:
    """The evaluation domains of the zero-shot benchmark: no training source may be one."""
    return list(ZERO_SHOT_DATASETS)


@dataclass
class SourceConfig:
    """One training corpus (a ``[<stage>.sources.<name>]`` block): a file the readers accept,
    with its label map and definitions."""

    name: str
    path: Path
    format: str = "auto"
    labels: Path | None = None  # a labels.json; None when the corpus names its own types
    naming: str = "natural_name"  # naming convention in labels.json
    definitions: str | None = None  # definition field in labels.json (e.g. "definition_gollie")
    limit: int | None = None  # sentences sampled (seeded); None keeps all
    # Types absent from a record added to its schema: a count or [fewest, most] per record,
    # drawn from negative_pool (a JSON list of type names; None: the corpus's types) minus
    # negative_exclude. schema_subsets: ask random subsets of a closed corpus's types.
    # plain_schema_share: this share of the records gets no negatives (the corpus's schema).
    negative_types: int | list[int] = 0
    negative_pool: Path | None = None
    negative_exclude: list[str] = field(default_factory=list)
    schema_subsets: bool = False
    plain_schema_share: float = 0.0
    # At most this share of the source's samples find no entity of their schema (others are
    # dropped, seeded); null keeps them all. A small model trained on many empty answers
    # learns to answer nothing.
    empty_share: float | None = None

    def __post_init__(self) -> None:
        where = f"source {self.name!r}"
        require(
            self.format in ("auto", *READ_FORMATS),
            f"{where}: format {self.format!r} is not one of {['auto', *READ_FORMATS]}",
        )
        require(self.limit is None or self.limit >= 1, f"{where}: limit must be >= 1 or null")
        require(
            self.empty_share is None or 0.0 <= self.empty_share <= 1.0,
            f"{where}: empty_share must be in [0, 1] or null",
        )
        require(
            self.negative_pool is None or self.negative_pool.is_file(),
            f"{where}: negative_pool {self.negative_pool} is not a file (a JSON list of types)",
        )
        try:
            self.schema_sampling(check_only=True)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from error
        require(
            self.definitions is None or self.labels is not None,
            f"{where}: definitions are read from a labels.json: set labels too",
        )

    def schema_sampling(self, check_only: bool = False) -> SchemaSampling:
        """How this source's schemas vary (``check_only``: without reading the pool)."""
        pool = None
        if self.negative_pool is not None and not check_only:
            pool = tuple(json.loads(self.negative_pool.read_text(encoding="utf-8")))
        return SchemaSampling.from_counts(
            self.negative_types,
            pool=pool,
            exclude=self.negative_exclude,
            subsets=self.schema_subsets,
            plain_share=self.plain_schema_share,
        )


def instructuie_types(path: Path) -> list[str] | None:
    """The type names of an InstructUIE ``labels.json`` (a JSON list of strings); None for
    this project's ``labels.json`` (an object mapping tags to names per convention)."""
    declared = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(declared, list):
        return None
    if not all(isinstance(name, str) for name in declared):
        raise ValueError(f"{path}: a list labels.json must hold type names (strings) only")
    return declared


def load_source(source: SourceConfig) -> tuple[list[NERRecord], list[str]]:
    """The source's records (dataset id = source name) and every type of the corpus."""
    if not source.path.exists():
        raise FileNotFoundError(
            f"training source {source.name!r}: {source.path} does not exist; fix its path in "
            "the profile's sources or pass --paths.data"
        )
    records = read_records(source.path, format=source.format)
    type_list = instructuie_types(source.labels) if source.labels is not None else None
    if type_list is not None:
        # InstructUIE's labels.json: the corpus's type names, used as they are (no map).
        if source.definitions:
            raise ConfigError(
                f"source {source.name!r}: {source.labels} is a plain list of type names "
                "(InstructUIE's labels.json) and has no definitions: set definitions = null"
            )
        types = type_list
    elif source.labels is not None:
        label_map = load_label_map(source.labels, source.naming)
        records = relabel(records, label_map)
        types = list(label_map.values())
        if source.definitions:
            definitions = load_definitions(source.labels, source.naming, source.definitions)
            for record in records:
                record.definitions = definitions
    else:
        types = sorted(
            {t for r in records for t in (r.schema or [])}
            | {t for r in records for *_, t in r.entities}
        )
    if len({r.dataset for r in records}) <= 1:  # not a mixed corpus such as NER-CoT
        for record in records:
            record.dataset = source.name
    return records, types


@dataclass
class Plan:
    """The records to process, in order, with their guids, and what planning removed."""

    records: list[NERRecord]
    guids: list[str]
    duplicates: Counter = field(default_factory=Counter)
    contaminated: dict[str, dict[str, int]] = field(default_factory=dict)


def guid(source: str, text: str) -> str:
    return f"{source}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def plan(
    sources: Sequence[SourceConfig],
    *,
    seed: int,
    drop_types: Sequence[str],
    forbidden_datasets: Sequence[str],
    decontamination: DecontaminationConfig,
) -> Plan:
    """Read, refuse, de-duplicate, decontaminate, sample (seeded per source) and build the
    schema of every record of ``sources``."""
    loaded = [(source, *load_source(source)) for source in sources]
    refuse_evaluation_domains((r for _, rs, _ in loaded for r in rs), forbidden_datasets)
    index = evaluation_index(evaluation_splits(decontamination, forbidden_datasets))
    result = Plan([], [])
    for source, source_records, types in loaded:
        unique: dict[str, NERRecord] = {}
        for record in source_records:
            unique.setdefault(record.text, record)
        result.duplicates[source.name] = len(source_records) - len(unique)
        clean = decontaminate(list(unique.values()), index)
        refuse_domain_content(
            source.name,
            len(unique),
            clean,
            forbidden_datasets,
            decontamination.max_domain_share,
        )
        result.contaminated.update(clean.report())
        rng = random.Random(f"{seed}:{source.name}")
        chosen = clean.kept
        if source.limit is not None and source.limit < len(chosen):
            chosen = [chosen[i] for i in sorted(rng.sample(range(len(chosen)), source.limit))]
        corpus_types = clean_types(types, drop_types)
        sampling = source.schema_sampling()
        built = [
            (record, with_schema(record, corpus_types, sampling=sampling, rng=rng, drop=drop_types))
            for record in chosen
        ]
        # Only misc-like types asked: nothing to learn from.
        built = [(record, final) for record, final in built if final.schema]
        if source.empty_share is not None:
            built = _bound_empty_share(built, source.empty_share, rng)
        for record, final in built:
            result.records.append(final)
            result.guids.append(guid(source.name, record.text))
    return result


def _bound_empty_share(
    built: list[tuple[NERRecord, NERRecord]], share: float, rng: random.Random
) -> list[tuple[NERRecord, NERRecord]]:
    """``built`` (original, with schema) without randomly chosen records whose schema finds
    nothing, so that at most ``share`` of what is left finds nothing; order kept."""
    empty = [i for i, (_, final) in enumerate(built) if not final.entities and not final.unaligned]
    keep = int(share * (len(built) - len(empty)) / (1 - share)) if share < 1 else len(empty)
    if keep >= len(empty):
        return built
    dropped = set(rng.sample(empty, len(empty) - keep))
    return [pair for i, pair in enumerate(built) if i not in dropped]
