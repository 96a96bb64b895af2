"""How faithfully answers are grounded: gold entities -> answer text -> parse + grounding -> F1.

A perfect model's answers are built from the gold entities of each sentence, in four orderings
(see ``_common.order_entries``), then read back by the ``reasoning_ner`` component (protocol
JSON inside a completion with a think block) and by spacy-llm's NER.v3 response parser (its
numbered ``mention | True | LABEL | reason`` lines). Any loss is the grounding's doing, since
the answers are right. Scores are spaCy's offset-level micro P/R/F1 over gold spans that are
expressible on spaCy's tokens.

    python bench/grounding_fidelity.py [--data ../shared/data] [--mit-sample 1000] [--show-errors 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from _common import (
    CROSSNER_DATASETS,
    ORDERINGS,
    data_argument,
    gold_doc,
    gold_entries,
    load_dataset,
    make_nlp,
    order_entries,
    ours_completion,
    spacy_llm_response,
)
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc
from spacy.training import Example
from spacy_llm.tasks.ner.registry import make_ner_task_v3

SYSTEMS = ("ours", "spacy-llm")


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    errors: list[str] = field(default_factory=list)
    causes: Counter[str] = field(default_factory=Counter)

    @property
    def f1(self) -> float:
        return (
            2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else 1.0
        )

    def add(self, other: Counts) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        self.causes.update(other.causes)


Spans = set[tuple[int, int, str]]


def classify(text: str, pred: Spans, ref: Spans) -> Counter[str]:
    """Why each wrong span is wrong (a span may be both a false positive and a negative)."""
    causes: Counter[str] = Counter()
    gold_labels: dict[str, set[str]] = {}
    for s, e, label in ref:
        gold_labels.setdefault(text[s:e], set()).add(label)
    for s, e, label in pred - ref:
        labels = gold_labels.get(text[s:e], set())
        if len(labels) > 1:
            causes["FP: string has several gold labels in the sentence"] += 1
        elif labels == {label}:
            causes["FP: unannotated repeat of a gold mention"] += 1
        elif labels:
            causes["FP: gold label of this string is another"] += 1
        elif any(s < ge and gs < e for gs, ge, _ in ref):
            causes["FP: overlaps a gold span"] += 1
        else:
            causes["FP: other"] += 1
    for s, e, _ in ref - pred:
        if any((s, e) == (ps, pe) for ps, pe, _ in pred):
            causes["FN: same span set with another label"] += 1
        elif any(s < pe and ps < e for ps, pe, _ in pred):
            causes["FN: overlapped by a predicted span"] += 1
        else:
            causes["FN: not set"] += 1
    return causes


def _show(text: str, spans: Spans) -> list[tuple[str, str]]:
    return sorted((text[s:e], label) for s, e, label in spans)


def score(predicted: list[Doc], gold: list[Doc], keep_errors: int) -> tuple[float, Counts]:
    """spaCy's F1 and our own counts (identical tokenization, so they must agree)."""
    examples = [Example(p, g) for p, g in zip(predicted, gold, strict=True)]
    f1 = get_ner_prf(examples)["ents_f"] or 0.0
    counts = Counts()
    for p, g in zip(predicted, gold, strict=True):
        pred = {(e.start_char, e.end_char, e.label_) for e in p.ents}
        ref = {(e.start_char, e.end_char, e.label_) for e in g.ents}
        counts.tp += len(pred & ref)
        counts.fp += len(pred - ref)
        counts.fn += len(ref - pred)
        if pred != ref:
            counts.causes.update(classify(g.text, pred, ref))
        if pred != ref and len(counts.errors) < keep_errors:
            missed, extra = _show(g.text, ref - pred), _show(g.text, pred - ref)
            counts.errors.append(f"{g.text!r}\n      missed {missed}\n      extra  {extra}")
    assert abs(f1 - counts.f1) < 1e-9 or not (counts.tp + counts.fp + counts.fn), (f1, counts)
    return f1, counts


