"""The CG stage: training sources -> decontaminated records with schemas -> teacher drafts
-> quality control -> a chat-form ``datasets`` dataset, NER-CoT JSONL and a report.

Resumable: every processed sample is appended to ``samples.jsonl`` (with its decisions)
batch by batch, so an interrupted run restarts after the last finished batch, and teacher
and judge calls go through the response cache. Deterministic under ``cg.seed``: source
sampling and negative types use seeded generators, and the outputs follow the planned order
whatever the interruptions.

    python -m training build-data cpu [--cg.mode rationalize ...]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import typer
from spacy.cli._util import parse_config_overrides
from tqdm import tqdm

from spacy_reasoningner.alignment import find_word_occurrences
from spacy_reasoningner.backends.base import Backend
from spacy_reasoningner.benchmark.readers import (
    NERRecord,
    load_definitions,
    load_label_map,
    ner_cot_record,
    read_records,
    relabel,
)
from spacy_reasoningner.cache import CachedBackend, ResponseCache
from spacy_reasoningner.protocol import render_answer, render_completion, render_user_turn

from .config import build_backend, build_settings, fingerprint, load_profile, section
from .decontamination import decontaminate, evaluation_index, refuse_evaluation_domains
from .quality import AGREES, Check, gold_check, judge_checks, structural_checks
from .schemas import SchemaSampling, clean_types, with_schema
from .teacher import Draft, Mode, generate_drafts, gold_entities, record_schema

LOG_NAME = "samples.jsonl"
RUN_NAME = "run.json"


@dataclass
class Source:
    """One training corpus: a file the readers accept, with its label map and definitions."""

    name: str
    path: Path
    format: str = "auto"
    labels: Path | None = None  # a labels.json; None when the corpus names its own types
    naming: str | None = None  # naming convention in labels.json (e.g. "natural_name")
    definitions: str | None = None  # definition field in labels.json (e.g. "definition_gollie")
    limit: int | None = None  # sentences sampled (seeded); None keeps all
    # Types absent from a record added to its schema: a count or [fewest, most] per record,
    # drawn from negative_pool (a JSON list of type names; None: the corpus's types) minus
    # negative_exclude. schema_subsets: ask random subsets of a closed corpus's types.
    negative_types: int | list[int] = 0
    negative_pool: Path | None = None
    negative_exclude: list[str] = field(default_factory=list)
    schema_subsets: bool = False

    def schema_sampling(self) -> SchemaSampling:
        pool = None
        if self.negative_pool is not None:
            pool = tuple(json.loads(Path(self.negative_pool).read_text(encoding="utf-8")))
        return SchemaSampling.from_counts(
            self.negative_types,
            pool=pool,
            exclude=self.negative_exclude,
            subsets=self.schema_subsets,
        )


@dataclass
class DataConfig:
    output: Path
    sources: list[Source]
    mode: Mode = Mode.reannotate
    seed: int = 0
    batch_size: int = 16
    drop_types: list[str] = field(default_factory=list)
    forbidden_datasets: list[str] = field(default_factory=list)
    decontaminate: dict[str, Path] = field(default_factory=dict)
    cache: Path | None = None
    min_gold_f1: float = 0.8
    require_coverage: bool = True
    judge: bool = False
    judge_threshold: float = 9.0
    teacher: dict[str, Any] = field(default_factory=dict)
    teacher_generation: dict[str, Any] = field(default_factory=dict)
    judge_backend: dict[str, Any] = field(default_factory=dict)
    judge_generation: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None  # counts reasoning tokens in the report

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> DataConfig:
        cg = section(profile, "cg")
        quality = dict(cg.get("quality", {}))
        sources = [
            Source(name=name, **{k: v for k, v in block.items()})
            for name, block in dict(cg.get("sources", {})).items()
        ]
        if not sources:
            raise ValueError("[cg.sources] is empty: add at least one training corpus")
        config = cls(
            output=Path(cg["output"]),
            sources=sources,
            mode=Mode(cg.get("mode", "reannotate")),
            seed=int(cg.get("seed", 0)),
            batch_size=int(cg.get("batch_size", 16)),
            drop_types=list(cg.get("drop_types", [])),
            forbidden_datasets=list(cg.get("forbidden_datasets", [])),
            decontaminate={k: Path(v) for k, v in dict(cg.get("decontaminate", {})).items()},
            cache=Path(cg["cache"]) if cg.get("cache") else None,
            min_gold_f1=float(quality.get("min_gold_f1", 0.8)),
            require_coverage=bool(quality.get("require_coverage", True)),
            judge=bool(quality.get("judge", False)),
            judge_threshold=float(quality.get("judge_threshold", 9)),
            teacher=dict(cg.get("teacher", {})),
            teacher_generation=dict(cg.get("teacher_generation", {})),
            judge_backend=dict(cg.get("judge", {})),
            judge_generation=dict(cg.get("judge_generation", {})),
            tokenizer=profile.get("paths", {}).get("base_model"),
        )
        for source in config.sources:
            source.path = Path(source.path)
            source.labels = Path(source.labels) if source.labels else None
        return config

    def identity(self) -> str:
        """What determines the samples (not batch size or cache location)."""
        data = asdict(self)
        for key in ("batch_size", "cache", "output", "tokenizer"):
            data.pop(key)
        return fingerprint(data)


# --------------------------------------------------------------------------- planning


def load_source(source: Source) -> tuple[list[NERRecord], list[str]]:
    """The source's records (dataset id = source name) and every type of the corpus."""
    if not source.path.exists():
        raise FileNotFoundError(
            f"training source {source.name!r}: {source.path} does not exist; fix its path in "
            "[cg.sources] or pass --paths.data"
        )
    records = read_records(source.path, format=source.format)
    if source.labels is not None:
        naming = source.naming or "natural_name"
        label_map = load_label_map(source.labels, naming)
        records = relabel(records, label_map)
        types = list(label_map.values())
        if source.definitions:
            definitions = load_definitions(source.labels, naming, source.definitions)
            for record in records:
                record.definitions = definitions
    else:
        types = sorted({t for r in records for t in (r.schema or [])} | _entity_types(records))
    if len({r.dataset for r in records}) <= 1:  # not a mixed corpus such as NER-CoT
        for record in records:
            record.dataset = source.name
    return records, types


