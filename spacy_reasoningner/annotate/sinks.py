"""Outputs of a corpus run, written so that a shard is either complete or absent.

Layout of the output folder::

    manifest.json               plan, settings, model identity, counts (rewritten at the end)
    rejects.jsonl               every document that could not be annotated, with the reason
    shards/<id>.spacy           DocBin of the shard's documents (user data kept)
    shards/<id>.jsonl           the same as JSON lines (with --jsonl)
    shards/<id>.rejects.jsonl   the shard's rejects
    shards/<id>.done.json       the shard's counts; written last, so its presence means done

Every file is written to a temporary name in the same folder and renamed into place, so a
process killed mid-write leaves no partial file under a final name; a shard without its done
record is annotated again, and its files are replaced, never appended to.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .sources import Shard

SHARDS_DIR = "shards"
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
MANIFEST_FORMAT = 1
COUNT_KEYS = ("docs", "rejected", "entities", "unaligned", "truncated", "unparsed", "windows")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def jsonl_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


@dataclass
class ShardResult:
    """What the done record of a shard says: its counts, the model that annotated it, when."""

    shard: str
    run: str
    counts: dict[str, int]
    seconds: float
    model: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardResult:
        return cls(**data)


class OutputFolder:
    """Paths and records of one run's output folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.shards = self.path / SHARDS_DIR
        self.manifest = self.path / MANIFEST
        self.rejects = self.path / REJECTS

    def shard_file(self, shard_id: str, kind: str) -> Path:
        suffix = {"docbin": ".spacy", "jsonl": ".jsonl", "rejects": ".rejects.jsonl"}
        return self.shards / f"{shard_id}{suffix.get(kind, '.done.json')}"

    def write_shard(
        self,
        result: ShardResult,
        docbin: bytes,
        jsonl: list[dict[str, Any]] | None,
        rejects: list[dict[str, Any]],
    ) -> None:
        """The shard's files, then its done record (the commit point)."""
        write_atomic(self.shard_file(result.shard, "docbin"), docbin)
        if jsonl is not None:
            write_atomic(self.shard_file(result.shard, "jsonl"), jsonl_bytes(jsonl))
        rejects_path = self.shard_file(result.shard, "rejects")
        if rejects:
            write_atomic(rejects_path, jsonl_bytes(rejects))
        else:
            rejects_path.unlink(missing_ok=True)
        write_json(self.shard_file(result.shard, "done"), result.to_dict())

    def finished(self, shards: list[Shard], run: str) -> dict[str, ShardResult]:
        """Done records of ``shards`` written by this run (same fingerprint)."""
        done = {}
        for shard in shards:
            path = self.shard_file(shard.id, "done")
            if path.is_file():
                result = ShardResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
                if result.run == run:
                    done[shard.id] = result
        return done

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest.is_file():
            return None
        return json.loads(self.manifest.read_text(encoding="utf-8"))

    def merge_rejects(self, shards: list[Shard]) -> int:
        """Concatenate the shards' rejects, in shard order, into rejects.jsonl."""
        parts = [self.shard_file(s.id, "rejects") for s in shards]
        data = b"".join(p.read_bytes() for p in parts if p.is_file())
        write_atomic(self.rejects, data)
        return data.count(b"\n")


def total_counts(results: Iterable[ShardResult]) -> dict[str, int]:
    totals = dict.fromkeys(COUNT_KEYS, 0)
    for result in results:
        for key in COUNT_KEYS:
            totals[key] += result.counts.get(key, 0)
    return totals
