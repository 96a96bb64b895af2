"""``distill-evaluate``: teacher and student on the same gold dev sentences (string and
offset F1, the student's agreement with the teacher, docs/s). Run as a module by the
student's Python for the student's side."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import spacy
from spacy.scorer import get_ner_prf
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import filter_spans

from spacy_reasoningner.backends.base import Identifiable
from spacy_reasoningner.benchmark import evaluate, load_eval_set
from spacy_reasoningner.component import reasoning_component

from ..config import fingerprint, from_block, require
from .config import DistillConfig, DistillEvalConfig
from .data import teacher_spec
from .student import run_student


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
        run_student(
            config, "-m", "training.distill.evaluate", str(answer), input=request, text=True
        )
        rows.update(json.loads(answer.read_text()))
    out = config.output / "evaluation.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    model_meta = config.output / "student" / "model-best" / "meta.json"
    meta = json.loads(model_meta.read_text())
    meta["distillation"]["scores"] = headline(rows)
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


def headline(rows: dict[str, Any]) -> dict[str, Any]:
    """Mean F1 per metric of teacher and student, and the agreement F1 per dataset."""
    headline: dict[str, Any] = {
        name: {metric: round(v["f1"], 2) for metric, v in rows[name]["average"]["all"].items()}
        for name in ("teacher", "student")
        if name in rows
    }
    if "agreement" in rows:
        headline["agreement_f1"] = {k: round(v, 2) for k, v in rows["agreement"].items()}
    return headline


if __name__ == "__main__":  # the student's Python, run by distill_evaluate
    _request = from_block(DistillConfig, json.loads(sys.stdin.read()), DistillConfig.SECTION)
    Path(sys.argv[1]).write_text(json.dumps(evaluate_student(_request)))
