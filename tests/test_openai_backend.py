"""The OpenAI-compatible backend against scripted loopback servers (failure modes) and the cache.

Real servers (``vllm serve``) are exercised in ``test_vllm_serve.py``; here a small HTTP
server on 127.0.0.1 plays the failures that a real one cannot be made to show on demand:
500s, 429 with Retry-After, an answer that never comes, reasoning in a separate field.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import spacy

from spacy_reasoningner.backends import BackendError, GenerationSettings
from spacy_reasoningner.backends.openai import OpenAIBackend, OpenAIOptions
from spacy_reasoningner.cache import CachedBackend, ResponseCache
from spacy_reasoningner.grounded import schema_answer_grammar
from spacy_reasoningner.protocol import Schema, render_messages
from spacy_reasoningner.task import NERTask

from ._scripted_backend import prompt_text

SCHEMA = Schema.from_config(["person", "location"])

Handler = Callable[
    [dict, int], tuple[int, dict, dict]
]  # (request body, call number) -> status, json, headers


def chat_response(content: str, reasoning: str | None = None, finish: str = "stop") -> dict:
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "choices": [{"message": message, "finish_reason": finish}],
        "usage": {"completion_tokens": 7},
    }


class ScriptedServer:
    """An HTTP server on 127.0.0.1 answering /v1/chat/completions with ``handler``."""

    def __init__(self, handler: Handler, models: dict | None = None, show: dict | None = None):
        self.handler, self.calls, self.bodies, self.headers = handler, 0, [], []
        self.models, self.model_requests = models, 0  # the /v1/models answer (404 if None)
        self.show = show  # Ollama's /api/show answer (404 if None)
        lock = threading.Lock()
        outer = self

        class RequestHandler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.model_requests += 1
                if outer.models is None or self.path != "/v1/models":
                    self.send_error(404)
                    return
                data = json.dumps(outer.models).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/show":
                    outer.model_requests += 1
                    status, payload = (200, outer.show) if outer.show else (404, {})
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(json.dumps(payload))))
                    self.end_headers()
                    self.wfile.write(json.dumps(payload).encode())
                    return
                with lock:
                    outer.calls += 1
                    number = outer.calls
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers))
                status, payload, headers = outer.handler(body, number)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], ScriptedServer]]:
    servers = []

    def start(
        handler: Handler, models: dict | None = None, show: dict | None = None
    ) -> ScriptedServer:
        servers.append(ScriptedServer(handler, models, show))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def echo_answer(body: dict, number: int) -> tuple[int, dict, dict]:
    text = prompt_text(body["messages"])
    return (
        200,
        chat_response(json.dumps({"entities": {"person": [text.split()[0]]}}), reasoning="r"),
        {},
    )


def prompts(n: int):
    return [render_messages(f"Person{i} lives here.", SCHEMA) for i in range(n)]


def backend(url: str, **kwargs) -> OpenAIBackend:
    return OpenAIBackend(
        OpenAIOptions(model="test-model", base_url=url, **{"backoff": 0.01, "timeout": 5, **kwargs})
    )


def test_request_fields_and_reasoning_field(serve):
    server = serve(echo_answer)
    settings = GenerationSettings(
        max_new_tokens=33,
        temperature=0.5,
        stop=("END",),
        seed=1,
        chat_template_kwargs={"enable_thinking": False},
    )
    (completion,) = backend(server.url, extra_body={"top_k": 20}).generate(prompts(1), settings)
    body = server.bodies[0]
    assert body["model"] == "test-model" and body["max_tokens"] == 33
    assert (body["temperature"], body["stop"], body["seed"], body["top_k"]) == (0.5, ["END"], 1, 20)
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert completion.text == '{"entities": {"person": ["Person0"]}}'
    assert (completion.reasoning, completion.n_tokens, completion.finish_reason) == ("r", 7, "stop")


def test_length_finish_is_reported(serve):
    server = serve(lambda body, n: (200, chat_response("<think>long", finish="length"), {}))
    (completion,) = backend(server.url).generate(prompts(1), GenerationSettings())
    assert completion.truncated


def test_api_key_comes_from_the_named_environment_variable(serve, monkeypatch):
    server = serve(echo_answer)
    monkeypatch.setenv("MY_KEY", "sk-secret")
    client = backend(server.url, api_key_env="MY_KEY")
    client.generate(prompts(1), GenerationSettings())
    assert server.headers[0]["Authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in json.dumps(client.identity)
    monkeypatch.delenv("MY_KEY")
    client.generate(prompts(1), GenerationSettings())
    assert "Authorization" not in server.headers[1]


def test_requests_of_a_batch_run_concurrently_and_keep_their_order(serve):
    active, peak, lock = [0], [0], threading.Lock()

    def slow(body, number):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return echo_answer(body, number)

    server = serve(slow)
    completions = backend(server.url, max_concurrency=4).generate(prompts(8), GenerationSettings())
    assert [json.loads(c.text)["entities"]["person"] for c in completions] == [
        [f"Person{i}"] for i in range(8)
    ]
    assert peak[0] == 4


def test_500_then_recovery_is_retried(serve, caplog):
    server = serve(lambda body, n: (500, {"error": "busy"}, {}) if n <= 2 else echo_answer(body, n))
    (completion,) = backend(server.url).generate(prompts(1), GenerationSettings())
    assert "Person0" in completion.text and server.calls == 3
    assert "HTTP 500" in caplog.text and "retry 2/4" in caplog.text


def test_429_honours_retry_after(serve):
    server = serve(
        lambda body, n: (429, {}, {"Retry-After": "0.3"}) if n == 1 else echo_answer(body, n)
    )
    started = time.monotonic()
    backend(server.url).generate(prompts(1), GenerationSettings())
    assert time.monotonic() - started >= 0.3


def test_persistent_failure_is_a_clear_error(serve):
    server = serve(lambda body, n: (503, {"error": "down"}, {}))
    with pytest.raises(
        BackendError, match=r"server http://127\.0\.0\.1:\d+/v1 failed after 3 attempts: HTTP 503"
    ):
        backend(server.url, max_retries=2).generate(prompts(1), GenerationSettings())
    assert server.calls == 3


def test_client_errors_are_not_retried(serve):
    server = serve(lambda body, n: (400, {"error": "bad model"}, {}))
    with pytest.raises(BackendError, match=r"refused the request.*HTTP 400.*bad model"):
        backend(server.url).generate(prompts(1), GenerationSettings())
    assert server.calls == 1


def test_a_server_that_never_answers_times_out(serve):
    server = serve(lambda body, n: (time.sleep(3), echo_answer(body, n))[1])
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"no complete answer within 0\.5 s"):
        backend(server.url, timeout=0.5, max_retries=1).generate(prompts(1), GenerationSettings())
    assert time.monotonic() - started < 2.5


def test_nothing_listening_is_a_connection_error():
    with pytest.raises(BackendError, match="failed after 2 attempts: ConnectError"):
        backend("http://127.0.0.1:9/v1", max_retries=1).generate(prompts(1), GenerationSettings())


def test_partial_failure_carries_the_finished_completions(serve):
    server = serve(
        lambda body, n: (400, {}, {}) if "Person3" in json.dumps(body) else echo_answer(body, n)
    )
    with pytest.raises(BackendError) as failure:
        backend(server.url, max_concurrency=1).generate(prompts(6), GenerationSettings())
    completed = failure.value.completed
    # 0-2 finished before the failure; no request is sent after it (one at a time: none in
    # flight), however late the call sees the failure (a loaded machine).
    assert set(completed) == {0, 1, 2}
    assert server.calls == 4
    assert all(f"Person{i}" in c.text for i, c in completed.items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": ""}, "backend.model is empty"),
        ({"model": "m", "base_url": "127.0.0.1:8000"}, "must start with http"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OpenAIOptions(**kwargs)


# --------------------------------------------------------------------------- with the component and the cache


def test_component_with_server_cache_and_resume(serve, tmp_path, monkeypatch):
    """A run that dies mid-batch leaves no Doc half-annotated; the rerun resumes from the cache;
    the API key reaches the server but neither the saved pipeline nor the cache."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    failing = {"on": True}

    def flaky(body, number):
        if failing["on"] and "Person4" in json.dumps(body):
            return 400, {"error": "boom"}, {}
        return echo_answer(body, number)

    server = serve(flaky)
    config = {
        "labels": ["person", "location"],
        "backend": {
            "@reasoning_ner_backends": "reasoning_ner.OpenAI.v1",
            "model": "m",
            "base_url": server.url,
            "max_concurrency": 1,
        },
        "cache_path": str(tmp_path / "cache"),
    }
    nlp = spacy.blank("en")
    nlp.add_pipe("reasoning_ner", config=config)
    texts = [f"Person{i} lives here." for i in range(8)]
    docs = [nlp.make_doc(t) for t in texts]
    with pytest.raises(BackendError):
        list(nlp.get_pipe("reasoning_ner").pipe(docs, batch_size=8))
    assert all(d.ents == () for d in docs)  # nothing half-annotated
    finished = len(nlp.get_pipe("reasoning_ner").cache)
    assert finished >= 4  # Person0..3, and any request that was in flight when Person4 failed
    calls_before = server.calls
    failing["on"] = False
    results = list(nlp.pipe(texts, batch_size=8))
    assert [d.ents[0].text for d in results] == [f"Person{i}" for i in range(8)]
    assert server.calls - calls_before == 8 - finished  # only what the failed run did not finish
    again = spacy.blank("en")
    again.add_pipe("reasoning_ner", config=config)
    list(again.pipe(texts))
    assert server.calls - calls_before == 8 - finished  # a second pipeline reads the same cache
    assert server.headers[-1]["Authorization"] == "Bearer sk-test-secret"
    nlp.to_disk(tmp_path / "pipeline")
    for path in [*(tmp_path / "pipeline").rglob("*"), *(tmp_path / "cache").rglob("*")]:
        assert not path.is_file() or b"sk-test-secret" not in path.read_bytes()


