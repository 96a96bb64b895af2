"""Robustness: hostile model output, documents, servers and caches, and what each one does.

Four campaigns, each printing a table:

* parser: generated completions from 1 KB to 1 MB (deep nesting, long runs of brackets,
  quotes, tags and fences, long numbers, random fragment soups, well-formed answers with
  noise); inputs tried, exceptions (must be 0) and median/max parse time per size;
* component: random documents (Unicode, marks, URLs, punctuation, odd whitespace) and
  random answers naming pieces of them, invented strings and non-string items, through the
  component with a scripted backend and short windows; invariant violations (must be 0):
  an exception, a named item neither grounded nor reported, an entity whose text is not the
  text at its offsets or has whitespace at an edge, statistics that do not add up;
* servers: misbehaving chat-completions servers on 127.0.0.1 (real sockets) against the
  OpenAI-compatible backend behind the response cache; the outcome (answer, after how many
  requests; clear BackendError; deadline), seconds, peak memory, and whether the API key
  appeared anywhere: errors, chained errors, logs at DEBUG, answers, the cache file (must
  be never);
* caches: damaged cache files; the outcome (clear CacheError at open, or a run that
  completes with a warning, regenerating what was lost).

    python bench/robustness.py [--docs 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

# The fault servers and invariants are the test suite's (tests/_faults.py, _invariants.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spacy

from spacy_reasoningner.backends.base import (
    BackendError,
    Completion,
    GenerationSettings,
)
from spacy_reasoningner.backends.openai import OpenAIBackend, OpenAIOptions
from spacy_reasoningner.cache import CachedBackend, CacheError, ResponseCache
from spacy_reasoningner.protocol import Schema, parse_completion, render_messages
from spacy_reasoningner.registry import backends
from tests import _faults as faults
from tests import _invariants as invariants

SCHEMA = Schema.from_config(["person", "location", "organisation"])
SIZES = [1_000, 4_000, 16_000, 64_000, 256_000, 1_000_000]

# --------------------------------------------------------------------------- parser

UNITS = [
    "{",
    "[",
    "}",
    "]",
    '"',
    "'",
    "\\",
    '{"a":[',
    '{"a":{',
    '[{"a":',
    '{"entities":1 ',
    '{"',
    "{'a':1}",
    "{a:1}",
    "{}",
    '{"entities":{}}',
    "<think>",
    "</think>",
    "```",
    "```json",
    "<answer>{",
    "1",
    "-1e",
    '"\\u',
    "\\ud800",
    '{"entities": {"person": ["',
]
FRAGMENTS = [*UNITS, *invariants.FRAGMENTS]


# Random inputs per size: many small ones, a few of a megabyte.
RANDOM_PER_SIZE = {1_000: 4000, 4_000: 2000, 16_000: 500, 64_000: 120, 256_000: 30, 1_000_000: 10}


def parser_inputs(size: int, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, text) of about ``size`` characters: runs of every unit, deep and long values,
    then random fragment soups and answers broken by random edits."""
    inputs = [(f"run of {unit!r}", (unit * (size // len(unit) + 1))[:size]) for unit in UNITS]
    depth = size // 2 - 20
    inputs.append(
        (
            "deep valid nesting",
            '{"entities": {"person": ["Ada", ' + "[" * depth + "]" * depth + "]}}",
        )
    )
    inputs.append(("long number", '{"entities": {"person": [' + "7" * (size - 30) + "]}}"))
    answer = json.dumps({"entities": {"person": ["Ada Lovelace"] * (size // 16)}})[:size]
    inputs.append(("long answer, cut", answer))
    inputs.append(("long answer, single quotes", answer.replace('"', "'")))
    thought = "<think>" + "Ada is a person. " * (size // 17) + "</think>"
    inputs.append(("long reasoning + answer", thought[:size] + '{"entities": {"person": ["Ada"]}}'))
    mean = statistics.mean(map(len, FRAGMENTS))
    for _ in range(RANDOM_PER_SIZE[size]):
        soup = "".join(rng.choices(FRAGMENTS, k=int(size / mean) + 50))
        inputs.append(("fragment soup", soup[:size]))
        edited = list(answer)
        for _ in range(rng.randint(1, 20)):  # insert, delete or replace a character
            at = rng.randrange(len(edited) + 1)
            edited[at : at + rng.randint(0, 1)] = rng.choice(["", rng.choice(FRAGMENTS)])
        inputs.append(("answer with random edits", "".join(edited)))
    return inputs


def parser_campaign(rng: random.Random) -> None:
    print("\n## Parser: generated completions, one parse_completion each\n")
    print(f"{'size':>9} {'inputs':>7} {'raised':>7} {'median ms':>10} {'max ms':>8}  slowest input")
    total = raised_total = 0
    for size in SIZES:
        timings, raised = [], 0
        for kind, text in parser_inputs(size, rng):
            started = time.process_time()
            try:
                parse_completion(text, SCHEMA)
            except Exception:  # counted: the parser must never raise
                raised += 1
            timings.append((time.process_time() - started, kind))
        worst = max(timings)
        median = statistics.median(t for t, _ in timings)
        print(
            f"{size:>9,} {len(timings):>7} {raised:>7} {median * 1e3:>10.2f} "
            f"{worst[0] * 1e3:>8.1f}  {worst[1]}"
        )
        total += len(timings)
        raised_total += raised
    print(f"inputs tried: {total}; exceptions: {raised_total}; times are CPU time")


# --------------------------------------------------------------------------- component


def random_document(rng: random.Random) -> tuple[str, str]:
    """A text and a completion naming pieces of it, invented strings and non-strings."""
    words = rng.randint(1, 120)
    text = "".join(
        rng.choice(invariants.HARD_WORDS) + rng.choice(invariants.SEPARATORS) for _ in range(words)
    )
    items: dict[str, list] = {}
    for label in rng.sample(["person", "location", "organisation", "date"], rng.randint(0, 3)):
        values: list = []
        for _ in range(rng.randint(0, 8)):
            roll = rng.random()
            if roll < 0.5:  # a piece cut anywhere: edges inside words, whitespace, marks
                start = rng.randrange(len(text))
                values.append(text[start : start + rng.randint(1, 30)])
            elif roll < 0.7:
                values.append(rng.choice(invariants.HARD_WORDS))
            elif roll < 0.8:
                values.append(rng.choice(invariants.HARD_WORDS).upper())
            elif roll < 0.9:
                values.append(
                    "".join(rng.choice("abc .-/\u0301") for _ in range(rng.randint(1, 6)))
                )
            else:
                values.append(rng.choice([None, True, 7, 2.5, ["Ada"], {"text": "Ada"}, ""]))
        items[label] = values
    completion = json.dumps({"entities": items}, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.3:
        completion = "<think>" + rng.choice(invariants.HARD_WORDS) + "</think>" + completion
    if rng.random() < 0.1:
        completion = completion[: rng.randrange(len(completion) + 1)]
    return text, completion


class Replay:
    """A backend answering each prompt with the completion of the document being run."""

    completion = ""

    def generate(self, prompts, settings):
        return [Completion(text=self.completion) for _ in prompts]


@backends.register("bench.Replay.v1")
def make_replay() -> Replay:
    return Replay()


def violations_of(nlp, pipe, text: str, completion: str, mode: str) -> tuple[list[str], int]:
    """The invariants a document breaks (an exception is one), and its number of entities."""
    pipe.stats.clear()
    pipe.backend.completion = completion
    try:
        doc = nlp(text)
    except Exception as error:
        return [f"raised {type(error).__name__}: {error}"], 0
    return invariants.violations(doc, pipe, completion, mode), len(doc.ents)


def component_campaign(rng: random.Random, n_docs: int) -> None:
    print("\n## Component: random documents and answers (scripted backend)\n")
    pipes = {}
    for mode in ("strict", "contract", "expand"):
        for max_chars in (100, 2000):
            nlp = spacy.blank("en")
            config = {
                "labels": ["person", "location", "organisation"],
                "backend": {"@reasoning_ner_backends": "bench.Replay.v1"},
                "alignment_mode": mode,
                "max_chars": max_chars,
                "spans_key": "all",
            }
            pipes[mode, max_chars] = (nlp, nlp.add_pipe("reasoning_ner", config=config))
    docs = items = entities = unaligned = windows = 0
    problems: list[str] = []
    started = time.perf_counter()
    for _ in range(n_docs):
        text, completion = random_document(rng)
        mode, max_chars = rng.choice(list(pipes))
        nlp, pipe = pipes[mode, max_chars]
        found, n_entities = violations_of(nlp, pipe, text, completion, mode)
        problems += found
        docs += 1
        items += pipe.stats["mentions"]
        unaligned += pipe.stats["unaligned"]
        windows += pipe.stats["windows"]
        entities += n_entities
    seconds = time.perf_counter() - started
    print(
        f"documents: {docs:,} ({windows:,} windows); named items: {items:,}; "
        f"entities set: {entities:,}; reported unaligned: {unaligned:,}"
    )
    print(f"invariant violations: {len(problems)}  ({seconds:.1f} s)")
    for problem in problems[:10]:
        print("  ", problem)


# --------------------------------------------------------------------------- servers

PROMPTS = [render_messages("Ada Lovelace lived in London.", SCHEMA)]


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.text.write(self.format(record) + "\n")


def server_scenarios() -> list[tuple[str, faults.Scenario, dict]]:
    tight = {"timeout": 2, "max_retries": 0}
    return [
        ("well-formed answer", faults.answer('{"entities": {"person": ["Ada"]}}'), {}),
        ("slow drip, body (1 byte / 0.1 s)", faults.slow_drip(0.1), tight),
        ("slow drip, whole response", faults.slow_drip(0.1, headers_too=True), tight),
        ("endless chunked body", faults.endless_chunked(), {}),
        ("gzip bomb (1 MB -> 1 GiB)", faults.gzip_bomb(2**30), {}),
        ("echoes Authorization, 400 JSON", faults.echo_headers(400), {}),
        ("echoes Authorization, 500 (retried)", faults.echo_headers(500), {}),
        ("echoes Authorization, 400 text", faults.echo_headers(400, as_json=False), {}),
        ("echoes Authorization, 200 non-JSON", faults.echo_headers(200, as_json=False), {}),
        ("key in the answer content", faults.answer(f"your key is {KEY}"), {}),
        ("Retry-After: nan, then OK", faults.failing_first(1, 429, {"Retry-After": "nan"}), {}),
        ("Retry-After: -1, then OK", faults.failing_first(1, 429, {"Retry-After": "-1"}), {}),
        ("Retry-After: inf, then OK", faults.failing_first(1, 503, {"Retry-After": "inf"}), {}),
        (
            "Retry-After: HTTP date, then OK",
            faults.failing_first(1, 429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            {},
        ),
        ("content: 5", faults.answer(5), {}),
        ("content: true", faults.answer(True), {}),
        ("content: a list", faults.answer(["Ada"]), {}),
        ("content: an object", faults.answer({"text": "Ada"}), {}),
        ("non-JSON 200", faults.non_json(200), {}),
        ("200 without choices", lambda r, reply: reply.json(200, {"choices": []}), {}),
        (
            "200 with content-encoding br",
            lambda r, reply: reply.full(200, b"x", {"Content-Encoding": "br"}),
            {},
        ),
        (
            "corrupt gzip",
            lambda r, reply: reply.full(
                200, b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}
            ),
            {},
        ),
        (
            "closes mid-body",
            lambda r, reply: (reply.head(200, {"Content-Length": "100"}), reply.send(b'{"choi')),
            {},
        ),
        ("5xx twice, then OK", faults.failing_first(2, 502), {}),
        ("5xx always", faults.failing_first(99, 503), {}),
    ]


KEY = "sk-bench-7f3a9c21e4b8"


def describe(error: BackendError, url: str) -> str:
    """Deadline or BackendError, and the message without the server's address, shortened."""
    message = str(error).replace(f"server {url} ", "").replace(url, "<server>")
    kind = "deadline" if "no complete answer within" in message else "BackendError"
    redacted = " [key redacted]" if "[redacted]" in message else ""
    text = f"{kind}: {message}"
    return (text[: 66 - len(redacted)] + redacted) if len(text) > 66 else text


def server_campaign(workdir: Path) -> None:
    print("\n## Servers: misbehaving loopback servers, OpenAI backend behind the cache\n")
    print(f"{'scenario':<38} {'outcome':<66} {'s':>5} {'peak MB':>8} key seen")
    os.environ["OPENAI_API_KEY"] = KEY
    recorder = Recorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    leaks = 0
    try:
        for index, (name, scenario, options) in enumerate(server_scenarios()):
            recorder.text = io.StringIO()
            cache_path = workdir / f"server-{index}.sqlite"
            with faults.FaultServer(scenario) as server:
                settings = {
                    "max_retries": 2,
                    "backoff": 0.05,
                    "timeout": 5,
                    "max_response_bytes": 2**20,
                    **options,
                }
                backend = OpenAIBackend(OpenAIOptions(model="m", base_url=server.url, **settings))
                cached = CachedBackend(backend, ResponseCache(cache_path))
                tracemalloc.start()
                started = time.perf_counter()
                seen: list[str] = []
                try:
                    (completion,) = cached.generate(PROMPTS, GenerationSettings())
                    seen += [completion.text, completion.reasoning or ""]
                    outcome = f"answer after {len(server.requests)} request(s)"
                except BackendError as error:
                    seen += [str(error), repr(error), str(error.__cause__), str(error.__context__)]
                    outcome = describe(error, server.url)
                except Exception as error:  # must not happen
                    seen.append(str(error))
                    outcome = f"CRASH {type(error).__name__}: {error}"[:66]
                seconds = time.perf_counter() - started
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
                cached.cache.close()
                seen += [recorder.text.getvalue(), cache_path.read_bytes().decode("latin-1")]
                wal = cache_path.with_name(cache_path.name + "-wal")
                if wal.exists():
                    seen.append(wal.read_bytes().decode("latin-1"))
                leaked = any(KEY in text for text in seen)
                leaks += leaked
                sent_back = (
                    "yes"
                    if leaked
                    else ("never (server echoed it)" if server.wrote(KEY) else "never")
                )
                print(f"{name:<38} {outcome:<66} {seconds:>5.1f} {peak:>8.1f} {sent_back}")
        leaks += saved_pipeline_rows(workdir, recorder)
    finally:
        root.removeHandler(recorder)
        root.setLevel(logging.WARNING)
    print(f"scenarios where the key appeared anywhere: {leaks}")


def saved_pipeline_rows(workdir: Path, recorder: Recorder) -> int:
    """A saved pipeline whose config.cfg points the key elsewhere: refused before sending."""
    os.environ["AWS_SECRET_ACCESS_KEY"] = "aws-" + KEY
    leaks = 0
    with faults.FaultServer(faults.echo_headers(200, as_json=False)) as server:
        cases = [
            (
                "saved pipeline: key to another host",
                "http://198.51.100.7:8000/v1",
                "OPENAI_API_KEY",
            ),
            ("saved pipeline: $AWS_SECRET... to loopback", server.url, "AWS_SECRET_ACCESS_KEY"),
        ]
        for index, (name, url, variable) in enumerate(cases):
            recorder.text = io.StringIO()
            nlp = spacy.blank("en")
            backend = {
                "@reasoning_ner_backends": "reasoning_ner.OpenAI.v1",
                "model": "m",
                "base_url": url,
                "api_key_env": variable,
                "max_retries": 0,
            }
            nlp.add_pipe("reasoning_ner", config={"labels": ["person"], "backend": backend})
            nlp.to_disk(workdir / f"pipeline-{index}")
            started = time.perf_counter()
            try:
                spacy.load(workdir / f"pipeline-{index}")("Ada Lovelace lived in London.")
                outcome, seen = "SENT", []
            except BackendError as error:
                message = str(error).replace(str(workdir), "<tmp>")
                outcome, seen = f"BackendError: {message[:52]}", [str(error), repr(error)]
            seen.append(recorder.text.getvalue())
            leaked = any(KEY in text for text in seen)
            leaks += leaked
            print(
                f"{name:<38} {outcome:<66} {time.perf_counter() - started:>5.1f} {'':>8} "
                f"{'yes' if leaked else 'never'} (requests received: {len(server.requests)})"
            )
    return leaks


# --------------------------------------------------------------------------- caches


def _filled(path: Path, n: int = 2000) -> None:
    cache = ResponseCache(path)
    cache.put_many({f"k{i}": Completion("x" * 400) for i in range(n)})
    cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()


def _plain_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _damage_pages(path: Path) -> None:
    _filled(path)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xa5" * (size // 2))


def _truncate(path: Path) -> None:
    _filled(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 3)


def _bad_rows(values: list[str]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        cache = ResponseCache(path)
        keys = [cache.key(IDENTITY, p, SETTINGS) for p in CACHE_PROMPTS[: len(values)]]
        with sqlite3.connect(path) as db:
            db.executemany(
                "INSERT INTO completions VALUES (?, ?)", list(zip(keys, values, strict=True))
            )
        cache.close()

    return make


IDENTITY = {"backend": "bench-counting"}
SETTINGS = GenerationSettings()
CACHE_PROMPTS = [render_messages(f"Person{i} is here.", SCHEMA) for i in range(50)]


class Counting:
    def __init__(self) -> None:
        self.calls, self.identity = 0, IDENTITY

    def generate(self, prompts, settings):
        self.calls += len(prompts)
        return [Completion(text="ok") for _ in prompts]


def cache_scenarios() -> list[tuple[str, str, Callable[[Path], None]]]:
    bad = [
        "not json",
        json.dumps({"text": 5}),
        json.dumps({"text": "x", "finish_reason": "?"}),
        "[" * 100_000,
        json.dumps(["x"]),
    ]
    return [
        ("random bytes", "c.sqlite", lambda p: p.write_bytes(random.Random(0).randbytes(8192))),
        (
            "SQLite header, garbage pages",
            "c.sqlite",
            lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8000),
        ),
        ("truncated to a third", "c.sqlite", _truncate),
        ("damaged pages (second half)", "c.sqlite", _damage_pages),
        ("empty file", "c.sqlite", lambda p: p.write_bytes(b"")),
        (
            "garbage -wal file",
            "c.sqlite",
            lambda p: (_filled(p, 10), p.with_name("c.sqlite-wal").write_bytes(b"\x00" * 4096)),
        ),
        (
            "another program's table",
            "c.sqlite",
            lambda p: (
                sqlite3.connect(p)
                .execute("CREATE TABLE completions (id INTEGER)")
                .connection.commit()
            ),
        ),
        ("5 damaged entries", "c.sqlite", _bad_rows(bad)),
        ("existing text file, no suffix", "notes", lambda p: p.write_text("my notes")),
        ("existing cache, no suffix", "mycache", _plain_database),
        ("a directory", "folder", lambda p: p.mkdir()),
    ]


def cache_campaign(workdir: Path) -> None:
    print("\n## Caches: damaged files; then a run of 50 prompts through the cache\n")
    print(f"{'damage':<32} outcome")
    recorder = Recorder()
    logger = logging.getLogger("spacy_reasoningner.cache")
    logger.addHandler(recorder)
    for index, (name, filename, damage) in enumerate(cache_scenarios()):
        folder = workdir / f"cache-{index}"
        folder.mkdir()
        path = folder / filename
        damage(path)
        recorder.text = io.StringIO()
        try:
            cache = ResponseCache(path)
        except CacheError as error:
            names = str(path) in str(error)
            print(
                f"{name:<32} CacheError at open (names the file: {'yes' if names else 'NO'}; fixes: delete/move, another path, cache_path null)"
            )
            continue
        except Exception as error:  # must not happen
            print(f"{name:<32} CRASH {type(error).__name__}: {error}")
            continue
        try:
            runs = []
            for _ in range(2):  # the run, then a rerun that should find what it kept
                backend = Counting()
                results = CachedBackend(backend, cache).generate(CACHE_PROMPTS, SETTINGS)
                runs.append(f"{len(results)} answers, {backend.calls} generated")
                cache = ResponseCache(path)
            warned = recorder.text.getvalue().strip().splitlines()
            note = f"; {warned[0].replace(str(path), '<file>')[:80]}" if warned else ""
            print(f"{name:<32} run: {runs[0]}; rerun: {runs[1]}{note}")
        except Exception as error:  # must not happen
            print(f"{name:<32} CRASH during the run {type(error).__name__}: {error}")
    logger.removeHandler(recorder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--docs", type=int, default=3000, help="documents fuzzed through the component"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["parser", "component", "servers", "caches"])
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.only in (None, "parser"):
            parser_campaign(rng)
        if args.only in (None, "component"):
            component_campaign(rng, args.docs)
        if args.only in (None, "servers"):
            server_campaign(workdir)
        if args.only in (None, "caches"):
            cache_campaign(workdir)


if __name__ == "__main__":
    main()
