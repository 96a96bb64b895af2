"""What sampling k completions per window and voting buys: F1, time, calibration.

The default model on the vLLM backend in process (answers
constrained, as by default for small models) annotates dev sentences of each dataset with
``samples`` = k. Rows: greedy decoding (the default, k = 1), then k = 1, 3, 5 sampled at
``--temperature``, entities kept when at least half of the samples name them (``threshold``
0.5). Per row: grounded string F1 (the paper's normalization over the entities set) and
offset F1 (spaCy's), micro over all sentences; seconds per sentence (one batched call per
dataset). Calibration: every scored candidate in ``doc.spans["sc"]``, grouped by its score
(the share of samples naming it), with the precision of each group against gold spans.

    OMP_NUM_THREADS=1 python bench/confidence.py [--data ../shared/data] [-n 15]
        [--datasets conll2003 crossner_politics]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import spacy
from _common import data_argument
from spacy.scorer import get_ner_prf
from spacy.training import Example

from spacy_reasoningner.benchmark import load_eval_set
from spacy_reasoningner.protocol import PRF, is_misc_like, string_prf


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(parser)
    parser.add_argument("--datasets", nargs="+", default=["conll2003", "crossner_politics"])
    parser.add_argument("-n", type=int, default=15, help="sentences per dataset (seed 0)")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    args = parser.parse_args()

    # On a shared CPU machine, vLLM's default core binding spins its threads while others
    # hold the cores: unbound, with OMP_NUM_THREADS threads, it wastes nothing.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    from spacy_reasoningner.backends.vllm import VLLMBackend, VLLMOptions

    engine = VLLMBackend(VLLMOptions(max_model_len=2048))
    started = time.perf_counter()
    engine.load()
    print(f"engine {engine.identity['model']} ready in {time.perf_counter() - started:.0f} s")
    sets = [load_eval_set(args.data, name, limit=args.n, seed=0) for name in args.datasets]
    n = sum(len(s.records) for s in sets)
    print(f"{n} sentences: {', '.join(f'{s.name} {len(s.records)}' for s in sets)}")
    rows = [("greedy", 1, 0.0)] + [(f"k={k}", k, args.temperature) for k in args.samples]
    calibration: dict[str, dict[float, list[int]]] = {}
    print(f"{'row':<8}{'string F1':>10}{'offset F1':>10}{'s/sentence':>12}{'completions':>13}")
    for name, k, temperature in rows:
        string, examples, seconds, buckets = PRF(), [], 0.0, defaultdict(lambda: [0, 0])
        completions = 0
        for eval_set in sets:
            nlp = spacy.blank("en")
            pipe = nlp.add_pipe(
                "reasoning_ner",
                config={
                    "labels": eval_set.labels,
                    "backend": {"@reasoning_ner_backends": "reasoning_ner.VLLM.v1"},
                    "generation": {
                        "max_new_tokens": args.max_new_tokens,
                        "temperature": temperature,
                        "seed": 0,
                    },
                    "samples": k,
                    "spans_key": "sc",
                    "batch_size": len(eval_set.records),
                },
            )
            pipe.backend = engine
            started = time.perf_counter()
            docs = list(nlp.pipe(r.text for r in eval_set.records))
            seconds += time.perf_counter() - started
            completions += pipe.stats["completions"]
            for record, doc in zip(eval_set.records, docs, strict=True):
                gold = {(s, e, label) for s, e, label in record.entities}
                doc.ents = [e for e in doc.ents if not is_misc_like(e.label_)]
                string += string_prf(
                    [(e.text, e.label_) for e in doc.ents],
                    [(record.text[s:e], label) for s, e, label in gold],
                )
                reference = nlp.make_doc(record.text)
                spans = [reference.char_span(s, e, label, "expand") for s, e, label in gold]
                reference.set_ents([s for s in spans if s is not None], default="outside")
                examples.append(Example(doc, reference))
                group = doc.spans["sc"]
                for span, score in zip(group, group.attrs["scores"], strict=True):
                    correct = (span.start_char, span.end_char, span.label_) in gold
                    buckets[round(score, 2)][0] += 1
                    buckets[round(score, 2)][1] += correct
        offset = get_ner_prf(examples)["ents_f"] or 0.0
        calibration[name] = dict(buckets)
        print(
            f"{name:<8}{100 * string.f1:>10.1f}{100 * offset:>10.1f}"
            f"{seconds / n:>12.2f}{completions:>13}"
        )
    print("\ncalibration: candidates per score (share of samples naming them), precision")
    for name, buckets in calibration.items():
        cells = [
            f"{score:.2f}: {correct}/{total} = {100 * correct / total:.0f}%"
            for score, (total, correct) in sorted(buckets.items())
        ]
        print(f"  {name:<8}" + "; ".join(cells))


if __name__ == "__main__":
    main()
