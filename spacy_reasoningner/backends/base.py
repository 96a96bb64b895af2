"""The interface between the component and an inference engine.

A backend turns chat prompts into completions, one call per batch, so an engine can schedule
the whole batch at once. It is created from a registered function (see ``registry``), which
lets a config file swap engines and lets users plug in their own.

The one required method is ``Backend.generate(prompts, settings)``. Everything else a backend
can do is a small capability, a runtime-checkable Protocol the component tests with
``isinstance``:

* ``Loadable``: ``loaded`` and ``load()``, so ``initialize`` can load weights up front;
* ``Identifiable``: ``identity``, what determines its answers (for the response cache);
* ``SerializableBackend``: ``to_disk``/``from_disk``, weights inside a saved pipeline;
* ``Constrainable``: ``generate_constrained(requests, settings, reasoning=...)``, which
  receives one ``Request`` per prompt (its messages, which sample of its text it is, and the
  ``AnswerShape`` its answer must follow, for constrained decoding) and whether the prompts
  ask for reasoning first;
* ``TokenCounter``: ``count_tokens(text)`` with the model's tokenizer;
* ``GuardsSavedSettings``: ``check_saved_settings(saved)``, told when its settings come from
  a saved pipeline's config, so settings that act beyond the folder (run shipped code, send
  a key to a host) need the user's consent (see ``trust``).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

from ..protocol import ChatMessages

if TYPE_CHECKING:
    from ..trust import SavedPipeline

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings shared by all backends; temperature 0 means greedy decoding.

    ``max_new_tokens`` 512: enough for the default model's reasoning (about 130 tokens) and
    answer with room to spare, while a small model that loops stops after seconds, not
    minutes, on a CPU. Reasoning models write long chains: give them 2048-4096.

    ``stop_reasoning_loops``: with constrained answers (two passes), the reasoning pass ends
    at its first line that repeats an earlier one (``protocol.reasoning_loop_start``) and
    the answer follows from the reasoning before it, instead of a looping model running to
    ``max_new_tokens``. The transformers backend stops generating there; the others cut
    the reasoning there, so every backend answers from the same reasoning.
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stop_reasoning_loops: bool = True
    # Passed to the chat template, e.g. {"enable_thinking": False} for Qwen3.
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GenerationSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown generation setting(s) {unknown}: use only {sorted(known)}")
        settings = cls(
            **{
                **config,
                "stop": tuple(config.get("stop", ())),
                "chat_template_kwargs": dict(config.get("chat_template_kwargs") or {}),
            }
        )
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

    def to_config(self) -> dict[str, Any]:
        """The ``generation`` config block of these settings (every field)."""
        return {
            f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
            for f in fields(self)
        }

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def at_position(self, position: int) -> GenerationSettings:
        """The settings of the prompt at ``position`` of a backend call; the one seed rule of
        every backend: with a seed, ``seed + position``, so that repeats of a prompt (samples
        to vote on) draw different numbers while a run stays reproducible."""
        return self if self.seed is None else replace(self, seed=self.seed + position)


@dataclass(frozen=True, eq=False)
class AnswerShape:
    """What the answers about one text must follow; the samples of a text share one.

    schema: the answer's JSON Schema (the protocol's shape with the schema's labels).
    write_grammar: writes a grammar narrower than the schema (xgrammar's EBNF notation, root
        rule ``root``): grounded answers allow only mentions that are spans of the text.
        Called when a backend first reads ``grammar``, once: a backend that takes no grammar
        (a plain or scripted one, a server given JSON Schemas) costs nothing. None: the
        schema is the constraint. Backends that take grammars (transformers with xgrammar,
        vLLM) use the grammar; others keep to the schema.
    """

    schema: Mapping[str, Any]
    write_grammar: Callable[[], str] | None = field(default=None, repr=False)

    @cached_property
    def grammar(self) -> str | None:
        return None if self.write_grammar is None else self.write_grammar()

    @property
    def constraint(self) -> AnswerConstraint:
        """The narrowest constraint: the grammar, else the schema."""
        grammar = self.grammar
        return self.schema if grammar is None else grammar

    def describe(self) -> dict[str, Any]:
        """What determines the answer (for cache keys)."""
        if self.write_grammar is None:
            return {"schema": self.schema}
        return {"schema": self.schema, "grammar": self.grammar}


@dataclass(frozen=True)
class Request:
    """One prompt of a backend call.

    messages: the chat turns.
    sample: which of its text's samples this is: 0, unless ``samples`` > 1 asks a text
        several times in one call; the response cache keeps each sample apart.
    answer: what the answer must follow, or None for a free answer. ``Constrainable``
        backends constrain decoding to it when their ``structured_output`` setting says so.
    """

    messages: ChatMessages
    sample: int = 0
    answer: AnswerShape | None = None


# A JSON Schema, or a grammar in xgrammar's EBNF notation.
AnswerConstraint = Mapping[str, Any] | str


@dataclass(frozen=True)
class Completion:
    """One generated answer. ``finish_reason == "length"`` means the token budget cut it.

    Immutable: a completion may be cached, shared by samples or kept in ``ner_raw``; a step
    that adds to it (the reasoning pass's head, the call's time) makes a new one with
    ``dataclasses.replace``."""

    text: str
    finish_reason: FinishReason = "stop"
    reasoning: str | None = None  # reasoning returned apart from the text by some servers
    prompt: str | None = None  # the rendered prompt, when the backend renders one
    n_tokens: int | None = None  # generated tokens, when the backend knows them
    prompt_tokens: int | None = None  # tokens of the prompt, when the backend knows them
    # Of prompt_tokens, those whose key/value cache was reused rather than computed (a prefix
    # cache), when the backend knows them.
    cached_prompt_tokens: int | None = None
    # Time spent on this completion alone, when the backend can tell (a server request);
    # batched engines cannot, and the component shares the call's time out instead.
    seconds: float | None = None
    # How the answer was constrained, in the backend's words ("json_schema", "grammar", a
    # server's way of taking it, see the OpenAI backend's ladder); None: a free answer.
    constraint: str | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


_FINISH_REASONS = frozenset(get_args(FinishReason))


def completion_problem(completion: Any) -> str | None:
    """What is wrong with ``completion`` (not a Completion, fields of the wrong type, as a
    server or a backend may send them: ``"content": 5``), or None when it is well-formed."""
    if (  # the usual case, checked cheaply: it runs for every completion
        type(completion) is Completion
        and type(completion.text) is str
        and completion.finish_reason in _FINISH_REASONS
        and (completion.reasoning is None or type(completion.reasoning) is str)
        and (completion.prompt is None or type(completion.prompt) is str)
        and (completion.n_tokens is None or type(completion.n_tokens) is int)
        and (completion.constraint is None or type(completion.constraint) is str)
    ):
        return None
    if not isinstance(completion, Completion):
        return f"an object of type {type(completion).__name__} instead of a Completion"
    expected = {
        "text": (str,),
        "reasoning": (str, type(None)),
        "prompt": (str, type(None)),
        "n_tokens": (int, type(None)),
        "constraint": (str, type(None)),
    }
    for name, types in expected.items():
        value = getattr(completion, name)
        if not isinstance(value, types) or isinstance(value, bool):
            return f"a Completion whose {name} is of type {type(value).__name__}"
    if completion.finish_reason not in _FINISH_REASONS:
        return f"a Completion whose finish_reason is {completion.finish_reason!r}"
    return None


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
class Constrainable(Protocol):
    """A backend that takes ``Request``s: the thinking switch of its chat template set from
    ``reasoning`` (whether the prompts ask for a think block first), and constrained
    decoding of each answer to its request's ``AnswerShape``."""

    def generate_constrained(
        self, requests: Sequence[Request], settings: GenerationSettings, *, reasoning: bool
    ) -> list[Completion]:
        """As ``Backend.generate``, one completion per request, in order."""
        ...


