"""The ``reasoning_ner`` pipeline component.

Per batch of Docs: plan windows (long texts) -> the task renders one prompt per window ->
one backend call for the whole batch -> the task parses each completion and grounds its
mentions inside the window -> windows merge by offsets -> ``doc.ents`` (through the
``ents_filter``), optionally ``doc.spans``, and the extensions.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import srsly
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.util import SimpleFrozenList, minibatch
from tqdm import tqdm

from .alignment import Unaligned, dedupe_spans
from .backends.base import (
    Backend,
    Completion,
    GenerationSettings,
    GuardsSavedSettings,
    Loadable,
    SerializableBackend,
    generate,
    is_identifiable,
)
from .cache import CachedBackend, ResponseCache
from .protocol import Schema, reasoned_label
from .settings import EXTENSIONS, ComponentSettings, forwards_settings
from .sharding import plan_windows
from .task import NERTask, WindowReading
from .trust import SavedPipeline

logger = logging.getLogger(__name__)

# What each Doc extension holds when nothing was set.
_EXTENSION_DEFAULTS = {
    "reasoning": "",
    "unaligned": None,
    "truncated": False,
    "raw": None,
    "usage": None,
    "issues": None,
}


FACTORY = "reasoning_ner"


def reasoning_component(nlp: Language) -> ReasoningNER | None:
    """The pipeline's one ``reasoning_ner`` component; None for a pipeline without one."""
    found = [pipe for _, pipe in nlp.pipeline if isinstance(pipe, ReasoningNER)]
    if len(found) > 1:
        raise ValueError(f"the pipeline has {len(found)} reasoning_ner components; keep one")
    return found[0] if found else None


def reasoning_component_name(config: Mapping[str, Any], where: str) -> str:
    """The name of the one ``reasoning_ner`` component of a pipeline ``config`` (before it is
    loaded: to address its settings); ``where`` names the pipeline in the error."""
    components = config.get("components", {})
    names = [name for name, block in components.items() if block.get("factory") == FACTORY]
    if len(names) != 1:
        raise ValueError(
            f"{where} needs exactly one reasoning_ner component, found: "
            f"{', '.join(names) or 'none'}"
        )
    return names[0]


