"""Distillation: a reasoning_ner teacher annotates a corpus, a fast spaCy ``ner`` learns it.

Three commands, each reading ``[distill]`` of a profile:

* ``distill-data``: the corpus (``[distill.sources]``, read and decontaminated like the CG
  stage's sources) is annotated by the teacher through ``spacy_reasoningner.annotate`` (any
  engine, response cache, resumable), or taken from gold (``teacher.kind = "gold"``: a perfect
  teacher, the student's upper bound). Teacher outputs are filtered (truncated or unparsed
  completions; optionally unaligned mentions; with several samples, documents whose samples
  disagree), labels are mapped, the rest is split into ``train.spacy`` and ``dev.spacy``.
  Every dropped document and entity is counted in ``report.json``, none is lost silently.
* ``distill-train``: a training config from ``spacy init config`` (``ner``, the CPU
  ``tok2vec`` architecture) with the profile's overrides, trained by the real ``spacy train``
  CLI; the best model's ``meta.json`` gets the provenance (teacher, counts, scores), which
  ``spacy package`` carries into the wheel.
* ``distill-evaluate``: teacher and student on the same gold dev sentences: string F1 (the
  paper's reference metric for the teacher; for the student every entity is a string it
  answered, so its grounded and reference string F1 coincide), offset F1, the student's
  agreement F1 with the teacher, and docs/s of each.

    python -m training distill-data cpu [--distill.sources.conll2003.limit 400]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import spacy
import typer
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import filter_spans

from spacy_reasoningner.annotate import PipelineSpec, annotate
from spacy_reasoningner.benchmark import evaluate, load_eval_set
from spacy_reasoningner.protocol import Schema
from spacy_reasoningner.task import NERTask

from .config import StageConfig, fingerprint, load_profile, parse_overrides, require
from .sources import SourceConfig, default_drop_types, plan

COMPONENT = "reasoning_ner"
DROP_REASONS = ("teacher_rejected", "truncated", "unparsed", "unaligned", "disagreement")


@dataclass
class TeacherConfig:
    """``[distill.teacher]``: who annotates. ``pipeline``: a saved reasoning_ner pipeline
    (e.g. a profile's ``outputs/<profile>/pipeline``); without it a new one is built with
    ``component`` settings. ``backend`` (a ``[distill.teacher.backend]`` block) replaces the
    backend of either (a saved pipeline's weights stay in use)."""

    kind: Literal["model", "gold"] = "model"
    pipeline: Path | None = None
    # None: the saved pipeline's own backend, or the transformers backend's defaults.
    backend: dict[str, Any] | None = None
    component: dict[str, Any] = field(default_factory=dict)
    engine: Literal["local", "ray"] = "local"
    actors: int = 1
    batch_size: int | None = None
    shard_size: int = 200
    # Python files registering functions the teacher needs (a custom backend).
    code: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("labels", "backend", "keep_raw"):
            require(
                key not in self.component,
                f"[distill.teacher.component] must not set {key}: the stage sets it",
            )


@dataclass
class StudentConfig:
    """``[distill.student]``: the spaCy pipeline that learns. ``training``: overrides of the
    generated config, as sections (``[distill.student.training.training] max_steps = 2000``)
    or dotted keys (``{"training.max_steps": 2000}``)."""

    lang: str = "en"
    optimize: Literal["efficiency", "accuracy"] = "efficiency"
    training: dict[str, Any] = field(default_factory=dict)
    gpu_id: int = -1


@dataclass
class DistillEvalConfig:
    """``[distill.evaluate]``: the gold dev sentences teacher and student are scored on."""

    data: Path
    datasets: list[str]
    split: str = "dev"
    limit: int | None = None
    seed: int = 0
    batch_size: int | None = None


@dataclass
class DistillConfig(StageConfig):
    """``[distill]``: corpus, teacher, filters, labels, split and student."""

    SECTION: ClassVar[str] = "distill"

    output: Path
    sources: dict[str, SourceConfig]
    # The teacher's entity types (a list, or a mapping type -> definition).
    labels: Any
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    evaluate: DistillEvalConfig | None = None
    # Teacher label -> student label; "" drops the label's entities (counted).
    label_map: dict[str, str] = field(default_factory=dict)
    drop_truncated: bool = True
    drop_unparsed: bool = True
    drop_unaligned: bool = False
    # Teacher samples per document (temperature > 0 in teacher.component.generation); with
    # more than one, a document is kept when the samples agree (mean pairwise offset F1 >=
    # min_agreement) and its entities are those most samples found.
    samples: int = 1
    min_agreement: float = 0.8
    dev_fraction: float = 0.1
    seed: int = 0
    drop_types: list[str] = field(default_factory=default_drop_types)
    # Evaluation splits the corpus must not overlap (normalized sentence hashes).
    decontaminate: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Schema.from_config(self.labels)
        require(bool(self.sources), "[distill.sources] is empty: name at least one corpus")
        require(self.samples >= 1, "[distill] samples must be >= 1")
        require(0.0 <= self.min_agreement <= 1.0, "[distill] min_agreement must be in [0, 1]")
        require(0.0 < self.dev_fraction < 1.0, "[distill] dev_fraction must be in (0, 1)")
        unknown = sorted(set(self.label_map) - set(Schema.from_config(self.labels).labels))
        require(not unknown, f"[distill.label_map] maps labels the teacher has not: {unknown}")


# --------------------------------------------------------------------------- data


@dataclass
class DistillData:
    """Counts of ``distill-data``: every document and entity accounted for."""

    documents: int = 0  # corpus documents given to the teacher
    kept: int = 0
    train: int = 0
    dev: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    entities: dict[str, int] = field(default_factory=dict)  # kept, per student label
    dropped_entities: dict[str, int] = field(default_factory=dict)  # by label_map, per label
    teacher: dict[str, Any] = field(default_factory=dict)  # identity, run counts

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def distill_data(config: DistillConfig) -> DistillData:
    """Annotate (or take gold), filter, map labels, split; write DocBins and report.json."""
    records = plan(
        list(config.sources.values()),
        seed=config.seed,
        drop_types=config.drop_types,
        forbidden_datasets=[],  # a student is trained for the domains it is distilled on
        decontaminate_against=config.decontaminate,
    ).records
    report = DistillData(documents=len(records))
    nlp = spacy.blank(config.student.lang)
    if config.teacher.kind == "gold":
        docs = [_gold_doc(nlp, r) for r in records]
        report.teacher = {"kind": "gold", "sources": sorted(config.sources)}
    else:
        docs = _teacher_docs(nlp, config, records, report)
    kept = [_map_labels(doc, config.label_map, report) for doc in docs]
    rng = random.Random(config.seed)
    rng.shuffle(kept)
    n_dev = max(1, round(len(kept) * config.dev_fraction)) if len(kept) > 1 else 0
    dev, train = kept[:n_dev], kept[n_dev:]
    report.kept, report.train, report.dev = len(kept), len(train), len(dev)
    require_data(report)
    out = config.output / "data"
    out.mkdir(parents=True, exist_ok=True)
    DocBin(docs=train).to_disk(out / "train.spacy")
    DocBin(docs=dev).to_disk(out / "dev.spacy")
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def require_data(report: DistillData) -> None:
    if report.train == 0:
        raise ValueError(
            f"no training documents left: {report.documents} given to the teacher, dropped "
            f"{report.dropped}; relax the filters or annotate more (sources' limit)"
        )


def _gold_doc(nlp: spacy.language.Language, record: Any) -> Doc:
    doc = _tokens_doc(nlp, record)
    spans = [doc.char_span(s, e, label, alignment_mode="expand") for s, e, label in record.entities]
    doc.ents = filter_spans([s for s in spans if s is not None])
    return doc


def _tokens_doc(nlp: spacy.language.Language, record: Any) -> Doc:
    """The record's own tokens where it has them (BIO), as evaluation builds its Docs."""
    if record.tokens and " ".join(record.tokens) == record.text:
        return Doc(
            nlp.vocab, words=record.tokens, spaces=[True] * (len(record.tokens) - 1) + [False]
        )
    return nlp.make_doc(record.text)


def teacher_spec(config: DistillConfig, sample: int = 0) -> PipelineSpec:
    """The teacher's pipeline, keeping raw completions (to find unparsed ones) and, for
    several samples, one generation seed per sample."""
    teacher = config.teacher
    overrides: dict[str, Any] = {f"components.{COMPONENT}.keep_raw": True}
    if config.samples > 1:
        overrides[f"components.{COMPONENT}.generation.seed"] = config.seed + sample
    if teacher.backend is not None:
        overrides[f"components.{COMPONENT}.backend"] = teacher.backend
    code = [str(c) for c in teacher.code]
    if teacher.pipeline is not None:
        spec = PipelineSpec(path=str(teacher.pipeline), code=tuple(code), labels=config.labels)
        name = spec.component_name()
        overrides = {k.replace(COMPONENT, name, 1): v for k, v in overrides.items()}
        return spec.with_overrides(overrides)
    component = {**teacher.component, "labels": config.labels}
    return PipelineSpec.from_component(component, code=code).with_overrides(overrides)


def _teacher_docs(
    nlp: spacy.language.Language, config: DistillConfig, records: list[Any], report: DistillData
) -> list[Doc]:
    """The teacher's annotations of ``records`` (one run per sample), filtered and merged."""
    corpus = config.output / "teacher" / "corpus.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text(
        "".join(json.dumps({"text": r.text, "index": i}) + "\n" for i, r in enumerate(records)),
        encoding="utf-8",
    )
    runs = []
    for sample in range(config.samples):
        summary = annotate(
            [str(corpus)],
            config.output / "teacher" / f"sample-{sample}",
            teacher_spec(config, sample),
            engine=config.teacher.engine,
            ray_options=_ray_options(config.teacher),
            batch_size=config.teacher.batch_size,
            shard_size=config.teacher.shard_size,
            keep_going=True,
        )
        runs.append(_annotated(summary.output, nlp))
        report.teacher.setdefault("runs", []).append(
            {"models": summary.models, "counts": summary.counts, "seconds": summary.seconds}
        )
    task = NERTask.from_labels(config.labels)
    docs = []
    for index in range(len(records)):
        samples = [run.get(index) for run in runs]
        if any(doc is None for doc in samples):
            report.dropped["teacher_rejected"] += 1
            continue
        reason = _drop_reason(samples, task, config)
        if reason:
            report.dropped[reason] += 1
            continue
        docs.append(_consensus(nlp, samples))
    return docs


def _ray_options(teacher: TeacherConfig) -> Any:
    if teacher.engine != "ray":
        return None
    from spacy_reasoningner.annotate.ray_engine import RayOptions

    return RayOptions(actors=teacher.actors)


def _annotated(output: Path, nlp: spacy.language.Language) -> dict[int, Doc]:
    """The annotated Docs of a run, by corpus index."""
    docs = {}
    for path in sorted((output / "shards").glob("*.spacy")):
        for doc in DocBin(store_user_data=True).from_disk(path).get_docs(nlp.vocab):
            docs[doc.user_data["annotate.fields"]["index"]] = doc
    return docs


def _drop_reason(samples: list[Doc], task: NERTask, config: DistillConfig) -> str | None:
    """Why a document's teacher output is not trusted, or None."""
    for doc in samples:
        if config.drop_truncated and doc._.ner_truncated:
            return "truncated"
        if config.drop_unparsed and any(
            not task.parse(w["completion"]).parsed for w in doc._.ner_raw or []
        ):
            return "unparsed"
        if config.drop_unaligned and doc._.ner_unaligned:
            return "unaligned"
    if len(samples) > 1 and _agreement(samples) < config.min_agreement:
        return "disagreement"
    return None


def _spans(doc: Doc) -> set[tuple[int, int, str]]:
    return {(e.start_char, e.end_char, e.label_) for e in doc.ents}


def _agreement(samples: list[Doc]) -> float:
    """Mean pairwise offset F1 of the samples' entities (1.0 when all are empty)."""
    scores = []
    for a, b in itertools.combinations([_spans(d) for d in samples], 2):
        scores.append(1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b)))
    return sum(scores) / len(scores)


