"""Reasoning for training samples, in four modes.

* ``reannotate``: the teacher gets text and schema only, in the protocol's prompt, and its
  answer becomes the label (the paper re-annotates Pile-NER with DeepSeek-R1 this way);
* ``rationalize``: the teacher also sees the gold entities and writes the reasoning that
  leads to them; the answer is gold;
* ``template``: no model; a short deterministic rationale from gold and type definitions,
  for smoke runs, ablations and the CPU profile;
* ``released``: no model; the chain of thought and answer of a released NER-CoT file, as the
  reference trains on them (the answer as the file lists it: mention order, repeats kept).

Every record says which mode (and model) produced it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial

from spacy_reasoningner.backends.base import (
    AnswerShape,
    Backend,
    Completion,
    GenerationSettings,
    Request,
    generate,
)
from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import ChatMessages, ParsedCompletion, label_key

from .samples import gold_entities, record_task


class Mode(str, Enum):
    reannotate = "reannotate"
    rationalize = "rationalize"
    template = "template"
    released = "released"

    @property
    def needs_teacher(self) -> bool:
        return self in (Mode.reannotate, Mode.rationalize)


@dataclass
class Draft:
    """What generation produced for one record, before quality control."""

    reasoning: str
    entities: dict[str, list[str]]  # the answer: type -> mentions, in order
    generator: str
    parsed: ParsedCompletion | None = None  # None for template drafts
    truncated: bool = False
    n_tokens: int | None = None


_RATIONALIZE = (
    "\n\nThe correct answer is:\n{answer}\n\n"
    "Write the step-by-step reasoning that leads to exactly this answer, as if you had not "
    "seen it: go through the text, consider each candidate mention, name every entity of the "
    "answer explicitly with its type and why it has that type, and say why the other "
    "candidates are not entities of the schema. Put the reasoning inside <think> </think>, "
    "then give the JSON answer."
)


def teacher_messages(record: NERRecord, mode: Mode) -> ChatMessages:
    task = record_task(record)
    [turn] = task.prompt(record.text)
    if mode is Mode.reannotate:
        return [turn]
    answer = task.target(gold_entities(record))
    return [{"role": "user", "content": turn["content"] + _RATIONALIZE.format(answer=answer)}]


def generate_drafts(
    records: Sequence[NERRecord],
    mode: Mode,
    teacher: Backend | None,
    settings: GenerationSettings,
    generator_name: str,
) -> list[Draft]:
    """One draft per record, with one backend call for the whole list."""
    if mode is Mode.template:
        return [template_draft(r) for r in records]
    if mode is Mode.released:
        return [released_draft(r) for r in records]
    if teacher is None:
        raise ValueError(f"mode {mode.value!r} needs a teacher backend ([cg.teacher])")
    requests = teacher_requests(records, mode)
    reasoning = all(record_task(r).reasoning for r in records)
    completions = generate(teacher, requests, settings, reasoning=reasoning)
    return [
        _model_draft(r, c, mode, generator_name) for r, c in zip(records, completions, strict=True)
    ]


def teacher_requests(records: Sequence[NERRecord], mode: Mode) -> list[Request]:
    """The requests of one teacher call: each answer to its record's schema. A teacher
    backend constrains its answers to it only where its ``structured_output`` says so (the
    GPU profiles' teachers: off; a tiny model: on, or nothing it writes parses), and mentions
    to spans of the text where it takes grammars."""
    requests = []
    for record in records:
        task = record_task(record)
        grammar = partial(task.answer_grammar, record.text)
        shape = AnswerShape(task.answer_schema(record.text), grammar)
        requests.append(Request(teacher_messages(record, mode), answer=shape))
    return requests


def _model_draft(record: NERRecord, completion: Completion, mode: Mode, name: str) -> Draft:
    parsed = record_task(record).parse(completion)
    entities = parsed.entities if mode is Mode.reannotate else gold_entities(record)
    return Draft(
        reasoning=parsed.reasoning,
        entities=entities,
        generator=f"{mode.value}:{name}",
        parsed=parsed,
        truncated=completion.truncated,
        n_tokens=completion.n_tokens,
    )


def template_draft(record: NERRecord) -> Draft:
    """A short rationale that names each mention of the answer, with its type, in text order
    (recalling the type's definition once, when there is one), and stops. Short on purpose:
    reasoning length is what small models pay for at inference (the paper's main limitation
    is verbose chains), so the types that do not occur are not listed one by one."""
    entities = gold_entities(record)
    in_text_order = sorted(
        (record.text.find(m), m, label) for label, mentions in entities.items() for m in mentions
    )
    schema = record_task(record).schema
    definitions = schema.definitions
    lines, glossed = [], set()
    for _, mention, label in in_text_order:
        # A type's definition, when there is one, is recalled at its first mention.
        gloss = (
            f" ({_gloss(definitions[label])})"
            if label in definitions and label not in glossed
            else ""
        )
        glossed.add(label)
        lines.append(
            f"{json.dumps(mention, ensure_ascii=False)} is {_article(label)} {label}{gloss}."
        )
    if not entities:
        lines.append("The text names no entity of the schema's types.")
    return Draft(reasoning="\n".join(lines), entities=entities, generator=Mode.template.value)


def released_draft(record: NERRecord) -> Draft:
    """The record's released chain of thought and answer: its mention list in the file's
    order, repeats kept, under the types of its built schema (misc-like types dropped, as
    ``with_schema`` drops them from gold); mentions stripped, as the reference reads them."""
    if record.reasoning is None or record.mentions is None:
        raise ValueError(
            f"{record.source}: mode 'released' reads NER-CoT records (a chain of thought and "
            'a mention list); read the file with format = "ner-cot"'
        )
    schema = set(record.schema or ())
    entities: dict[str, list[str]] = {}
    for mention, label in record.mentions:
        if label_key(label) in schema:
            entities.setdefault(label_key(label), []).append(mention.strip())
    return Draft(reasoning=record.reasoning, entities=entities, generator=Mode.released.value)


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


GLOSS_CHARS = 80


def _gloss(definition: str) -> str:
    """The definition's first sentence, cut at a word boundary: a reminder, not the text."""
    first = " ".join(definition.split()).split(". ")[0].rstrip(".")
    if len(first) <= GLOSS_CHARS:
        return first
    return first[:GLOSS_CHARS].rsplit(" ", 1)[0] + " ..."
