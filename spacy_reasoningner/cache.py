"""On-disk response cache, for any backend.

A completion is stored under a hash of everything that determines it: the backend's identity
(engine, model and its fingerprint, chat template), the prompt messages and the generation
settings; changing any of them misses the cache. Identities hold no credentials. The store is
one SQLite file in WAL mode, so several processes can read and write it at once. Completions
of a failed batch that did finish are stored too, so a rerun resumes where the last one stopped.

A cache only saves model calls, so it never stops a run once open: only well-formed
completions are stored, an entry that does not read back as one is a miss (regenerated and
overwritten), and if the file fails during a run (disk full, damaged pages) a warning names
it and the run goes on without caching. A file that cannot be opened as a cache at all is a
``CacheError`` naming the file and the ways on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backends.base import (
    Backend,
    BackendError,
    Completion,
    Constrainable,
    ConstrainableBackend,
    GenerationSettings,
    Request,
    completion_problem,
    generate,
    is_identifiable,
)
from .protocol import ChatMessages

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the key or the stored value changes meaning
BUSY_SECONDS = 60  # how long a process waits for another one holding the cache's lock


class CacheError(RuntimeError):
    """The response cache file cannot be used; the message names it and the fixes."""


class ResponseCache:
    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        if path.is_dir() or (not path.suffix and not path.exists()):
            path = path / "responses.sqlite"
        self.path = path
        self._lock = threading.Lock()
        self._failed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=BUSY_SECONDS, check_same_thread=False, isolation_level=None
            )
            self._set_up()
        except (OSError, sqlite3.Error) as error:
            raise CacheError(
                f"the response cache {path} cannot be used ({error}). A cache only saves model "
                "calls: delete or move that file to start a new cache in its place, set "
                "cache_path to another file, or set cache_path to null to run without one"
            ) from error

    def _set_up(self) -> None:
        """WAL mode and the table. Two processes opening one cache at once: SQLite refuses
        one of them at once ("database is locked") instead of waiting when waiting could
        deadlock, whatever the busy timeout, so that one waits a moment and tries again."""
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS completions "
                    "(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                self._db.execute("SELECT key, value FROM completions LIMIT 1").fetchall()
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.1))

    def __getstate__(self) -> dict[str, Any]:
        # A connection and a lock belong to one process: a copy (another worker) reopens.
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    @staticmethod
    def key(
        identity: dict[str, Any],
        messages: ChatMessages,
        settings: GenerationSettings,
        answer: dict[str, Any] | None = None,
    ) -> str:
        """``answer``: what else shapes the answer (reasoning, JSON Schema, the sample's
        number among repeats of the prompt), for backends that act on it."""
        payload = {
            "format": CACHE_FORMAT,
            "identity": identity,
            "messages": messages,
            "settings": dataclasses.asdict(settings),
            "answer": answer,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        """The well-formed completions stored under ``keys``; anything else is a miss."""
        rows: list[tuple[str, str]] = []
        with self._lock:
            if self._failed:
                return {}
            try:
                for first in range(0, len(keys), 500):  # SQLite caps bound parameters
                    chunk = list(keys[first : first + 500])
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(
                        f"SELECT key, value FROM completions WHERE key IN ({marks})", chunk
                    ).fetchall()
            except sqlite3.Error as error:
                self._fail(error)
                return {}
        found = {key: completion for key, value in rows if (completion := _read(value))}
        if len(found) < len(rows):
            logger.warning(
                "response cache %s: %d damaged entries ignored; they are generated again and "
                "overwritten",
                self.path,
                len(rows) - len(found),
            )
        return found

    def put_many(self, items: dict[str, Completion]) -> None:
        """Store the well-formed completions of ``items`` (others are left out)."""
        rows = [
            (k, json.dumps(dataclasses.asdict(c)))
            for k, c in items.items()
            if completion_problem(c) is None
        ]
        if not rows:
            return
        with self._lock:
            if self._failed:
                return
            try:
                self._db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?)", rows)
            except sqlite3.Error as error:
                self._fail(error)

    def _fail(self, error: sqlite3.Error) -> None:
        self._failed = True
        logger.warning(
            "response cache %s failed (%s): going on without it for this run, so new "
            "completions are not kept. To rebuild it, delete or move the file",
            self.path,
            error,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]


def _read(value: str) -> Completion | None:
    try:
        completion = Completion(**json.loads(value))
    except (ValueError, TypeError, RecursionError):  # not JSON, not an object, other fields
        return None
    return completion if completion_problem(completion) is None else None


class CachedBackend(ConstrainableBackend):
    """Serves cached completions and sends only the misses to the wrapped backend.

    A request's key names the backend, the prompt, the settings and, for a backend that
    acts on them, the answer's shape and the thinking switch; the samples of a prompt
    (confidence voting) are kept apart by their number.
    """

    def __init__(self, backend: Backend, cache: ResponseCache):
        if not is_identifiable(backend):
            raise ValueError(
                f"backend {type(backend).__name__} has no 'identity' property, so its answers "
                "cannot be cached safely: add one (engine, model, settings; no secrets) or turn "
                "the cache off"
            )
        self.backend = backend
        self.cache = cache

    def generate_constrained(
        self, requests: Sequence[Request], settings: GenerationSettings, *, reasoning: bool
    ) -> list[Completion]:
        identity = self.backend.identity
        shaped = isinstance(self.backend, Constrainable)
        keys = [
            self.cache.key(identity, r.messages, settings, _answer_key(r, reasoning, shaped))
            for r in requests
        ]
        # Served from the cache: no generation time.
        known = {
            key: dataclasses.replace(completion, seconds=0.0)
            for key, completion in self.cache.get_many(keys).items()
        }
        missing = [i for i, k in enumerate(keys) if k not in known]
        if missing:
            subset = [requests[i] for i in missing]
            try:
                fresh = generate(self.backend, subset, settings, reasoning=reasoning)
            except BackendError as error:
                self.cache.put_many({keys[missing[j]]: c for j, c in error.completed.items()})
                raise
            new = {keys[i]: c for i, c in zip(missing, fresh, strict=True)}
            self.cache.put_many(new)
            known.update(new)
        return [known[k] for k in keys]


def _answer_key(request: Request, reasoning: bool, shaped: bool) -> dict[str, Any] | None:
    """What shapes the answer besides the prompt: the thinking switch and the answer's shape
    (for a backend that acts on them), and the sample's number after the first, counted from
    2 as the repeats of a prompt were before requests carried it (caches stay valid)."""
    answer: dict[str, Any] | None = None
    if shaped:
        shape = request.answer.describe() if request.answer is not None else {"schema": None}
        answer = {"reasoning": reasoning, **shape}
    if request.sample:
        answer = {**(answer or {}), "repeat": request.sample + 1}
    return answer
