"""The response cache under damage: bad entries are misses, bad files are clear errors, a
file failing mid-run is a warning and the run goes on without caching."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from dataclasses import replace

import pytest

from spacy_reasoningner.backends import BackendError, Completion, GenerationSettings
from spacy_reasoningner.backends.base import AnswerShape, ConstrainableBackend, Request
from spacy_reasoningner.cache import CachedBackend, CacheError, ResponseCache
from spacy_reasoningner.protocol import Schema, render_messages

SETTINGS = GenerationSettings()
PROMPTS = [render_messages(f"Person{i} is here.", Schema.from_config(["person"])) for i in range(3)]


IDENTITY = {"backend": "counting"}


class CountingBackend:
    def __init__(self, text="ok"):
        self.calls, self.text, self.identity = 0, text, IDENTITY

    def generate(self, prompts, settings):
        self.calls += len(prompts)
        return [Completion(text=self.text) for _ in prompts]


def test_a_malformed_completion_is_an_error_and_never_stored(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    with pytest.raises(BackendError, match="returned a Completion whose text is of type int"):
        CachedBackend(CountingBackend(text=5), cache).generate(PROMPTS, SETTINGS)
    cache.put_many({"k": Completion(text=5)})
    assert len(cache) == 0


@pytest.mark.parametrize(
    "stored",
    [
        "not json",
        json.dumps({"text": 5, "finish_reason": "stop"}),
        json.dumps({"text": "x", "finish_reason": "maybe"}),
        json.dumps({"text": "x", "unknown": 1}),
        json.dumps(["x"]),
        "[" * 100_000,
    ],
)
def test_a_damaged_entry_is_a_miss_that_is_regenerated(tmp_path, caplog, stored):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    key = cache.key(IDENTITY, PROMPTS[0], SETTINGS)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO completions VALUES (?, ?)", (key, stored))
    backend = CountingBackend()
    (completion,) = CachedBackend(backend, cache).generate(PROMPTS[:1], SETTINGS)
    assert completion.text == "ok" and backend.calls == 1
    assert "1 damaged entries ignored" in caplog.text and str(path) in caplog.text
    assert cache.get_many([key])[key].text == "ok"  # overwritten


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
)
def test_a_file_that_is_not_a_cache_is_a_clear_error(tmp_path, content):
    path = tmp_path / "responses.sqlite"
    path.write_bytes(content)
    with pytest.raises(CacheError) as error:
        ResponseCache(path)
    message = str(error.value)
    assert str(path) in message
    assert "delete or move that file" in message and "cache_path to null" in message


def test_an_existing_file_without_suffix_is_the_cache_itself(tmp_path):
    first = ResponseCache(tmp_path / "plain.sqlite")
    first.put_many({"k": Completion("v")})
    first.close()
    (tmp_path / "plain.sqlite").rename(tmp_path / "plain")
    assert ResponseCache(tmp_path / "plain").get_many(["k"])["k"].text == "v"
    (tmp_path / "notes").write_text("my notes")
    with pytest.raises(CacheError, match="notes cannot be used"):
        ResponseCache(tmp_path / "notes")  # used to raise FileExistsError
    assert (tmp_path / "notes").read_text() == "my notes"


def test_another_programs_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE completions (id INTEGER)")
    with pytest.raises(CacheError, match="no such column"):
        ResponseCache(path)


def test_a_file_damaged_during_a_run_turns_the_cache_off_with_a_warning(tmp_path, caplog):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    cache.put_many({f"key{i}": Completion("x" * 500) for i in range(2000)})
    cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # damage pages past the first ones
        handle.seek(size // 2)
        handle.write(b"\xa5" * (size // 2))
    caplog.set_level(logging.WARNING)
    backend = CountingBackend()
    cached = CachedBackend(backend, ResponseCache(path))
    completions = cached.generate(PROMPTS, SETTINGS)
    cached.cache.get_many([f"key{i}" for i in range(2000)])
    assert [c.text for c in completions] == ["ok"] * 3 and backend.calls == 3
    assert f"response cache {path} failed" in caplog.text
    assert "going on without it" in caplog.text
    assert "To rebuild it, delete or move the file" in caplog.text  # the fix, named
    assert re.search(rf"{re.escape(str(path))} failed \((?!None\)).+\)", caplog.text)  # why
    # Off for the rest of the run: the next calls generate without touching the file again.
    caplog.clear()
    assert [c.text for c in cached.generate(PROMPTS, SETTINGS)] == ["ok"] * 3
    assert backend.calls == 6 and "failed" not in caplog.text


def test_the_cache_key_of_a_request_stays_the_same_across_releases():
    """Every stored completion is found by this key: a change orphans every user's cache,
    so it comes with a new CACHE_FORMAT (and a new value here)."""
    messages = [{"role": "user", "content": "Ada came."}]
    key = ResponseCache.key(IDENTITY, messages, GenerationSettings(), {"reasoning": True})
    assert key == "3b168ce5fdc2fe72a0f8cc677ff5ea380178026abca301be4feb22262c8f827c"


def test_a_cache_locked_by_another_process_at_opening_is_opened_once_free(tmp_path, monkeypatch):
    """SQLite answers "database is locked" at once, without its busy wait, when two
    processes set up one new cache together (seen in CI). Stand-in for the other process: a
    connection that is refused twice, then works."""
    real_connect = sqlite3.connect

    class LockedTwice:
        def __init__(self, connection):
            self.connection, self.refusals = connection, 2

        def execute(self, *args):
            if self.refusals:
                self.refusals -= 1
                raise sqlite3.OperationalError("database is locked")
            return self.connection.execute(*args)

        def __getattr__(self, name):
            return getattr(self.connection, name)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: LockedTwice(real_connect(*a, **k)))
    cache = ResponseCache(tmp_path / "c.sqlite")
    assert cache._db.refusals == 0
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    cache.put_many({"k": Completion(text="x")})
    assert ResponseCache(tmp_path / "c.sqlite").get_many(["k"])["k"].text == "x"


def test_a_cache_that_stays_locked_is_a_cache_error(tmp_path, monkeypatch):
    class Locked:
        def execute(self, *args):
            raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: Locked())
    monkeypatch.setattr("spacy_reasoningner.cache.BUSY_SECONDS", 0.2)
    with pytest.raises(CacheError, match=r"cannot be used \(database is locked\)"):
        ResponseCache(tmp_path / "c.sqlite")


class CostlyIdentity:
    """A backend whose ``identity`` is expensive (a transformers backend loads its model,
    a local one stats every weight file): it counts its evaluations."""

    def __init__(self):
        self.evaluations = 0

    @property
    def identity(self):
        self.evaluations += 1
        return {"backend": "costly", "model": "m"}

    def generate(self, prompts, settings):
        return [Completion(text='{"entities": {}}') for _ in prompts]


def test_asking_whether_a_backend_has_an_identity_does_not_compute_it(tmp_path):
    """Before Python 3.12 isinstance(backend, Identifiable) runs the property (hasattr)."""
    import spacy

    from spacy_reasoningner.backends.base import is_identifiable

    backend = CostlyIdentity()
    assert is_identifiable(backend) and not is_identifiable(object())
    CachedBackend(backend, ResponseCache(tmp_path / "cache"))
    assert backend.evaluations == 0
    nlp = spacy.blank("en")
    component = nlp.add_pipe("reasoning_ner", config={"labels": ["person"]})
    component.backend = backend
    assert component.backend_name == "costly:m"
    assert backend.evaluations == 1  # read once, not once to check and once to use


# --------------------------------------------------------------------------- end to end


class NamedModel:
    """A backend whose answers come from ``model``: each completion names the model and the
    how-many-th it is, so that stored and fresh completions tell apart."""

    def __init__(self, model: str):
        self.model, self.calls = model, 0
        self.identity = {"backend": "named", "model": model}

    def generate(self, prompts, settings):
        completions = []
        for _ in prompts:
            self.calls += 1
            reasoning = f"{self.model} completion {self.calls}"
            completions.append(Completion(text=f'<think>{reasoning}</think>{{"entities": {{}}}}'))
        return completions


def cached_pipeline(cache, backend, **config):
    import spacy

    nlp = spacy.blank("en")
    scripted = {"@reasoning_ner_backends": "tests.Scripted.v1"}
    settings = {"labels": ["person"], "backend": scripted, "cache_path": str(cache), **config}
    pipe = nlp.add_pipe("reasoning_ner", config=settings)
    pipe.backend = backend  # the component puts the cache in front of it
    return nlp


def test_another_model_misses_the_cache_the_same_model_hits_it(tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = NamedModel("model-a")
    assert cached_pipeline(cache, first)("Ada came.")._.ner_reasoning == "model-a completion 1"
    other = NamedModel("model-b")
    assert cached_pipeline(cache, other)("Ada came.")._.ner_reasoning == "model-b completion 1"
    again = NamedModel("model-a")
    assert cached_pipeline(cache, again)("Ada came.")._.ner_reasoning == "model-a completion 1"
    assert (first.calls, other.calls, again.calls) == (1, 1, 0)


def test_samples_are_stored_apart_and_served_back_in_order(tmp_path):
    cache = tmp_path / "cache.sqlite"
    config = {
        "samples": 3,
        "spans_key": "sc",
        "keep_raw": True,
        "generation": {"temperature": 0.7, "seed": 1},
    }
    first = NamedModel("model-a")
    stored = cached_pipeline(cache, first, **config)("Ada came.")
    assert first.calls == 3 and len(ResponseCache(cache)) == 3
    again = NamedModel("model-a")
    served = cached_pipeline(cache, again, **config)("Ada came.")
    assert again.calls == 0
    completions = [raw["completion"] for raw in served._.ner_raw]
    assert completions == [raw["completion"] for raw in stored._.ner_raw]
    assert len(set(completions)) == 3


class ShapingBackend(ConstrainableBackend):
    """Answers with what shapes each answer: the request's sample, shape and thinking switch."""

    identity = IDENTITY

    def __init__(self):
        self.calls: list[list[Request]] = []

    def generate_constrained(self, requests, settings, *, reasoning):
        self.calls.append(list(requests))
        return [Completion(text=json.dumps(shaped(r, reasoning)), seconds=2.0) for r in requests]


