"""The CT stage: supervised fine-tuning on the reasoning data with TRL's ``SFTTrainer``.

The target is the assistant turn only (think block + JSON answer; TRL's completion-only loss
on prompt-completion rows), or the JSON alone with ``[sft] reasoning = false`` (the paper's
ablation). ``[sft.trainer]`` is passed to ``SFTConfig`` as is, so any TRL or transformers
training argument can be set in the profile; hardware-dependent defaults (bf16 and
FlashAttention-2 on a GPU that has them, float32 and SDPA on CPU, Liger kernels when
installed) apply unless the profile sets them. ``[sft.lora] enabled = true`` trains a LoRA
adapter instead of all weights. With ``resume = true`` a rerun continues from the last
complete checkpoint in the output folder.

Writes into ``[sft] output``: ``checkpoint-*`` folders, ``trainer_state.json``,
``metrics.jsonl`` and ``curves.png``, ``model/`` (the full model, LoRA merged into it, with
tokenizer and chat template: what inference loads) and, for LoRA, ``adapter/``.

    python -m training sft cpu [--sft.trainer.max_steps 10 ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import typer
from confection import Config

from .chat_data import PromptOptions, drop_overlong, load_training_data, sft_dataset
from .config import StageConfig, load_profile, parse_overrides, require
from .curves import MetricsLog
from .samples import TARGET_FORMATS
from .trainers import (
    check_keys,
    check_lora_sharding,
    load_tokenizer,
    lora_config,
    model_path,
    train_and_save,
    trainer_config,
)

# [sft] over_length: what happens to rows longer than [sft.trainer] max_length.
OVER_LENGTH = ("drop", "truncate")


@dataclass
class SFTStageConfig(StageConfig):
    """``[sft]``: the CT stage."""

    SECTION: ClassVar[str] = "sft"

    model: str  # the model to fine-tune: a folder, hub id or bundled:NAME
    dataset: Path  # the CG stage's dataset folder
    output: Path
    # false: train the JSON answer alone, without reasoning (the paper's ablation).
    reasoning: bool = True
    # End each prompt with our line asking to reason first (the reference's has none); the
    # assembled component must say the same ([assemble.component] reasoning_instruction).
    reasoning_instruction: bool = True
    # Open each prompt with the source dataset's name, as the reference's 8B SFT run does.
    add_source: bool = False
    # The target's JSON: "compact" (ours: one line, labels in schema order, each mention once,
    # the form constrained decoding writes) or "reference" (the reference's: indented, labels
    # and mentions in the sample's order, repeats kept).
    target_format: str = "compact"
    # Rows longer than [sft.trainer] max_length: "drop" (ours: a cut row teaches a truncated
    # answer or loses its text) or "truncate" (the reference: kept and cut by TRL as
    # [sft.trainer] truncation_mode says; the reference's "keep_end" cuts from the left).
    over_length: str = "drop"
    # Rows held back to measure the loss on (0: none).
    eval_size: int = 0
    # Continue from the last complete checkpoint in `output` after an interruption.
    resume: bool = True
    # peft LoraConfig arguments plus `enabled`; disabled: all weights are trained.
    lora: dict[str, Any] = field(default_factory=dict)
    # Any SFTConfig argument (TRL and transformers).
    trainer: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_options(self) -> PromptOptions:
        return PromptOptions(
            self.reasoning, self.reasoning_instruction, self.add_source, self.target_format
        )

    def __post_init__(self) -> None:
        require(
            self.target_format in TARGET_FORMATS,
            f"[sft] target_format {self.target_format!r} is not one of {list(TARGET_FORMATS)}",
        )
        require(
            self.over_length in OVER_LENGTH,
            f"[sft] over_length {self.over_length!r} is not one of {list(OVER_LENGTH)}",
        )
        require(
            self.over_length == "drop"
            or not self.trainer.get("padding_free")
            or self.trainer.get("packing"),
            '[sft] over_length = "truncate" needs TRL to cut the rows, which it does not on '
            "padding-free batches without packing: set [sft.trainer] padding_free = false, or "
            'keep over_length = "drop"',
        )
        require(self.eval_size >= 0, "[sft] eval_size must be >= 0")
        require(
            self.eval_size > 0 or self.trainer.get("eval_strategy", "no") == "no",
            "[sft] eval_size = 0 holds back no rows to evaluate on: set [sft.trainer] "
            'eval_strategy = "no", or hold rows back',
        )
        from trl import SFTConfig

        check_keys(SFTConfig, self.trainer, "sft.trainer")
        lora_config(self.lora, "sft.lora")


def split_eval(dataset: Any, size: int, seed: int) -> tuple[Any, Any]:
    """(train, held-back) rows; no held-back rows when ``size`` is 0."""
    if size <= 0:
        return dataset, None
    if size >= len(dataset):
        raise ValueError(f"eval_size={size} leaves no training rows of {len(dataset)}")
    parts = dataset.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def build_trainer(profile: Config) -> tuple[Any, Path, bool]:
    """The SFT trainer of a profile, its output folder and whether to resume."""
    from trl import SFTConfig, SFTTrainer

    config = SFTStageConfig.from_profile(profile)
    args = trainer_config(SFTConfig, config.trainer, "sft.trainer", output_dir=str(config.output))
    lora = lora_config(config.lora, "sft.lora")
    check_lora_sharding(args, lora)
    path = model_path(config.model)
    tokenizer = load_tokenizer(path, args.trust_remote_code)
    rows = sft_dataset(load_training_data(config.dataset), config.prompt_options)
    if config.over_length == "drop":
        rows = drop_overlong(rows, tokenizer, args.max_length, args.dataset_num_proc)
    if args.padding_free and not args.packing:
        # Every row fits by now; TRL refuses a max_length it would not enforce on
        # padding-free batches, so it gets none.
        args.max_length = None
    train_rows, eval_rows = split_eval(rows, config.eval_size, args.seed)
    trainer = SFTTrainer(
        model=path,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[MetricsLog(config.output)],
    )
    return trainer, config.output, config.resume


def train(profile: Config) -> Path:
    trainer, output, resume = build_trainer(profile)
    return train_and_save(trainer, output, resume)


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """CoT fine-tuning (CT): SFT on the reasoning data; writes <sft.output>/model."""
    model_dir = train(load_profile(profile, parse_overrides(ctx.args)))
    typer.echo(f"model: {model_dir}  curves: {model_dir.parent / 'curves.png'}")
