"""Hugging Face transformers backend: batched ``generate`` with left padding.

The model is loaded lazily (on first use, ``initialize`` or ``from_disk``), so building a
pipeline from a config whose model lives elsewhere costs nothing until it runs, and
``spacy.load`` of a saved pipeline reads the weights from the pipeline folder only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..models import DEFAULT_MODEL, ModelSource, load_gguf, model_fingerprint, resolve_model
from ..protocol import DEFAULT_CHAT_TEMPLATE, THINK_CLOSE, ChatMessages, render_prompt
from ..registry import backends
from .base import Completion, GenerationSettings
from .structured import StructuredOption, check_option, generate_two_pass, structured_enabled

logger = logging.getLogger(__name__)


@backends.register("reasoning_ner.Transformers.v1")
class TransformersBackend:
    """A local transformers model.

    model: reference resolved by ``spacy_reasoningner.models.resolve_model``.
    device: "auto" (CUDA when available, else CPU), or any torch device string.
    dtype: "auto" (bfloat16 on GPU, float32 on CPU), "float32", "bfloat16" or "float16".
    attn_implementation: "auto" (flash_attention_2 when importable on a GPU, else sdpa).
    batch_size: most prompts per ``generate`` call; larger batches are split (memory bound).
    structured_output: constrain the JSON answer to the protocol's shape and the schema's
        labels with xgrammar, reasoning left free (see ``structured``); "auto": for models
        below 4B parameters, so small models always answer in a parseable form.
    answer_max_tokens: token budget of the constrained answer.
    trust_remote_code: run code shipped with the model; off unless you trust its source.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str = "auto",
        batch_size: int = 16,
        structured_output: StructuredOption = "auto",
        answer_max_tokens: int = 256,
        trust_remote_code: bool = False,
    ):
        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype {dtype!r} is not one of auto, float32, bfloat16, float16")
        if batch_size < 1 or answer_max_tokens < 1:
            raise ValueError(
                f"batch_size and answer_max_tokens must be >= 1, got {batch_size}, "
                f"{answer_max_tokens}"
            )
        self.reference = model
        self.device_name = device
        self.dtype_name = dtype
        self.attn_implementation = attn_implementation
        self.batch_size = batch_size
        self.structured_output = check_option(structured_output)
        self.answer_max_tokens = answer_max_tokens
        self.trust_remote_code = trust_remote_code
        self._grammars: dict[str, Any] = {}  # answer JSON Schema -> compiled grammar
        self.model: Any = None
        self.tokenizer: Any = None
        self.source: ModelSource | None = None  # where the loaded weights came from

    # ----------------------------------------------------------------- loading

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self, source: str | None = None) -> None:
        """Load weights and tokenizer from ``source`` (a folder) or the configured reference."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self._device(torch)
        kwargs: dict[str, Any] = {
            "dtype": self._dtype(torch, device),
            "attn_implementation": self._attention(device),
            "trust_remote_code": self.trust_remote_code,
        }
        resolved = resolve_model(source or self.reference)
        self.source = resolved
        if resolved.gguf_file:
            model, tokenizer = load_gguf(Path(resolved.path) / resolved.gguf_file, **kwargs)
        else:
            tokenizer = AutoTokenizer.from_pretrained(
                resolved.path, trust_remote_code=self.trust_remote_code
            )
            model = AutoModelForCausalLM.from_pretrained(
                resolved.path, use_safetensors=True, **kwargs
            )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model.to(device).eval(), tokenizer
        logger.info("Loaded %s on %s (%s)", source or self.reference, device, kwargs["dtype"])

    @property
    def identity(self) -> dict[str, Any]:
        """What determines the completions, for caches: weights, chat template, dtype."""
        if not self.loaded:
            self.load()
        template = self.tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
        return {
            "backend": "transformers",
            "model": self.source.path,
            "weights": model_fingerprint(self.source),
            "chat_template": hashlib.sha256(str(template).encode()).hexdigest()[:16],
            "dtype": str(self.model.dtype),
            "constrained": self.constrained,
            "answer_max_tokens": self.answer_max_tokens,
        }

    def _device(self, torch: Any) -> Any:
        if self.device_name != "auto":
            return torch.device(self.device_name)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _dtype(self, torch: Any, device: Any) -> Any:
        if self.dtype_name != "auto":
            return getattr(torch, self.dtype_name)
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32

    def _attention(self, device: Any) -> str:
        if self.attn_implementation != "auto":
            return self.attn_implementation
        if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        return "sdpa"

    def to_disk(self, path: Path) -> None:
        """Save weights (safetensors) and tokenizer, chat template included, into ``path``."""
        if not self.loaded:
            self.load()
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    def from_disk(self, path: Path) -> None:
        self.load(str(path))

    # ----------------------------------------------------------------- generation

    def render(self, prompt: ChatMessages, settings: GenerationSettings) -> str:
        if not self.loaded:
            self.load()
        return render_prompt(self.tokenizer, prompt, **settings.chat_template_kwargs)

    @property
    def constrained(self) -> bool:
        """Whether answers are constrained ("auto" resolved against the loaded model)."""
        return self.source is not None and structured_enabled(self.structured_output, self.source)

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        texts = [self.render(prompt, settings) for prompt in prompts]
        # Sorting by length keeps padding small inside each sub-batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        completions: list[Completion | None] = [None] * len(texts)
        for first in range(0, len(order), self.batch_size):
            chunk = order[first : first + self.batch_size]
            batch = [texts[i] for i in chunk]
            if settings.answer_schema is not None and self.constrained:
                generated = self._generate_structured(batch, settings)
            else:
                generated = self._generate_batch(batch, settings)
            for i, completion in zip(chunk, generated, strict=True):
                completions[i] = completion
        return completions  # type: ignore[return-value]

    def _generate_structured(
        self, texts: list[str], settings: GenerationSettings
    ) -> list[Completion]:
        free = replace(settings, stop=(THINK_CLOSE,))
        answer = replace(settings, max_new_tokens=self.answer_max_tokens, stop=())
        grammar = self._grammar(settings.answer_schema)

        def constrained(prompts: list[str]) -> list[Completion]:
            from xgrammar.contrib.hf import LogitsProcessor

            # One processor per generate call (it keeps per-row matcher state).
            return self._generate_batch(prompts, answer, logits_processor=LogitsProcessor(grammar))

        return generate_two_pass(
            texts, settings, lambda p: self._generate_batch(p, free), constrained
        )

    def _grammar(self, answer_schema: dict[str, Any]) -> Any:
        """The answer schema compiled for this tokenizer (cached: schemas repeat per batch)."""
        key = json.dumps(answer_schema, sort_keys=True)
        if key not in self._grammars:
            try:
                import xgrammar
            except ImportError as error:
                raise ImportError(
                    "structured_output needs xgrammar: pip install xgrammar, or set "
                    "structured_output = false"
                ) from error
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.model.config.vocab_size
            )
            compiler = xgrammar.GrammarCompiler(info)
            self._grammars[key] = compiler.compile_json_schema(key)
        return self._grammars[key]

    def _generate_batch(
        self, texts: list[str], settings: GenerationSettings, logits_processor: Any = None
    ) -> list[Completion]:
        import torch

        # Chat templates already contain the special tokens (BOS etc.).
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": not settings.greedy,
        }
        if settings.greedy:
            # Unset the model's sampling defaults so transformers does not warn about them.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
        if settings.stop:
            kwargs.update(stop_strings=list(settings.stop), tokenizer=self.tokenizer)
        if logits_processor is not None:
            kwargs["logits_processor"] = [logits_processor]
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        generated = output[:, inputs["input_ids"].shape[1] :]
        end_ids = _end_token_ids(self.model, self.tokenizer)
        completions = []
        for prompt, row in zip(texts, generated.tolist(), strict=True):
            n_tokens = next((i + 1 for i, tok in enumerate(row) if tok in end_ids), None)
            tokens = row[:n_tokens] if n_tokens else row
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            stopped_at = min((text.find(s) for s in settings.stop if s in text), default=-1)
            if stopped_at >= 0:
                text = text[:stopped_at]
            length_cut = n_tokens is None and stopped_at < 0 and len(row) >= settings.max_new_tokens
            completions.append(
                Completion(
                    text=text,
                    finish_reason="length" if length_cut else "stop",
                    prompt=prompt,
                    n_tokens=len(tokens),
                )
            )
        return completions


def _end_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a generation: the generation config's eos ids and the pad id."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    return {i for i in ids if i is not None}
