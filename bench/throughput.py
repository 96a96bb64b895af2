"""Throughput and peak memory of each backend on the same prompts, side by side.

Prompts: the first sentences of the CrossNER and CoNLL-2003 dev splits (reasoning on, each
dataset's label names as schema), spread evenly over the datasets. Modes, each run in its own
child process so that its peak memory is its own:

* ``hf-single``: transformers, one prompt per ``generate`` call (how spacy-llm runs HF models);
* ``hf-batched``: transformers, the whole list in one backend call (sub-batches of 16);
* ``vllm``: the vLLM offline engine, one ``generate`` for all prompts;
* ``vllm-structured``: the same with the answer constrained to the protocol's JSON;
* ``openai-vllm-serve``: the OpenAI-compatible backend against ``vllm serve`` on 127.0.0.1;
* ``openai-llama-cpp``: the same against llama-cpp-python's server (``make llama-server``) of
  the model exported by ``export-gguf`` (f16), repeat penalty off as in process.

Reports docs/s, generated tokens/s, the share of completions that do not parse, and peak RSS
(for the servers the server's, sampled). The slow ``hf-single`` baseline runs on the first
``--single-limit`` prompts; its rates are per prompt, so they compare directly.

    python bench/throughput.py [--prompts 200] [--max-new-tokens 64] [--modes ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import CROSSNER_DATASETS, data_argument, load_dataset

from spacy_reasoningner.backends.base import AnswerShape, GenerationSettings, Request
from spacy_reasoningner.protocol import (
    Schema,
    answer_json_schema,
    parse_completion,
    render_messages,
)

MODES = (
    "hf-single",
    "hf-batched",
    "vllm",
    "vllm-structured",
    "openai-vllm-serve",
    "openai-llama-cpp",
)
DATASETS = [*CROSSNER_DATASETS, "conll2003"]


def build_prompts(data: Path, n: int) -> list[tuple[list[dict], Schema]]:
    per_dataset = -(-n // len(DATASETS))
    prompts = []
    for name in DATASETS:
        records, labels = load_dataset(data, name)
        schema = Schema.from_config(labels)
        prompts += [(render_messages(r.text, schema), schema) for r in records[:per_dataset]]
    return prompts[:n]


def run_mode(mode: str, prompts: list, settings: GenerationSettings) -> dict:
    """Generate for all prompts in this process; return counts and wall time."""
    from spacy_reasoningner.models import bundled_model_folder

    model_dir = bundled_model_folder("smollm2-135m-instruct")
    messages = [m for m, _ in prompts]
    server = None
    if mode.startswith("hf"):
        from spacy_reasoningner.backends.transformers import (
            TransformersBackend,
            TransformersOptions,
        )

        backend = TransformersBackend(TransformersOptions(model=str(model_dir)))
        backend.load()
    elif mode.startswith("vllm"):
        from spacy_reasoningner.backends.vllm import VLLMBackend, VLLMOptions

        backend = VLLMBackend(
            VLLMOptions(
                model=str(model_dir),
                max_model_len=2048,
                structured_output=mode == "vllm-structured",
            )
        )
        backend.load()
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from spacy_reasoningner.backends.openai import OpenAIBackend, OpenAIOptions
        from tests._servers import SERVED_NAME, LlamaCppServer, VLLMServer

        extra_body = {}
        if mode == "openai-llama-cpp":
            from spacy_reasoningner.export_gguf import export_gguf

            folder = Path(tempfile.mkdtemp(prefix="throughput-"))
            gguf = export_gguf(model_dir, folder / "model.gguf", "f16")
            server = LlamaCppServer(gguf, folder / "server.log")
            extra_body = {"repeat_penalty": 1.0}  # llama-cpp-python's default is 1.1
        else:
            server = VLLMServer(model_dir)
        server.start()
        backend = OpenAIBackend(
            OpenAIOptions(
                model=SERVED_NAME, base_url=server.url, max_concurrency=32, extra_body=extra_body
            )
        )
    peak = _RSSSampler(server.process.pid if server else None)
    started = time.perf_counter()
    try:
        if mode == "hf-single":
            completions = [backend.generate([m], settings)[0] for m in messages]
        elif mode == "vllm-structured":
            # One call; each prompt's answer is constrained to its own schema's labels.
            requests = [
                Request(m, answer=AnswerShape(answer_json_schema(schema)))
                for m, (_, schema) in zip(messages, prompts, strict=True)
            ]
            completions = backend.generate_constrained(requests, settings, reasoning=True)
        else:
            completions = backend.generate(messages, settings)
        seconds = time.perf_counter() - started
    finally:
        peak.stop()
        if server:
            server.stop()
    failures = sum(
        not parse_completion(c.text, s).parsed
        for c, (_, s) in zip(completions, prompts, strict=True)
    )
    tokens = sum(c.n_tokens or 0 for c in completions)
    return {
        "mode": mode,
        "docs": len(completions),
        "seconds": seconds,
        "tokens": tokens,
        "unparsed": failures,
        "server_peak_mb": peak.peak_mb,
    }


class _RSSSampler:
    """Peak RSS of a process tree (the vllm serve server), sampled every 0.5 s."""

    def __init__(self, pid: int | None):
        self.peak_mb, self._stop = 0.0, threading.Event()
        if pid is not None:
            threading.Thread(target=self._sample, args=(pid,), daemon=True).start()

    def _sample(self, pid: int) -> None:
        import psutil

        root = psutil.Process(pid)
        while not self._stop.wait(0.5):
            try:
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            except psutil.Error:
                continue
            self.peak_mb = max(self.peak_mb, rss / 2**20)

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(parser)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--single-limit", type=int, default=30, help="prompts for hf-single")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    prompts = build_prompts(args.data, args.prompts)
    if args.child:
        if args.child == "hf-single":
            prompts = prompts[: args.single_limit]
        result = run_mode(args.child, prompts, settings)
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return
    rows = []
    for mode in args.modes:
        command = [sys.executable, __file__, "--child", mode, "--data", str(args.data), "--prompts", str(args.prompts),
                   "--single-limit", str(args.single_limit), "--max-new-tokens", str(args.max_new_tokens)]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{mode} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line[len("RESULT ") :]))
        print(f"done {mode}", file=sys.stderr)
    print(
        f"{len(prompts)} prompts (hf-single: first {args.single_limit}), reasoning on, greedy, max_new_tokens {args.max_new_tokens}, bundled SmolLM2-135M"
    )
    print(
        f"{'mode':<20}{'docs':>6}{'docs/s':>9}{'tok/s':>9}{'x single':>10}{'unparsed':>10}{'peak MB':>9}"
    )
    single = next((r["docs"] / r["seconds"] for r in rows if r["mode"] == "hf-single"), None)
    for r in rows:
        rate = r["docs"] / r["seconds"]
        peak = r["server_peak_mb"] or r["peak_mb"]
        speedup = f"{rate / single:.1f}x" if single else "-"
        print(f"{r['mode']:<20}{r['docs']:>6}{rate:>9.2f}{r['tokens'] / r['seconds']:>9.1f}{speedup:>10}"
              f"{r['unparsed'] / r['docs']:>10.0%}{peak:>9.0f}")  # fmt: skip
    print("peak MB: the process's peak RSS; for the openai modes the server's (client excluded)")


if __name__ == "__main__":
    main()
