"""The NER task: what to ask a model about a text, and how to read its answer back.

``NERTask`` holds the schema and the task's options and does, for one text (a window of a
Doc, a training sentence):

* ``prompt(text)``: the chat messages of the protocol;
* ``requests(texts, samples)``: the backend call about some texts, one ``Request`` per
  prompt: its messages, its sample number and its ``AnswerShape`` (``answer_schema(text)``,
  and the narrower grammar of grounded answers, ``answer_grammar(text)``), for backends
  that constrain decoding;
* ``parse(completion)``: reasoning and entities, never raising on model output;
* ``ground(doc, parsed, window)``: mentions -> token spans of the Doc, plus every mention
  that could not be grounded and why;
* ``target(entities, reasoning)``: the completion a perfect model writes (training targets);
* ``string_prf(parsed, gold)``: string-level counts of one answer as the parser reads it;
* ``reference_answer(completion)`` / ``reference_prf(answer, gold)``: the completion read as
  the reference implementation reads it, and the paper's metric over it.

It needs no pipeline: the component, data building, GRPO rewards and evaluation use the same
object, on top of ``protocol`` (the format) and ``alignment`` (grounding). Build one with
``NERTask.from_labels(["person", "location"])``; it is immutable and cheap to copy with
``dataclasses.replace``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from spacy.tokens import Doc, Span

from .alignment import ALIGNMENT_MODES, REASON_NOT_IN_SCHEMA, Unaligned, ground_mentions
from .backends.base import AnswerShape, Completion, Request
from .grounded import grounded_answer_grammar
from .protocol import (
    PRF,
    ChatMessages,
    FewShotExample,
    ParsedCompletion,
    ReferenceAnswer,
    Schema,
    answer_json_schema,
    parse_completion,
    reference_answer,
    render_answer,
    render_completion,
    render_messages,
    string_prf,
)
from .sharding import Window


@dataclass
class WindowReading:
    """What the model said about one window of a Doc: one completion, or the vote of several
    sampled ones (``samples``), where ``scores`` holds each span's share of the samples."""

    window: Window
    completion: Completion
    parsed: ParsedCompletion
    spans: list[Span]
    unaligned: list[Unaligned]
    scores: list[float] | None = None  # per span; None: one completion, every span counts
    samples: tuple[WindowReading, ...] = ()  # the readings voted on
    messages: ChatMessages | None = None  # the prompt sent, when the caller records it

    @property
    def reasoning(self) -> str:
        return self.parsed.reasoning

    @property
    def completions(self) -> list[Completion]:
        """Every completion behind this reading."""
        return [s.completion for s in self.samples] if self.samples else [self.completion]


