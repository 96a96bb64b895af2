"""Corpus-scale annotation: many documents in, DocBin (and JSONL) shards out, resumable.

``annotate`` plans the inputs into shards, skips the shards a previous run of the same
settings finished, runs the rest on an engine and writes ``manifest.json`` with counts, model
identity and settings. Engines: ``local`` (this process, ``nlp.pipe``) and ``ray`` (Ray Data,
an actor pool on one machine or a cluster; needs the ``ray`` extra). Both run the same
``ShardAnnotator`` on the same shards, so they write the same files.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .sinks import MANIFEST_FORMAT, OutputFolder, total_counts, write_json
from .sources import FORMATS, Shard, plan_shards, read_shard, resolve_inputs
from .worker import (
    MODEL_WITH_PIPELINE,
    PipelineSpec,
    ShardAnnotator,
    ShardFailed,
    ShardJob,
    stable_hash,
)

if TYPE_CHECKING:
    from .ray_engine import RayOptions

__all__ = [
    "ENGINES",
    "FORMATS",
    "MODEL_WITH_PIPELINE",
    "AnnotateOptions",
    "AnnotateSummary",
    "PipelineSpec",
    "ShardFailed",
    "annotate",
]

logger = logging.getLogger(__name__)
ENGINES = ("local", "ray")
CACHE_DIR = "cache"


@dataclass
class AnnotateSummary:
    """Totals of a run, over every shard of the plan (those done by earlier runs included)."""

    output: Path
    shards: int
    skipped: int
    counts: dict[str, int]
    seconds: float
    new_docs: int
    complete: bool
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.counts["rejected"]

    @property
    def docs_per_second(self) -> float:
        return self.new_docs / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        c = self.counts
        rejects = f", {c['rejected']} rejected (see {self.output / 'rejects.jsonl'})"
        return (
            f"{c['docs']} docs annotated in {self.shards} shards ({self.skipped} done before): "
            f"{c['entities']} entities, {c['unaligned']} unaligned mentions, {c['truncated']} "
            f"truncated docs, {c['unparsed']} unparsed completions"
            f"{rejects if c['rejected'] else ''}; this run {self.new_docs} docs in "
            f"{self.seconds:.1f} s ({self.docs_per_second:.1f} docs/s)"
        )


@dataclass(frozen=True)
class AnnotateOptions:
    """How a run reads, shards, annotates and writes (the inputs, the output folder and the
    pipeline are what it annotates: ``annotate``'s arguments).

    input_format: ``auto`` (by file suffix) or one of ``FORMATS``.
    text_field: the JSONL field holding the text; other fields are kept.
    shard_size: documents per shard: the unit of output files, retries and resumption.
    engine: ``local`` (this process) or ``ray`` (``ray``: where and how wide).
    jsonl: also write each shard as JSON lines.
    batch_size: documents per backend call (None: the component's own).
    cache: keep completions in ``output/cache`` (True), in the folder or file given, or not
        (False). A rerun after a crash then regenerates nothing that had finished.
    keep_going: reject the documents of a shard in which every document failed, instead of
        stopping the run.
    overwrite: start over when the output folder holds a run with other settings.
    """

    input_format: str = "auto"
    text_field: str = "text"
    shard_size: int = 1000
    engine: str = "local"
    jsonl: bool = False
    batch_size: int | None = None
    cache: bool | str = True
    keep_going: bool = False
    overwrite: bool = False
    ray: RayOptions | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r} is not one of {ENGINES}")
        if self.input_format != "auto" and self.input_format not in FORMATS:
            raise ValueError(f"input format {self.input_format!r} is not auto or one of {FORMATS}")
        if self.shard_size < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError(
                f"shard_size and batch_size must be >= 1, got {self.shard_size} and "
                f"{self.batch_size}"
            )

    def settings(self) -> dict[str, Any]:
        """As the manifest records them."""
        settings = asdict(self)
        settings["ray"] = asdict(self.ray) if self.ray else None
        return settings


def annotate(
    inputs: list[str],
    output: str | Path,
    pipeline: PipelineSpec,
    options: AnnotateOptions = AnnotateOptions(),
    *,
    progress: bool = True,
) -> AnnotateSummary:
    """Annotate every document of ``inputs`` into ``output`` (see ``sinks`` for the layout).

    inputs: files, folders or globs of text (one document per non-empty line), JSONL (a
        ``text_field`` per object; other fields are kept) or DocBin files.
    pipeline: the pipeline each worker builds (a saved pipeline or a config).
    """
    started = time.perf_counter()
    out = OutputFolder(Path(output).resolve())
    files = resolve_inputs(inputs, options.input_format)
    shards = plan_shards(files, options.shard_size, options.text_field)
    fingerprint = {
        "inputs": stable_hash([f.to_dict() for f in files]),
        "shards": stable_hash({"shard_size": options.shard_size, "text_field": options.text_field}),
        "pipeline": pipeline.fingerprint(),
        "outputs": stable_hash({"jsonl": options.jsonl}),
    }
    run = stable_hash(fingerprint)
    _check_previous_run(out, fingerprint, options.overwrite)
    if options.cache:
        cache = options.cache
        path = out.path / CACHE_DIR if cache is True else Path(cache).resolve()
        name = pipeline.component_name()
        pipeline = pipeline.with_overrides({f"components.{name}.cache_path": str(path)})
    done = out.finished(shards, run)
    todo = [s for s in shards if s.id not in done]
    manifest = {
        "format": MANIFEST_FORMAT,
        "fingerprint": {**fingerprint, "run": run},
        "versions": _versions(options.engine),
        "settings": {**options.settings(), "pipeline": pipeline.describe()},
        "config": pipeline.config,
        "inputs": [f.to_dict() for f in files],
        "shards": [s.to_dict() for s in shards],
    }
    write_json(out.manifest, {**manifest, "status": "running", "started": _now()})
    job = ShardJob(
        pipeline,
        str(out.path),
        run,
        jsonl=options.jsonl,
        batch_size=options.batch_size,
        keep_going=options.keep_going,
    )
    try:
        if todo and options.engine == "local":
            _run_local(todo, job, progress)
        elif todo:
            from . import ray_engine

            ray_engine.run(todo, job, options.ray or ray_engine.RayOptions())
    finally:
        # From the done records: a cluster may finish shards whose results never reached us.
        results = out.finished(shards, run)
        complete = len(results) == len(shards)
        ordered = [results[s.id] for s in shards if s.id in results]
        counts = total_counts(ordered)
        models = [dict(m) for m in {stable_hash(r.model): r.model for r in ordered}.values()]
        if complete:
            out.merge_rejects(shards)
        status = ("complete" if complete else "incomplete") + (
            f", {counts['rejected']} rejected" if counts["rejected"] else ""
        )
        write_json(
            out.manifest,
            {
                **manifest,
                "status": status,
                "finished": _now(),
                "counts": counts,
                "models": models,
                "done": {r.shard: {"counts": r.counts, "seconds": r.seconds} for r in ordered},
            },
        )
    new = [r for r in ordered if r.shard not in done]
    return AnnotateSummary(
        out.path,
        len(shards),
        len(done),
        counts,
        time.perf_counter() - started,
        sum(r.counts["docs"] + r.counts["rejected"] for r in new),
        complete,
        models,
    )


def _run_local(shards: list[Shard], job: ShardJob, progress: bool) -> None:
    annotate_shard = ShardAnnotator(job)
    total = sum(s.docs for s in shards)
    with tqdm(total=total, unit="doc", disable=not progress, file=sys.stderr) as bar:
        for shard in shards:
            annotate_shard(shard, read_shard(shard), bar.update)


def _check_previous_run(out: OutputFolder, fingerprint: dict[str, str], overwrite: bool) -> None:
    """Refuse to mix runs of different settings in one folder, unless told to start over."""
    previous = out.read_manifest()
    if previous is None:
        return
    before = previous.get("fingerprint", {})
    changed = [part for part, value in fingerprint.items() if before.get(part) != value]
    if not changed:
        return
    # A run that finished no shard (it failed at start, e.g. on a bad option) holds nothing
    # to protect: the corrected command replaces it without --overwrite.
    finished = out.shards.is_dir() and any(out.shards.glob("*.done.json"))
    if not overwrite and finished:
        raise ValueError(
            f"{out.path} holds a run with other {', '.join(changed)}; give another output "
            "folder, or --overwrite to delete its shards and start over"
        )
    if not finished:
        logger.info("%s: replacing a run that finished no shard", out.path)
    shutil.rmtree(out.shards, ignore_errors=True)
    out.rejects.unlink(missing_ok=True)
    out.manifest.unlink()


def _versions(engine: str) -> dict[str, str]:
    names = ["spacy-reasoningner", "spacy"] + (["ray"] if engine == "ray" else [])
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