def test_cache_key_changes_with_model_prompt_and_settings(tmp_path):
    cache = ResponseCache(tmp_path)
    base = ResponseCache.key({"model": "a"}, prompts(1)[0], GenerationSettings())
    assert base == ResponseCache.key({"model": "a"}, prompts(1)[0], GenerationSettings())
    assert base != ResponseCache.key({"model": "b"}, prompts(1)[0], GenerationSettings())
    assert base != ResponseCache.key({"model": "a"}, prompts(2)[1], GenerationSettings())
    assert base != ResponseCache.key(
        {"model": "a"}, prompts(1)[0], GenerationSettings(max_new_tokens=9)
    )
    assert len(cache) == 0


def test_cache_is_shared_by_two_processes_at_once(tmp_path):
    writer = (
        "import sys\n"
        "from spacy_reasoningner.backends import Completion\n"
        "from spacy_reasoningner.cache import ResponseCache\n"
        "cache = ResponseCache(sys.argv[1])\n"
        "for i in range(200):\n"
        "    cache.put_many({f'{sys.argv[2]}-{i}': Completion(text=str(i))})\n"
        "    assert cache.get_many([f'{sys.argv[2]}-{i}'])\n"
    )
    path = str(tmp_path / "shared.sqlite")
    workers = [subprocess.Popen([sys.executable, "-c", writer, path, name]) for name in "ab"]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    cache = ResponseCache(path)
    assert len(cache) == 400
    assert cache.get_many(["b-199"])["b-199"].text == "199"


