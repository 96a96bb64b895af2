"""Evaluate a spaCy pipeline that sets ``doc.ents`` on the benchmark datasets, as the paper does.

Per dataset, and as the plain mean over datasets, three metrics:

* **reference string P/R/F1**, the paper's metric, exactly as the reference implementation
  computes it: per sentence, the set of (normalized mention, lowercased label) pairs of every
  string the model answered (``protocol.reference_answer``: strict JSON, nothing repaired,
  labels outside the schema and mentions not in the text counted as well) against gold,
  pooled over the dataset's sentences (for a ``reasoning_ner`` component only);
* **grounded string P/R/F1** (ours): the same sets from ``doc.ents``, i.e. only mentions the
  component could ground in the text, after its tolerant parsing (any pipeline);
* **offset P/R/F** (spaCy's ``get_ner_prf``, what ``nlp.evaluate`` reports), per type too;
* for a ``reasoning_ner`` component: the share of named mentions that could not be grounded
  (``doc._.ner_unaligned``), unparsable and truncated completions, and reasoning tokens per
  sentence (counted with the backend's tokenizer where it has one, else whitespace words);
* seconds per sentence.

Misc-like types (``misc``, ``else``, ...) are left out of the schema, gold and predictions,
as in the reference. Each dataset's type names come from its ``labels.json`` under a naming
convention, and the component gets them as its labels for that dataset. An overlap guard
refuses evaluation sentences that appear in the training data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import filter_spans

from ..backends.base import TokenCounter, is_identifiable
from ..component import ReasoningNER, reasoning_component
from ..protocol import PRF, is_misc_like, string_prf
from .datasets import ZERO_SHOT_DATASETS, EvalSet
from .overlap import OverlapError, find_overlap, overlap_message
from .readers import NERRecord

logger = logging.getLogger(__name__)
RESULT_FILES = ("results.json", "results.md", "f1.png")


# --------------------------------------------------------------------------- results


def check_report_dependencies() -> None:
    """A saved report draws f1.png with matplotlib, which only the ``train`` extra installs:
    callers check before any model runs, so that an evaluation is not lost at the end."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError(
            "saving an evaluation report draws f1.png with matplotlib, which is not installed: "
            "pip install 'spacy-reasoningner[train]' (or leave out -o and keep the printed table)"
        )


@dataclass
class Scores:
    """Precision, recall and F1 in percent, as the paper reports them."""

    precision: float
    recall: float
    f1: float

    @classmethod
    def from_prf(cls, prf: PRF) -> Scores:
        return cls(100 * prf.precision, 100 * prf.recall, 100 * prf.f1)

    @classmethod
    def from_spacy(cls, scores: Mapping[str, Any], prefix: str) -> Scores:
        # spaCy gives None when there is neither gold nor prediction; PRF says 0 then.
        p, r, f = (scores.get(f"{prefix}{key}") or 0.0 for key in ("p", "r", "f"))
        return cls(100 * p, 100 * r, 100 * f)


@dataclass
class DatasetResult:
    """Everything measured on one dataset. Counts of the component (mentions, unaligned,
    unparsed, truncated) and reasoning tokens are None for pipelines without one."""

    dataset: str
    source: str
    sentences: int
    labels: list[str]
    grounded: Scores  # string metric over doc.ents (ours)
    grounded_counts: PRF  # the micro counts: pairs matched, predicted and gold
    offset: Scores
    offset_per_type: dict[str, Scores]
    seconds_per_sentence: float
    # The paper's metric over every answered string (reasoning_ner pipelines only).
    reference: Scores | None = None
    reference_counts: PRF | None = None
    not_json: int | None = None  # completions the reference's json.loads refuses
    mentions: int | None = None
    unaligned: int | None = None
    unaligned_reasons: dict[str, int] = field(default_factory=dict)
    unparsed: int | None = None
    truncated: int | None = None
    reasoning_tokens_mean: float | None = None
    reasoning_tokens_p95: float | None = None
    overlapping: int = 0  # evaluation sentences also in the training data (allow_overlap)
    note: str = ""

    @property
    def undefined(self) -> bool:
        """No gold entity and nothing predicted (a small sample of a sparse set): F1 is 0/0,
        not 0, so the dataset stays out of the means."""
        counts = [self.grounded_counts, *([self.reference_counts] if self.reference else [])]
        return all(c.n_gold == 0 and c.n_pred == 0 for c in counts)

    @property
    def unaligned_rate(self) -> float | None:
        """Percent of the mentions the model named that did not become entities."""
        if self.unaligned is None or not self.mentions:
            return None
        return 100 * self.unaligned / self.mentions