@dataclass(frozen=True)
class NERTask:
    """Zero-shot NER in the ReasoningNER protocol over one schema.

    schema: the entity types (``Schema.from_config``).
    reasoning: ask for reasoning in a think block before the JSON answer.
    reasoning_instruction: end the prompt with our line saying so (the reference's has none).
    fuzzy_match: ground mentions that differ from the text in case or spacing.
    alignment_mode: snapping of matches off token boundaries (strict, contract, expand).
    examples: few-shot examples, shown as earlier turns (``FewShotExample``).
    instruction: replaces the first sentence of the prompt.
    grounded: constrained answers (backends that constrain) may name only spans of the text
        (``grounded.grounded_answer_grammar``), so a small model cannot name what is not there.
    """

    schema: Schema
    reasoning: bool = True
    reasoning_instruction: bool = True
    fuzzy_match: bool = True
    alignment_mode: str = "expand"
    examples: tuple[FewShotExample, ...] = ()
    instruction: str | None = None
    grounded: bool = True
    _answer_schema: dict[str, Any] = field(init=False, repr=False, compare=False)
    _label_rank: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(
                f"alignment_mode {self.alignment_mode!r} is not one of {ALIGNMENT_MODES}"
            )
        if self.instruction is not None and not self.instruction.strip():
            raise ValueError("instruction is empty: give the sentence to use, or leave it unset")
        # The same for every text of the schema: built once.
        object.__setattr__(self, "_answer_schema", answer_json_schema(self.schema))
        object.__setattr__(self, "_label_rank", {x: i for i, x in enumerate(self.schema.labels)})

    @classmethod
    def from_labels(
        cls,
        labels: Any,
        *,
        lowercase: bool = True,
        examples: Iterable[Any] = (),
        **options: Any,
    ) -> NERTask:
        """A task over ``labels`` (a list of names or a mapping name -> definition), with
        ``examples`` as config values (``FewShotExample.from_config``)."""
        schema = Schema.from_config(labels, lowercase=lowercase)
        shots = tuple(
            FewShotExample.from_config(example, schema, number)
            for number, example in enumerate(examples, start=1)
        )
        return cls(schema, examples=shots, **options)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.schema.labels

    def label_rank(self, label: str) -> int:
        """Position of ``label`` in the schema, for tie-breaks between equal spans."""
        return self._label_rank.get(label, len(self._label_rank))

    # ----------------------------------------------------------------- asking

    def prompt(self, text: str) -> ChatMessages:
        """The chat messages asking for the entities of ``text`` (after the examples)."""
        return render_messages(
            text,
            self.schema,
            reasoning=self.reasoning,
            examples=self.examples,
            instruction=self.instruction,
            reasoning_instruction=self.reasoning_instruction,
        )

    def answer_schema(self, text: str) -> Mapping[str, Any]:
        """The JSON Schema the answer about ``text`` must follow (constrained decoding): the
        protocol's shape with the schema's labels and bounded mentions."""
        return self._answer_schema

    def requests(self, texts: Sequence[str], samples: int = 1) -> list[Request]:
        """The requests of one backend call about ``texts``: each text asked ``samples``
        times in a row. The samples of a text, and equal texts, share one prompt and one
        answer shape, so a grounded grammar is written once per text (when a backend reads
        it)."""
        asked: dict[str, tuple[ChatMessages, AnswerShape]] = {}
        requests = []
        for text in texts:
            if text not in asked:
                asked[text] = (self.prompt(text), self.answer_shape(text))
            messages, answer = asked[text]
            requests += [Request(messages, sample, answer) for sample in range(samples)]
        return requests

    def answer_shape(self, text: str) -> AnswerShape:
        """What the answer about ``text`` must follow: its schema, and for grounded answers
        the grammar of the spans of ``text`` (written when first read)."""
        grammar = partial(self.answer_grammar, text) if self.grounded else None
        return AnswerShape(self.answer_schema(text), grammar)

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
        labels outside the schema and the items that are not mentions (lists, objects). ``text`` may pass ``doc.text`` in (spaCy rebuilds it on
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
        unaligned.extend(Unaligned(item, label, why) for label, item, why in parsed.rejected)
        return spans, unaligned

    def read(
        self, doc: Doc, window: Window, completion: Completion, *, text: str | None = None
    ) -> WindowReading:
        """Parse a completion about ``window`` of ``doc`` and ground its mentions there."""
        parsed = self.parse(completion)
        spans, unaligned = self.ground(doc, parsed, window, text=text)
        return WindowReading(window, completion, parsed, spans, unaligned)

    @staticmethod
    def vote(samples: Sequence[WindowReading]) -> WindowReading:
        """One reading from several sampled readings of the same window: every span any
        sample grounded, scored by the share of samples that grounded it; the reasoning and
        completion of the sample that agrees best with the majority (the first on ties), so
        the reasoning shown explains the entities set."""
        if len(samples) == 1:
            return samples[0]
        votes: Counter[tuple[int, int, str]] = Counter()
        spans: dict[tuple[int, int, str], Span] = {}
        keys = []
        for sample in samples:
            own = {(s.start, s.end, s.label_): s for s in sample.spans}
            keys.append(set(own))
            votes.update(own.keys())
            for key, span in own.items():
                spans.setdefault(key, span)
        majority = {key for key, n in votes.items() if 2 * n >= len(samples)}

        def agreement(index: int) -> float:
            union = keys[index] | majority
            return len(keys[index] & majority) / len(union) if union else 1.0

        best = samples[max(range(len(samples)), key=lambda i: (agreement(i), -i))]
        order = sorted(spans)
        return WindowReading(
            best.window,
            best.completion,
            best.parsed,
            [spans[key] for key in order],
            list(dict.fromkeys(u for s in samples for u in s.unaligned)),
            scores=[votes[key] / len(samples) for key in order],
            samples=tuple(samples),
        )

    # ----------------------------------------------------------------- training, metric

    def target(self, entities: Mapping[str, Iterable[str]], reasoning: str | None = None) -> str:
        """The completion a perfect model writes: the think block (when ``reasoning`` is
        given) and the JSON answer with ``entities`` (label -> mentions)."""
        return render_completion(reasoning, render_answer(entities, self.schema))

    @staticmethod
    def string_prf(parsed: ParsedCompletion, gold: Iterable[tuple[str, str]]) -> PRF:
        """String-level counts of one answer as our tolerant parser reads it (mentions under
        schema labels) against gold (mention, label) pairs."""
        return string_prf(parsed.mentions(), gold)

    @staticmethod
    def reference_answer(completion: str | Completion) -> ReferenceAnswer:
        """The completion as the reference implementation reads it for the paper's metric
        and its rewards: strict JSON, nothing repaired, every string answered."""
        return reference_answer(
            completion.text if isinstance(completion, Completion) else completion
        )

    def reference_prf(
        self, answered: Iterable[tuple[str, str]], gold: Iterable[tuple[str, str]]
    ) -> PRF:
        """The paper's counts of every (mention, label) pair answered (``ReferenceAnswer.
        mentions``) against gold pairs, whose labels are compared in the form the prompt
        showed them, as the reference compares them with its schema."""
        shown = [(mention, self.schema.prompt_name(label)) for mention, label in gold]
        return string_prf(answered, shown)
