"""What the in-process engines (transformers, vLLM) share: a model reference resolved at load
time, an identity for caches, chat-template rendering with the thinking switch, token counts,
and constrained answers.

Constrained answers: the reasoning stays free; only the JSON answer is constrained, to the
JSON Schema the task gives each request (``AnswerShape.schema``), or to its narrower grammar
(``AnswerShape.grammar``: grounded answers), so it always parses. Two
passes: the model reasons until ``</think>`` (or its end of sequence; a chain cut by the
budget is closed too, so every prompt gets an answer), then the answer is generated under the
constraint after the closed think block. Without reasoning only the second pass runs.

``structured_output`` follows the rule of ``structured``.
"""

from __future__ import annotations

import hashlib
import logging
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..models import DEFAULT_MODEL, ModelSource, model_fingerprint, resolve_model
from ..protocol import (
    DEFAULT_CHAT_TEMPLATE,
    THINK_OPEN,
    ChatMessages,
    open_think_block,
    render_prompt,
)
from ..trust import SavedPipeline, check_remote_code
from .base import (
    AnswerConstraint,
    Completion,
    ConstrainableBackend,
    GenerationSettings,
    Request,
)
from .structured import AnswerOptions, structured_enabled
from .two_pass import answer_settings, joined, reasoning_settings, think_head, thought

logger = logging.getLogger(__name__)

# Model weights loaded by the in-process engines of this process, per engine. A pipeline that
# evaluates must hold one copy of its model (two do not fit an 8B model and vLLM's KV cache
# on one GPU): the evaluation stage reports the loads it caused (``model_loads``).
_WEIGHT_LOADS: Counter[str] = Counter()


def weight_loads() -> dict[str, int]:
    """Weights loaded so far in this process, per engine ("transformers", "vllm")."""
    return dict(_WEIGHT_LOADS)


def loads_since(before: dict[str, int]) -> dict[str, int]:
    """The loads per engine since ``before`` (a ``weight_loads()``), engines without any left out."""
    now = weight_loads()
    return {
        engine: n - before.get(engine, 0) for engine, n in now.items() if n > before.get(engine, 0)
    }


@dataclass(frozen=True, kw_only=True)
class LocalOptions(AnswerOptions):
    """The options every in-process engine takes (see the engines' own options)."""

    model: str = DEFAULT_MODEL
    trust_remote_code: bool = False