_MEAN_FIELDS = ("precision", "recall", "f1")
# The metrics, headline first, with the names reports give them.
METRICS = {
    "reference": "reference string (paper)",
    "grounded": "grounded string (ours)",
    "offset": "offset (spaCy)",
}


@dataclass
class EvaluationResult:
    """Per-dataset results and their plain means (JSON-able through ``to_dict``).

    ``model_loads``: model weights loaded while evaluating (in-process engines; None when not
    counted), ``model_loads_by_engine`` the same per engine: an evaluation loads its model once.
    """

    pipeline: str
    datasets: list[DatasetResult]
    limit: int | None = None
    seed: int = 0
    reasoning_token_unit: str | None = None
    model_loads: int | None = None
    model_loads_by_engine: dict[str, int] = field(default_factory=dict)

    def count_model_loads(self, by_engine: Mapping[str, int]) -> None:
        """Record the weight loads of the evaluation (``backends.local.loads_since``)."""
        self.model_loads_by_engine = dict(by_engine)
        self.model_loads = sum(by_engine.values())

    def metrics(self) -> list[str]:
        """The metrics every dataset has (the reference metric needs reasoning_ner)."""
        return [m for m in METRICS if all(getattr(d, m) is not None for d in self.datasets)]

    def _groups(self) -> tuple[dict[str, list[DatasetResult]], list[DatasetResult]]:
        """The datasets averaged, by group, and those reported apart: the paper's zero-shot
        sets are the one group where any are evaluated (the headline), the others (CoNLL-2003,
        in-domain) apart; without any, all datasets form the group. Datasets whose F1 is
        undefined (``DatasetResult.undefined``) are in neither."""
        defined = [d for d in self.datasets if not d.undefined]
        zero_shot = [d for d in defined if d.dataset in ZERO_SHOT_DATASETS]
        if not any(d.dataset in ZERO_SHOT_DATASETS for d in self.datasets):
            return {"all": defined}, []
        apart = [d for d in defined if d.dataset not in ZERO_SHOT_DATASETS]
        return {"zero-shot": zero_shot}, apart

    def averages(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{group: {metric: {precision, recall, f1}}}``, plain means over the datasets of
        the group: the paper's zero-shot sets ("zero-shot"), or all ("all") when none of them
        is evaluated. Other datasets beside zero-shot ones are left out (reported apart)."""
        groups, _ = self._groups()
        return {
            name: {
                metric: {
                    key: statistics.fmean(getattr(getattr(d, metric), key) for d in members)
                    for key in _MEAN_FIELDS
                }
                for metric in self.metrics()
            }
            for name, members in groups.items()
            if members
        }

    def headline(self) -> dict[str, Any] | None:
        """The paper's headline figure as its evaluation script computes it: per dataset of
        the averaged group the F1 of the headline metric (the reference string metric, else
        the first one every dataset has) rounded to 2 decimals, then their plain mean rounded
        to 2 decimals. ``apart``: the F1 of the datasets left out of the mean, rounded alike;
        ``complete``: whether all seven zero-shot sets are in. None without datasets."""
        metrics = self.metrics()
        if not self.datasets or not metrics:
            return None
        metric = metrics[0]
        groups, apart = self._groups()
        [(group, members)] = groups.items()
        per_dataset = {d.dataset: round(getattr(d, metric).f1, 2) for d in members}
        return {
            "metric": metric,
            "group": group,
            "f1": round(statistics.fmean(per_dataset.values()), 2) if per_dataset else None,
            "datasets": per_dataset,
            "apart": {d.dataset: round(getattr(d, metric).f1, 2) for d in apart},
            "undefined": [d.dataset for d in self.datasets if d.undefined],
            "complete": group == "zero-shot" and set(per_dataset) == set(ZERO_SHOT_DATASETS),
        }

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for entry, result in zip(data["datasets"], self.datasets, strict=True):
            entry["unaligned_rate"] = result.unaligned_rate
        data["average"] = self.averages()
        data["headline"] = self.headline()
        return data

    def save(self, folder: str | Path) -> list[Path]:
        """Write results.json, results.md and f1.png into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / name for name in RESULT_FILES]
        paths[0].write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        paths[1].write_text(self.to_markdown(), encoding="utf-8")
        self.plot_f1(paths[2])
        return paths

    def to_markdown(self) -> str:
        metrics = self.metrics()
        score_columns = [f"{m} {k}" for m in metrics for k in ("P", "R", "F1")]
        columns = [
            "dataset",
            "sentences",
            *score_columns,
            "not JSON",
            "unaligned %",
            "unparsed",
            "truncated",
            "reasoning tokens mean / p95",
            "s / sentence",
        ]
        lines = [f"# Evaluation of {self.pipeline}", "", "| " + " | ".join(columns) + " |"]
        lines.append("|---" * len(columns) + "|")
        lines += [_markdown_row(d, metrics) for d in self.datasets]
        for group, means in self.averages().items():
            cells = [f"{means[m][k]:.1f}" for m in metrics for k in _MEAN_FIELDS]
            blanks = " |" * (len(columns) - 2 - len(cells))
            lines.append(f"| **mean ({group})** | | {' | '.join(cells)} |{blanks}")
        lines += ["", *self._notes()]
        return "\n".join(lines) + "\n"

    def _notes(self) -> list[str]:
        sampled = "all sentences" if self.limit is None else f"at most {self.limit} sentences"
        notes = [
            f"- {sampled} per dataset (seed {self.seed}); scores in percent; means are plain "
            "means over datasets. Reference: the paper's string metric as its code computes "
            "it, micro P/R/F1 over sets of (normalized mention, label) per sentence of every "
            "string the model answered (strict JSON; mentions not in the text count). "
            "Grounded (ours): the same over doc.ents (only mentions found in the text, after "
            "our tolerant parsing). Offset: spaCy's ents_p/r/f. Not JSON: completions whose "
            "answer the reference's json.loads refuses. Misc-like types are excluded from "
            "schema and gold.",
        ]
        if (headline := self.headline()) is not None and headline["f1"] is not None:
            sets = ", ".join(headline["datasets"])
            line = (
                f"- **headline: {METRICS[headline['metric']]} F1 {headline['f1']:.2f}**, the "
                f"mean over {len(headline['datasets'])} {headline['group']} sets ({sets}), each "
                "rounded to 2 decimals first, as the paper's evaluation script"
            )
            if headline["group"] == "zero-shot" and not headline["complete"]:
                line += f" (not all {len(ZERO_SHOT_DATASETS)} of the paper's sets)"
            if headline["apart"]:
                apart = ", ".join(f"{name} {f1:.2f}" for name, f1 in headline["apart"].items())
                line += f"; reported apart, not in the mean: {apart}"
            notes.append(line)
        if headline is not None and headline["undefined"]:
            notes.append(
                f"- F1 undefined (no gold entity, none predicted), left out of the means: "
                f"{', '.join(headline['undefined'])}; evaluate more sentences (--limit)"
            )
        if self.reasoning_token_unit:
            notes.append(f"- reasoning tokens: {self.reasoning_token_unit}")
        if self.model_loads is not None:
            engines = ", ".join(f"{e}: {n}" for e, n in self.model_loads_by_engine.items())
            notes.append(
                f"- model weights loaded {self.model_loads} time(s) while evaluating"
                + (f" ({engines})" if engines else "")
            )
        for d in self.datasets:
            if d.note:
                notes.append(f"- {d.dataset}: {d.note}")
            if d.overlapping:
                notes.append(
                    f"- **WARNING {d.dataset}: {d.overlapping} evaluation sentences are in "
                    "the training data**"
                )
        return notes

    def plot_f1(self, path: str | Path) -> Path:
        """Bar chart of per-dataset F1 under each metric, means last."""
        check_report_dependencies()
        import matplotlib

        matplotlib.use("Agg")  # no display needed (servers, CI)
        import matplotlib.pyplot as plt

        metrics = self.metrics()
        names = [d.dataset for d in self.datasets]
        values = {m: [getattr(d, m).f1 for d in self.datasets] for m in metrics}
        for group, means in self.averages().items():
            names.append(f"mean ({group})")
            for metric in metrics:
                values[metric].append(means[metric]["f1"])
        positions = range(len(names))
        width = 0.8 / len(metrics)
        fig, ax = plt.subplots(figsize=(max(7.5, 1.2 * len(names)), 4.5))
        for i, metric in enumerate(metrics):
            shift = (i - (len(metrics) - 1) / 2) * width
            bars = ax.bar(
                [p + shift for p in positions], values[metric], width, label=METRICS[metric]
            )
            ax.bar_label(bars, fmt="%.0f", fontsize=6)
        ax.set_xticks(list(positions), names, rotation=30, ha="right")
        ax.set_ylabel("F1 (%)")
        # Headroom above 100 keeps the legend off the bars.
        ax.set_ylim(0, 120)
        ax.set_yticks(range(0, 101, 20))
        ax.set_title(f"F1 per dataset: {self.pipeline}")
        ax.legend(loc="upper left", ncol=len(metrics), fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def _markdown_row(d: DatasetResult, metrics: Sequence[str]) -> str:
    def number(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    def count(value: int | None) -> str:
        return "-" if value is None else str(value)

    scores = [number(getattr(getattr(d, m), k)) for m in metrics for k in _MEAN_FIELDS]
    tokens = (
        "-"
        if d.reasoning_tokens_mean is None
        else f"{d.reasoning_tokens_mean:.0f} / {d.reasoning_tokens_p95:.0f}"
    )
    cells = [
        d.dataset,
        str(d.sentences),
        *scores,
        count(d.not_json),
        number(d.unaligned_rate),
        count(d.unparsed),
        count(d.truncated),
        tokens,
        number(d.seconds_per_sentence, 2),
    ]
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------- evaluation


def evaluate(
    nlp: Language,
    eval_sets: Sequence[EvalSet],
    *,
    training: Iterable[str | NERRecord] | None = None,
    allow_overlap: bool = False,
    batch_size: int | None = None,
    name: str = "pipeline",
    limit: int | None = None,
    seed: int = 0,
) -> EvaluationResult:
    """Run ``nlp`` over each set and score it.

    The ``reasoning_ner`` component, if any, gets each set's labels for that set (its own
    labels are restored afterwards). With ``training`` (texts or records), evaluation
    sentences found in it raise ``OverlapError``, or with ``allow_overlap`` are counted and
    logged as a warning. ``limit`` and ``seed`` are recorded in the result (sampling happens
    when the sets are loaded).
    """
    overlap = find_overlap(eval_sets, training) if training is not None else {}
    if overlap and not allow_overlap:
        raise OverlapError(
            overlap_message(overlap) + ". Decontaminate the training data, or allow the "
            "overlap (allow_overlap / --allow-overlap) to evaluate anyway"
        )
    if overlap:
        logger.warning("ALLOWED OVERLAP: %s", overlap_message(overlap))
    component = reasoning_component(nlp)
    results, unit = [], None
    for eval_set in eval_sets:
        result, reasonings = _evaluate_set(nlp, component, eval_set, batch_size)
        result.overlapping = len(overlap.get(eval_set.name, []))
        if component is not None:
            count, unit = _token_counter(component)
            lengths = sorted(count(text) for text in reasonings)
            result.reasoning_tokens_mean = statistics.fmean(lengths) if lengths else 0.0
            result.reasoning_tokens_p95 = _p95(lengths)
        results.append(result)
    return EvaluationResult(name, results, limit, seed, unit)


def _evaluate_set(
    nlp: Language, component: ReasoningNER | None, eval_set: EvalSet, batch_size: int | None
) -> tuple[DatasetResult, list[str]]:
    """The set's result without reasoning-token statistics, and the reasoning texts."""
    labels = eval_set.labels
    with _evaluation_settings(component, labels):
        before = Counter(component.stats) if component else Counter()
        started = time.perf_counter()
        docs = list(nlp.pipe((_doc(nlp, r) for r in eval_set.records), batch_size=batch_size))
        seconds = time.perf_counter() - started
        stats = Counter(component.stats) - before if component else Counter()
        grounded, examples = PRF(), []
        for record, doc in zip(eval_set.records, docs, strict=True):
            doc.ents = [e for e in doc.ents if not is_misc_like(e.label_)]
            gold = [(record.text[s:e], label) for s, e, label in record.entities]
            grounded += string_prf([(e.text, e.label_) for e in doc.ents], gold)
            examples.append(Example(doc, _reference(nlp, record)))
        offset = get_ner_prf(examples)
        n = len(docs)
        result = DatasetResult(
            dataset=eval_set.name,
            source=eval_set.source,
            sentences=n,
            labels=list(labels),
            grounded=Scores.from_prf(grounded),
            grounded_counts=grounded,
            offset=Scores.from_spacy(offset, "ents_"),
            offset_per_type={
                label: Scores.from_spacy(values, "")
                for label, values in sorted((offset["ents_per_type"] or {}).items())
            },
            seconds_per_sentence=seconds / n if n else 0.0,
            note=eval_set.note,
        )
        if component is None:
            return result, []
        _score_answers(result, component, eval_set.records, docs)
    unaligned = [u for doc in docs for u in doc._.get(component.ext["unaligned"]) or []]
    result.mentions = stats["mentions"]
    result.unaligned = len(unaligned)
    result.unaligned_reasons = dict(Counter(u["reason"] for u in unaligned))
    result.unparsed = stats["unparsed"]
    result.truncated = stats["truncated"]
    return result, [doc._.get(component.ext["reasoning"]) or "" for doc in docs]


def _score_answers(
    result: DatasetResult,
    component: ReasoningNER,
    records: Sequence[NERRecord],
    docs: Sequence[Doc],
) -> None:
    """The paper's metric over what the model answered: each window's completion read as
    the reference reads it, every answered string counted, nothing grounded. Gold labels are
    compared in the form the prompt showed them (lowercased, as the reference's schema)."""
    task = component.task
    counts, not_json = PRF(), 0
    for record, doc in zip(records, docs, strict=True):
        mentions: list[tuple[str, str]] = []
        for window in doc._.get(component.ext["raw"]) or []:
            answer = task.reference_answer(window["completion"])
            not_json += not answer.loads
            mentions.extend(answer.mentions)
        gold = [(record.text[s:e], label) for s, e, label in record.entities]
        counts += task.reference_prf(mentions, gold)
    result.reference, result.reference_counts = Scores.from_prf(counts), counts
    result.not_json = not_json


@contextlib.contextmanager
def _evaluation_settings(
    component: ReasoningNER | None, labels: list[str] | dict[str, str]
) -> Iterator[None]:
    """Give the component ``labels`` and keep its completions (``keep_raw``, read by the
    reference metric) for the duration, then restore its labels (none if it had none) and
    its own ``keep_raw``."""
    if component is None:
        yield
        return
    previous, keep_raw = component.cfg["labels"], component.settings.keep_raw
    component.initialize(labels=labels)
    component.settings.keep_raw = True
    try:
        yield
    finally:
        component.settings.keep_raw = keep_raw
        component.set_labels(previous)


def _doc(nlp: Language, record: NERRecord) -> Doc:
    """A Doc with the record's own tokens where it has them (BIO files), so that gold and
    prediction share tokens and the model sees the text the reference gives it."""
    if not record.tokens or " ".join(record.tokens) != record.text:
        return nlp.make_doc(record.text)
    spaces = [True] * (len(record.tokens) - 1) + [False]
    return Doc(nlp.vocab, words=record.tokens, spaces=spaces)


def _reference(nlp: Language, record: NERRecord) -> Doc:
    doc = _doc(nlp, record)
    spans = [doc.char_span(s, e, label, alignment_mode="expand") for s, e, label in record.entities]
    doc.set_ents(filter_spans([s for s in spans if s is not None]), default="outside")
    return doc


def _token_counter(component: ReasoningNER) -> tuple[Callable[[str], int], str]:
    """Count with the backend's tokenizer where it has one, else whitespace words."""
    backend = component.backend
    if isinstance(backend, TokenCounter):
        name = backend.identity.get("model") if is_identifiable(backend) else None
        return (
            backend.count_tokens,
            f"tokens of the backend's tokenizer ({name or type(backend).__name__})",
        )
    return (lambda text: len(text.split())), "whitespace-separated words (no tokenizer)"


def _p95(sorted_values: Sequence[int]) -> float:
    """Nearest-rank 95th percentile (0 for no values)."""
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(0.95 * len(sorted_values)))])
