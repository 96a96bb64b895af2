"""The ``reasoning_ner`` pipeline component.

Per batch of Docs: plan windows (long texts) -> the task renders one prompt per window ->
one backend call for the whole batch -> the task parses each completion and grounds its
mentions inside the window -> windows merge by offsets -> ``doc.ents`` (through the
``ents_filter``), optionally ``doc.spans``, and the extensions.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import srsly
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import SimpleFrozenList, minibatch

from .alignment import dedupe_spans
from .backends.base import (
    Backend,
    GenerationSettings,
    Loadable,
    SerializableBackend,
    generate,
)
from .cache import CachedBackend, ResponseCache
from .protocol import Schema
from .settings import ComponentSettings, forwards_settings
from .sharding import Window, plan_windows
from .task import NERTask, WindowReading

logger = logging.getLogger(__name__)

# What each Doc extension holds when nothing was set.
_EXTENSION_DEFAULTS = {"reasoning": "", "unaligned": None, "truncated": False, "raw": None}


@Language.factory(
    "reasoning_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config=ComponentSettings.default_config(),
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
@forwards_settings
def make_reasoning_ner(nlp: Language, name: str, **settings: Any) -> ReasoningNER:
    """Zero-shot NER by a generative model that reasons, then answers in JSON."""
    return ReasoningNER(nlp.vocab, ComponentSettings(**settings), name=name)


class ReasoningNER(Pipe):
    """Sets ``doc.ents`` from the mentions a generative model names after reasoning.

    The NER task itself (schema, prompts, parsing, grounding) is ``self.task``, None until
    labels are known; the component adds batching, windows, the backend call, annotations,
    statistics and serialization.
    """

    def __init__(self, vocab: Any, settings: ComponentSettings, *, name: str = "reasoning_ner"):
        self.vocab = vocab
        self.name = name
        self.settings = settings
        self.backend: Backend = settings.backend
        self.generation = GenerationSettings.from_config(settings.generation)
        self.ents_filter = settings.ents_filter
        self.scorer = settings.scorer
        self.cache = ResponseCache(settings.cache_path) if settings.cache_path else None
        self.ext = _register_extensions(settings.extension_names)
        self.task: NERTask | None = None
        self.set_labels(settings.labels)
        # Running totals since the component was created, for monitoring.
        self.stats: Counter[str] = Counter()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.task.labels if self.task else ()

    @property
    def schema(self) -> Schema | None:
        return self.task.schema if self.task else None

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def cfg(self) -> dict[str, Any]:
        """What ``to_disk`` stores: the labels (definitions included) in effect."""
        return {"labels": self.task.schema.to_config() if self.task else None}

    def set_labels(self, labels: Any) -> None:
        """Use ``labels`` (a list of names or a mapping name -> definition; None: none)."""
        s = self.settings
        self.task = (
            None
            if labels is None
            else NERTask.from_labels(
                labels,
                lowercase=s.lowercase_schema,
                reasoning=s.reasoning,
                fuzzy_match=s.fuzzy_match,
                alignment_mode=s.alignment_mode,
                grounded=s.grounded_answers,
            )
        )

    @property
    def generator(self) -> Backend:
        """The backend, behind the response cache when there is one."""
        return self.backend if self.cache is None else CachedBackend(self.backend, self.cache)

    # ----------------------------------------------------------------- lifecycle

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]] | None = None,
        *,
        nlp: Language | None = None,
        labels: Any = None,
    ) -> None:
        """Set labels (from ``labels`` or the entity types of the examples) and load the model."""
        if labels is None and self.task is None and get_examples is not None:
            found = {ent.label_ for eg in get_examples() for ent in eg.reference.ents}
            labels = sorted(found) or None
        if labels is not None:
            self.set_labels(labels)
        if isinstance(self.backend, Loadable) and not self.backend.loaded:
            self.backend.load()

    def __call__(self, doc: Doc) -> Doc:
        # Errors propagate: Language.__call__ routes them through the error handler.
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int | None = None) -> Iterator[Doc]:
        """Annotate in batches, one backend call each; a failing batch goes to the error
        handler (``nlp.set_error_handler``; by default it raises), its Docs unmodified."""
        error_handler = self.get_error_handler()
        for batch in minibatch(stream, size=batch_size or self.batch_size):
            docs = list(batch)
            try:
                self.set_annotations(docs, self.predict(docs))
            except Exception as error:
                error_handler(self.name, self, docs, error)
                continue
            yield from docs

    def predict(self, docs: Sequence[Doc]) -> list[list[WindowReading]]:
        """Per Doc, what the model said about each of its windows; modifies nothing."""
        task = self._require_task()
        texts = [doc.text for doc in docs]  # rebuilt by spaCy on each access: read once
        plans = [
            plan_windows(doc, self.settings.max_chars, self.settings.window_overlap, text=text)
            for doc, text in zip(docs, texts, strict=True)
        ]
        pieces = [
            text[w.start : w.end] for text, plan in zip(texts, plans, strict=True) for w in plan
        ]
        completions = iter(
            generate(
                self.generator,
                [task.prompt(piece) for piece in pieces],
                self.generation,
                task.answer_format(pieces),
            )
        )
        return [
            [task.read(doc, w, next(completions), text=text) for w in plan]
            for doc, text, plan in zip(docs, texts, plans, strict=True)
        ]

    def set_annotations(self, docs: Sequence[Doc], readings: Sequence[list[WindowReading]]) -> None:
        for doc, doc_readings in zip(docs, readings, strict=True):
            self._annotate(doc, doc_readings)

    def _require_task(self) -> NERTask:
        if self.task is None:
            raise ValueError(
                f"component {self.name!r} has no labels: set them in its config "
                '(config={"labels": [...]}) or pass labels to nlp.initialize()'
            )
        return self.task

    def _annotate(self, doc: Doc, readings: list[WindowReading]) -> None:
        task = self._require_task()
        candidates = dedupe_spans(span for r in readings for span in r.spans)
        # Equal spans reach the filter in the schema's label order, which breaks their ties.
        ranked = sorted(candidates, key=lambda s: (s.start, s.end, task.label_rank(s.label_)))
        doc.ents = self.ents_filter(list(doc.ents), ranked)
        if self.settings.spans_key is not None:
            doc.spans[self.settings.spans_key] = candidates
        doc._.set(self.ext["reasoning"], "\n\n".join(r.reasoning for r in readings if r.reasoning))
        unaligned = list(dict.fromkeys(u for r in readings for u in r.unaligned))
        doc._.set(self.ext["unaligned"], [u.to_dict() for u in unaligned])
        truncated = any(r.completion.truncated for r in readings)
        doc._.set(self.ext["truncated"], truncated)
        if truncated:
            logger.warning(
                "%s: a completion hit max_new_tokens=%d and was cut; raise generation.max_new_tokens",
                self.name,
                self.generation.max_new_tokens,
            )
        if self.settings.keep_raw:
            doc._.set(self.ext["raw"], [_raw(r.window, r) for r in readings])
        self._count(readings)

    def _count(self, readings: list[WindowReading]) -> None:
        stats = self.stats
        stats["docs"] += 1
        for r in readings:
            stats["windows"] += 1
            stats["mentions"] += len(r.parsed.mentions()) + len(r.parsed.out_of_schema)
            stats["unaligned"] += len(r.unaligned)
            stats["unparsed"] += not r.parsed.parsed
            stats["truncated"] += r.completion.truncated

    # ----------------------------------------------------------------- serialization

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        """Write the labels and, for backends that hold weights, the model into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "cfg", self.cfg)
        if isinstance(self.backend, SerializableBackend) and "model" not in exclude:
            self.backend.to_disk(path / "model")

    def from_disk(
        self, path: str | Path, *, exclude: Iterable[str] = SimpleFrozenList()
    ) -> ReasoningNER:
        """Restore what ``to_disk`` wrote: the saved labels win over the config's (they are
        the ones in effect when the pipeline was saved, e.g. given to ``initialize``)."""
        path = Path(path)
        cfg = srsly.read_json(path / "cfg") if (path / "cfg").exists() else {}
        if cfg.get("labels"):
            self.set_labels(cfg["labels"])
        if (
            isinstance(self.backend, SerializableBackend)
            and (path / "model").exists()
            and "model" not in exclude
        ):
            self.backend.from_disk(path / "model")
        return self

    def to_bytes(self, *, exclude: Iterable[str] = SimpleFrozenList()) -> bytes:
        raise NotImplementedError(
            f"{self.name} holds model weights on disk: use nlp.to_disk / spacy.load instead of to_bytes"
        )

    def from_bytes(
        self, bytes_data: bytes, *, exclude: Iterable[str] = SimpleFrozenList()
    ) -> ReasoningNER:
        raise NotImplementedError(
            f"{self.name} holds model weights on disk: use nlp.to_disk / spacy.load instead of from_bytes"
        )


def _raw(window: Window, reading: WindowReading) -> dict[str, Any]:
    completion = reading.completion
    return {
        "start": window.start,
        "end": window.end,
        "prompt": completion.prompt,
        "completion": completion.text,
        "finish_reason": completion.finish_reason,
    }


def _register_extensions(names: dict[str, str]) -> dict[str, str]:
    """Register the Doc extensions once (guarded), under the configured names."""
    for key, attr in names.items():
        if not Doc.has_extension(attr):
            Doc.set_extension(attr, default=_EXTENSION_DEFAULTS[key])
    return dict(names)