def _consensus(nlp: spacy.language.Language, samples: list[Doc]) -> Doc:
    """A clean Doc (words, spaces, entities; no user data) with the entities more than half
    of the samples found."""
    first = samples[0]
    votes = Counter(span for doc in samples for span in _spans(doc))
    doc = Doc(nlp.vocab, words=[t.text for t in first], spaces=[bool(t.whitespace_) for t in first])
    spans = [
        doc.char_span(s, e, label)
        for (s, e, label), n in sorted(votes.items())
        if n > len(samples) / 2
    ]
    doc.ents = filter_spans([s for s in spans if s is not None])
    return doc


def _map_labels(doc: Doc, label_map: dict[str, str], report: DistillData) -> Doc:
    ents = []
    for ent in doc.ents:
        label = label_map.get(ent.label_, ent.label_)
        if not label:
            report.dropped_entities[ent.label_] = report.dropped_entities.get(ent.label_, 0) + 1
            continue
        ents.append(doc.char_span(ent.start_char, ent.end_char, label))
        report.entities[label] = report.entities.get(label, 0) + 1
    doc.ents = ents
    return doc


# --------------------------------------------------------------------------- training


def student_config(config: DistillConfig) -> Any:
    """``spacy init config --pipeline ner`` for the student's language and optimization."""
    from spacy.cli.init_config import init_config

    student = config.student
    return init_config(
        lang=student.lang,
        pipeline=["ner"],
        optimize=student.optimize,
        gpu=False,
        silent=True,
    )