@Language.factory(
    FACTORY,
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
                examples=s.examples,
                reasoning=s.reasoning,
                instruction=s.instruction,
                reasoning_instruction=s.reasoning_instruction,
                fuzzy_match=s.fuzzy_match,
                alignment_mode=s.alignment_mode,
                grounded=s.grounded_answers,
            )
        )

    @property
    def generator(self) -> Backend:
        """The backend, behind the response cache when there is one."""
        return self.backend if self.cache is None else CachedBackend(self.backend, self.cache)

    @property
    def backend_name(self) -> str:
        """The engine behind the completions, for accounting."""
        if is_identifiable(self.backend):
            identity = self.backend.identity
            # The model as the user named it (bundled:..., a hub id) over the folder it
            # resolved to (a cache folder for bundled and merged models).
            model = getattr(self.backend, "reference", None) or identity.get("model", "")
            return f"{identity.get('backend', type(self.backend).__name__)}:{model}"
        return type(self.backend).__name__

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
        """Annotate in chunks of at most the component's ``batch_size`` Docs (fewer when a
        smaller ``batch_size`` is given), one backend call each, yielding each chunk as it is
        done. A failing chunk goes to the error handler (``nlp.set_error_handler``; by
        default it raises), its Docs unmodified."""
        size = min(batch_size or self.batch_size, self.batch_size)
        error_handler = self.get_error_handler()
        with tqdm(
            disable=not self.settings.progress, desc=self.name, unit="doc", file=sys.stderr
        ) as bar:
            for batch in minibatch(stream, size=size):
                docs = list(batch)
                try:
                    self.set_annotations(docs, self.predict(docs))
                except Exception as error:
                    error_handler(self.name, self, docs, error)
                    continue
                finally:
                    bar.update(len(docs))
                yield from docs

    def predict(self, docs: Sequence[Doc]) -> list[list[WindowReading]]:
        """Per Doc, what the model said about each of its windows; modifies nothing. With
        ``samples`` > 1 each window is asked that many times in the same call, and voted on."""
        task = self._require_task()
        texts = [doc.text for doc in docs]  # rebuilt by spaCy on each access: read once
        plans = [  # windows of whitespace only say nothing: no backend call for them
            [
                window
                for window in plan_windows(
                    doc, self.settings.max_chars, self.settings.window_overlap, text=text
                )
                if not text[window.start : window.end].isspace() and window.end > window.start
            ]
            for doc, text in zip(docs, texts, strict=True)
        ]
        k = self.settings.samples
        windows = [
            text[w.start : w.end] for text, plan in zip(texts, plans, strict=True) for w in plan
        ]
        requests = task.requests(windows, samples=k)
        started = time.perf_counter()
        completions = generate(self.generator, requests, self.generation, reasoning=task.reasoning)
        completions = _share_time(completions, time.perf_counter() - started)
        if logger.isEnabledFor(logging.DEBUG):
            for request, completion in zip(requests, completions, strict=True):
                logger.debug(
                    "%s prompt: %s\ncompletion: %s", self.name, request.messages, completion.text
                )
        answers = iter(zip(requests, completions, strict=True))
        readings = []
        for doc, text, plan in zip(docs, texts, plans, strict=True):
            doc_readings = []
            for window in plan:
                samples = []
                for request, completion in itertools.islice(answers, k):
                    reading = task.read(doc, window, completion, text=text)
                    reading.messages = request.messages
                    samples.append(reading)
                doc_readings.append(task.vote(samples))
            readings.append(doc_readings)
        return readings

    def set_annotations(self, docs: Sequence[Doc], readings: Sequence[list[WindowReading]]) -> None:
        backend = self.backend_name  # once per batch: a backend's identity is not free
        for doc, doc_readings in zip(docs, readings, strict=True):
            self._annotate(doc, doc_readings, backend)

    def _require_task(self) -> NERTask:
        if self.task is None:
            raise ValueError(
                f"component {self.name!r} has no labels: set them in its config "
                '(config={"labels": [...]}) or pass labels to nlp.initialize()'
            )
        return self.task

    def _annotate(self, doc: Doc, readings: list[WindowReading], backend: str) -> None:
        task = self._require_task()
        settings = self.settings
        candidates, scores = _merge_windows(readings)
        if scores is None:
            kept = candidates
        else:
            kept = [
                s
                for s, score in zip(candidates, scores, strict=True)
                if score >= settings.threshold
            ]
        reasoning = "\n\n".join(r.reasoning for r in readings if r.reasoning)
        # Equal spans reach the filter in the order that breaks their ties: the label the
        # reasoning gives the mention, then the schema's label order.
        ranked = sorted(kept, key=lambda s: (s.start, s.end, task.label_rank(s.label_)))
        ranked = _reasoned_label_first(ranked, reasoning, task.schema)
        doc.ents = self.ents_filter(list(doc.ents), ranked)
        if settings.spans_key is not None:
            group_scores = scores if scores is not None else [1.0] * len(candidates)
            doc.spans[settings.spans_key] = SpanGroup(
                doc, name=settings.spans_key, spans=candidates, attrs={"scores": group_scores}
            )
        ext, underscore = self.ext, doc._  # one Underscore object for the six sets
        underscore.set(ext["reasoning"], reasoning)
        underscore.set(ext["unaligned"], [u.to_dict() for u in _unaligned(readings)])
        issues = (issue for r in readings for s in r.samples or (r,) for issue in s.parsed.issues)
        underscore.set(ext["issues"], list(dict.fromkeys(issues)))
        truncated = any(c.truncated for r in readings for c in r.completions)
        underscore.set(ext["truncated"], truncated)
        if truncated:
            logger.warning(
                "%s: a completion hit max_new_tokens=%d and was cut; raise generation.max_new_tokens",
                self.name,
                self.generation.max_new_tokens,
            )
        usage = self._usage(readings, backend)
        underscore.set(ext["usage"], usage)
        if settings.keep_raw:
            underscore.set(ext["raw"], [_raw(s) for r in readings for s in r.samples or (r,)])
        self._count(readings, usage)

    def _usage(self, readings: list[WindowReading], backend: str) -> dict[str, Any]:
        """Tokens and seconds per window (all its samples) and their totals for the Doc;
        ``backend``: the engine behind the completions (``backend_name``)."""
        windows = []
        for r in readings:
            completions = r.completions
            windows.append(
                {
                    "start": r.window.start,
                    "end": r.window.end,
                    "completions": len(completions),
                    "prompt_tokens": _total(c.prompt_tokens for c in completions),
                    # of which read from a kept key/value cache, not computed again
                    "cached_prompt_tokens": _total(c.cached_prompt_tokens for c in completions),
                    "completion_tokens": _total(c.n_tokens for c in completions),
                    "seconds": sum(c.seconds or 0.0 for c in completions),
                }
            )
        constraints = Counter(c.constraint or "none" for r in readings for c in r.completions)
        return {
            "backend": backend,
            # completions by how their answer was constrained ("none": free)
            "constraints": dict(sorted(constraints.items())),
            "prompt_tokens": _total(w["prompt_tokens"] for w in windows),
            "cached_prompt_tokens": _total(w["cached_prompt_tokens"] for w in windows),
            "completion_tokens": _total(w["completion_tokens"] for w in windows),
            "seconds": sum(w["seconds"] for w in windows),
            "windows": windows,
        }

    def _count(self, readings: list[WindowReading], usage: dict[str, Any]) -> None:
        stats = self.stats
        stats["docs"] += 1
        for r in readings:
            stats["windows"] += 1
            for sample in r.samples or (r,):
                stats["completions"] += 1
                parsed = sample.parsed
                stats["mentions"] += (
                    len(parsed.mentions()) + len(parsed.out_of_schema) + len(parsed.rejected)
                )
                stats["unaligned"] += len(sample.unaligned)
                stats["unparsed"] += not parsed.parsed
                stats["truncated"] += sample.completion.truncated
        stats["prompt_tokens"] += usage["prompt_tokens"] or 0
        stats["completion_tokens"] += usage["completion_tokens"] or 0
        stats["seconds"] += usage["seconds"]

    def to_json(self, doc: Doc) -> dict[str, Any]:
        """The annotation of ``doc`` as one JSON object, as ``spacy-reasoningner predict`` and
        ``annotate`` write it: text, entities with character offsets, and this component's
        reasoning, unaligned mentions and truncation flag."""
        ext = self.ext
        return {
            "text": doc.text,
            "entities": [
                {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
                for e in doc.ents
            ],
            "reasoning": doc._.get(ext["reasoning"]),
            "unaligned": doc._.get(ext["unaligned"]),
            "truncated": doc._.get(ext["truncated"]),
        }

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
        the ones in effect when the pipeline was saved, e.g. given to ``initialize``). Backend
        settings from the saved config that run shipped code or send a key elsewhere need
        the user's consent first (see ``trust``)."""
        path = Path(path)
        saved = SavedPipeline.read(path.parent, self.name)
        if saved is not None and isinstance(self.backend, GuardsSavedSettings):
            self.backend.check_saved_settings(saved)  # before the backend loads anything
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


