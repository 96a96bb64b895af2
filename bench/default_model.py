"""What the default model does, with nothing configured: the issue's example sentences, F1
on the dev sets, grounding, parse failures and seconds per sentence on this machine.

    python bench/default_model.py [--n 50] [--seed 0] [--latency 5]

Builds ``spacy.blank("en").add_pipe("reasoning_ner")`` with only the labels set (per
dataset, by the evaluation), so every other setting is the package default: the bundled
model, the transformers backend, its dtype, structured and grounded answers, reasoning.
``--model``, ``--dtype``, ``--prefix-caching``, ``--reasoning``, ``--grounded``,
``--max-new-tokens``, ``--stop-reasoning-loops`` override one setting to compare (e.g. a
trained model folder, float32 against bfloat16, every prompt read whole, reasoning off, a
shorter reasoning budget, reasoning loops run to the budget). Prints:

* the entities found in the example sentences (person / organization / location);
* per dev set (n sentences drawn with the seed; MIT Movie and Restaurant: a seeded slice of
  train, which never enters training): reference string F1 (the paper's rule: every string
  the model answered), grounded string F1 and its precision (only the mentions found in the
  text), offset F1, unparsed answers, the share of named mentions not found in the text
  (unaligned), reasoning tokens, seconds per sentence of ``nlp.pipe`` (batched);
* the peak resident memory of the process;
* latency: ``nlp(text)`` one sentence at a time (``--latency`` per set), p50 / p95 seconds,
  tokens per completion and how many of them the model generated (the others, forced by the
  protocol, are read with the prompt or appended).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spacy
from _common import DEFAULT_DATA, data_argument

from spacy_reasoningner.benchmark.datasets import load_eval_set
from spacy_reasoningner.benchmark.evaluation import evaluate
from spacy_reasoningner.component import reasoning_component

DATASETS = [
    "crossner_ai",
    "crossner_literature",
    "crossner_music",
    "crossner_politics",
    "crossner_science",
    "mit_movie",
    "mit_restaurant",
    "conll2003",
]
EXAMPLES = [
    "Ada Lovelace worked with Charles Babbage in London on the Analytical Engine.",
    "Tim Cook met Sundar Pichai at Google headquarters in Mountain View.",
    "Apple Inc. was founded by Steve Jobs and Steve Wozniak in Cupertino, California.",
]
EXAMPLE_LABELS = ["person", "organization", "location"]
# What the example sentences name (text, label): the scaling table's "demo" column.
EXAMPLE_ENTITIES = {
    ("Ada Lovelace", "person"),
    ("Charles Babbage", "person"),
    ("London", "location"),
    ("Tim Cook", "person"),
    ("Sundar Pichai", "person"),
    ("Google", "organization"),
    ("Mountain View", "location"),
    ("Apple Inc.", "organization"),
    ("Steve Jobs", "person"),
    ("Steve Wozniak", "person"),
    ("Cupertino", "location"),
    ("California", "location"),
}


def build(args: argparse.Namespace) -> spacy.Language:
    config: dict[str, Any] = {"labels": EXAMPLE_LABELS}
    backend: dict[str, Any] = {}
    if args.model:
        backend["model"] = args.model
    if args.dtype:
        backend["dtype"] = args.dtype
    if args.prefix_caching is not None:
        backend["prefix_caching"] = args.prefix_caching
    if backend:
        config["backend"] = {"@reasoning_ner_backends": "reasoning_ner.Transformers.v1", **backend}
    if args.reasoning is not None:
        config["reasoning"] = args.reasoning
    if args.grounded is not None:
        config["grounded_answers"] = args.grounded
    generation: dict[str, Any] = {}
    if args.max_new_tokens:
        generation["max_new_tokens"] = args.max_new_tokens
    if args.stop_reasoning_loops is not None:
        generation["stop_reasoning_loops"] = args.stop_reasoning_loops
    if generation:
        config["generation"] = generation
    nlp = spacy.blank("en")
    nlp.add_pipe("reasoning_ner", config=config)
    nlp.initialize()
    return nlp


def examples(nlp: spacy.Language) -> None:
    print("## Example sentences (labels person, organization, location)")
    found: set[tuple[str, str]] = set()
    for doc in nlp.pipe(EXAMPLES):
        found |= {(e.text, e.label_) for e in doc.ents}
        listed = "; ".join(f"{e.text} ({e.label_})" for e in doc.ents) or "nothing"
        print(f"- {doc.text}\n  -> {listed}")
    print(
        f"{len(found & EXAMPLE_ENTITIES)} of the {len(EXAMPLE_ENTITIES)} expected entities "
        f"found (text and label), {len(found - EXAMPLE_ENTITIES)} other"
    )


def latency(nlp: spacy.Language, eval_sets: list, per_set: int) -> dict[str, float]:
    """Seconds, completion tokens and generated tokens per sentence, one ``nlp(text)`` call
    per sentence."""
    component = reasoning_component(nlp)
    component.settings.keep_raw = True  # to count the completion's tokens; no effect on them
    seconds, tokens, generated = [], [], []
    for eval_set in eval_sets:
        component.initialize(labels=eval_set.labels)
        for record in eval_set.records[:per_set]:
            started = time.perf_counter()
            doc = nlp(record.text)
            seconds.append(time.perf_counter() - started)
            raw = doc._.get(component.ext["raw"])
            written = [(r["reasoning"] or "") + r["completion"] for r in raw]
            tokens.append(sum(component.backend.count_tokens(text) for text in written))
            generated.append(doc._.get(component.ext["usage"])["completion_tokens"])
    seconds.sort()
    return {
        "sentences": len(seconds),
        "p50": statistics.median(seconds),
        "p95": seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))],
        "mean": statistics.fmean(seconds),
        "tokens_mean": statistics.fmean(tokens),
        "generated_mean": statistics.fmean(generated),
    }


def table(result: Any) -> str:
    lines = [
        "| dataset | n | reference string F1 | grounded string F1 | grounded P | offset F1 "
        "| unparsed | unaligned % | reasoning tok mean / p95 | s / sentence |",
        "|---" * 10 + "|",
    ]
    for d in result.datasets:
        lines.append(
            f"| {d.dataset} | {d.sentences} | {d.reference.f1:.1f} | {d.grounded.f1:.1f} "
            f"| {d.grounded.precision:.1f} | {d.offset.f1:.1f} | {d.unparsed} "
            f"| {d.unaligned_rate or 0.0:.1f} "
            f"| {d.reasoning_tokens_mean:.0f} / {d.reasoning_tokens_p95:.0f} "
            f"| {d.seconds_per_sentence:.2f} |"
        )
    crossner = [d for d in result.datasets if d.dataset.startswith("crossner_")]
    if crossner:
        means = [
            statistics.fmean(getattr(d, metric).f1 for d in crossner)
            for metric in ("reference", "grounded", "offset")
        ]
        lines.append(
            f"| **CrossNER mean** | | {means[0]:.1f} | {means[1]:.1f} | | {means[2]:.1f} | | | | |"
        )
    mentions = sum(d.mentions or 0 for d in result.datasets)
    unaligned = sum(d.unaligned or 0 for d in result.datasets)
    sentences = sum(d.sentences for d in result.datasets)
    seconds = sum(d.seconds_per_sentence * d.sentences for d in result.datasets)
    lines.append(
        f"| **all** | {sentences} | | | | | {sum(d.unparsed or 0 for d in result.datasets)} "
        f"| {100 * unaligned / mentions if mentions else 0.0:.1f} | | {seconds / sentences:.2f} |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data_argument(parser)
    parser.add_argument("--n", type=int, default=50, help="sentences per dev set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--latency", type=int, default=5, help="one-at-a-time sentences per set")
    parser.add_argument("--model", help="model reference (default: the package default)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--prefix-caching", type=json.loads, choices=[True, False])
    parser.add_argument("--reasoning", type=json.loads, choices=[True, False])
    parser.add_argument("--grounded", type=json.loads, choices=[True, False])
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="generation budget (with constrained answers: of the reasoning)",
    )
    parser.add_argument("--stop-reasoning-loops", type=json.loads, choices=[True, False])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="folder for results.json/.md")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    nlp = build(args)
    component = reasoning_component(nlp)
    backend = component.backend
    print(
        f"model {backend.reference}, dtype {backend.identity['dtype']}, {args.threads} threads, "
        f"prefix caching {backend.options.prefix_caching}, "
        f"reasoning {component.settings.reasoning}, "
        f"grounded answers {component.settings.grounded_answers}"
    )
    examples(nlp)
    data = args.data or DEFAULT_DATA
    eval_sets = [load_eval_set(data, name, limit=args.n, seed=args.seed) for name in args.datasets]
    name = args.model or "the default model"
    result = evaluate(nlp, eval_sets, limit=args.n, seed=args.seed, name=name)
    print(f"\n## Dev sets (n = {args.n} per set, seed {args.seed})")
    print(table(result))
    if args.output:
        result.save(args.output)
    if args.latency:
        figures = latency(nlp, eval_sets, args.latency)
        print(
            f"\n## Latency, one sentence per call ({figures['sentences']} sentences): "
            f"p50 {figures['p50']:.2f} s, p95 {figures['p95']:.2f} s, mean {figures['mean']:.2f} s, "
            f"{figures['tokens_mean']:.0f} completion tokens per sentence, "
            f"{figures['generated_mean']:.0f} of them generated"
        )
    # Linux reports the peak resident set in KiB.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nPeak memory (resident set of this process): {peak:.2f} GiB")


if __name__ == "__main__":
    main()
