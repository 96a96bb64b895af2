"""The OpenAI-compatible backend against servers that misbehave at the byte level (real
sockets on 127.0.0.1): drips, endless and compressed bodies, echoed keys, bad headers and
bodies. Every failure is a retry, a clear ``BackendError`` or a deadline, and the API key
shows up in nothing the backend raises, logs or returns."""

from __future__ import annotations

import gzip
import json
import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from spacy_reasoningner.backends import BackendError, GenerationSettings
from spacy_reasoningner.backends.http import retry_after
from spacy_reasoningner.backends.openai import OpenAIBackend, OpenAIOptions
from spacy_reasoningner.protocol import Schema, render_messages

from ._faults import (
    FaultServer,
    Scenario,
    answer,
    chat_payload,
    echo_headers,
    endless_chunked,
    failing_first,
    gzip_bomb,
    non_json,
    slow_drip,
)

KEY = "sk-test-4f9d2c7e1b"
PROMPTS = [render_messages("Ada lives here.", Schema.from_config(["person"]))]


@pytest.fixture
def serve() -> Iterator[Callable[[Scenario], FaultServer]]:
    servers: list[FaultServer] = []

    def start(scenario: Scenario) -> FaultServer:
        servers.append(FaultServer(scenario))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def run(server: FaultServer, **kwargs):
    settings = {"timeout": 5, "max_retries": 0, "backoff": 0.01, **kwargs}
    backend = OpenAIBackend(OpenAIOptions(model="m", base_url=server.url, **settings))
    return backend.generate(PROMPTS, GenerationSettings())


@pytest.mark.parametrize("headers_too", [False, True])
def test_a_dripping_server_meets_the_deadline(serve, headers_too):
    server = serve(slow_drip(seconds_per_byte=0.05, headers_too=headers_too))  # ~8 s in all
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"no complete answer within 1 s"):
        run(server, timeout=1)
    assert time.monotonic() - started < 2.0  # per-read timeouts alone let it run 8 s


@pytest.mark.parametrize(
    "scenario",
    [endless_chunked(), gzip_bomb(inflated_bytes=256 * 2**20)],  # the bomb: 250 KB on the wire
    ids=["endless chunked body", "gzip bomb"],
)
def test_an_oversized_answer_stops_at_the_size_limit(serve, scenario):
    server = serve(scenario)
    tracemalloc.start()
    with pytest.raises(BackendError, match=r"larger than max_response_bytes=1048576"):
        run(server, max_response_bytes=2**20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20  # unbounded: 2.4 GB in 20 s, and 345 MB for a 298 KB bomb


def test_compressed_answers_are_read(serve):
    body = gzip.compress(json.dumps(chat_payload('{"entities": {"person": ["Ada"]}}')).encode())
    server = serve(lambda request, reply: reply.full(200, body, {"Content-Encoding": "gzip"}))
    (completion,) = run(server)
    assert completion.text == '{"entities": {"person": ["Ada"]}}'
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("scenario", "retries"),
    [
        (echo_headers(400), 0),  # in the error
        (echo_headers(500), 2),  # in the retry warnings and the final error
        (echo_headers(400, as_json=False), 0),
        (non_json(200, b"Authorization: Bearer " + KEY.encode()), 0),
        (answer(f"here is your key {KEY}"), 0),  # in the answer itself
    ],
)
def test_the_key_never_leaves_through_errors_logs_or_answers(serve, caplog, scenario, retries):
    server = serve(scenario)
    caplog.set_level(logging.DEBUG)
    seen = []
    try:
        seen += [c.text for c in run(server, max_retries=retries)]
    except BackendError as error:
        seen += [str(error), repr(error), str(error.__cause__), str(error.__context__)]
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert server.wrote(KEY)  # the server did send it back
    assert seen and not any(KEY in text for text in seen)
    assert KEY not in caplog.text


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_unusable_retry_after_values_still_retry(serve, value):
    server = serve(failing_first(1, 429, {"Retry-After": value}))
    started = time.monotonic()
    (completion,) = run(server, max_retries=2)
    assert completion.text == '{"entities": {}}' and len(server.requests) == 2
    assert time.monotonic() - started < 2.0


def test_retry_after_is_clamped():
    assert retry_after("nan") is None and retry_after("-5") == 0.0
    assert retry_after("100000") == 30.0 and retry_after("2") == 2.0


def test_5xx_then_ok_is_retried(serve):
    server = serve(failing_first(2, 502))
    (completion,) = run(server, max_retries=3)
    assert completion.text == '{"entities": {}}' and len(server.requests) == 3


