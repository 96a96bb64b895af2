"""On-disk response cache, for any backend.

A completion is stored under a hash of everything that determines it: the backend's identity
(engine, model and its fingerprint, chat template), the prompt messages and the generation
settings; changing any of them misses the cache. Identities hold no credentials. The store is
one SQLite file in WAL mode, so several processes can read and write it at once. Completions
of a failed batch that did finish are stored too, so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backends.base import Backend, BackendError, Completion, GenerationSettings
from .protocol import ChatMessages

CACHE_FORMAT = 1  # bump when the key or the stored value changes meaning


class ResponseCache:
    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        if path.is_dir() or not path.suffix:
            path = path / "responses.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )

    @staticmethod
    def key(identity: dict[str, Any], messages: ChatMessages, settings: GenerationSettings) -> str:
        payload = {
            "format": CACHE_FORMAT,
            "identity": identity,
            "messages": messages,
            "settings": dataclasses.asdict(settings),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        with self._lock:
            for first in range(0, len(keys), 500):  # SQLite caps bound parameters
                chunk = list(keys[first : first + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value FROM completions WHERE key IN ({marks})", chunk
                )
                found.update((k, Completion(**json.loads(v))) for k, v in rows)
        return found

    def put_many(self, items: dict[str, Completion]) -> None:
        if not items:
            return
        rows = [(k, json.dumps(dataclasses.asdict(c))) for k, c in items.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]


class CachedBackend:
    """Serves cached completions and sends only the misses to the wrapped backend."""

    def __init__(self, backend: Backend, cache: ResponseCache):
        if not hasattr(backend, "identity"):
            raise ValueError(
                f"backend {type(backend).__name__} has no 'identity' property, so its answers "
                "cannot be cached safely: add one (engine, model, settings; no secrets) or turn "
                "the cache off"
            )
        self.backend = backend
        self.cache = cache

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        identity = self.backend.identity
        keys = [self.cache.key(identity, p, settings) for p in prompts]
        known = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in known]
        if missing:
            try:
                fresh = self.backend.generate([prompts[i] for i in missing], settings)
            except BackendError as error:
                self.cache.put_many({keys[missing[j]]: c for j, c in error.completed.items()})
                raise
            new = {keys[i]: c for i, c in zip(missing, fresh, strict=True)}
            self.cache.put_many(new)
            known.update(new)
        return [known[k] for k in keys]