def distill_train(config: DistillConfig) -> Path:
    """Train the student with ``spacy train``; return its best model (provenance added)."""
    data = config.output / "data"
    if not (data / "train.spacy").is_file():
        raise FileNotFoundError(f"no {data / 'train.spacy'}: run distill-data first")
    folder = config.output / "student"
    folder.mkdir(parents=True, exist_ok=True)
    student_config(config).to_disk(folder / "config.cfg")
    overrides = {
        "paths.train": str(data / "train.spacy"),
        "paths.dev": str(data / "dev.spacy"),
        "system.seed": config.seed,
        **_dotted(config.student.training),
    }
    command = [sys.executable, "-m", "spacy", "train", str(folder / "config.cfg"),
               "--output", str(folder), "--gpu-id", str(config.student.gpu_id)]  # fmt: skip
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    best = folder / "model-best"
    add_provenance(best, config, seconds=time.perf_counter() - started)
    return best


def _dotted(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"max_steps": 9}}`` -> ``{"training.max_steps": 9}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def add_provenance(model: Path, config: DistillConfig, seconds: float) -> None:
    """Record in ``meta.json`` what the student learnt from: ``spacy package`` keeps it."""
    report = json.loads((config.output / "data" / "report.json").read_text())
    meta_path = model / "meta.json"
    meta = json.loads(meta_path.read_text())
    teacher = config.teacher
    meta["distillation"] = {
        "teacher": {
            "kind": teacher.kind,
            "pipeline": str(teacher.pipeline) if teacher.pipeline else None,
            "runs": report["teacher"].get("runs", []),
            "sources": sorted(config.sources),
        },
        "data": {k: report[k] for k in ("documents", "kept", "train", "dev", "dropped", "entities")},
        "label_map": config.label_map,
        "filters": {k: getattr(config, k) for k in ("drop_truncated", "drop_unparsed", "drop_unaligned", "samples", "min_agreement")},
        "training_seconds": round(seconds, 1),
        "config": fingerprint(dataclasses.asdict(config)),
    }  # fmt: skip
    meta["description"] = (
        f"spaCy ner distilled from a reasoning_ner teacher ({teacher.kind}) on "
        f"{report['train']} documents; see meta['distillation'] for the teacher, data counts "
        "and scores."
    )
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