def test_cache_needs_a_backend_identity(tmp_path):
    class Anonymous:
        def generate(self, prompts, settings):
            return []

    with pytest.raises(ValueError, match="has no 'identity' property"):
        CachedBackend(Anonymous(), ResponseCache(tmp_path))


# --------------------------------------------------------------------------- structured output

TASK = NERTask(SCHEMA)


def answer_after_think(body: dict, number: int) -> tuple[int, dict, dict]:
    """A model that reasons until stopped at </think>, then answers; token counts in usage."""
    if body.get("continue_final_message"):
        content = '{"entities": {"person": ["Ada"]}}'
    elif "</think>" in body.get("stop", []):
        content = "<think>Ada is a person."
    else:
        content = '<think>free</think>{"entities": {}}'
    payload = chat_response(content)
    payload["usage"] = {
        "prompt_tokens": 100 * number,
        "completion_tokens": number,
        # the second request finds the first's prompt in the server's prefix cache
        "prompt_tokens_details": {"cached_tokens": 90 * (number - 1)},
    }
    return 200, payload, {}


def test_constrained_answer_without_reasoning_is_one_response_format_request(serve):
    server = serve(answer_after_think)
    client = backend(server.url, structured_output=True, answer_max_tokens=64)
    task = replace(TASK, reasoning=False)
    (completion,) = client.generate_constrained(
        task.requests(["Ada came."]), GenerationSettings(), reasoning=False
    )
    [body] = server.bodies
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "entities", "schema": TASK.answer_schema(""), "strict": True},
    }
    assert body["max_tokens"] == 64 and "continue_final_message" not in body
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert completion.seconds is not None and completion.prompt_tokens == 100


