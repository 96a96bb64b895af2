"""How far the default pipeline is from what this CPU can do: a roofline per document.

Measures the machine (the matrix-product rate of the dtype each backend computes in, and
memory bandwidth), then runs the default pipeline (``--model``: the default model unless
given; the throughput issue's targets are for ``bundled:smollm2-135m-ner``, nothing else
configured) on the first ``--sentences`` dev sentences of each of ``--datasets`` (CoNLL-2003
by default) with their label names, one at a time and in one batch, with the transformers
backend (and with ``--vllm`` the in-process vLLM engine too), and counts the tokens it
prefilled and decoded: per document, and how many of the prompt's
tokens are the prefix every prompt of the batch shares (chat turn, instruction, notes,
schema, output format).

The limits, from first principles (P parameters, W bytes of weights, F FLOP/s, B bytes/s):

* prefill is compute-bound: 2 P FLOP per token read;
* a decoding step is memory-bound at small batches: W / B to read the weights, plus 2 P
  FLOP per row; a batch of n rows shares each step's weight read.

Then one decoding step of the default model (a batch of ``--sentences`` rows and one row, over
a 200-token cache), timed and profiled: its measured milliseconds against the limit above, and
the operators its time goes to.

Printed per mode: the limit in documents per second as the pipeline computes tokens today
(every prompt token of every pass not taken from a kept cache), the limit when each shared
token is read once (the shared prefix once per run, the reasoning not read again by the
answer pass), the measured rate, and measured / limit.

    python bench/roofline.py [--sentences 10] [--datasets conll2003 crossner_music] [--vllm]
        [--model bundled:smollm2-135m-ner]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import spacy
import torch
from _common import data_argument, load_dataset

from spacy_reasoningner.backends.transformers import TransformersBackend, TransformersOptions
from spacy_reasoningner.models import DEFAULT_MODEL, parameter_count, resolve_model


def matmul_rate(dtype: torch.dtype, size: tuple[int, int, int] = (2048, 1024, 1024)) -> float:
    """FLOP/s of ``torch.matmul`` in ``dtype`` on this machine (best of 5 after a warm-up)."""
    m, k, n = size
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(5))
    return 2 * m * k * n / best


def bandwidth(megabytes: int = 512) -> float:
    """Bytes/s of a large copy (read and write counted), best of 5."""
    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32).fill_(1.0)
    target = torch.empty_like(source)
    target.copy_(source)
    best = min(_timed(lambda: target.copy_(source)) for _ in range(5))
    return 2 * source.numel() * 4 / best


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def shared_prefix_tokens(prompts: list[str], tokenizer) -> int:
    """Tokens of the longest prefix that every rendered prompt of the batch shares."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = 0
    for column in zip(*ids, strict=False):
        if len(set(column)) > 1:
            break
        shared += 1
    return shared


def run(texts: list[str], labels: list[str], batched: bool, backend: dict) -> dict:
    """Documents per second and the tokens the pipeline read and wrote, per document."""
    nlp = spacy.blank("en")
    config = {"labels": labels, "keep_raw": True, "backend": backend}
    pipe = nlp.add_pipe("reasoning_ner", config=config)
    nlp("Warm-up sentence in Paris.")  # loads the model and compiles what it compiles
    started = time.perf_counter()
    docs = list(nlp.pipe(texts, batch_size=len(texts))) if batched else [nlp(t) for t in texts]
    seconds = time.perf_counter() - started
    usage = [d._.ner_usage for d in docs]
    raws = [r for d in docs for r in d._.ner_raw]
    prompts = [r["prompt"] for r in raws if r.get("prompt")]
    tokenizer = getattr(pipe.backend, "tokenizer", None)
    model = getattr(pipe.backend, "model", None)  # transformers; vLLM computes in float32 on CPU
    prompt_lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return {
        "dtype": model.dtype if model is not None else torch.float32,
        "docs": len(docs),
        "seconds": seconds,
        "read": sum(u["prompt_tokens"] or 0 for u in usage) / len(docs),
        # read minus what came from a kept key/value cache (ner_usage's cached_prompt_tokens)
        "computed": sum(
            (u["prompt_tokens"] or 0) - (u.get("cached_prompt_tokens") or 0) for u in usage
        )
        / len(docs),
        "written": sum(u["completion_tokens"] or 0 for u in usage) / len(docs),
        "prompt": sum(prompt_lengths) / len(prompt_lengths),
        "shared": shared_prefix_tokens(prompts, tokenizer),
    }


