"""Reasoning generation for training samples, in three modes.

* ``reannotate``: the teacher gets text and schema only, in the protocol's prompt, and its
  answer becomes the label (the paper re-annotates Pile-NER with DeepSeek-R1 this way);
* ``rationalize``: the teacher also sees the gold entities and writes the reasoning that
  leads to them; the answer is gold;
* ``template``: no model; a short deterministic rationale from gold and type definitions,
  for smoke runs, ablations and the CPU profile. Every record says which mode (and model) produced it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from spacy_reasoningner.backends.base import Backend, Completion, GenerationSettings
from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import ChatMessages, ParsedCompletion

from .samples import gold_entities, record_task


class Mode(str, Enum):
    reannotate = "reannotate"
    rationalize = "rationalize"
    template = "template"


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
    if teacher is None:
        raise ValueError(f"mode {mode.value!r} needs a teacher backend ([cg.teacher])")
    completions = teacher.generate([teacher_messages(r, mode) for r in records], settings)
    return [
        _model_draft(r, c, mode, generator_name) for r, c in zip(records, completions, strict=True)
    ]


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


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


GLOSS_CHARS = 80


def _gloss(definition: str) -> str:
    """The definition's first sentence, cut at a word boundary: a reminder, not the text."""
    first = " ".join(definition.split()).split(". ")[0].rstrip(".")
    if len(first) <= GLOSS_CHARS:
        return first
    return first[:GLOSS_CHARS].rsplit(" ", 1)[0] + " ..."