# --------------------------------------------------------------------------- evaluation


def distill_evaluate(config: DistillConfig) -> dict[str, Any]:
    """Teacher and student on the same gold sentences; writes evaluation.json."""
    require(config.evaluate is not None, "[distill.evaluate] is missing")
    assert config.evaluate is not None
    ev = config.evaluate
    sets = [
        load_eval_set(ev.data, name, ev.split, limit=ev.limit, seed=ev.seed) for name in ev.datasets
    ]
    student = spacy.load(config.output / "student" / "model-best")
    teacher = None
    if config.teacher.kind == "model":
        cache = config.output / "evaluation-cache.sqlite"
        for stale in cache.parent.glob(cache.name + "*"):  # docs/s must count generation
            stale.unlink()
        spec = teacher_spec(config)
        override = f"components.{spec.component_name()}.cache_path"
        teacher = spec.with_overrides({override: str(cache)}).load()[0]
    rows: dict[str, Any] = {}
    for name, nlp in (("teacher", teacher), ("student", student)):
        if nlp is None:
            continue
        result = evaluate(nlp, sets, batch_size=ev.batch_size, name=name, limit=ev.limit)
        rows[name] = result.to_dict()
    if teacher is not None:
        rows["agreement"] = {
            s.name: _agreement_f1(student, teacher, s, config.label_map) for s in sets
        }
    out = config.output / "evaluation.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    model_meta = config.output / "student" / "model-best" / "meta.json"
    meta = json.loads(model_meta.read_text())
    meta["distillation"]["scores"] = _headline(rows)
    model_meta.write_text(json.dumps(meta, indent=2) + "\n")
    return rows