def decode_step(model, rows: int, context: int = 200, steps: int = 20) -> tuple[float, list]:
    """Median seconds of one decoding step of ``rows`` sequences over a ``context``-token
    cache, and the operators of five steps with their share of the time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(0, 1000, (rows, context))
    token = torch.randint(0, 1000, (rows, 1))
    with torch.inference_mode():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        seconds = []
        for _ in range(steps):  # the cache grows by one token a step, as in generate
            started = time.perf_counter()
            cache = model(input_ids=token, past_key_values=cache, use_cache=True).past_key_values
            seconds.append(time.perf_counter() - started)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(5):
                model(input_ids=token, past_key_values=cache, use_cache=True)
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:4]
    return sorted(seconds)[steps // 2], [(e.key, e.self_cpu_time_total / total) for e in top]


def limits(
    result: dict, batch: int, flops: float, bytes_per_s: float, params: int, weight_bytes: int
) -> tuple[float, float]:
    """Documents/s at the roofline: computing the prompt tokens the pipeline computed (those
    it read, less those a kept key/value cache gave it), and each shared token once
    (the shared prefix once for the whole run, kept across calls; the reasoning, already in
    the cache when it was written, not read again by the answer pass)."""
    decode_step = weight_bytes / bytes_per_s / batch + 2 * params / flops  # per row
    decode = result["written"] * decode_step
    prefill_now = 2 * params * result["computed"] / flops
    unique = result["prompt"] - result["shared"] + result["shared"] / result["docs"]
    prefill_once = 2 * params * unique / flops
    return 1 / (prefill_now + decode), 1 / (prefill_once + decode)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(parser)
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--datasets", nargs="+", default=["conll2003"], help="dev sets")
    parser.add_argument("--vllm", action="store_true", help="also the in-process vLLM engine")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model reference")
    args = parser.parse_args()

    params = parameter_count(resolve_model(args.model))
    transformers = {"@reasoning_ner_backends": "reasoning_ner.Transformers.v1"}
    modes = [("transformers", {**transformers, "model": args.model})]
    if args.vllm:
        vllm = {"@reasoning_ner_backends": "reasoning_ner.VLLM.v1", "max_model_len": 2048}
        vllm["model"] = args.model
        modes.append(("vllm", vllm))

    rows = []
    for dataset in args.datasets:
        records, labels = load_dataset(args.data, dataset)
        texts = [r.text for r in records[: args.sentences]]
        for name, backend in modes:
            for batched in (False, True):
                result = run(texts, labels, batched, backend)
                rows.append((dataset, name, batched, result))
    # The machine after the runs, so the model's threads are set as the backend sets them.
    flops = {dtype: matmul_rate(dtype) for dtype in {r["dtype"] for *_, r in rows}}
    bytes_per_s = bandwidth()

    load = os.getloadavg()[0]
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} cores, load {load:.1f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    rates = ", ".join(f"{str(d).removeprefix('torch.')} {f / 1e9:.0f}" for d, f in flops.items())
    print(f"matmul GFLOP/s: {rates}; copy bandwidth {bytes_per_s / 1e9:.1f} GB/s; "
          f"{args.model}: {params / 1e6:.0f}M parameters")  # fmt: skip
    print(f"the first {args.sentences} dev sentences of each set, its label names, reasoning on, "
          "greedy, nothing else configured")  # fmt: skip
    print(f"{'dataset':<16}{'backend':<14}{'mode':<10}{'dtype':<10}{'read/doc':>9}{'computed':>9}{'wrote/doc':>10}{'prompt':>8}{'shared':>8}"
          f"{'limit now':>11}{'limit once':>11}{'measured':>10}{'of limit':>9}")  # fmt: skip
    for dataset, name, batched, r in rows:
        batch = r["docs"] if batched else 1
        weight_bytes = params * r["dtype"].itemsize
        now, once = limits(r, batch, flops[r["dtype"]], bytes_per_s, params, weight_bytes)
        rate = r["docs"] / r["seconds"]
        dtype = str(r["dtype"]).removeprefix("torch.")
        print(f"{dataset:<16}{name:<14}{'batched' if batched else 'single':<10}{dtype:<10}{r['read']:>9.0f}{r['computed']:>9.0f}{r['written']:>10.0f}"
              f"{r['prompt']:>8.0f}{r['shared']:>8}{now:>11.2f}{once:>11.2f}{rate:>10.2f}{rate / now:>9.0%}")  # fmt: skip
    backend = TransformersBackend(TransformersOptions(model=args.model))
    backend.load()
    weight_bytes = params * backend.model.dtype.itemsize
    flops_model = flops.get(backend.model.dtype) or matmul_rate(backend.model.dtype)
    for rows_in_step in (1, args.sentences):
        measured, top = decode_step(backend.model, rows_in_step)
        bound = weight_bytes / bytes_per_s + 2 * params * rows_in_step / flops_model
        ops = ", ".join(f"{name.removeprefix('aten::')} {share:.0%}" for name, share in top)
        print(f"decoding step, {rows_in_step} rows over 200 tokens ({backend.model.dtype}): "
              f"{1e3 * measured:.1f} ms, limit {1e3 * bound:.1f} ms; time in {ops}")  # fmt: skip
    print(
        "docs/s; limit now: the prompt tokens computed (ner_usage's prompt tokens of both "
        "passes of a constrained answer, less those reused from a kept cache); limit once: the shared prefix once per run, the reasoning not "
        "read again; read/computed/wrote: tokens per document; prompt, shared: tokens of the rendered "
        "prompt and of the prefix every prompt shares"
    )


if __name__ == "__main__":
    main()
