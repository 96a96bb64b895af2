"""How far the default pipeline is from what this CPU can do: a roofline per document.

Measures the machine (the matrix-product rate of the dtype the transformers backend picks,
and memory bandwidth), then runs the default pipeline (``bundled:smollm2-135m-ner``, nothing
configured) on the first ``--sentences`` CoNLL-2003 dev sentences, one at a time and in one
batch, with the transformers backend (and with ``--vllm`` the in-process vLLM engine too),
and counts the tokens it prefilled and decoded: per document, and how many of the prompt's
tokens are the prefix every prompt of the batch shares (chat turn, instruction, notes,
schema, output format).

The limits, from first principles (P parameters, W bytes of weights, F FLOP/s, B bytes/s):

* prefill is compute-bound: 2 P FLOP per token read;
* a decoding step is memory-bound at small batches: W / B to read the weights, plus 2 P
  FLOP per row; a batch of n rows shares each step's weight read.

Printed per mode: the limit in documents per second as the pipeline computes tokens today
(every prompt token of every pass not taken from a kept cache), the limit when each shared
token is read once (the shared prefix once per run, the reasoning not read again by the
answer pass), the measured rate, and measured / limit.

    python bench/roofline.py [--sentences 10] [--vllm]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import spacy
import torch
from _common import data_argument, load_dataset

from spacy_reasoningner.models import (
    DEFAULT_MODEL,
    ModelSource,
    bundled_model_folder,
    parameter_count,
)


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


def run(texts: list[str], batched: bool, backend: dict) -> dict:
    """Documents per second and the tokens the pipeline read and wrote, per document."""
    nlp = spacy.blank("en")
    labels = ["location", "miscellaneous", "organization", "person"]
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
    prompt_lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return {
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
    parser.add_argument("--vllm", action="store_true", help="also the in-process vLLM engine")
    args = parser.parse_args()
    records, _ = load_dataset(args.data, "conll2003")
    texts = [r.text for r in records[: args.sentences]]

    folder = bundled_model_folder(DEFAULT_MODEL.removeprefix("bundled:"))
    params = parameter_count(ModelSource(str(folder)))
    weight_bytes = sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
    modes = [("transformers", {"@reasoning_ner_backends": "reasoning_ner.Transformers.v1"})]
    if args.vllm:
        vllm = {"@reasoning_ner_backends": "reasoning_ner.VLLM.v1", "max_model_len": 2048}
        modes.append(("vllm", vllm))

    rows = []
    for name, backend in modes:
        for batched in (False, True):
            result = run(texts, batched, backend)
            rows.append((name, batched, result))
    # The machine after the runs, so the model's threads are set as the backend sets them.
    flops = matmul_rate(torch.float32)
    bytes_per_s = bandwidth()

    load = os.getloadavg()[0]
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} cores, load {load:.1f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"float32 matmul {flops / 1e9:.0f} GFLOP/s, copy bandwidth {bytes_per_s / 1e9:.1f} "
          f"GB/s; {DEFAULT_MODEL}: {params / 1e6:.0f}M parameters, "
          f"{weight_bytes / 2**20:.0f} MiB of weights")  # fmt: skip
    print(f"{len(texts)} CoNLL-2003 dev sentences, reasoning on, greedy, nothing configured")
    print(f"{'backend':<14}{'mode':<10}{'read/doc':>9}{'computed':>9}{'wrote/doc':>10}{'prompt':>8}{'shared':>8}"
          f"{'limit now':>11}{'limit once':>11}{'measured':>10}{'of limit':>9}")  # fmt: skip
    for name, batched, r in rows:
        batch = len(texts) if batched else 1
        now, once = limits(r, batch, flops, bytes_per_s, params, weight_bytes)
        rate = r["docs"] / r["seconds"]
        print(f"{name:<14}{'batched' if batched else 'single':<10}{r['read']:>9.0f}{r['computed']:>9.0f}{r['written']:>10.0f}"
              f"{r['prompt']:>8.0f}{r['shared']:>8}{now:>11.2f}{once:>11.2f}{rate:>10.2f}{rate / now:>9.0%}")  # fmt: skip
    print(
        "docs/s; limit now: the prompt tokens computed (ner_usage's prompt tokens of both "
        "passes of a constrained answer, less those reused from a kept cache); limit once: the shared prefix once per run, the reasoning not "
        "read again; read/computed/wrote: tokens per document; prompt, shared: tokens of the rendered "
        "prompt and of the prefix every prompt shares"
    )


if __name__ == "__main__":
    main()
