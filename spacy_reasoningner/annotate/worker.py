"""The work of one shard, the same in every engine: build the pipeline once, annotate the
shard's documents with ``nlp.pipe``, write the shard's files.

A batch that raises (a backend error after its retries, a bug on one document) is retried one
document at a time, so one bad document is rejected with its reason instead of taking its
batch down; completions that finished before the error come back from the response cache. A
shard in which every document (two or more) fails points at the backend, not the documents:
the shard is not written and the run stops (unless ``keep_going``), so a rerun can resume once
the cause is fixed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import spacy
from confection import Config
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.util import import_file, load_model_from_config

from ..backends.base import is_identifiable
from ..component import FACTORY, ReasoningNER, reasoning_component_name
from .sinks import OutputFolder, ShardResult
from .sources import Item, Shard

logger = logging.getLogger(__name__)

SOURCE_KEY = "annotate.source"  # doc.user_data key: where the document came from
FIELDS_KEY = "annotate.fields"  # doc.user_data key: the other fields of a JSONL record
Progress = Callable[[int], None]
MODEL_WITH_PIPELINE = "--model configures a new pipeline; with --pipeline use --backend"


class ShardFailed(RuntimeError):
    """Every document of a shard failed: the backend or the pipeline is broken."""


@dataclass(frozen=True)
class PipelineSpec:
    """How a worker builds its pipeline, picklable so that each actor builds its own.

    Either ``path`` (a saved pipeline or package, ``spacy.load``) or ``config`` (the text of a
    pipeline config); ``overrides`` are dotted config keys applied to either, spaCy-style
    (``{"components.reasoning_ner.generation.max_new_tokens": 64}``); ``labels``, if given,
    replace the entity types after loading (a saved pipeline's own labels win over its
    config); ``code`` lists Python files imported first, for registered functions such as
    custom backends.
    """

    path: str | None = None
    config: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    code: tuple[str, ...] = ()
    labels: Any = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.config is None):
            raise ValueError("a pipeline spec needs a saved pipeline path or a config, not both")

    @classmethod
    def from_component(
        cls, component_config: dict[str, Any], *, lang: str = "en", code: Sequence[str] = ()
    ) -> PipelineSpec:
        """A blank ``lang`` pipeline holding one reasoning_ner with ``component_config``."""
        import_code(code)
        nlp = spacy.blank(lang)
        nlp.add_pipe(FACTORY, config=component_config)
        return cls(config=nlp.config.to_str(), code=tuple(str(Path(c).resolve()) for c in code))

    @classmethod
    def from_options(
        cls,
        *,
        pipeline: str | None = None,
        labels: Any = None,
        model: str | None = None,
        backend: dict[str, Any] | None = None,
        code: Sequence[str] = (),
        overrides: dict[str, Any] | None = None,
    ) -> PipelineSpec:
        """The pipeline of the command line's options: a saved ``pipeline`` (``labels``, when
        given, replace its own), else a new one of ``labels`` on ``model`` (default: the
        package's); ``backend`` replaces the component's backend block (``model``, when
        given, names its model); ``overrides`` are dotted config keys."""
        if pipeline is None:
            if labels is None:
                raise ValueError(
                    "no entity types: give --labels person,location, --labels-file FILE "
                    "or a saved --pipeline"
                )
            config = {"labels": labels, **({"backend": {"model": model}} if model else {})}
            spec = cls.from_component(config, code=code)
        elif model is not None:
            raise ValueError(MODEL_WITH_PIPELINE)
        else:
            spec = cls(
                path=pipeline, code=tuple(str(Path(c).resolve()) for c in code), labels=labels
            )
        overrides = dict(overrides or {})
        if backend is not None:
            block = {**backend, **({"model": model} if model else {})}
            overrides[f"components.{spec.component_name()}.backend"] = block
        return spec.with_overrides(overrides)

    def with_overrides(self, overrides: dict[str, Any]) -> PipelineSpec:
        return replace(self, overrides={**self.overrides, **overrides})

    def describe(self) -> dict[str, Any]:
        """As the manifest records it (the config text is recorded apart)."""
        return {
            "path": self.path,
            "overrides": self.overrides,
            "labels": self.labels,
            "code": self.code,
        }

    def base_config(self) -> Config:
        if self.config is not None:
            return Config().from_str(self.config, interpolate=False)
        path = Path(self.path or "")
        if not (path / "config.cfg").is_file():  # an installed package: ask spaCy
            return spacy.util.load_config(spacy.util.get_package_path(str(path)) / "config.cfg")
        return spacy.util.load_config(path / "config.cfg", interpolate=False)

    def component_name(self) -> str:
        """The name of the pipeline's single reasoning_ner component."""
        return reasoning_component_name(self.base_config(), self.path or "the config")

    def load(self) -> tuple[Language, ReasoningNER]:
        import_code(self.code)
        if self.path is not None:
            nlp = spacy.load(self.path, config=self.overrides)
        else:
            config = Config().from_str(self.config or "", overrides=self.overrides)
            nlp = load_model_from_config(config, auto_fill=True, validate=True)
            nlp.initialize()  # loads the model now, so a bad reference fails before any shard
        component = nlp.get_pipe(self.component_name())
        if self.labels is not None:
            component.set_labels(self.labels)
        return nlp, component

    def fingerprint(self) -> str:
        """Changes when the pipeline would annotate differently: its config and overrides,
        the files of a saved pipeline (size and time), the imported code."""
        parts: dict[str, Any] = {
            "config": self.config,
            "overrides": self.overrides,
            "labels": self.labels,
            "code": [_file_hash(c) for c in self.code],
        }
        if self.path is not None and Path(self.path).is_dir():
            root = Path(self.path)
            parts["files"] = sorted(
                (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in root.rglob("*")
                if p.is_file()
            )
        elif self.path is not None:
            parts["package"] = self.path
        return stable_hash(parts)


def import_code(paths: Sequence[str]) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"--code {path}: no such Python file")
        import_file(Path(path).stem, path)


def stable_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def describe_component(component: ReasoningNER) -> dict[str, Any]:
    """Model identity and settings for the manifest (no credentials: identities hold none)."""
    backend = component.backend
    identity = getattr(backend, "identity", None)
    settings = asdict(component.generation)
    return {
        "component": component.name,
        "labels": list(component.labels),
        "backend": identity if isinstance(identity, dict) else {"class": type(backend).__name__},
        "generation": settings,
        "reasoning": component.settings.reasoning,
    }


def doc_record(doc: Doc, component: ReasoningNER) -> dict[str, Any]:
    """The JSONL line of an annotated Doc: its input fields, its source, then the annotation
    as ``spacy-reasoningner predict`` writes it (those keys win over input fields)."""
    fields = doc.user_data.get(FIELDS_KEY, {})
    return {**fields, "source": doc.user_data[SOURCE_KEY], **component.to_json(doc)}


@dataclass(frozen=True)
class ShardJob:
    """What every worker of a run is given, picklable (each Ray actor builds from it): the
    pipeline, where to write, the run's fingerprint, and the options shards are done by."""

    spec: PipelineSpec
    output: str
    run: str
    jsonl: bool = False
    batch_size: int | None = None
    keep_going: bool = False


class ShardAnnotator:
    """Annotates and writes whole shards with one pipeline built at construction."""

    def __init__(self, job: ShardJob):
        self.nlp, self.component = job.spec.load()
        if self.component.cache is not None and not is_identifiable(self.component.backend):
            # Else every batch would fail on it, one document at a time.
            raise ValueError(
                f"backend {type(self.component.backend).__name__} has no 'identity' property, "
                "so its answers cannot be cached, and annotate caches them (a stopped run "
                "resumes): add one (engine, model, settings; no secrets; see docs/backends.md, "
                "'Your own backend') or pass --no-cache"
            )
        self.output = OutputFolder(job.output)
        self.run = job.run
        self.jsonl = job.jsonl
        if job.batch_size is not None and job.batch_size != self.component.batch_size:
            # The component caps every nlp.pipe chunk at its own batch_size: the run's wins.
            self.component.settings = replace(self.component.settings, batch_size=job.batch_size)
        self.batch_size = self.component.batch_size
        self.keep_going = job.keep_going
        self.model = describe_component(self.component)

    def __call__(
        self, shard: Shard, items: list[Item], progress: Progress | None = None
    ) -> ShardResult:
        started = time.perf_counter()
        stats_before = Counter(self.component.stats)
        rejected = [(item, item.error) for item in items if item.error is not None]
        readable = [item for item in items if item.error is None]
        if progress and rejected:
            progress(len(rejected))
        docs, failed = self._annotate(shard, readable, progress)
        if len(failed) == len(readable) >= 2 and not self.keep_going:
            raise ShardFailed(
                f"shard {shard.id} ({shard.path}): all {len(readable)} documents failed, the "
                f"last with {failed[-1][1]}; fix the cause and rerun (finished shards are kept), "
                "or pass --keep-going to reject such documents and go on"
            )
        in_order = sorted(rejected + failed, key=lambda pair: pair[0].location)
        rejects = [_reject(shard, item, reason) for item, reason in in_order]
        stats = Counter(self.component.stats)
        stats.subtract(stats_before)
        ext = self.component.ext
        counts = {
            "docs": len(docs),
            "rejected": len(rejects),
            "entities": sum(len(doc.ents) for doc in docs),
            "unaligned": sum(len(doc._.get(ext["unaligned"]) or ()) for doc in docs),
            "truncated": sum(bool(doc._.get(ext["truncated"])) for doc in docs),
            "unparsed": stats["unparsed"],
            "windows": stats["windows"],
        }
        result = ShardResult(
            shard.id, self.run, counts, round(time.perf_counter() - started, 3), self.model
        )
        docbin = DocBin(store_user_data=True, docs=docs).to_bytes()
        lines = [doc_record(doc, self.component) for doc in docs] if self.jsonl else None
        self.output.write_shard(result, docbin, lines, rejects)
        return result

    def _annotate(
        self, shard: Shard, items: list[Item], progress: Progress | None
    ) -> tuple[list[Doc], list[tuple[Item, str]]]:
        """Annotated Docs in input order, and the items that failed with the reason."""
        docs: list[Doc] = []
        failed: list[tuple[Item, str]] = []
        for first in range(0, len(items), self.batch_size):
            batch = items[first : first + self.batch_size]
            try:
                # Collected whole: Docs of chunks done before a failing one must not stay in
                # `docs` when the batch is redone one by one below.
                docs += list(
                    self.nlp.pipe([self._doc(shard, i) for i in batch], batch_size=len(batch))
                )
            except Exception as error:  # isolate the documents that fail
                logger.warning(
                    "shard %s: a batch failed (%s); retrying one by one", shard.id, error
                )
                for item in batch:
                    try:
                        docs.append(self.nlp(self._doc(shard, item)))
                    except Exception as e:
                        failed.append((item, f"{type(e).__name__}: {e}"))
            if progress:
                progress(len(batch))
        return docs, failed

    def _doc(self, shard: Shard, item: Item) -> Doc:
        """A fresh Doc of the item (a retry after a failed batch starts from the input)."""
        if item.doc_bytes is not None:
            doc = Doc(self.nlp.vocab).from_bytes(item.doc_bytes)
        else:
            doc = self.nlp.make_doc(item.text or "")
        doc.user_data[SOURCE_KEY] = _location(shard, item.location)
        if item.fields:
            doc.user_data[FIELDS_KEY] = item.fields
        return doc


def _location(shard: Shard, location: int) -> dict[str, Any]:
    return {"file": shard.path, "index" if shard.format == "docbin" else "line": location}


def _reject(shard: Shard, item: Item, reason: str | None) -> dict[str, Any]:
    record = {**_location(shard, item.location), "reason": reason}
    if item.raw is not None:
        record["raw"] = item.raw
    elif item.text is not None:
        record["text"] = item.text
    return record