def _entity_types(records: list[NERRecord]) -> set[str]:
    return {t for r in records for *_, t in r.entities}


@dataclass
class Plan:
    """The records to process, in order, and what planning removed."""

    records: list[NERRecord]
    guids: list[str]
    duplicates: Counter = field(default_factory=Counter)
    contaminated: dict[str, dict[str, int]] = field(default_factory=dict)


def plan(config: DataConfig) -> Plan:
    loaded = [(source, *load_source(source)) for source in config.sources]
    refuse_evaluation_domains((r for _, rs, _ in loaded for r in rs), config.forbidden_datasets)
    index = evaluation_index(
        {name: read_records(path) for name, path in config.decontaminate.items()}
    )
    records, guids, duplicates, contaminated = [], [], Counter(), {}
    for source, source_records, types in loaded:
        unique: dict[str, NERRecord] = {}
        for record in source_records:
            unique.setdefault(record.text, record)
        duplicates[source.name] = len(source_records) - len(unique)
        clean = decontaminate(list(unique.values()), index)
        contaminated.update(clean.report())
        rng = random.Random(f"{config.seed}:{source.name}")
        chosen = clean.kept
        if source.limit is not None and source.limit < len(chosen):
            chosen = [chosen[i] for i in sorted(rng.sample(range(len(chosen)), source.limit))]
        corpus_types = clean_types(types, config.drop_types)
        sampling = source.schema_sampling()
        for record in chosen:
            final = with_schema(
                record,
                corpus_types,
                sampling=sampling,
                rng=rng,
                drop=config.drop_types,
            )
            if not final.schema:
                continue  # only misc-like types asked: nothing to learn from
            records.append(final)
            guids.append(f"{source.name}-{hashlib.sha1(record.text.encode()).hexdigest()[:12]}")
    return Plan(records, guids, duplicates, contaminated)


# --------------------------------------------------------------------------- running


def _with_cache(backend: Backend, cache: Path | None) -> Backend:
    return backend if cache is None else CachedBackend(backend, ResponseCache(cache))


def _model_name(backend: Backend) -> str:
    identity = getattr(backend, "identity", None)
    return (
        str(identity.get("model", type(backend).__name__)) if identity else type(backend).__name__
    )


