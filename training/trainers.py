"""What the SFT and GRPO stages share: TRL and peft configuration from a profile's
``[<stage>.trainer]`` and ``[<stage>.lora]`` sections over hardware defaults, the model and
tokenizer to start from, resuming, and saving a model folder that inference loads without peft.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path
from typing import Any

from spacy_reasoningner.hardware import cpu_has_native_bfloat16
from spacy_reasoningner.models import resolve_model
from spacy_reasoningner.protocol import DEFAULT_CHAT_TEMPLATE

from .config import ConfigError, unknown_keys_message

logger = logging.getLogger(__name__)

MODEL_NAME = "model"
ADAPTER_NAME = "adapter"
# Set by the stage from other sections; a profile setting them in [*.trainer] is an error.
STAGE_OWNED = {
    "output_dir": "the stage's `output`",
    "resume_from_checkpoint": "the stage's `resume`",
    "reward_weights": "[grpo.rewards]",
}


def check_keys(cls: type, kwargs: dict[str, Any], where: str) -> None:
    """Raise on keys that the dataclass ``cls`` does not take, suggesting close names."""
    owned = [
        f"{key!r} is set through {STAGE_OWNED[key]}" for key in sorted(kwargs) if key in STAGE_OWNED
    ]
    if owned:
        raise ConfigError(f"[{where}] sets what the stage owns: {'; '.join(owned)}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [key for key in kwargs if key not in known]
    if unknown:
        raise ConfigError(unknown_keys_message(unknown, known, where, cls.__name__))


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def hardware_defaults(liger: bool = True) -> dict[str, Any]:
    """Precision, attention and kernels for this machine: bf16 + FlashAttention-2 (+ Liger,
    where ``liger`` and installed) on a GPU that has them; on CPU SDPA, bfloat16 weights where
    the CPU computes bfloat16 natively (about twice as fast a step; LoRA weights stay
    float32), else float32. TRL's
    ``bf16`` (autocast) stays off on CPU: it was slower than either (bench/precision.py)."""
    import torch

    if not torch.cuda.is_available():
        dtype = "bfloat16" if cpu_has_native_bfloat16() else "float32"
        return {
            "use_cpu": True,
            "bf16": False,
            "fp16": False,
            "model_init_kwargs": {"dtype": dtype, "attn_implementation": "sdpa"},
        }
    bf16 = torch.cuda.is_bf16_supported()
    return {
        "bf16": bf16,
        "fp16": not bf16,
        # The paper trains with Liger kernels (its SFT; not its GRPO, which passes
        # liger=False); TRL 1.x deprecates them for Hub kernels (model_init_kwargs.use_kernels),
        # which need the Hub: use Liger where installed.
        "use_liger_kernel": liger and importable("liger_kernel"),
        "model_init_kwargs": {
            "dtype": "bfloat16" if bf16 else "float16",
            "attn_implementation": "flash_attention_2" if importable("flash_attn") else "sdpa",
        },
    }


def trainer_config(
    cls: type, kwargs: dict[str, Any], where: str, *, liger: bool = True, **stage: Any
) -> Any:
    """``cls`` (SFTConfig, GRPOConfig) from the profile's ``kwargs`` over the hardware
    defaults (Liger kernels on a GPU only where ``liger``; ``use_liger_kernel`` in ``kwargs``
    wins); ``stage`` holds the values the stage derives from its other settings."""
    check_keys(cls, kwargs, where)
    defaults = hardware_defaults(liger)
    model_init_kwargs = {**defaults.pop("model_init_kwargs"), **kwargs.get("model_init_kwargs", {})}
    return cls(**{**defaults, **kwargs, **stage, "model_init_kwargs": model_init_kwargs})


def model_path(reference: str) -> str:
    """A folder or hub id that ``from_pretrained`` loads (bundled models are converted)."""
    source = resolve_model(reference)
    if source.gguf_file:
        raise ValueError(
            f"model {reference!r} is a GGUF file: training needs a safetensors folder; "
            "convert it once (spacy_reasoningner.models.load_gguf, then save_pretrained)"
        )
    return source.path


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer; base models without a chat template get the protocol's ChatML
    one, which is saved with the trained model so that inference renders prompts alike."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def lora_config(block: dict[str, Any] | None, where: str) -> Any:
    """A peft ``LoraConfig`` from ``[<stage>.lora]`` when ``enabled``, else None."""
    from peft import LoraConfig

    kwargs = dict(block or {})
    enabled = kwargs.pop("enabled", False)
    check_keys(LoraConfig, kwargs, where)  # a disabled block is checked too
    return LoraConfig(task_type="CAUSAL_LM", **kwargs) if enabled else None


def last_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` in ``folder`` that was written completely (an
    interruption during saving leaves one without ``trainer_state.json``)."""
    complete = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    steps = [(int(p.name.split("-")[-1]), p) for p in complete if p.name.split("-")[-1].isdigit()]
    return str(max(steps)[1]) if steps else None


def check_lora_sharding(args: Any, lora: Any) -> None:
    plugin = getattr(args, "deepspeed_plugin", None)
    if lora is not None and plugin is not None and plugin.zero_stage == 3:
        raise ValueError(
            "LoRA under DeepSpeed ZeRO-3 is not supported by this stage (the adapter cannot be "
            "merged into sharded weights): train all weights, or use ZeRO-2 / one GPU"
        )


def train_and_save(trainer: Any, output: Path, resume: bool) -> Path:
    """Train (continuing from the last checkpoint if asked) and save the final model.

    The model folder always holds full weights, a LoRA adapter merged in, so that the
    pipeline's transformers backend and vLLM load it without peft; the adapter is kept
    beside it.
    """
    from peft import PeftModel

    checkpoint = last_checkpoint(output) if resume else None
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_state()
    model_dir = output / MODEL_NAME
    model = trainer.accelerator.unwrap_model(trainer.model)
    # Training may switch the KV cache off in the config; generation wants it.
    model.config.use_cache = True
    if isinstance(model, PeftModel):
        trainer.save_model(str(output / ADAPTER_NAME))
        if trainer.accelerator.is_main_process:
            model.merge_and_unload().save_pretrained(model_dir, safe_serialization=True)
            trainer.processing_class.save_pretrained(model_dir)
    else:
        trainer.save_model(str(model_dir))
    trainer.accelerator.wait_for_everyone()
    return model_dir