def test_constrained_answer_with_reasoning_continues_the_think_block(serve):
    server = serve(answer_after_think)
    client = backend(server.url, structured_output=True)
    (completion,) = client.generate_constrained(
        TASK.requests(["Ada came."]), GenerationSettings(max_new_tokens=50), reasoning=True
    )
    free, answer = server.bodies
    assert free["stop"] == ["</think>", "\n</"] and "response_format" not in free
    assert free["max_tokens"] == 50
    head = "<think>\nAda is a person.\n</think>\n"
    assert answer["messages"][-1] == {"role": "assistant", "content": head}
    assert answer["continue_final_message"] is True and answer["add_generation_prompt"] is False
    assert answer["response_format"]["json_schema"]["schema"] == TASK.answer_schema("")
    # The two passes come back apart: the answer as text, the thought as reasoning.
    assert completion.text == '{"entities": {"person": ["Ada"]}}'
    assert completion.reasoning == "Ada is a person."
    assert (completion.n_tokens, completion.prompt_tokens) == (1 + 2, 100 + 200)
    assert completion.cached_prompt_tokens == 0 + 90  # both passes, as the server counted
    assert TASK.parse(completion).entities == {"person": ["Ada"]}


def refusing(*ways: str, status: int = 400, message: str = "not supported"):
    """A handler refusing the answer constraint sent ``ways`` (names of the ladder) with
    ``status`` and a body naming the field (``message`` after it), answering the rest."""

    def handler(body, number):
        format_type = body.get("response_format", {}).get("type")
        way = format_type or ("grammar" if "grammar" in body else None)
        if way in ways:
            field = "grammar" if way == "grammar" else "response_format"
            return status, {"error": f"{field}: {message}"}, {}
        return answer_after_think(body, number)

    return handler


def constrained_batch(client: OpenAIBackend, texts: list[str], reasoning: bool = False):
    task = replace(TASK, reasoning=reasoning)
    return client.generate_constrained(
        task.requests(texts), GenerationSettings(), reasoning=reasoning
    )


def test_a_500_naming_response_format_moves_down_the_ladder_not_retried(serve, caplog):
    # llama-cpp-python's server: 500 for a json_schema response_format, json_object taken.
    message = "response_format.type: Input should be 'text' or 'json_object'"
    server = serve(refusing("json_schema", status=500, message=message))
    client = backend(server.url, structured_output=True, max_retries=4)
    assert client.constraint == "json_schema"
    for _ in range(2):
        completions = constrained_batch(client, ["Ada came.", "Bo came."])
        assert [c.constraint for c in completions] == ["json_object"] * 2
        assert [c.text for c in completions] == ['<think>free</think>{"entities": {}}'] * 2
    kinds = [b["response_format"]["type"] for b in server.bodies]
    assert 1 <= kinds.count("json_schema") <= 2  # the requests in flight, never retried
    assert kinds.count("json_object") == 4
    json_object = next(b for b in server.bodies if b["response_format"]["type"] == "json_object")
    assert json_object["response_format"]["schema"] == TASK.answer_schema("")
    assert client.constraint == "json_object"
    assert caplog.text.count("takes constrained answers as json_object") == 1
    assert message in caplog.text and "retry" not in caplog.text


def test_a_500_that_does_not_name_the_constraint_is_retried(serve):
    def flaky(body, number):
        return (500, {"error": "busy"}, {}) if number == 1 else answer_after_think(body, number)

    server = serve(flaky)
    client = backend(server.url, structured_output=True)
    (completion,) = constrained_batch(client, ["Ada came."])
    assert completion.constraint == "json_schema" and server.calls == 2


def test_a_server_taking_only_a_grammar_gets_the_schemas_or_the_grounded_one(serve, caplog):
    server = serve(refusing("json_schema", "json_object", status=422))
    client = backend(server.url, structured_output=True)
    free = replace(TASK, grounded=False, reasoning=False)
    (completion,) = client.generate_constrained(
        free.requests(["Ada came."]), GenerationSettings(), reasoning=False
    )
    assert completion.constraint == "grammar"
    assert server.bodies[-1]["grammar"] == schema_answer_grammar(TASK.answer_schema(""))
    assert "response_format" not in server.bodies[-1]
    constrained_batch(client, ["Ada came."])  # grounded answers, the default
    assert server.bodies[-1]["grammar"] == TASK.answer_grammar("Ada came.")
    assert len(server.bodies) == 2 + 1 + 1  # each refused way asked once, then the grammar
    assert caplog.text.count("takes constrained answers as grammar") == 1


def test_a_server_refusing_every_constraint_is_warned_about_once(serve, caplog):
    server = serve(refusing("json_schema", "json_object", "grammar"))
    client = backend(server.url, structured_output=True)
    for reasoning in (False, True):
        for completion in constrained_batch(client, ["Ada came.", "Bo came."], reasoning):
            assert completion.constraint is None
            assert completion.text == '<think>free</think>{"entities": {}}'
    assert caplog.text.count("refused constrained answers every way") == 1
    assert "response_format: not supported" in caplog.text
    assert "grammar: not supported" in caplog.text
    assert not client.constrained and client.constraint is None
    assert client.probe_constraint() is None
    # Each way refused at most once per request in flight (2), then plain requests only.
    constrained = [b for b in server.bodies if "response_format" in b or "grammar" in b]
    assert 3 <= len(constrained) <= 6
    assert all("response_format" not in b and "grammar" not in b for b in server.bodies[-2:])