@pytest.mark.parametrize("content", [5, True, ["a"], {"text": "a"}])
def test_non_string_content_is_a_clear_error(serve, content):
    server = serve(answer(content))
    kind = type(content).__name__
    with pytest.raises(BackendError, match=rf"server {server.url} answered with message content of type {kind}, not text"):  # fmt: skip
        run(server)


def test_a_200_that_is_not_json_names_the_server(serve):
    server = serve(non_json(200))
    with pytest.raises(BackendError, match=rf"server {server.url} answered 200 with a body that is not JSON: <html>"):  # fmt: skip
        run(server)


def test_a_200_without_choices_names_the_server(serve):
    server = serve(lambda request, reply: reply.json(200, {"choices": []}))
    with pytest.raises(BackendError, match=rf"server {server.url} answered without choices"):
        run(server)


def test_an_unsupported_content_encoding_is_an_error(serve):
    server = serve(lambda request, reply: reply.full(200, b"xx", {"Content-Encoding": "br"}))
    with pytest.raises(BackendError, match="unsupported Content-Encoding 'br'"):
        run(server)


def test_a_key_that_cannot_be_a_header_is_refused_without_being_shown(serve, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-\u2019bad")
    server = serve(answer())
    with pytest.raises(BackendError, match=r"API key in \$OPENAI_API_KEY holds characters") as e:
        run(server)
    assert "bad" not in str(e.value) and not server.requests


def test_a_cut_compressed_body_is_an_error(serve):
    body = gzip.compress(json.dumps(chat_payload()).encode())[:-12]
    server = serve(lambda request, reply: reply.full(200, body, {"Content-Encoding": "gzip"}))
    with pytest.raises(BackendError, match="compressed body ends before the end of its stream"):
        run(server)


def sse(*chunks: dict, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + (["data: [DONE]\n\n"] if done else [])
    return "".join(lines).encode()


def delta(finish: str | None = None, **fields: str) -> dict:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"delta": fields, "finish_reason": finish}],
    }


def test_a_stream_not_asked_for_is_joined_into_its_answer(serve):
    body = sse(
        delta(role="assistant", reasoning_content="Ada is "),
        delta(reasoning_content="a person.", content='{"entities": '),
        delta("stop", content='{"person": ["Ada"]}}'),
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 9}},
    )
    server = serve(
        lambda request, reply: reply.full(200, body, {"Content-Type": "text/event-stream"})
    )
    (completion,) = run(server)
    assert completion.text == '{"entities": {"person": ["Ada"]}}'
    assert completion.reasoning == "Ada is a person."
    assert (completion.finish_reason, completion.prompt_tokens, completion.n_tokens) == (
        "stop",
        11,
        9,
    )
    assert "stream" not in server.requests[0].body  # nothing asked it to


def test_a_stream_that_never_finishes_is_an_error_not_an_empty_answer(serve):
    body = sse(delta(content='{"entities": {"pers'), done=False)
    server = serve(
        lambda request, reply: reply.full(200, body, {"Content-Type": "text/event-stream"})
    )
    with pytest.raises(BackendError, match=rf"server {server.url} streamed an answer \(not asked to\) that never finished: data:"):  # fmt: skip
        run(server)


def test_an_answer_as_another_model_is_warned_about_once(serve, caplog):
    def as_model(name: str) -> Scenario:
        return lambda request, reply: reply.json(200, {**chat_payload(), "model": name})

    backend = OpenAIBackend(
        OpenAIOptions(model="m-large", base_url=serve(as_model("other")).url, timeout=5)
    )
    for _ in range(2):
        (completion,) = backend.generate(PROMPTS, GenerationSettings())
        assert completion.text == '{"entities": {}}'  # a working answer
    assert caplog.text.count("answered as model 'other', not 'm-large' as configured") == 1
    dated = OpenAIBackend(
        OpenAIOptions(model="m-large", base_url=serve(as_model("m-large-2026-01")).url)
    )
    dated.generate(PROMPTS, GenerationSettings())
    assert "m-large-2026-01" not in caplog.text


def test_an_older_api_without_models_or_usage_still_answers(serve, caplog):
    no_usage = {"choices": [{"message": {"content": '{"entities": {}}'}, "finish_reason": "stop"}]}
    server = serve(lambda request, reply: reply.json(200, no_usage))
    backend = OpenAIBackend(OpenAIOptions(model="m", base_url=server.url, timeout=5))
    assert not backend.constrained  # "auto" without /v1/models: unconstrained, and said
    assert "does not report the size of 'm'" in caplog.text
    (completion,) = backend.generate(PROMPTS, GenerationSettings())
    assert completion.text == '{"entities": {}}' and completion.n_tokens is None
