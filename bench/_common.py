"""Shared by the bench scripts: datasets, answer orderings, completions and a backend that
replays precomputed completions (so generation is excluded from what is measured)."""

from __future__ import annotations

import argparse
import random
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from spacy_reasoningner.backends import Completion, GenerationSettings
from spacy_reasoningner.benchmark.readers import (
    CROSSNER_DATASETS,
    NERRecord,
    load_label_map,
    read_bio,
    relabel,
)
from spacy_reasoningner.protocol import ChatMessages, Schema, render_answer, render_completion
from spacy_reasoningner.registry import backends

# The repository sits beside the shared data folder: <root>/../shared/data.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# name -> (file, label naming). CoNLL's InstructUIE names are unverified, so natural names.
DATASETS = {
    **{name: ("dev.txt", "instructuie_name") for name in CROSSNER_DATASETS},
    "conll2003": ("dev.txt", "natural_name"),
    "mit_movie": ("train.txt", "instructuie_name"),
    "mit_restaurant": ("train.txt", "instructuie_name"),
}
ORDERINGS = ("text", "shuffled", "distinct", "by_label")
Entry = tuple[str, str]  # (mention, label)


def data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"data folder (default {DEFAULT_DATA})"
    )


def load_dataset(
    data: Path, name: str, sample: int | None = None, seed: int = 0
) -> tuple[list[NERRecord], list[str]]:
    """Records with entity types renamed to the dataset's label names, and the sorted names.

    ``sample`` keeps that many sentences drawn with ``seed``, in file order.
    """
    file, naming = DATASETS[name]
    label_map = load_label_map(data / name / "labels.json", naming)
    records = read_bio(data / name / file)
    if sample is not None and sample < len(records):
        keep = sorted(random.Random(seed).sample(range(len(records)), sample))
        records = [records[i] for i in keep]
    return relabel(records, label_map), sorted(set(label_map.values()))


def gold_entries(record: NERRecord) -> list[Entry]:
    """Every gold occurrence as (mention, label), in text order."""
    return [(record.text[s:e], label) for s, e, label in sorted(record.entities)]


def order_entries(
    entries: Sequence[Entry], ordering: str, labels: Sequence[str], rng: random.Random
) -> list[Entry]:
    """The answer's entries as a model might order them.

    text: every occurrence, left to right; shuffled: the same, shuffled; distinct: one entry
    per (mention, label) in first-occurrence order; by_label: distinct entries grouped by
    label in schema order.
    """
    if ordering == "text":
        return list(entries)
    if ordering == "shuffled":
        shuffled = list(entries)
        rng.shuffle(shuffled)
        return shuffled
    distinct = list(dict.fromkeys(entries))
    if ordering == "distinct":
        return distinct
    if ordering == "by_label":
        rank = {label: i for i, label in enumerate(labels)}
        return sorted(distinct, key=lambda entry: rank[entry[1]])  # stable: keeps occurrence order
    raise ValueError(f"unknown ordering {ordering!r}: use one of {ORDERINGS}")


def reasoning_for(entries: Sequence[Entry]) -> str:
    """A think-block text of a few hundred characters, naming each candidate and its type."""
    lines = ["I read the text left to right and check every candidate span against the schema."]
    lines += [
        f'"{m}" is the name of a {label} in this context, so it is kept as {label}.'
        for m, label in dict.fromkeys(entries)
    ]
    lines.append(
        "No other span names an entity of a type in the schema."
        if entries
        else "No span names an entity of a type in the schema."
    )
    return "\n".join(lines)


def ours_completion(entries: Sequence[Entry], schema: Schema, reasoning: bool = True) -> str:
    """The protocol's answer (labels grouped in the order they first appear in ``entries``)."""
    grouped: dict[str, list[str]] = {}
    for mention, label in entries:
        grouped.setdefault(label, []).append(mention)
    return render_completion(
        reasoning_for(entries) if reasoning else None, render_answer(grouped, schema)
    )


def spacy_llm_response(entries: Sequence[Entry]) -> str:
    """spacy-llm NER.v3's chain-of-thought answer: ``N. mention | True | LABEL | reason``."""
    return "\n".join(
        f"{i}. {m} | True | {label} | is the name of a {label} in this context"
        for i, (m, label) in enumerate(entries, start=1)
    )


class PrecomputedBackend:
    """Replays queued completions in order; checks each prompt is about the expected text."""

    TEXT_MARKER = "\nText: "  # the protocol puts the text last, after this marker

    def __init__(self) -> None:
        self.queue: deque[tuple[str | None, str]] = deque()

    def enqueue(self, items: Iterable[tuple[str | None, str]]) -> None:
        """(text or None to skip the check, completion) pairs, in the order docs will come."""
        self.queue.extend(items)

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        out = []
        for prompt in prompts:
            text, completion = self.queue.popleft()
            if text is not None and prompt[-1]["content"].rpartition(self.TEXT_MARKER)[2] != text:
                raise RuntimeError(f"prompt is not about the expected text {text[:60]!r}")
            out.append(Completion(text=completion))
        return out


@backends.register("bench.Precomputed.v1")
def make_precomputed_backend() -> PrecomputedBackend:
    return PrecomputedBackend()


def make_nlp(labels: Sequence[str], **config: object) -> tuple[Language, PrecomputedBackend]:
    """A blank English pipeline with ``reasoning_ner`` on the precomputed backend; one window
    per sentence (``max_chars`` large) so completions and docs pair up one to one."""
    nlp = spacy.blank("en")
    settings = {"labels": list(labels), "max_chars": 100_000, **config}
    component = nlp.add_pipe(
        "reasoning_ner",
        config={"backend": {"@reasoning_ner_backends": "bench.Precomputed.v1"}, **settings},
    )
    return nlp, component.backend


def gold_doc(nlp: Language, record: NERRecord) -> tuple[Doc, int]:
    """The record as a Doc with its gold entities, and how many of them are not expressible
    on spaCy's tokens (those are left out of the gold)."""
    doc = nlp.make_doc(record.text)
    spans = [doc.char_span(s, e, label=label) for s, e, label in record.entities]
    doc.ents = [span for span in spans if span is not None]
    return doc, sum(span is None for span in spans)
