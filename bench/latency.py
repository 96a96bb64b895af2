"""Seconds per sentence and generated tokens per second of the default backend (the default
model on CPU), with reasoning on and off.

Sentences go one at a time (``nlp(text)``), so a figure is the latency of one sentence,
prompt processing included. Generated tokens are counted by the backend
(``Completion.n_tokens``, end token included). A first sentence warms the model up untimed.

    python bench/latency.py [--data ../shared/data] [--dataset crossner_ai] [-n 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import spacy
import torch
from _common import CROSSNER_DATASETS, data_argument, gold_entries, load_dataset

from spacy_reasoningner.backends import Completion
from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import (
    PRF,
    is_misc_like,
    parse_completion,
    string_prf,
)


def run(
    warmup: NERRecord,
    records: Sequence[NERRecord],
    labels: list[str],
    reasoning: bool,
    args: argparse.Namespace,
) -> dict:
    """Load a pipeline, warm it up on ``warmup``, then time ``records`` one by one."""
    nlp = spacy.blank("en")
    component = nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": labels,
            "reasoning": reasoning,
            "generation": {"max_new_tokens": args.max_new_tokens},
        },
    )
    start = time.perf_counter()
    nlp.initialize()  # loads the model
    load_s = time.perf_counter() - start
    backend = component.backend
    completions: list[Completion] = []
    generate = backend.generate_constrained

    def recording_generate(requests, settings, *, reasoning):  # keeps each Completion
        out = generate(requests, settings, reasoning=reasoning)
        completions.extend(out)
        return out

    backend.generate_constrained = recording_generate
    nlp(warmup.text)  # untimed
    completions.clear()
    seconds, prf = [], PRF()
    for record in records:
        start = time.perf_counter()
        doc = nlp(record.text)
        seconds.append(time.perf_counter() - start)
        prf += string_prf([(e.text, e.label_) for e in doc.ents], gold_entries(record))
    tokens = [c.n_tokens or 0 for c in completions]
    prompt_tokens = [backend.count_tokens(c.prompt or "") for c in completions]
    return {
        "load_s": load_s,
        "seconds": seconds,
        "tokens": tokens,
        "prompt_tokens": prompt_tokens,
        "truncated": sum(c.truncated for c in completions),
        "parsed": sum(parse_completion(c.text, component.schema).parsed for c in completions),
        "prf": prf,
        "example": completions[0].text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(parser)
    parser.add_argument("--dataset", default="crossner_ai", choices=CROSSNER_DATASETS)
    parser.add_argument("-n", type=int, default=10, help="sentences (the first n of dev)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--show", action="store_true", help="print the first completion of each mode"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    records, labels = load_dataset(args.data, args.dataset)
    # As in ReasoningNER: misc-like types are left out of the schema and of the gold.
    labels = [label for label in labels if not is_misc_like(label)]
    records = [
        NERRecord(r.text, [e for e in r.entities if e[2] in labels], r.source, r.tokens)
        for r in records[: args.n + 1]  # one more: the warm-up sentence
    ]
    print(
        f"{args.dataset} dev, {len(records) - 1} sentences (mean {statistics.mean(len(r.text) for r in records[1:]):.0f} chars) "
        f"after 1 warm-up; max_new_tokens {args.max_new_tokens}; torch threads {torch.get_num_threads()}"
    )
    header = (
        f"{'reasoning':<10}{'s/sent':>8}{'median':>8}{'max':>7}{'gen tok':>9}{'tok/s':>7}"
        f"{'prompt tok':>11}{'cut':>5}{'parsed':>8}{'F1':>6}{'load s':>8}"
    )
    print(header + "\n" + "-" * len(header))
    for reasoning in (True, False):
        result = run(records[0], records[1:], labels, reasoning, args)
        seconds, tokens = result["seconds"], result["tokens"]
        n = len(seconds)
        print(
            f"{'on' if reasoning else 'off':<10}{statistics.mean(seconds):>8.2f}{statistics.median(seconds):>8.2f}"
            f"{max(seconds):>7.2f}{statistics.mean(tokens):>9.1f}{sum(tokens) / sum(seconds):>7.1f}"
            f"{statistics.mean(result['prompt_tokens']):>11.0f}{result['truncated']:>5}"
            f"{result['parsed']:>5}/{n:<2}{100 * result['prf'].f1:>6.1f}{result['load_s']:>8.1f}"
        )
        if args.show:
            print(f"    first completion: {result['example']!r}")
    print(
        "s/sent: wall seconds per sentence; tok/s: generated tokens / generation wall time "
        "(prompt processing included); cut: completions that hit max_new_tokens; F1: grounded "
        "string-level micro-F1 over doc.ents (ours, for context only)"
    )


if __name__ == "__main__":
    main()