def _agreement_f1(student: Any, teacher: Any, eval_set: Any, label_map: dict[str, str]) -> float:
    """Offset F1 of the student against the teacher's own entities under the label map
    (teacher as reference). The teacher's completions come from the evaluation's cache: it
    is not run twice."""
    texts = [r.text for r in eval_set.records]
    examples = []
    for s, t in zip(student.pipe(texts), teacher.pipe(texts), strict=True):
        reference = student.make_doc(t.text)
        spans = [
            reference.char_span(e.start_char, e.end_char, label_map.get(e.label_, e.label_))
            for e in t.ents
            if label_map.get(e.label_, e.label_)
        ]
        reference.ents = filter_spans([span for span in spans if span is not None])
        examples.append(Example(s, reference))
    return 100 * (get_ner_prf(examples)["ents_f"] or 0.0)


def _headline(rows: dict[str, Any]) -> dict[str, Any]:
    """Mean F1 per metric of teacher and student, and the agreement F1 per dataset."""
    headline: dict[str, Any] = {
        name: {metric: round(v["f1"], 2) for metric, v in rows[name]["average"]["all"].items()}
        for name in ("teacher", "student")
        if name in rows
    }
    if "agreement" in rows:
        headline["agreement_f1"] = {k: round(v, 2) for k, v in rows["agreement"].items()}
    return headline


# --------------------------------------------------------------------------- commands


def _config(ctx: typer.Context, profile: str) -> DistillConfig:
    return DistillConfig.from_profile(load_profile(profile, parse_overrides(ctx.args)))


def data_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Teacher annotations (or gold) -> filtered, label-mapped train/dev DocBins."""
    report = distill_data(_config(ctx, profile))
    typer.echo(json.dumps(report.to_dict(), indent=2))


def train_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Train the student with spacy train (config from spacy init config)."""
    typer.echo(f"student: {distill_train(_config(ctx, profile))}")


def evaluate_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Teacher vs student on gold dev sentences: F1, agreement, docs/s."""
    rows = distill_evaluate(_config(ctx, profile))
    typer.echo(json.dumps(_headline(rows), indent=2))
