"""Memory plan of a profile's evaluate stage on one GPU, computed from the profile.

The evaluate stage builds the pipeline with its ``[evaluate.backend]`` (vLLM in the GPU
profiles), so the weights are on the card once; vLLM then takes ``gpu_memory_utilization`` of
the card and gives what the weights and its profiling pass leave to the KV cache. This prints
that budget: weights, KV cache bytes per token, tokens the cache holds and how many sequences
of ``max_model_len`` fit at once, and what the stage needed before the model was loaded once
(a transformers copy beside vLLM's).

The architecture comes from the model's ``config.json`` when the model folder exists here
(``--model-config``), else from the published ``config.json`` of the profile's base model
(the table below). Activation memory of vLLM's profiling pass is not computed: it is given
as ``--activations-gib`` (vLLM measures it at start-up; 1-4 GiB for these models).

    python bench/memory_plan.py --profile gpu-8b [--card-gib 79.2]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the training/ stages

from spacy_reasoningner.backends.vllm import VLLMOptions
from training.config import load_profile

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class Architecture:
    """What the memory depends on, as config.json names it (decoder-only, GQA)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: dict) -> Architecture:
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        return cls(
            hidden_size=config["hidden_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=config["num_attention_heads"],
            num_key_value_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
            head_dim=head_dim,
            intermediate_size=config["intermediate_size"],
            vocab_size=config["vocab_size"],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    @property
    def parameters(self) -> int:
        h, d = self.hidden_size, self.head_dim
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        attention = h * q + 2 * h * kv + q * h + 2 * d  # q, k, v, o, q/k norms
        layer = attention + 3 * h * self.intermediate_size + 2 * h  # SwiGLU MLP, 2 norms
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * layer + embeddings + h

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype_bytes


# The published config.json of the GPU profiles' base models (Hugging Face, Qwen/<name>).
PUBLISHED = {
    "Qwen/Qwen3-8B-Base": Architecture(4096, 36, 32, 8, 128, 12288, 151936, False),
    "Qwen/Qwen3-1.7B-Base": Architecture(2048, 28, 16, 8, 128, 6144, 151936, True),
}


def architecture(profile: dict, model_config: Path | None) -> tuple[Architecture, str]:
    if model_config is not None:
        return Architecture.from_config(json.loads(model_config.read_text())), str(model_config)
    base = profile["paths"]["base_model"]
    if base not in PUBLISHED:
        raise SystemExit(f"no published architecture for {base!r}: give --model-config")
    return PUBLISHED[base], f"{base} (published config.json)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="gpu-8b")
    parser.add_argument("--model-config", type=Path, default=None)
    parser.add_argument(
        "--card-gib", type=float, default=79.2, help="an 80 GB card as CUDA sees it"
    )
    parser.add_argument("--activations-gib", type=float, default=2.0)
    args = parser.parse_args()

    profile = load_profile(args.profile)
    backend = dict(profile["evaluate"]["backend"])
    defaults = VLLMOptions()
    utilization = backend.get("gpu_memory_utilization", defaults.gpu_memory_utilization)
    dtype = backend.get("dtype", defaults.dtype)
    dtype = "bfloat16" if dtype == "auto" else dtype  # "auto" is bfloat16 on a GPU
    max_model_len = backend.get("max_model_len") or defaults.max_model_len
    tensor_parallel = backend.get("tensor_parallel_size", defaults["tensor_parallel_size"])
    arch, where = architecture(profile, args.model_config)

    weights = arch.parameters * DTYPE_BYTES[dtype] / tensor_parallel
    budget = utilization * args.card_gib * GIB
    kv_per_token = arch.kv_bytes_per_token(DTYPE_BYTES[dtype]) / tensor_parallel
    kv_space = budget - weights - args.activations_gib * GIB
    tokens = int(kv_space // kv_per_token)
    print(f"profile {args.profile}: [evaluate.backend] {backend.get('@reasoning_ner_backends')}")
    print(f"architecture: {where}")
    print(f"  parameters {arch.parameters / 1e9:.2f} B, {dtype}, tensor parallel {tensor_parallel}")
    print(
        f"card {args.card_gib:.1f} GiB x gpu_memory_utilization {utilization} = {budget / GIB:.1f} GiB"
    )
    print(f"  weights (once)          {weights / GIB:6.1f} GiB")
    print(f"  activations (assumed)   {args.activations_gib:6.1f} GiB")
    print(f"  KV cache                {kv_space / GIB:6.1f} GiB")
    print(f"KV per token {kv_per_token / 1024:.0f} KiB: {tokens:,} tokens,")
    print(f"  {tokens // max_model_len} sequences of max_model_len {max_model_len} at once")
    # Before the pipeline was built with the evaluation backend: spacy.load put the saved
    # transformers copy on the card first, and vLLM's start-up check wants `utilization` of
    # the card free.
    free = args.card_gib * GIB - weights
    verdict = "refuses" if free < budget else "starts"
    print(
        f"with a transformers copy loaded first: {free / GIB:.1f} GiB free of the "
        f"{budget / GIB:.1f} GiB vLLM asks for: vLLM {verdict}"
    )


if __name__ == "__main__":
    main()