def process_batch(
    config: DataConfig,
    records: list[NERRecord],
    teacher: Backend | None,
    judge: Backend | None,
) -> list[dict[str, Any]]:
    """Drafts, checks and judgement for a batch; one log entry per record."""
    settings = build_settings(config.teacher_generation)
    name = _model_name(teacher) if teacher is not None else ""
    drafts = generate_drafts(records, config.mode, teacher, settings, name)
    checks: list[list[Check]] = [
        [
            *structural_checks(r, d, require_coverage=config.require_coverage),
            gold_check(r, d, config.min_gold_f1),
        ]
        for r, d in zip(records, drafts, strict=True)
    ]
    judgements: list[dict | None] = [None] * len(records)
    if judge is not None:
        passing = [i for i, cs in enumerate(checks) if all(c.passed for c in cs)]
        if passing:
            verdicts = judge_checks(
                [records[i] for i in passing],
                [drafts[i] for i in passing],
                judge,
                build_settings(config.judge_generation),
                config.judge_threshold,
            )
            for i, (check, judgement) in zip(passing, verdicts, strict=True):
                checks[i].append(check)
                judgements[i] = judgement
    return [
        log_entry(r, d, cs, j)
        for r, d, cs, j in zip(records, drafts, checks, judgements, strict=True)
    ]


def _pairs(entities: dict[str, list[str]]) -> list[dict[str, str]]:
    return [{"text": m, "label": t} for t, ms in entities.items() for m in ms]


def log_entry(
    record: NERRecord, draft: Draft, checks: list[Check], judgement: dict | None
) -> dict[str, Any]:
    failed = [c for c in checks if not c.passed]
    return {
        "dataset": record.dataset,
        "source": record.source,
        "text": record.text,
        "schema": record.schema,
        "definitions": record.definitions or {},
        "gold": _pairs(gold_entities(record)),
        "reasoning": draft.reasoning,
        "entities": _pairs(draft.entities),
        "generator": draft.generator,
        "kept": not failed,
        "drop_reason": failed[0].name if failed else None,
        "checks": [asdict(c) for c in checks],
        "judgement": judgement,
        "n_tokens": draft.n_tokens,
    }


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """Finished samples by guid. A last line cut by a crash is removed from the file (its
    sample is redone), so that appending starts on a fresh line."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    for line in complete.decode("utf-8").splitlines():
        entry = json.loads(line)
        done[entry["guid"]] = entry
    return done


def _append(path: Path, entries: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _batches(items: list, size: int) -> Iterator[list]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def run(config: DataConfig) -> dict[str, Any]:
    """Plan, process what is not done yet, write the outputs; returns the report."""
    config.output.mkdir(parents=True, exist_ok=True)
    run_file = config.output / RUN_NAME
    identity = config.identity()
    if run_file.exists() and json.loads(run_file.read_text())["identity"] != identity:
        raise ValueError(
            f"{config.output} holds samples of a different [cg] configuration: delete the "
            "folder to start over, or set cg.output to a new folder"
        )
    run_file.write_text(json.dumps({"identity": identity, "mode": config.mode.value}))
    planned = plan(config)
    log_path = config.output / LOG_NAME
    done = read_log(log_path)
    pending = [(g, r) for g, r in zip(planned.guids, planned.records, strict=True) if g not in done]
    teacher = judge = None
    if pending and config.mode is not Mode.template:
        teacher = _with_cache(build_backend(config.teacher), config.cache)
    if pending and config.judge:
        # The same block as the teacher's shares its engine: one model load, one GPU pool.
        same = teacher is not None and config.judge_backend == config.teacher
        judge = teacher if same else _with_cache(build_backend(config.judge_backend), config.cache)
    with tqdm(
        total=len(planned.records),
        initial=len(planned.records) - len(pending),
        unit="sample",
        desc="reasoning data",
    ) as bar:
        for batch in _batches(pending, config.batch_size):
            entries = process_batch(config, [r for _, r in batch], teacher, judge)
            for (guid, _), entry in zip(batch, entries, strict=True):
                entry["guid"] = guid
            _append(log_path, entries)
            done.update((e["guid"], e) for e in entries)
            bar.update(len(batch))
    entries = [done[g] for g in planned.guids]
    write_outputs(config.output, entries)
    report = build_report(entries, planned, config)
    (config.output / "report.json").write_text(json.dumps(report, indent=2))
    (config.output / "report.md").write_text(report_markdown(report))
    return report


# --------------------------------------------------------------------------- outputs


def training_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A kept sample in TRL's conversational prompt-completion form, plus its fields."""
    record = NERRecord(
        entry["text"],
        [],
        entry["source"],
        schema=entry["schema"],
        definitions=entry["definitions"] or None,
    )
    schema = record_schema(record)
    answer: dict[str, list[str]] = {}
    for pair in entry["entities"]:
        answer.setdefault(pair["label"], []).append(pair["text"])
    completion = render_completion(entry["reasoning"] or None, render_answer(answer, schema))
    return {
        "guid": entry["guid"],
        "dataset": entry["dataset"],
        "text": entry["text"],
        "schema": entry["schema"],
        "definitions": json.dumps(entry["definitions"] or {}, ensure_ascii=False),
        "entities": entry["entities"],
        "reasoning": entry["reasoning"],
        "generator": entry["generator"],
        "prompt": [{"role": "user", "content": render_user_turn(entry["text"], schema)}],
        "completion": [{"role": "assistant", "content": completion}],
    }


