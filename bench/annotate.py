"""Documents per second of ``spacy-reasoningner annotate`` with the local and the ray engine.

Two corpora of CoNLL-2003 dev sentences (one document per line):

- ``--docs`` (2,000) with a backend that answers instantly from the gold entities (a think
  block and the JSON answer, as ``bench/overhead.py`` builds them), so what is measured is
  the engine: reading, windows, prompts, parsing, grounding, the response cache, DocBin and
  JSONL shards, the manifest, and for Ray its start, scheduling and transfers.
- ``--model-docs`` (200) with the bundled default model on the transformers backend
  (``--max-new-tokens``, greedy), where generation dominates.

Each engine runs in a fresh output folder with the response cache on (the default). The ray
engine runs on a local Ray started here with ``--actors`` actors of one CPU each; the local
engine uses all of this machine's cores through torch. Per-actor throughput is the shards'
documents over the seconds the actors spent on them (from the done records), the figure to
multiply for N actors (see bench/README.md).

    python bench/annotate.py [--docs 2000] [--model-docs 200] [--actors 2] [--shard-size 100]

This file is also the ``--code`` module of the runs: the workers import it for the
``bench.GoldLookup.v1`` backend, so everything Ray-side sits above ``main``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spacy_reasoningner.backends import Completion, GenerationSettings
from spacy_reasoningner.protocol import ChatMessages
from spacy_reasoningner.registry import backends

TEXT_MARKER = "\nText: "  # the protocol puts the text last, after this marker


class GoldLookup:
    """Answers each prompt with the completion stored for its text (a JSON file)."""

    def __init__(self, answers: str):
        self.answers: dict[str, str] = json.loads(Path(answers).read_text(encoding="utf-8"))

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "bench.GoldLookup.v1"}

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        return [
            Completion(text=self.answers[p[-1]["content"].rsplit(TEXT_MARKER, 1)[1]])
            for p in prompts
        ]


@backends.register("bench.GoldLookup.v1")
def make_gold_lookup(answers: str) -> GoldLookup:
    return GoldLookup(answers)


def main() -> None:
    import argparse
    import os
    import resource
    import subprocess
    import tempfile
    import time

    from _common import DEFAULT_DATA, gold_entries, load_dataset, ours_completion

    from spacy_reasoningner.annotate import AnnotateOptions, PipelineSpec, annotate
    from spacy_reasoningner.protocol import Schema

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--model-docs", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # the local engine: every core (Ray: 1 per actor)

    records, labels = load_dataset(args.data, "conll2003")
    records = [r for r in records if r.text.strip()][: max(args.docs, args.model_docs)]
    if len(records) < args.docs:
        raise SystemExit(f"only {len(records)} CoNLL-2003 dev sentences, asked for {args.docs}")
    schema = Schema.from_config(labels)
    work = Path(tempfile.mkdtemp(prefix="bench-annotate-"))
    corpus = work / "conll2003-dev.txt"
    corpus.write_text("".join(r.text + "\n" for r in records[: args.docs]), encoding="utf-8")
    model_corpus = work / "model" / "conll2003-dev.txt"
    model_corpus.parent.mkdir()
    model_corpus.write_text("".join(r.text + "\n" for r in records[: args.model_docs]))
    answers = work / "answers.json"
    answers.write_text(
        json.dumps({r.text: ours_completion(gold_entries(r), schema) for r in records}),
        encoding="utf-8",
    )
    code = [str(Path(__file__).resolve())]
    scripted = PipelineSpec.from_component(
        {"labels": labels, "backend": {"@reasoning_ner_backends": "bench.GoldLookup.v1",
                                       "answers": str(answers)}},
        code=code,
    )  # fmt: skip
    model = PipelineSpec.from_component(
        {
            "labels": labels,
            "generation": {"max_new_tokens": args.max_new_tokens},
            "backend": {"answer_max_tokens": args.max_new_tokens},
        }
    )
    ray_started = None
    if "ray" in args.engines:
        import ray

        from spacy_reasoningner.annotate.ray_engine import RayOptions

        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)  # fmt: skip
        ray_started = time.perf_counter() - started
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.1f} at the start; work folder {work}")
    if ray_started is not None:
        print(f"ray.init (local, {os.cpu_count()} CPUs): {ray_started:.1f} s, not in the rows")
    header = f"{'backend':<18}{'engine':<8}{'docs':>6}{'shards':>7}{'wall s':>9}{'docs/s':>9}"
    print(header + f"{'per actor':>11}{'entities':>10}{'rejected':>9}")
    for name, spec, source, docs in [
        ("gold (instant)", scripted, corpus, args.docs),
        (f"bundled, {args.max_new_tokens} tok", model, model_corpus, args.model_docs),
    ]:
        if docs == 0:
            continue
        for engine in args.engines:
            out = work / f"out-{engine}-{docs}-{name.split()[0]}"
            ray = RayOptions(actors=args.actors) if engine == "ray" else None
            options = AnnotateOptions(
                engine=engine, shard_size=args.shard_size, jsonl=True, ray=ray
            )
            started = time.perf_counter()
            summary = annotate([str(source)], out, spec, options, progress=False)
            wall = time.perf_counter() - started
            done = json.loads((out / "manifest.json").read_text())["done"]
            busy = sum(d["seconds"] for d in done.values())
            per_actor = summary.counts["docs"] / busy if busy else 0.0
            print(
                f"{name:<18}{engine:<8}{summary.counts['docs']:>6}{summary.shards:>7}"
                f"{wall:>9.1f}{summary.counts['docs'] / wall:>9.1f}{per_actor:>11.1f}"
                f"{summary.counts['entities']:>10}{summary.rejected:>9}"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"driver peak RSS {peak:.0f} MB; load average {os.getloadavg()[0]:.1f} at the end")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
