"""``distill-data``: the teacher annotates the corpus; filtered, label-mapped, split DocBins
and a report that counts every dropped document and entity."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spacy
from spacy.tokens import Doc, DocBin
from spacy.util import filter_spans

from spacy_reasoningner.annotate import AnnotateOptions, PipelineSpec, annotate
from spacy_reasoningner.task import NERTask

from ..sources import plan
from .config import COMPONENT, DROP_REASONS, DistillConfig, TeacherConfig


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
            AnnotateOptions(
                engine=config.teacher.engine,
                ray=_ray_options(config.teacher),
                batch_size=config.teacher.batch_size,
                shard_size=config.teacher.shard_size,
                keep_going=True,
            ),
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
