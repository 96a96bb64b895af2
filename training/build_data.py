"""The CG stage: training sources -> decontaminated records with schemas -> teacher drafts
-> quality control -> a chat-form ``datasets`` dataset, NER-CoT JSONL and a report.

Resumable: every processed sample is appended to ``samples.jsonl`` (with its decisions)
batch by batch, so an interrupted run restarts after the last finished batch, and teacher
and judge calls go through the response cache. Deterministic under ``cg.seed``: source
sampling and negative types use seeded generators, and the outputs follow the planned order
whatever the interruptions.

Mode ``released`` generates nothing: it reads the released NER-CoT file of ``[cg.released]``
(the reference's SFT data) through the same planner (de-duplication, decontamination,
schemas) and writes the same outputs, so that ``[sft] dataset`` points at them either way.

    python -m training build-data cpu [--cg.mode rationalize ...]
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import typer
from tqdm import tqdm

from spacy_reasoningner.backends.base import Backend
from spacy_reasoningner.benchmark.overlap import CG_LOG_NAME
from spacy_reasoningner.benchmark.readers import NERRecord, ner_cot_record
from spacy_reasoningner.cache import CachedBackend, ResponseCache

from .config import (
    StageConfig,
    build_backend,
    build_settings,
    fingerprint,
    load_profile,
    parse_overrides,
    require,
)
from .decontamination import DecontaminationConfig
from .quality import AGREES, Check, gold_check, judge_checks, structural_checks
from .samples import Sample
from .sources import (
    Plan,
    SourceConfig,
    default_drop_types,
    default_forbidden_datasets,
    plan,
)
from .teacher import Draft, Mode, generate_drafts

LOG_NAME = CG_LOG_NAME
RUN_NAME = "run.json"


@dataclass
class QualityConfig:
    """``[cg.quality]``: which drafts are kept."""

    # Minimum string-level F1 of the teacher's answer against gold, where gold exists.
    min_gold_f1: float = 0.8
    # Every final entity must be discussed in the reasoning.
    require_coverage: bool = True
    # A judge model scores coherence and factual accuracy 0-10; below the threshold is dropped.
    judge: bool = False
    judge_threshold: float = 9.0
    # Whether the judge thinks before its verdict: false turns the chat template's thinking
    # switch off (Qwen3's enable_thinking, sent to vLLM as a chat-template argument), so a
    # reasoning judge answers at once. With true, a reply whose thinking fills
    # [cg.judge_generation] max_new_tokens before a verdict is asked again, thinking off.
    judge_thinking: bool = True

    def __post_init__(self) -> None:
        require(0.0 <= self.min_gold_f1 <= 1.0, "[cg.quality] min_gold_f1 must be in [0, 1]")
        require(
            0.0 <= self.judge_threshold <= 10.0, "[cg.quality] judge_threshold must be in [0, 10]"
        )


# The source name of the released file in mode "released" (the dataset name of its rows,
# whose own `dataset` field is null).
RELEASED_SOURCE = "ner_cot"


@dataclass
class ReleasedConfig:
    """``[cg.released]``: the released NER-CoT file that mode ``released`` reads."""

    # HuiHuang/NER-CoT (a JSON list or JSONL of guid, dataset, sentence, schema, cot, entities).
    path: Path
    # Rows sampled (seeded); None keeps all, as the reference trains on all.
    limit: int | None = None

    def __post_init__(self) -> None:
        require(self.limit is None or self.limit >= 1, "[cg.released] limit must be >= 1 or null")

    def source(self) -> SourceConfig:
        """The file as a training source: the release's own schemas, no negatives added."""
        return SourceConfig(
            name=RELEASED_SOURCE, path=self.path, format="ner-cot", limit=self.limit
        )