def write_outputs(output: Path, entries: list[dict[str, Any]]) -> None:
    from datasets import Dataset

    kept = [e for e in entries if e["kept"]]
    rows = [training_row(e) for e in kept]
    Dataset.from_list(rows).save_to_disk(str(output / "dataset"))
    with (output / "ner_cot.jsonl").open("w", encoding="utf-8") as handle:
        for entry in kept:
            record = read_entry_record(entry)
            line = ner_cot_record(record, guid=entry["guid"], cot=entry["reasoning"])
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")


def read_entry_record(entry: dict[str, Any]) -> NERRecord:
    """The sample's answer as a record (offsets of every occurrence), for NER-CoT output."""
    spans = sorted(
        {
            (start, end, pair["label"])
            for pair in entry["entities"]
            for start, end in find_word_occurrences(entry["text"], pair["text"], fuzzy=True)
        }
    )
    return NERRecord(
        entry["text"], spans, entry["source"], dataset=entry["dataset"], schema=entry["schema"]
    )


def build_report(
    entries: list[dict[str, Any]], planned: Plan, config: DataConfig
) -> dict[str, Any]:
    per_source: dict[str, Counter] = {}
    for entry in entries:
        counts = per_source.setdefault(entry["dataset"], Counter())
        counts["kept" if entry["kept"] else f"dropped: {entry['drop_reason']}"] += 1
    lengths = _reasoning_tokens([e["reasoning"] for e in entries if e["kept"]], config.tokenizer)
    gold_f1 = [
        float(c["detail"].split()[1]) for e in entries for c in e["checks"] if c["name"] == AGREES
    ]
    return {
        "mode": config.mode.value,
        "samples": len(entries),
        "kept": sum(e["kept"] for e in entries),
        "per_source": {k: dict(v) for k, v in per_source.items()},
        "dropped_by_reason": dict(Counter(e["drop_reason"] for e in entries if not e["kept"])),
        "duplicates_removed": dict(planned.duplicates),
        "decontamination_removed": planned.contaminated,
        "mean_gold_f1": statistics.fmean(gold_f1) if gold_f1 else None,
        "reasoning_tokens": lengths,
    }


def _reasoning_tokens(texts: list[str], tokenizer_ref: str | None) -> dict[str, float] | None:
    if not texts or not tokenizer_ref:
        return None
    from transformers import AutoTokenizer

    from spacy_reasoningner.models import resolve_model

    source = resolve_model(tokenizer_ref)
    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    counts = sorted(len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts)
    return {
        "tokenizer": tokenizer_ref,
        "mean": statistics.fmean(counts),
        "median": statistics.median(counts),
        "p95": counts[min(len(counts) - 1, int(0.95 * len(counts)))],
        "max": counts[-1],
    }


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Reasoning data ({report['mode']}): {report['kept']} of {report['samples']} kept",
        "",
        "| source | outcome | samples |",
        "|---|---|---|",
    ]
    for source, counts in report["per_source"].items():
        lines += [f"| {source} | {outcome} | {n} |" for outcome, n in sorted(counts.items())]
    lines += ["", f"Duplicates removed: {report['duplicates_removed']}"]
    lines += [f"Removed as overlapping evaluation splits: {report['decontamination_removed']}"]
    if report["reasoning_tokens"]:
        lines += [f"Reasoning tokens of kept samples: {report['reasoning_tokens']}"]
    return "\n".join(lines) + "\n"


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Build reasoning data (CG): read sources, generate, check, write dataset and report."""
    config = DataConfig.from_profile(load_profile(profile, parse_config_overrides(ctx.args)))
    report = run(config)
    typer.echo(report_markdown(report))
    typer.echo(f"dataset: {config.output / 'dataset'}  report: {config.output / 'report.md'}")