def _reasoned_label_first(spans: list[Span], reasoning: str, schema: Schema) -> list[Span]:
    """``spans`` (in text order) with each group of equal spans under several labels led by
    the label the reasoning gives the mention (``protocol.reasoned_label``), when it gives
    one: a small model often lists a mention under every label it considered, while its
    reasoning names one ('"Apple Inc." is an organization.')."""
    if not reasoning:
        return spans
    ordered: list[Span] = []
    for _, equal in itertools.groupby(spans, key=lambda s: (s.start, s.end)):
        group = list(equal)
        if len(group) > 1:
            by_name = {schema.prompt_name(s.label_): s for s in reversed(group)}
            chosen = reasoned_label(reasoning, group[0].text, list(by_name))
            if chosen is not None:
                group.sort(key=lambda s: s is not by_name[chosen])  # stable
        ordered.extend(group)
    return ordered


def _merge_windows(
    readings: list[WindowReading],
) -> tuple[list[Span], list[float] | None]:
    """The Doc's candidates, one per (start, end, label) in text order, and their scores (the
    best of the windows that saw them) when the windows were voted on."""
    if all(r.scores is None for r in readings):
        return dedupe_spans(span for r in readings for span in r.spans), None
    best: dict[tuple[int, int, str], tuple[Span, float]] = {}
    for r in readings:
        for span, score in zip(r.spans, r.scores or [1.0] * len(r.spans), strict=True):
            key = (span.start, span.end, span.label_)
            if key not in best or score > best[key][1]:
                best[key] = (span, score)
    order = sorted(best)
    return [best[key][0] for key in order], [best[key][1] for key in order]


