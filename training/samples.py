"""``Sample``: one training sample as it travels from the CG stage to SFT and GRPO.

The CG stage writes samples (with its quality decisions beside them) to ``samples.jsonl`` and,
for the kept ones, a ``datasets`` dataset whose rows are the sample's fields plus TRL's
conversational prompt-completion form of it. SFT trains on that form (or re-renders it without
reasoning); GRPO takes the prompt and gives the rewards the schema and the gold answer. GRPO
prompts drawn from gold corpora are samples too (``Sample.from_record``), so every stage reads
one format, and the prompt, the target and the schema are rendered in one place.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spacy_reasoningner.alignment import find_word_occurrences
from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import THINK_CLOSE, THINK_OPEN, ChatMessages
from spacy_reasoningner.task import NERTask

Mention = tuple[str, str]  # (mention, type)
GOLD = "gold"  # the generator of samples whose answer is the corpus's annotation


def sample_task(
    types: Sequence[str], definitions: Mapping[str, str] | None = None, **options: bool
) -> NERTask:
    """The NER task (the component's) over built type names (``schemas.with_schema``), with
    definitions; ``options`` are the task's (``reasoning``, ``reasoning_instruction``)."""
    if not types:
        raise ValueError(
            "a sample needs at least one type in its schema; build it with with_schema()"
        )
    labels = {t: (definitions or {}).get(t, "") for t in types} if definitions else list(types)
    return NERTask.from_labels(labels, **options)


def record_task(record: NERRecord) -> NERTask:
    """The NER task of a record whose ``schema`` has been built (``with_schema``)."""
    if not record.schema:
        raise ValueError(f"{record.source}: record has no schema; build it with with_schema()")
    return sample_task(record.schema, record.definitions)


def gold_entities(record: NERRecord) -> dict[str, list[str]]:
    """Gold mentions per type, in text order, duplicates (same type and string) once."""
    answer: dict[str, list[str]] = {}
    for start, end, label in sorted(record.entities):
        mentions = answer.setdefault(label, [])
        if record.text[start:end] not in mentions:
            mentions.append(record.text[start:end])
    for mention, label in record.unaligned:
        answer.setdefault(label, []).append(mention)
    return answer


def pairs(answer: Mapping[str, Sequence[str]]) -> list[Mention]:
    """(mention, type) pairs of a grouped answer, in its order."""
    return [(mention, label) for label, mentions in answer.items() for mention in mentions]


# SFT target formats: "compact" (ours: one-line JSON, labels in schema order, each mention
# once: the order constrained decoding enforces) or "reference" (the reference's
# InputExample.to_completion: indented JSON, labels and mentions in the sample's order,
# repeats kept).
TARGET_FORMATS = ("compact", "reference")


def reference_target(entities: Sequence[Mention], reasoning: str | None) -> str:
    """The target as the reference writes it: ``{"entities": {label: [mentions]}}`` dumped
    with ``indent=2``, labels in order of first appearance and mentions in the order of
    ``entities``, repeats kept; after ``<think>\n{reasoning}\n</think>\n`` when there is
    reasoning (kept as it is, not stripped)."""
    grouped: dict[str, list[str]] = {}
    for mention, label in entities:
        grouped.setdefault(label, []).append(mention)
    answer = json.dumps({"entities": grouped}, ensure_ascii=False, indent=2)
    return answer if reasoning is None else f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n{answer}"


@dataclass
class Sample:
    """A text, its schema (type names as the model sees them, optional definitions), the
    answer as (mention, type) pairs, and the reasoning that leads to it (empty for gold
    samples). ``generator`` says where reasoning and answer came from (``gold``, ``template``,
    ``reannotate:<model>``...); ``source`` locates the text in its corpus."""

    guid: str
    dataset: str
    text: str
    schema: list[str]
    entities: list[Mention]
    definitions: dict[str, str] = field(default_factory=dict)
    reasoning: str = ""
    generator: str = GOLD
    source: str = ""

    @classmethod
    def from_record(
        cls,
        record: NERRecord,
        guid: str,
        *,
        answer: Mapping[str, Sequence[str]] | None = None,
        reasoning: str = "",
        generator: str = GOLD,
    ) -> Sample:
        """A sample of a schema-built record; the answer defaults to the record's gold."""
        if not record.schema:
            raise ValueError(f"{record.source}: record has no schema; build it with with_schema()")
        return cls(
            guid=guid,
            dataset=record.dataset,
            text=record.text,
            schema=list(record.schema),
            entities=pairs(gold_entities(record) if answer is None else answer),
            definitions=dict(record.definitions or {}),
            reasoning=reasoning,
            generator=generator,
            source=record.source,
        )

    # ----------------------------------------------------------------- the task's view

    def task(self, *, reasoning: bool = True, reasoning_instruction: bool = True) -> NERTask:
        """The NER task the sample is an example of: its schema, prompt and target."""
        return sample_task(
            self.schema,
            self.definitions,
            reasoning=reasoning,
            reasoning_instruction=reasoning_instruction,
        )

    def answer(self) -> dict[str, list[str]]:
        """The answer grouped by type, in order."""
        grouped: dict[str, list[str]] = {}
        for mention, label in self.entities:
            grouped.setdefault(label, []).append(mention)
        return grouped

    def messages(
        self,
        *,
        reasoning: bool = True,
        reasoning_instruction: bool = True,
        add_source: bool = False,
    ) -> ChatMessages:
        """The prompt the model gets for this sample (``NERTask.prompt``); ``add_source``
        opens it with the name of the source dataset, as the reference's 8B SFT run does (not
        done at inference)."""
        task = self.task(reasoning=reasoning, reasoning_instruction=reasoning_instruction)
        messages = task.prompt(self.text)
        if add_source:
            intro = f"The text comes from the {self.dataset} dataset.\n\n"
            messages[0]["content"] = intro + messages[0]["content"]
        return messages

    def completion(self, *, reasoning: bool = True, target_format: str = "compact") -> str:
        """The training target: the think block (when ``reasoning`` and the sample has
        reasoning) and the JSON answer, in ``target_format`` (``TARGET_FORMATS``)."""
        thought = self.reasoning if reasoning and self.reasoning else None
        if target_format == "reference":
            return reference_target(self.entities, thought)
        if target_format != "compact":
            raise ValueError(f"target_format {target_format!r} is not one of {TARGET_FORMATS}")
        return self.task().target(self.answer(), thought)

    # ----------------------------------------------------------------- storage

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (samples.jsonl): entities as ``{"text", "label"}`` objects."""
        data = dataclasses.asdict(self)
        data["entities"] = [{"text": m, "label": t} for m, t in self.entities]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        """A sample from its JSON form; other keys (the CG stage's decisions) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["entities"] = [(e["text"], e["label"]) for e in data.get("entities") or []]
        values["schema"] = list(data["schema"])
        values["definitions"] = dict(data.get("definitions") or {})
        return cls(**values)

    def to_row(self) -> dict[str, Any]:
        """A dataset row: the sample's fields (definitions as JSON text, since Arrow would
        turn mappings with differing keys into one struct) plus the conversational
        prompt-completion pair TRL trains on."""
        row = self.to_dict()
        row["definitions"] = json.dumps(self.definitions, ensure_ascii=False)
        row["prompt"] = self.messages()
        row["completion"] = [{"role": "assistant", "content": self.completion()}]
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Sample:
        return cls.from_dict({**row, "definitions": json.loads(row.get("definitions") or "{}")})

    def to_record(self) -> NERRecord:
        """The answer as a record with the offsets of every occurrence (NER-CoT output)."""
        spans = sorted(
            {
                (start, end, label)
                for mention, label in self.entities
                for start, end in find_word_occurrences(self.text, mention, fuzzy=True)
            }
        )
        return NERRecord(
            self.text, spans, self.source, dataset=self.dataset, schema=list(self.schema)
        )