class ConstrainableBackend(ABC):
    """Base of the backends written around ``generate_constrained``: ``generate`` is that
    call with free answers after reasoning."""

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        return self.generate_constrained([Request(p) for p in prompts], settings, reasoning=True)

    @abstractmethod
    def generate_constrained(
        self, requests: Sequence[Request], settings: GenerationSettings, *, reasoning: bool
    ) -> list[Completion]: ...


@runtime_checkable
class Loadable(Protocol):
    """A backend that loads its model on demand; ``initialize`` loads it up front."""

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None: ...


@runtime_checkable
class Identifiable(Protocol):
    """A backend that can say what determines its answers (engine, model, options; never
    credentials), so that a response cache can key them safely."""

    @property
    def identity(self) -> dict[str, Any]: ...


def is_identifiable(backend: object) -> bool:
    """``isinstance(backend, Identifiable)`` without evaluating ``identity``: before Python
    3.12 runtime Protocol checks call ``hasattr`` on the instance, which runs the property
    (for some backends it stats every weight file or loads the model)."""
    return inspect.getattr_static(backend, "identity", None) is not None


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that counts tokens with its model's tokenizer."""

    def count_tokens(self, text: str) -> int: ...


@runtime_checkable
class SerializableBackend(Protocol):
    """A backend whose weights live inside the saved pipeline folder."""

    def to_disk(self, path: Path) -> None: ...

    def from_disk(self, path: Path) -> None: ...


@runtime_checkable
class GuardsSavedSettings(Protocol):
    """A backend with settings that act beyond the pipeline folder. The component calls
    ``check_saved_settings`` when it loads a saved pipeline, before the backend loads
    anything: it raises ``trust.UntrustedPipelineError``, or restricts what the saved
    settings would do, unless the user allowed it at load time."""

    def check_saved_settings(self, saved: SavedPipeline) -> None: ...


def generate(
    backend: Backend,
    requests: Sequence[Request],
    settings: GenerationSettings,
    *,
    reasoning: bool = True,
) -> list[Completion]:
    """Call ``backend`` with the requests when it can act on them, with their messages
    otherwise, and check that it returned one well-formed completion per request."""
    if not requests:
        return []
    if isinstance(backend, Constrainable):
        completions = backend.generate_constrained(requests, settings, reasoning=reasoning)
    else:
        completions = backend.generate([r.messages for r in requests], settings)
    if len(completions) != len(requests):
        raise RuntimeError(
            f"backend {type(backend).__name__} returned {len(completions)} completions "
            f"for {len(requests)} prompts"
        )
    for index, completion in enumerate(completions):
        if problem := completion_problem(completion):
            raise BackendError(
                f"backend {type(backend).__name__} returned {problem} for prompt {index}: "
                "nothing of this batch is kept or cached"
            )
    return completions