def _share_time(completions: list[Completion], seconds: float) -> list[Completion]:
    """Every completion with a time: its own when the backend measured it, else an equal
    share of the call (a batched engine generates them together)."""
    share = seconds / max(1, sum(c.seconds is None for c in completions))
    return [c if c.seconds is not None else replace(c, seconds=share) for c in completions]


def _total(values: Iterable[int | None]) -> int | None:
    """The sum, or None when a value is unknown (a backend that does not count tokens)."""
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _unaligned(readings: list[WindowReading]) -> list[Unaligned]:
    """The mentions of a Doc's windows that no window could ground, each once: a window that
    names a mention its text lacks is not a loss when another window grounded it."""
    if len(readings) == 1:
        return list(dict.fromkeys(readings[0].unaligned))
    grounded = set()
    for r in readings:
        missed = {(u.text, u.label) for u in r.unaligned}
        grounded.update(m for m in r.parsed.mentions() if m not in missed)
    unaligned = (u for r in readings for u in r.unaligned)
    return list(dict.fromkeys(u for u in unaligned if (u.text, u.label) not in grounded))


def _raw(reading: WindowReading) -> dict[str, Any]:
    completion = reading.completion
    return {
        "start": reading.window.start,
        "end": reading.window.end,
        "messages": reading.messages,
        "prompt": completion.prompt,
        "completion": completion.text,
        "reasoning": completion.reasoning,  # None: none apart from the completion
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "cached_prompt_tokens": completion.cached_prompt_tokens,
        "completion_tokens": completion.n_tokens,
        "seconds": completion.seconds,
    }


def _as_lists(value: Any) -> Any:
    """``value`` with tuples turned back into lists (DocBin stores lists as tuples)."""
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _register_extensions(names: dict[str, str]) -> dict[str, str]:
    """Register the Doc extensions once (guarded), under the configured names. Values are
    stored where spaCy stores plain extensions, and read back with lists as lists, also
    after a DocBin round trip."""
    for key, attr in names.items():
        if not Doc.has_extension(attr):
            slot = ("._.", attr, None, None)
            default = _EXTENSION_DEFAULTS[key]
            Doc.set_extension(
                attr,
                getter=lambda doc, slot=slot, default=default: _as_lists(
                    doc.user_data.get(slot, default)
                ),
                setter=lambda doc, value, slot=slot: doc.user_data.__setitem__(slot, value),
            )
    return dict(names)


# The default names exist once the package is imported, so that Docs read back from a DocBin
# (annotate's shards) answer doc._.ner_reasoning before any component has been created.
_register_extensions({key: ComponentSettings.default_config()[f"{key}_attr"] for key in EXTENSIONS})
