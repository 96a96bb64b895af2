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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .sinks import MANIFEST_FORMAT, OutputFolder, ShardResult, total_counts, write_json
from .sources import FORMATS, Shard, plan_shards, read_shard, resolve_inputs
from .worker import PipelineSpec, ShardAnnotator, ShardFailed, stable_hash

if TYPE_CHECKING:
    from .ray_engine import RayOptions

__all__ = [
    "ENGINES",
    "FORMATS",
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


def annotate(
    inputs: list[str],
    output: str | Path,
    pipeline: PipelineSpec,
    *,
    input_format: str = "auto",
    text_field: str = "text",
    shard_size: int = 1000,
    engine: str = "local",
    jsonl: bool = False,
    batch_size: int | None = None,
    cache: bool | str = True,
    keep_going: bool = False,
    overwrite: bool = False,
    ray_options: RayOptions | None = None,
    progress: bool = True,
) -> AnnotateSummary:
    """Annotate every document of ``inputs`` into ``output`` (see ``sinks`` for the layout).

    inputs: files, folders or globs of text (one document per non-empty line), JSONL (a
        ``text_field`` per object; other fields are kept) or DocBin files.
    pipeline: the pipeline each worker builds (a saved pipeline or a config).
    shard_size: documents per shard: the unit of output files, retries and resumption.
    cache: keep completions in ``output/cache`` (True), in the folder or file given, or not
        (False). A rerun after a crash then regenerates nothing that had finished.
    keep_going: reject the documents of a shard in which every document failed, instead of
        stopping the run.
    overwrite: start over when ``output`` holds a run with other settings.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} is not one of {ENGINES}")
    started = time.perf_counter()
    out = OutputFolder(Path(output).resolve())
    files = resolve_inputs(inputs, input_format)
    shards = plan_shards(files, shard_size, text_field)
    fingerprint = {
        "inputs": stable_hash([f.to_dict() for f in files]),
        "shards": stable_hash({"shard_size": shard_size, "text_field": text_field}),
        "pipeline": pipeline.fingerprint(),
        "outputs": stable_hash({"jsonl": jsonl}),
    }
    run = stable_hash(fingerprint)
    _check_previous_run(out, fingerprint, overwrite)
    if cache:
        path = out.path / CACHE_DIR if cache is True else Path(cache).resolve()
        name = pipeline.component_name()
        pipeline = pipeline.with_overrides({f"components.{name}.cache_path": str(path)})
    done = out.finished(shards, run)
    todo = [s for s in shards if s.id not in done]
    settings = {
        "engine": engine,
        "shard_size": shard_size,
        "text_field": text_field,
        "input_format": input_format,
        "jsonl": jsonl,
        "batch_size": batch_size,
        "keep_going": keep_going,
        "ray": asdict(ray_options) if ray_options else None,
        "pipeline": {
            "path": pipeline.path,
            "overrides": pipeline.overrides,
            "labels": pipeline.labels,
            "code": pipeline.code,
        },
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "fingerprint": {**fingerprint, "run": run},
        "versions": _versions(engine),
        "settings": settings,
        "config": pipeline.config,
        "inputs": [f.to_dict() for f in files],
        "shards": [s.to_dict() for s in shards],
    }
    new_docs = 0

    def record(result: ShardResult) -> None:
        nonlocal new_docs
        new_docs += result.counts["docs"] + result.counts["rejected"]

    write_json(out.manifest, {**manifest, "status": "running", "started": _now()})
    annotator = {
        "spec": pipeline,
        "output": str(out.path),
        "run": run,
        "jsonl": jsonl,
        "batch_size": batch_size,
        "keep_going": keep_going,
    }
    try:
        if todo and engine == "local":
            _run_local(todo, annotator, record, progress)
        elif todo:
            from . import ray_engine

            ray_engine.run(todo, annotator, ray_options or ray_engine.RayOptions(), record)
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
    return AnnotateSummary(
        out.path,
        len(shards),
        len(done),
        counts,
        time.perf_counter() - started,
        new_docs,
        complete,
        models,
    )


def _run_local(
    shards: list[Shard],
    annotator: dict[str, Any],
    on_result: Callable[[ShardResult], None],
    progress: bool,
) -> None:
    annotate_shard = ShardAnnotator(**annotator)
    total = sum(s.docs for s in shards)
    with tqdm(total=total, unit="doc", disable=not progress, file=sys.stderr) as bar:
        for shard in shards:
            on_result(annotate_shard(shard, read_shard(shard), bar.update))


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
