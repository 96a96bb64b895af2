"""The interface between the component and an inference engine.

A backend turns chat prompts into completions, one call per batch, so an engine can schedule
the whole batch at once. It is created from a registered function (see ``registry``), which
lets a config file swap engines and lets users plug in their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from ..protocol import ChatMessages

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings shared by all backends; temperature 0 means greedy decoding."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Passed to the chat template, e.g. {"enable_thinking": False} for Qwen3.
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # JSON Schema of the answer, set by the component from its labels; backends that can
    # constrain decoding (and are asked to) use it.
    answer_schema: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GenerationSettings:
        known = set(cls.__dataclass_fields__) - {"answer_schema"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown generation setting(s) {unknown}: use only {sorted(known)}")
        settings = cls(**{**config, "stop": tuple(config.get("stop", ()))})
        if not isinstance(settings.max_new_tokens, int) or settings.max_new_tokens < 1:
            raise ValueError(
                f"generation.max_new_tokens must be a positive integer, got {settings.max_new_tokens!r}"
            )
        if not settings.temperature >= 0.0:
            raise ValueError(
                f"generation.temperature must be >= 0 (0 = greedy), got {settings.temperature!r}"
            )
        if not 0.0 < settings.top_p <= 1.0:
            raise ValueError(f"generation.top_p must be in (0, 1], got {settings.top_p!r}")
        if not all(isinstance(s, str) and s for s in settings.stop):
            raise ValueError(
                f"generation.stop must be a list of non-empty strings, got {config['stop']!r}"
            )
        return settings

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    """One generated answer. ``finish_reason == "length"`` means the token budget cut it."""

    text: str
    finish_reason: FinishReason = "stop"
    reasoning: str | None = None  # reasoning returned apart from the text by some servers
    prompt: str | None = None  # the rendered prompt, when the backend renders one
    n_tokens: int | None = None  # generated tokens, when the backend knows them

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class BackendError(RuntimeError):
    """An engine failed on a batch. ``completed`` maps prompt indices to the completions that
    finished before the failure, so a cache can keep them and a rerun resumes from there."""

    def __init__(self, message: str, completed: dict[int, Completion] | None = None):
        super().__init__(message)
        self.completed = dict(completed or {})


@runtime_checkable
class Backend(Protocol):
    """What the component needs from an engine: batched chat generation."""

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        """One completion per prompt, in order. Raise on engine failure (no partial lists)."""
        ...


@runtime_checkable
class SerializableBackend(Backend, Protocol):
    """A backend whose weights live inside the saved pipeline folder."""

    def to_disk(self, path: Path) -> None: ...

    def from_disk(self, path: Path) -> None: ...