def shaped(request: Request, reasoning: bool) -> dict:
    answer = request.answer.describe() if request.answer else None
    return {"sample": request.sample, "answer": answer, "reasoning": reasoning}


def test_answers_are_cached_per_prompt_shape_thinking_switch_and_sample(tmp_path):
    backend = ShapingBackend()
    cached = CachedBackend(backend, ResponseCache(tmp_path / "c.sqlite"))
    shapes = (AnswerShape({"const": 1}), AnswerShape({"const": 2}), None)
    requests = [Request(p, answer=a) for p, a in zip(PROMPTS, shapes, strict=True)]
    first = cached.generate_constrained(requests, SETTINGS, reasoning=True)
    assert [json.loads(c.text) for c in first] == [shaped(r, True) for r in requests]
    # The same requests again: all served, with no generation time.
    again = cached.generate_constrained(requests, SETTINGS, reasoning=True)
    assert [c.text for c in again] == [c.text for c in first] and len(backend.calls) == 1
    assert {c.seconds for c in again} == {0.0}
    # Another shape for the second prompt only: that request alone is generated.
    changed = [requests[0], replace(requests[1], answer=AnswerShape({"const": 3})), requests[2]]
    mixed = cached.generate_constrained(changed, SETTINGS, reasoning=True)
    assert backend.calls[-1] == [changed[1]] and mixed[0].text == first[0].text
    assert json.loads(mixed[1].text) == shaped(changed[1], True)
    # The thinking switch is part of the key.
    cached.generate_constrained(requests[:1], SETTINGS, reasoning=False)
    assert backend.calls[-1] == requests[:1]
    # The samples of a prompt are stored apart, and served apart.
    samples = [Request(PROMPTS[0], sample) for sample in range(2)]
    drawn = cached.generate_constrained(samples, SETTINGS, reasoning=True)
    assert backend.calls[-1] == samples and len(set(c.text for c in drawn)) == 2
    assert cached.generate_constrained(samples, SETTINGS, reasoning=True) == [
        replace(c, seconds=0.0) for c in drawn
    ]
    assert len(cached.cache) == 3 + 1 + 1 + 2


def test_keys_are_those_of_the_repeat_counter_before_requests(tmp_path):
    """Caches written before requests carried their sample still serve: the n-th repeat of
    a prompt was keyed {"reasoning", "schema", "repeat": n} (n from 2)."""
    cache = ResponseCache(tmp_path / "c.sqlite")
    shape = AnswerShape({"const": 1})
    old = {"reasoning": True, "schema": {"const": 1}}
    cache.put_many(
        {
            cache.key(IDENTITY, PROMPTS[0], SETTINGS, old): Completion("first"),
            cache.key(IDENTITY, PROMPTS[0], SETTINGS, {**old, "repeat": 2}): Completion("second"),
        }
    )
    cached = CachedBackend(ShapingBackend(), cache)
    requests = [Request(PROMPTS[0], sample, shape) for sample in range(2)]
    served = cached.generate_constrained(requests, SETTINGS, reasoning=True)
    assert [c.text for c in served] == ["first", "second"]


def test_more_keys_than_sqlite_binds_at_once_are_all_found(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put_many({f"key{i}": Completion(f"text {i}") for i in range(1203)})
    found = cache.get_many([f"key{i}" for i in range(1203)])
    assert len(found) == 1203 and found["key1202"].text == "text 1202"
