"""The NER task: what to ask a model about a text, and how to read its answer back.

``NERTask`` holds the schema and the task's options and does, for one text (a window of a
Doc, a training sentence):

* ``prompt(text)``: the chat messages of the protocol;
* ``answer_schema(text)`` / ``answer_grammar(text)`` / ``answer_format(texts)``: the JSON
  Schema the answer must follow, and the narrower grammar of grounded answers, per prompt,
  for backends that constrain decoding;
* ``parse(completion)``: reasoning and entities, never raising on model output;
* ``ground(doc, parsed, window)``: mentions -> token spans of the Doc, plus every mention
  that could not be grounded and why;
* ``target(entities, reasoning)``: the completion a perfect model writes (training targets);
* ``string_prf(parsed, gold)``: the paper's string-level counts of one answer.

It needs no pipeline: the component, data building, GRPO rewards and evaluation use the same
object, on top of ``protocol`` (the format) and ``alignment`` (grounding). Build one with
``NERTask.from_labels(["person", "location"])``; it is immutable and cheap to copy with
``dataclasses.replace``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spacy.tokens import Doc, Span

from .alignment import ALIGNMENT_MODES, REASON_NOT_IN_SCHEMA, Unaligned, ground_mentions
from .backends.base import AnswerFormat, Completion
from .grounded import grounded_answer_grammar
from .protocol import (
    PRF,
    ChatMessages,
    ParsedCompletion,
    Schema,
    answer_json_schema,
    parse_completion,
    render_answer,
    render_completion,
    render_messages,
    string_prf,
)
from .sharding import Window


@dataclass
class WindowReading:
    """What one completion says about one window of a Doc."""

    window: Window
    completion: Completion
    parsed: ParsedCompletion
    spans: list[Span]
    unaligned: list[Unaligned]

    @property
    def reasoning(self) -> str:
        return self.parsed.reasoning


@dataclass(frozen=True)
class NERTask:
    """Zero-shot NER in the ReasoningNER protocol over one schema.

    schema: the entity types (``Schema.from_config``).
    reasoning: ask for reasoning in a think block before the JSON answer.
    fuzzy_match: ground mentions that differ from the text in case or spacing.
    alignment_mode: snapping of matches off token boundaries (strict, contract, expand).
    grounded: constrained answers (backends that constrain) may name only spans of the text
        (``grounded.grounded_answer_grammar``), so a small model cannot name what is not there.
    """

    schema: Schema
    reasoning: bool = True
    fuzzy_match: bool = True
    alignment_mode: str = "expand"
    grounded: bool = True
    _answer_schema: dict[str, Any] = field(init=False, repr=False, compare=False)
    _label_rank: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(
                f"alignment_mode {self.alignment_mode!r} is not one of {ALIGNMENT_MODES}"
            )
        # The same for every text of the schema: built once.
        object.__setattr__(self, "_answer_schema", answer_json_schema(self.schema))
        object.__setattr__(self, "_label_rank", {x: i for i, x in enumerate(self.schema.labels)})

    @classmethod
    def from_labels(cls, labels: Any, *, lowercase: bool = True, **options: Any) -> NERTask:
        """A task over ``labels`` (a list of names or a mapping name -> definition)."""
        return cls(Schema.from_config(labels, lowercase=lowercase), **options)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.schema.labels

    def label_rank(self, label: str) -> int:
        """Position of ``label`` in the schema, for tie-breaks between equal spans."""
        return self._label_rank.get(label, len(self._label_rank))

    # ----------------------------------------------------------------- asking

    def prompt(self, text: str) -> ChatMessages:
        """The chat messages asking for the entities of ``text``."""
        return render_messages(text, self.schema, reasoning=self.reasoning)

    def answer_schema(self, text: str) -> Mapping[str, Any]:
        """The JSON Schema the answer about ``text`` must follow (constrained decoding): the
        protocol's shape with the schema's labels and bounded mentions."""
        return self._answer_schema

    def answer_format(self, texts: Sequence[str]) -> AnswerFormat:
        """The answer format of one backend call about ``texts``, in prompt order."""
        grammars = tuple(self.answer_grammar(t) for t in texts) if self.grounded else ()
        return AnswerFormat(
            reasoning=self.reasoning,
            schemas=tuple(self.answer_schema(t) for t in texts),
            grammars=grammars,
        )

    def answer_grammar(self, text: str) -> str:
        """The grammar of a grounded answer about ``text``: the answer schema's shape, every
        mention a span of ``text``."""
        return grounded_answer_grammar(self.schema, text)

    # ----------------------------------------------------------------- reading

    def parse(self, completion: str | Completion) -> ParsedCompletion:
        """Reasoning and entities of a completion (text, or a backend's ``Completion`` whose
        reasoning a server may have returned apart)."""
        if isinstance(completion, Completion):
            return parse_completion(completion.text, self.schema, reasoning=completion.reasoning)
        return parse_completion(completion, self.schema)

    def ground(
        self,
        doc: Doc,
        parsed: ParsedCompletion,
        window: Window | None = None,
        *,
        text: str | None = None,
    ) -> tuple[list[Span], list[Unaligned]]:
        """Spans of ``doc`` for every occurrence of every mention inside ``window`` (the whole
        text by default), and the mentions that could not be grounded, including those under
        labels outside the schema. ``text`` may pass ``doc.text`` in (spaCy rebuilds it on
        every access)."""
        spans, unaligned = ground_mentions(
            doc,
            parsed.mentions(),
            start=window.start if window else 0,
            end=window.end if window else None,
            fuzzy=self.fuzzy_match,
            alignment_mode=self.alignment_mode,
            text=text,
        )
        unaligned.extend(
            Unaligned(m, label, REASON_NOT_IN_SCHEMA) for label, m in parsed.out_of_schema
        )
        return spans, unaligned

    def read(
        self, doc: Doc, window: Window, completion: Completion, *, text: str | None = None
    ) -> WindowReading:
        """Parse a completion about ``window`` of ``doc`` and ground its mentions there."""
        parsed = self.parse(completion)
        spans, unaligned = self.ground(doc, parsed, window, text=text)
        return WindowReading(window, completion, parsed, spans, unaligned)

    # ----------------------------------------------------------------- training, metric

    def target(self, entities: Mapping[str, Iterable[str]], reasoning: str | None = None) -> str:
        """The completion a perfect model writes: the think block (when ``reasoning`` is
        given) and the JSON answer with ``entities`` (label -> mentions)."""
        return render_completion(reasoning, render_answer(entities, self.schema))

    @staticmethod
    def string_prf(parsed: ParsedCompletion, gold: Iterable[tuple[str, str]]) -> PRF:
        """The paper's string-level counts of one answer against gold (mention, label) pairs."""
        return string_prf(parsed.mentions(), gold)