@dataclass
class DataConfig(StageConfig):
    """``[cg]``: the CG stage.

    In mode ``released`` the released file is the only source: ``sources`` is replaced by it
    (``[cg.sources]`` are the texts the generating modes read), so that everything reading a
    data stage's sources (the planner, the launcher's input check) reads that file.
    """

    SECTION: ClassVar[str] = "cg"

    output: Path
    # The texts the teacher (or the template) annotates; not read in mode "released".
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    # reannotate (the paper's CG), rationalize (from gold), template (no model) or released
    # (the released NER-CoT file of [cg.released], as the reference's SFT reads it).
    mode: Mode = Mode.reannotate
    released: ReleasedConfig | None = None
    seed: int = 0
    batch_size: int = 16
    drop_types: list[str] = field(default_factory=default_drop_types)
    forbidden_datasets: list[str] = field(default_factory=default_forbidden_datasets)
    # The evaluation data no training text may come from.
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    # Cache of teacher and judge responses (a rerun after a crash regenerates nothing).
    cache: Path | None = None
    quality: QualityConfig = field(default_factory=QualityConfig)
    # Backend blocks ({"@reasoning_ner_backends": ...}) and their generation settings.
    teacher: dict[str, Any] = field(default_factory=dict)
    teacher_generation: dict[str, Any] = field(default_factory=dict)
    judge: dict[str, Any] = field(default_factory=dict)
    judge_generation: dict[str, Any] = field(default_factory=dict)
    # Counts reasoning tokens in the report (a model reference); None: no counts.
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.mode is Mode.released:
            require(
                self.released is not None,
                '[cg] mode "released" reads the file of [cg.released]: add that block with '
                "path = the NER-CoT file (`spacy project assets --extra` downloads it)",
            )
            # The release was filtered by its authors and the reference trains on every row;
            # a judge would also make the launcher start its server for nothing.
            require(
                not self.quality.judge,
                '[cg] mode "released" judges nothing: set [cg.quality] judge = false (the '
                "judge belongs to the generating modes)",
            )
            self.sources = {RELEASED_SOURCE: self.released.source()}
        require(bool(self.sources), "[cg.sources] is empty: add at least one training corpus")
        require(self.batch_size >= 1, "[cg] batch_size must be >= 1")
        require(
            not self.mode.needs_teacher or bool(self.teacher),
            f"[cg] mode {self.mode.value!r} needs a teacher: add a [cg.teacher] backend block",
        )
        require(
            not self.quality.judge or bool(self.judge),
            "[cg.quality] judge = true needs a [cg.judge] backend block",
        )
        switch = dict(self.judge_generation.get("chat_template_kwargs") or {})
        require(
            switch.get("enable_thinking", self.quality.judge_thinking)
            == self.quality.judge_thinking,
            "[cg.judge_generation] chat_template_kwargs.enable_thinking contradicts "
            "[cg.quality] judge_thinking: set the judge's thinking with judge_thinking alone",
        )

    def identity(self) -> str:
        """What determines the samples (not batch size, cache location or token counts)."""
        data = asdict(self)
        for key in ("batch_size", "cache", "output", "tokenizer"):
            data.pop(key)
        return fingerprint(data)

    def plan(self) -> Plan:
        return plan(
            list(self.sources.values()),
            seed=self.seed,
            drop_types=self.drop_types,
            forbidden_datasets=self.forbidden_datasets,
            decontamination=self.decontamination,
        )


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
    batch: list[tuple[str, NERRecord]],
    teacher: Backend | None,
    judge: Backend | None,
) -> list[dict[str, Any]]:
    """Drafts, checks and judgement for a batch of (guid, record); one log entry each."""
    records = [record for _, record in batch]
    settings = build_settings(config.teacher_generation)
    name = _model_name(teacher) if teacher is not None else ""
    drafts = generate_drafts(records, config.mode, teacher, settings, name)
    quality = config.quality
    # Released rows are kept as released (the reference trains on all of them); quality
    # control is for what this stage generates.
    checks: list[list[Check]] = [
        []
        if config.mode is Mode.released
        else [
            *structural_checks(r, d, require_coverage=quality.require_coverage),
            gold_check(r, d, quality.min_gold_f1),
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
                quality.judge_threshold,
                thinking=quality.judge_thinking,
            )
            for i, (check, judgement) in zip(passing, verdicts, strict=True):
                checks[i].append(check)
                judgements[i] = judgement
    return [
        log_entry(g, r, d, cs, j)
        for (g, r), d, cs, j in zip(batch, drafts, checks, judgements, strict=True)
    ]


def log_entry(
    guid: str, record: NERRecord, draft: Draft, checks: list[Check], judgement: dict | None
) -> dict[str, Any]:
    """The sample the draft makes, with every decision about it."""
    sample = Sample.from_record(
        record, guid, answer=draft.entities, reasoning=draft.reasoning, generator=draft.generator
    )
    failed = [c for c in checks if not c.passed]
    return {
        **sample.to_dict(),
        "gold": [{"text": m, "label": t} for m, t in Sample.from_record(record, guid).entities],
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
    planned = config.plan()
    log_path = config.output / LOG_NAME
    done = read_log(log_path)
    pending = [(g, r) for g, r in zip(planned.guids, planned.records, strict=True) if g not in done]
    teacher = judge = None
    if pending and config.mode.needs_teacher:
        teacher = _with_cache(build_backend(config.teacher), config.cache)
    if pending and config.quality.judge:
        # The same block as the teacher's shares its engine: one model load, one GPU pool.
        same = teacher is not None and config.judge == config.teacher
        judge = teacher if same else _with_cache(build_backend(config.judge), config.cache)
    with tqdm(
        total=len(planned.records),
        initial=len(planned.records) - len(pending),
        unit="sample",
        desc="reasoning data",
    ) as bar:
        for batch in _batches(pending, config.batch_size):
            entries = process_batch(config, batch, teacher, judge)
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


def write_outputs(output: Path, entries: list[dict[str, Any]]) -> None:
    """The kept samples as a dataset (``save_to_disk``) and as NER-CoT JSONL."""
    from datasets import Dataset

    kept = [Sample.from_dict(e) for e in entries if e["kept"]]
    Dataset.from_list([sample.to_row() for sample in kept]).save_to_disk(str(output / "dataset"))
    with (output / "ner_cot.jsonl").open("w", encoding="utf-8") as handle:
        for sample in kept:
            line = ner_cot_record(sample.to_record(), guid=sample.guid, cot=sample.reasoning)
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")


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
    config = DataConfig.from_profile(load_profile(profile, parse_overrides(ctx.args)))
    report = run(config)
    typer.echo(report_markdown(report))
    typer.echo(f"dataset: {config.output / 'dataset'}  report: {config.output / 'report.md'}")
