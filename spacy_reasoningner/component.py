"""The ``reasoning_ner`` pipeline component.

Per batch of Docs: plan windows (long texts) -> render one prompt per window -> one backend
call for the whole batch -> parse each completion -> ground mentions inside their window ->
merge windows by offsets -> set ``doc.ents`` (and optionally ``doc.spans``) and extensions.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import SimpleFrozenList, filter_spans, minibatch

from .alignment import (
    ALIGNMENT_MODES,
    REASON_NOT_IN_SCHEMA,
    Unaligned,
    dedupe_spans,
    ground_mentions,
    resolve_overlaps,
)
from .backends.base import Backend, Completion, GenerationSettings, SerializableBackend
from .cache import CachedBackend, ResponseCache
from .protocol import Schema, answer_json_schema, parse_completion, render_messages
from .sharding import Window, plan_windows

logger = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "labels": None,
    "backend": {"@reasoning_ner_backends": "reasoning_ner.Transformers.v1"},
    "generation": {"max_new_tokens": 512, "temperature": 0.0, "top_p": 1.0, "stop": []},
    "reasoning": True,
    "lowercase_schema": True,
    "batch_size": 16,
    "max_chars": 2000,
    "window_overlap": 1,
    "fuzzy_match": True,
    "alignment_mode": "expand",
    "overwrite_ents": False,
    "spans_key": None,
    "keep_raw": False,
    "cache_path": None,
    "reasoning_attr": "ner_reasoning",
    "unaligned_attr": "ner_unaligned",
    "truncated_attr": "ner_truncated",
    "raw_attr": "ner_raw",
}


@Language.factory(
    "reasoning_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config=DEFAULT_CONFIG,
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_reasoning_ner(
    nlp: Language,
    name: str,
    labels: Any,
    backend: Backend,
    generation: dict[str, Any],
    reasoning: bool,
    lowercase_schema: bool,
    batch_size: int,
    max_chars: int,
    window_overlap: int,
    fuzzy_match: bool,
    alignment_mode: str,
    overwrite_ents: bool,
    spans_key: str | None,
    keep_raw: bool,
    cache_path: str | None,
    reasoning_attr: str,
    unaligned_attr: str,
    truncated_attr: str,
    raw_attr: str,
) -> ReasoningNER:
    """Zero-shot NER by a generative model that reasons, then answers in JSON.

    labels: entity types, a list of names or a mapping name -> definition. May be left unset
        and given to ``initialize`` (or read from its examples) instead.
    backend: the inference engine, a function from the ``reasoning_ner_backends`` registry.
    generation: max_new_tokens, temperature (0 = greedy), top_p, stop, seed.
    reasoning: ask the model to reason in a think block first; False answers directly.
    lowercase_schema: show type names lowercased and sorted, as the paper's models expect.
    batch_size: Docs per backend call when ``pipe`` is not given a batch size.
    max_chars: texts longer than this are split into windows of whole sentences.
    window_overlap: sentences shared by consecutive windows.
    fuzzy_match: when a mention has no exact occurrence, match ignoring case and spacing.
    alignment_mode: snapping of matches off token boundaries: strict, contract or expand.
    overwrite_ents: replace overlapping entities set by earlier components (else keep them).
    spans_key: if set, every grounded candidate (overlaps included) goes to doc.spans[key].
    keep_raw: keep the rendered prompts and completions in ``doc._.<raw_attr>``.
    cache_path: if set, completions are cached in this SQLite file (or folder) and reused
        when backend identity, prompt and generation settings are the same.
    *_attr: names of the Doc extensions written by the component.
    """
    return ReasoningNER(
        nlp.vocab,
        name=name,
        labels=labels,
        backend=backend,
        generation=generation,
        reasoning=reasoning,
        lowercase_schema=lowercase_schema,
        batch_size=batch_size,
        max_chars=max_chars,
        window_overlap=window_overlap,
        fuzzy_match=fuzzy_match,
        alignment_mode=alignment_mode,
        overwrite_ents=overwrite_ents,
        spans_key=spans_key,
        keep_raw=keep_raw,
        cache_path=cache_path,
        extension_names={
            "reasoning": reasoning_attr,
            "unaligned": unaligned_attr,
            "truncated": truncated_attr,
            "raw": raw_attr,
        },
    )


@dataclass
class _WindowResult:
    """What one window contributed to its Doc."""

    window: Window
    completion: Completion
    reasoning: str
    spans: list[Span]
    unaligned: list[Unaligned]


class ReasoningNER(Pipe):
    """Sets ``doc.ents`` from the mentions a generative model names after reasoning."""

    def __init__(
        self,
        vocab: Any,
        *,
        name: str = "reasoning_ner",
        labels: Any = None,
        backend: Backend,
        generation: dict[str, Any] | None = None,
        reasoning: bool = True,
        lowercase_schema: bool = True,
        batch_size: int = 16,
        max_chars: int = 2000,
        window_overlap: int = 1,
        fuzzy_match: bool = True,
        alignment_mode: str = "expand",
        overwrite_ents: bool = False,
        spans_key: str | None = None,
        keep_raw: bool = False,
        cache_path: str | None = None,
        extension_names: dict[str, str] | None = None,
    ):
        if not isinstance(backend, Backend):
            raise ValueError(
                f"backend {backend!r} has no generate(prompts, settings) method: register a "
                "function returning a backend in the reasoning_ner_backends registry"
            )
        if alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(f"alignment_mode {alignment_mode!r} is not one of {ALIGNMENT_MODES}")
        if max_chars < 100:
            raise ValueError(f"max_chars must be at least 100 characters, got {max_chars}")
        if window_overlap < 0:
            raise ValueError(f"window_overlap must be >= 0 sentences, got {window_overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.vocab = vocab
        self.name = name
        self.backend = backend
        self.lowercase_schema = lowercase_schema
        self.schema = (
            None if labels is None else Schema.from_config(labels, lowercase=lowercase_schema)
        )
        self.generation = GenerationSettings.from_config(dict(generation or {}))
        if not reasoning and "enable_thinking" not in self.generation.chat_template_kwargs:
            # Qwen3-style templates open an empty think block when thinking is off.
            self.generation.chat_template_kwargs["enable_thinking"] = False
        self.reasoning = reasoning
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.window_overlap = window_overlap
        self.fuzzy_match = fuzzy_match
        self.alignment_mode = alignment_mode
        self.overwrite_ents = overwrite_ents
        self.spans_key = spans_key
        self.keep_raw = keep_raw
        self.cache = ResponseCache(cache_path) if cache_path else None
        self.ext = _register_extensions(extension_names or {})
        # Running totals since the component was created, for monitoring.
        self.stats: Counter[str] = Counter()
        self.cfg: dict[str, Any] = {"labels": self.schema.to_config() if self.schema else None}

    @property
    def settings(self) -> GenerationSettings:
        """The generation settings of a call, with the answer's JSON Schema for this schema."""
        answer_schema = answer_json_schema(self.schema) if self.schema else None
        return replace(self.generation, answer_schema=answer_schema)

    @property
    def generator(self) -> Backend:
        """The backend, behind the response cache when there is one."""
        return self.backend if self.cache is None else CachedBackend(self.backend, self.cache)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.schema.labels if self.schema else ()

    # ----------------------------------------------------------------- lifecycle

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]] | None = None,
        *,
        nlp: Language | None = None,
        labels: Any = None,
    ) -> None:
        """Set labels (from ``labels`` or the entity types of the examples) and load the model."""
        if labels is None and self.schema is None and get_examples is not None:
            found = {ent.label_ for eg in get_examples() for ent in eg.reference.ents}
            labels = sorted(found) or None
        if labels is not None:
            self.schema = Schema.from_config(labels, lowercase=self.lowercase_schema)
            self.cfg["labels"] = self.schema.to_config()
        if getattr(self.backend, "loaded", True) is False:
            self.backend.load()

    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc], batch_size=1)))

    def pipe(self, stream: Iterable[Doc], *, batch_size: int | None = None) -> Iterator[Doc]:
        for docs in minibatch(stream, size=batch_size or self.batch_size):
            yield from self.predict_and_set(list(docs))

    def predict_and_set(self, docs: Sequence[Doc]) -> list[Doc]:
        """Annotate a batch with one backend call. On a backend error nothing is modified."""
        if self.schema is None:
            raise ValueError(
                f"component {self.name!r} has no labels: set them in its config "
                '(config={"labels": [...]}) or pass labels to nlp.initialize()'
            )
        texts = [doc.text for doc in docs]  # rebuilt by spaCy on each access: read once
        plans = [
            plan_windows(doc, self.max_chars, self.window_overlap, text=text)
            for doc, text in zip(docs, texts, strict=True)
        ]
        prompts = [
            render_messages(text[w.start : w.end], self.schema, reasoning=self.reasoning)
            for text, windows in zip(texts, plans, strict=True)
            for w in windows
        ]
        completions = self.generator.generate(prompts, self.settings) if prompts else []
        if len(completions) != len(prompts):
            raise RuntimeError(
                f"backend {type(self.backend).__name__} returned {len(completions)} completions "
                f"for {len(prompts)} prompts"
            )
        results = iter(completions)
        for doc, text, windows in zip(docs, texts, plans, strict=True):
            self._set_annotations(
                doc, [self._read_window(doc, text, w, next(results)) for w in windows]
            )
        return list(docs)

    def _read_window(
        self, doc: Doc, text: str, window: Window, completion: Completion
    ) -> _WindowResult:
        parsed = parse_completion(completion.text, self.schema, reasoning=completion.reasoning)
        mentions = parsed.mentions()
        spans, unaligned = ground_mentions(
            doc,
            mentions,
            start=window.start,
            end=window.end,
            fuzzy=self.fuzzy_match,
            alignment_mode=self.alignment_mode,
            text=text,
        )
        unaligned.extend(
            Unaligned(m, label, REASON_NOT_IN_SCHEMA) for label, m in parsed.out_of_schema
        )
        stats = self.stats
        stats["windows"] += 1
        stats["mentions"] += len(mentions) + len(parsed.out_of_schema)
        stats["unaligned"] += len(unaligned)
        stats["unparsed"] += not parsed.parsed
        stats["truncated"] += completion.truncated
        return _WindowResult(window, completion, parsed.reasoning, spans, unaligned)

    def _set_annotations(self, doc: Doc, results: list[_WindowResult]) -> None:
        candidates = dedupe_spans(span for r in results for span in r.spans)
        new_ents = resolve_overlaps(candidates, self.labels)
        if self.overwrite_ents:
            kept = [e for e in doc.ents if not any(_overlap(e, n) for n in new_ents)]
        else:
            kept = list(doc.ents)
            new_ents = [n for n in new_ents if not any(_overlap(e, n) for e in kept)]
        doc.ents = filter_spans([*kept, *new_ents])
        if self.spans_key is not None:
            doc.spans[self.spans_key] = candidates
        doc._.set(self.ext["reasoning"], "\n\n".join(r.reasoning for r in results if r.reasoning))
        unaligned = list(dict.fromkeys(u for r in results for u in r.unaligned))
        doc._.set(self.ext["unaligned"], [u.to_dict() for u in unaligned])
        truncated = any(r.completion.truncated for r in results)
        doc._.set(self.ext["truncated"], truncated)
        if truncated:
            logger.warning(
                "%s: a completion hit max_new_tokens=%d and was cut; raise generation.max_new_tokens",
                self.name,
                self.generation.max_new_tokens,
            )
        if self.keep_raw:
            doc._.set(
                self.ext["raw"],
                [
                    {
                        "start": r.window.start,
                        "end": r.window.end,
                        "prompt": r.completion.prompt,
                        "completion": r.completion.text,
                        "finish_reason": r.completion.finish_reason,
                    }
                    for r in results
                ],
            )
        self.stats["docs"] += 1

    # ----------------------------------------------------------------- scoring

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        """spaCy's entity scores: ents_p, ents_r, ents_f and ents_per_type."""
        return get_ner_prf(examples, **kwargs)

    # ----------------------------------------------------------------- serialization

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        """Write the labels and, for backends that hold weights, the model into ``path``."""
        import srsly

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "cfg", self.cfg)
        if isinstance(self.backend, SerializableBackend) and "model" not in exclude:
            self.backend.to_disk(path / "model")

    def from_disk(
        self, path: str | Path, *, exclude: Iterable[str] = SimpleFrozenList()
    ) -> ReasoningNER:
        import srsly

        path = Path(path)
        cfg = srsly.read_json(path / "cfg") if (path / "cfg").exists() else {}
        if cfg.get("labels") and self.schema is None:
            self.schema = Schema.from_config(cfg["labels"], lowercase=self.lowercase_schema)
            self.cfg["labels"] = self.schema.to_config()
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


def _overlap(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def _register_extensions(names: dict[str, str]) -> dict[str, str]:
    """Register the Doc extensions once (guarded), under the configured names."""
    defaults = {
        "reasoning": ("ner_reasoning", ""),
        "unaligned": ("ner_unaligned", None),
        "truncated": ("ner_truncated", False),
        "raw": ("ner_raw", None),
    }
    unknown = set(names) - set(defaults)
    if unknown:
        raise ValueError(f"unknown extension(s) {sorted(unknown)}: use {sorted(defaults)}")
    resolved = {}
    for key, (default_name, default_value) in defaults.items():
        attr = names.get(key, default_name)
        if not isinstance(attr, str) or not attr.isidentifier():
            raise ValueError(f"extension name {attr!r} for {key} is not a valid Python identifier")
        if not Doc.has_extension(attr):
            Doc.set_extension(attr, default=default_value)
        resolved[key] = attr
    return resolved
