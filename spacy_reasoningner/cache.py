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
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backends.base import (
    AnswerFormat,
    Backend,
    BackendError,
    Completion,
    Constrainable,
    ConstrainableBackend,
    GenerationSettings,
    Identifiable,
    generate,
)
from .protocol import ChatMessages

CACHE_FORMAT = 2  # bump when the key or the stored value changes meaning


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


class CachedBackend(ConstrainableBackend):
    """Serves cached completions and sends only the misses to the wrapped backend.

    The same prompt repeated within one call is sampled repeatedly (confidence voting), so
    each repeat has its own entry: the n-th repeat is keyed with its number.
    """

    def __init__(self, backend: Backend, cache: ResponseCache):
        if not isinstance(backend, Identifiable):
            raise ValueError(
                f"backend {type(backend).__name__} has no 'identity' property, so its answers "
                "cannot be cached safely: add one (engine, model, settings; no secrets) or turn "
                "the cache off"
            )
        self.backend = backend
        self.cache = cache

    def generate_constrained(
        self,
        prompts: Sequence[ChatMessages],
        settings: GenerationSettings,
        answer_format: AnswerFormat,
    ) -> list[Completion]:
        identity = self.backend.identity
        shaped = isinstance(self.backend, Constrainable)
        repeats: Counter[str] = Counter()
        keys = []
        for i, prompt in enumerate(prompts):
            answer = (
                {"reasoning": answer_format.reasoning, "schema": answer_format.schema(i)}
                if shaped
                else None
            )
            key = self.cache.key(identity, prompt, settings, answer)
            repeats[key] += 1
            if repeats[key] > 1:
                key = self.cache.key(
                    identity, prompt, settings, {**(answer or {}), "repeat": repeats[key]}
                )
            keys.append(key)
        known = self.cache.get_many(keys)
        for completion in known.values():
            completion.seconds = 0.0  # served from the cache: no generation time
        missing = [i for i, k in enumerate(keys) if k not in known]
        if missing:
            subset = [prompts[i] for i in missing]
            schemas = tuple(answer_format.schema(i) for i in missing)
            try:
                fresh = generate(
                    self.backend,
                    subset,
                    settings,
                    AnswerFormat(answer_format.reasoning, schemas if answer_format.schemas else ()),
                )
            except BackendError as error:
                self.cache.put_many({keys[missing[j]]: c for j, c in error.completed.items()})
                raise
            new = {keys[i]: c for i, c in zip(missing, fresh, strict=True)}
            self.cache.put_many(new)
            known.update(new)
        return [known[k] for k in keys]