def run_dataset(args: argparse.Namespace, name: str) -> tuple[dict, int, int, int, int]:
    """F1 per (system, ordering), and sentences, gold spans, inexpressible spans, unaligned."""
    sample = args.mit_sample if name.startswith("mit_") else None
    records, labels = load_dataset(args.data, name, sample=sample, seed=args.seed)
    nlp, backend = make_nlp(labels)
    component = nlp.get_pipe("reasoning_ner")
    golds, inexpressible = zip(*(gold_doc(nlp, r) for r in records), strict=True)
    llm_task = make_ner_task_v3(labels=labels)
    results: dict[tuple[str, str], tuple[float, Counts]] = {}
    unaligned = 0
    for ordering in ORDERINGS:
        rng = random.Random(args.seed)
        answers = [order_entries(gold_entries(r), ordering, labels, rng) for r in records]
        backend.enqueue(
            (r.text, ours_completion(a, component.schema))
            for r, a in zip(records, answers, strict=True)
        )
        ours = list(component.pipe(nlp.make_doc(r.text) for r in records))
        unaligned += sum(len(doc._.ner_unaligned) for doc in ours)
        results["ours", ordering] = score(ours, list(golds), args.show_errors)
        theirs = list(
            llm_task.parse_responses(
                [[nlp.make_doc(r.text)] for r in records],
                [[spacy_llm_response(a)] for a in answers],
            )
        )
        results["spacy-llm", ordering] = score(theirs, list(golds), args.show_errors)
    n_gold = sum(len(g.ents) for g in golds)
    return results, len(records), n_gold, sum(inexpressible), unaligned


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(parser)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=[*CROSSNER_DATASETS, "conll2003", "mit_movie", "mit_restaurant"],
    )
    parser.add_argument(
        "--mit-sample", type=int, default=1000, help="sentences sampled from MIT train"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the MIT sample and of the shuffle"
    )
    parser.add_argument(
        "--show-errors", type=int, default=0, help="print up to N wrong sentences per cell"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    header = f"{'dataset':<20} {'sents':>6} {'gold':>6} {'inexpr':>6} {'system':<10}" + "".join(
        f"{o:>10}" for o in ORDERINGS
    )
    print(header + f"\n{'-' * len(header)}")
    totals = {key: Counts() for key in ((s, o) for s in SYSTEMS for o in ORDERINGS)}
    summary = Counter()
    for name in args.datasets:
        results, n_sents, n_gold, inexpressible, unaligned = run_dataset(args, name)
        summary.update(sents=n_sents, gold=n_gold, inexpressible=inexpressible, unaligned=unaligned)
        for system in SYSTEMS:
            cells = "".join(f"{100 * results[system, o][0]:>10.2f}" for o in ORDERINGS)
            print(f"{name:<20} {n_sents:>6} {n_gold:>6} {inexpressible:>6} {system:<10}{cells}")
            for ordering in ORDERINGS:
                totals[system, ordering].add(results[system, ordering][1])
                for error in results[system, ordering][1].errors:
                    print(f"    [{system}/{ordering}] {error}")
    print("-" * len(header))
    for system in SYSTEMS:
        cells = "".join(f"{100 * totals[system, o].f1:>10.2f}" for o in ORDERINGS)
        print(
            f"{'all (micro)':<20} {summary['sents']:>6} {summary['gold']:>6} {summary['inexpressible']:>6} {system:<10}{cells}"
        )
    print("\nfalse positives / false negatives over all datasets:")
    for system in SYSTEMS:
        print(
            f"  {system:<10}"
            + "".join(f"{o}: {totals[system, o].fp}/{totals[system, o].fn}  " for o in ORDERINGS)
        )
    print(f"mentions ours reported as unaligned (all orderings): {summary['unaligned']}")
    for system in SYSTEMS:
        print(f"causes of {system}'s errors in text order:")
        for cause, n in sorted(totals[system, "text"].causes.items()):
            print(f"  {cause:<55}{n:>6}")
    print(f"F1 in %, spaCy get_ner_prf; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