class LocalBackend(ConstrainableBackend):
    """Base of the backends that run a model in this process.

    Subclasses load the model (``load``, ``loaded``, ``tokenizer``) and generate from
    rendered prompts: ``_generate_free`` without constraint, ``_generate_answers`` under one
    constraint (a JSON Schema or a grammar) per prompt. Everything else is written here once.
    """

    engine_name: str  # "transformers", "vllm": the first field of ``identity``

    def __init__(self, options: LocalOptions):
        self.options = options
        self.reference = options.model  # the weights to load; a saved pipeline's folder later
        self.source: ModelSource | None = None  # where the loaded weights came from
        self._loaded_fingerprint: str | None = None  # of the weights ``load`` read

    def check_saved_settings(self, saved: SavedPipeline) -> None:
        """Shipped code runs only with the user's consent (``trust``)."""
        check_remote_code(
            self.options.trust_remote_code, bool(saved.backend.get("trust_remote_code")), saved
        )

    # ----------------------------------------------------------------- the engine

    @property
    @abstractmethod
    def loaded(self) -> bool: ...

    @abstractmethod
    def load(self, source: str | None = None) -> None:
        """Load the model from ``source`` (a folder) or the configured reference."""

    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """The loaded model's tokenizer."""

    @abstractmethod
    def _generate_free(self, texts: list[str], settings: GenerationSettings) -> list[Completion]:
        """Completions of rendered prompts, unconstrained."""

    def _generate_reasoning(
        self, texts: list[str], settings: GenerationSettings
    ) -> list[Completion]:
        """The reasoning pass of constrained answers: free completions up to ``</think>``.
        Engines that can stop a row mid-batch stop it at a reasoning loop too
        (``settings.stop_reasoning_loops``); the cut itself is made for all in ``_two_pass``."""
        return self._generate_free(texts, settings)

    @abstractmethod
    def _generate_answers(
        self,
        texts: list[str],
        settings: GenerationSettings,
        constraints: Sequence[AnswerConstraint],
    ) -> list[Completion]:
        """Completions of rendered prompts, each constrained to its JSON Schema (a mapping)
        or grammar (EBNF text)."""

    def _identity_details(self) -> dict[str, Any]:
        """Engine-specific parts of ``identity``."""
        return {}

    def _count_weight_load(self, source: ModelSource) -> None:
        """Record that ``load`` read the weights at ``source`` (see ``weight_loads``), and
        their fingerprint: what ``identity`` names from then on, without reading the folder
        again (the loaded weights stay those, whatever later happens to the folder)."""
        self._loaded_fingerprint = model_fingerprint(source)
        path = source.path
        _WEIGHT_LOADS[self.engine_name] += 1
        logger.info(
            "model weights loaded: %s by %s (load %d of this engine in this process)",
            path,
            self.engine_name,
            _WEIGHT_LOADS[self.engine_name],
        )

    # ----------------------------------------------------------------- shared

    @property
    def constrained(self) -> bool:
        """Whether answers are constrained ("auto" resolved against the loaded model)."""
        return self.source is not None and structured_enabled(
            self.options.structured_output, self.source
        )

    @property
    def identity(self) -> dict[str, Any]:
        """What determines the completions, for caches: engine, weights, options."""
        source = self.source or resolve_model(self.reference)
        loaded = self.source is not None and self._loaded_fingerprint is not None
        return {
            "backend": self.engine_name,
            "model": source.path,
            "weights": self._loaded_fingerprint if loaded else model_fingerprint(source),
            "structured_output": self.options.structured_output,
            "answer_max_tokens": self.options.answer_max_tokens,
            **self._identity_details(),
        }

    def _ensure_loaded(self) -> None:
        if not self.loaded:
            self.load()

    def chat_template_hash(self) -> str:
        template = self.tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
        return hashlib.sha256(str(template).encode()).hexdigest()[:16]

    def count_tokens(self, text: str) -> int:
        self._ensure_loaded()
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def render(
        self, prompt: ChatMessages, settings: GenerationSettings, *, reasoning: bool = True
    ) -> str:
        self._ensure_loaded()
        return render_prompt(
            self.tokenizer, prompt, reasoning=reasoning, **settings.chat_template_kwargs
        )

    def generate_constrained(
        self, requests: Sequence[Request], settings: GenerationSettings, *, reasoning: bool
    ) -> list[Completion]:
        """Free completions, or two passes for the requests whose answer has a shape when
        ``structured_output`` is on."""
        texts = [self.render(r.messages, settings, reasoning=reasoning) for r in requests]
        constrained = self.constrained
        schemas = [
            r.answer.constraint if constrained and r.answer is not None else None for r in requests
        ]
        completions: list[Completion | None] = [None] * len(texts)
        free = [i for i, schema in enumerate(schemas) if schema is None]
        if free:
            for i, c in zip(
                free, self._generate_free([texts[i] for i in free], settings), strict=True
            ):
                completions[i] = c
        bound = [i for i, schema in enumerate(schemas) if schema is not None]
        if bound:
            answers = self._two_pass(
                [texts[i] for i in bound], settings, [schemas[i] for i in bound], reasoning
            )
            for i, c in zip(bound, answers, strict=True):
                completions[i] = c
        return completions  # type: ignore[return-value]

    def _two_pass(
        self,
        texts: list[str],
        settings: GenerationSettings,
        schemas: list[AnswerConstraint],
        reasoning: bool,
    ) -> list[Completion]:
        """Free reasoning from the opened think block up to ``</think>`` (when asked for),
        then the constrained answer after the closed think block."""
        thoughts: list[tuple[str, Completion] | None] = [None] * len(texts)
        prompts = list(texts)
        if reasoning:
            # The pass starts inside the opened think block; the answer pass continues it.
            prompts = [open_think_block(t) for t in texts]
            free = reasoning_settings(settings)
            for i, completion in enumerate(self._generate_reasoning(prompts, free)):
                text = thought(completion.text, settings)
                prompts[i] += think_head(text).removeprefix(f"{THINK_OPEN}\n")
                thoughts[i] = (text, completion)
        answer = answer_settings(settings, self.options.answer_max_tokens)
        completions = self._generate_answers(prompts, answer, schemas)
        return [
            joined(
                completion,
                "grammar" if isinstance(schemas[i], str) else "json_schema",
                thoughts[i],
                prompt=texts[i],
            )
            for i, completion in enumerate(completions)
        ]