def test_the_probe_walks_the_ladder_once(serve):
    server = serve(refusing("json_schema", status=500, message="unknown type"))
    client = backend(server.url, structured_output=True)
    assert client.probe_constraint() == "json_object"
    assert client.probe_constraint() == "json_object"
    assert [b["response_format"]["type"] for b in server.bodies] == [
        "json_schema",
        "json_object",
        "json_object",
    ]
    assert server.bodies[0]["max_tokens"] == 8


def test_auto_reads_the_model_size_from_the_servers_model_folder(serve, tiny_model_dir):
    entry = {"id": "test-model", "root": str(tiny_model_dir)}
    small = serve(answer_after_think, models={"data": [entry]})
    assert backend(small.url).constrained  # a tiny model: constrained, as in process
    elsewhere = serve(answer_after_think, models={"data": [{**entry, "root": "/no/such"}]})
    assert not backend(elsewhere.url).constrained  # size unknown: free, as in process
    assert not backend(serve(answer_after_think).url).constrained  # no /v1/models
    off = serve(answer_after_think, models={"data": [entry]})
    assert not backend(off.url, structured_output=False).constrained
    assert off.model_requests == 0


def test_auto_reads_the_size_llama_cpp_and_ollama_report(serve, caplog):
    def llama_cpp(n_params: int) -> dict:
        return {"data": [{"id": "test-model", "meta": {"n_params": n_params, "n_vocab": 9}}]}

    assert backend(serve(answer_after_think, models=llama_cpp(135_000_000)).url).constrained
    assert not backend(serve(answer_after_think, models=llama_cpp(8_000_000_000)).url).constrained
    ollama = {"model_info": {"general.parameter_count": 494_032_768}}
    assert backend(serve(answer_after_think, show=ollama).url).constrained
    assert "does not report" not in caplog.text
    unknown = backend(serve(answer_after_think, models={"data": [{"id": "test-model"}]}).url)
    assert not unknown.constrained and not unknown.constrained  # asked once, noted once
    assert caplog.text.count("does not report the size of 'test-model'") == 1
    assert "set structured_output = true" in caplog.text


def test_the_backend_pickles_before_and_after_use(serve):
    server = serve(echo_answer)
    client = backend(server.url)
    copy = pickle.loads(pickle.dumps(client))
    client.generate(prompts(1), GenerationSettings())
    again = pickle.loads(pickle.dumps(client))
    for other in (copy, again):
        (completion,) = other.generate(prompts(1), GenerationSettings())
        assert completion.text == '{"entities": {"person": ["Person0"]}}'


def test_each_prompt_of_a_call_gets_its_own_seed(serve):
    """Repeats of a prompt (samples to vote on) must not share a seed."""
    server = serve(echo_answer)
    backend(server.url).generate(prompts(1) * 3, GenerationSettings(temperature=0.7, seed=5))
    assert sorted(b["seed"] for b in server.bodies) == [5, 6, 7]


# --------------------------------------------------------------------------- settings


def served_component(url: str, **backend_settings):
    nlp = spacy.blank("en")
    backend_config = {
        "@reasoning_ner_backends": "reasoning_ner.OpenAI.v1",
        "base_url": url,
        "model": "test-model",
        "structured_output": False,
        **backend_settings,
    }
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person", "location"],
            "backend": backend_config,
            "reasoning": False,  # so that the chat template gets enable_thinking=False
        },
    )
    return nlp


@pytest.mark.parametrize("send", [True, False])
def test_send_chat_template_kwargs_can_be_turned_off(serve, send):
    server = serve(echo_answer)
    served_component(server.url, send_chat_template_kwargs=send)("Ada came.")
    [body] = server.bodies
    assert ("chat_template_kwargs" in body) == send
    if send:
        assert body["chat_template_kwargs"] == {"enable_thinking": False}


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_in_a_separate_field_reaches_the_doc(serve, field):
    def separate(body, number):
        message = {"content": '{"entities": {"person": ["Ada"]}}', field: "Ada is a person."}
        return 200, {"choices": [{"message": message, "finish_reason": "stop"}]}, {}

    doc = served_component(serve(separate).url)("Ada came.")
    assert doc._.ner_reasoning == "Ada is a person."
    assert [(e.text, e.label_) for e in doc.ents] == [("Ada", "person")]
