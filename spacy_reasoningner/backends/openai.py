"""OpenAI-compatible chat completions backend: vLLM serve, llama.cpp server, Ollama, hosted APIs.

Requests of a batch run concurrently (bounded), each retried with exponential backoff on
connection errors, timeouts, 429 and 5xx. Every attempt has a hard deadline (``timeout``
seconds from its start, however slowly a server drips its bytes) and a size limit on the
decoded answer (compressed bodies are inflated here, a bounded amount at a time). Answers
are checked before they are returned (and so before any cache keeps them).

The API key is read from a named environment variable at request time: it is never stored
on the backend, in a saved pipeline or a cache key, and never logged; it and any ``Bearer``
token are removed from everything the backend raises or logs (servers may echo headers). A
pipeline loaded from disk sends it only where ``trust`` allows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from ..grounded import schema_answer_grammar
from ..models import ModelSource, parameter_count
from ..protocol import (
    ChatMessages,
    Schema,
    answer_json_schema,
    template_kwargs,
)
from ..registry import register_backend
from ..trust import SavedPipeline, key_destination_problem
from .base import (
    AnswerShape,
    BackendError,
    Completion,
    ConstrainableBackend,
    GenerationSettings,
    Request,
)
from .http import (
    DEADLINE,
    MAX_BACKOFF_SECONDS,
    RETRY_STATUS,
    BodyReader,
    enforce_deadlines,
    excerpt,
    redact,
    redact_key,
    retry_after,
)
from .structured import AnswerOptions, auto_constrains
from .two_pass import answer_settings, joined, reasoning_settings, think_head, thought

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Ways to send the answer constraint, from the most widely taken: a JSON Schema through
# response_format (vLLM, llama.cpp's llama-server, Ollama, OpenAI), json_object with the
# schema (llama-cpp-python's server), a grammar (llama.cpp's GBNF). Each with the request
# field a server names when it refuses it.
CONSTRAINT_LADDER: tuple[tuple[str, str], ...] = (
    ("json_schema", "response_format"),
    ("json_object", "response_format"),
    ("grammar", "grammar"),
)


@dataclass(frozen=True, kw_only=True)
class OpenAIOptions(AnswerOptions):
    """A server speaking the OpenAI chat completions API (``reasoning_ner.OpenAI.v1``).

    model: the served model name (what ``vllm serve``, Ollama or the provider calls it).
    base_url: the API root, ending in /v1.
    api_key_env: environment variable holding the API key; unset or empty sends no key.
    timeout: seconds per request attempt, from connecting to the last byte of the answer
        (reasoning chains are long: be generous).
    max_concurrency: requests in flight at once.
    max_retries: retries per request after connection errors, timeouts, 429 and 5xx.
    backoff: first retry delay in seconds, doubled on each retry (plus jitter).
    max_response_bytes: largest answer accepted (after decompression).
    send_chat_template_kwargs: send generation.chat_template_kwargs (vLLM reads them, e.g.
        enable_thinking for Qwen3); turn off for servers that reject unknown fields.
    extra_body: extra request fields, e.g. {"top_k": 20} or a provider's reasoning options.
    structured_output: constrain the JSON answer to its schema, the rule of every backend
        (``structured``): "auto" constrains models below 4B parameters, the size read from
        what the server reports (the model folder vLLM names in /v1/models on this machine,
        llama.cpp's ``meta.n_params`` there, Ollama's /api/show). With reasoning, the model
        first reasons freely up to ``</think>``, then the answer continues that assistant
        message under the constraint (``continue_final_message``). The constraint is sent
        the first way of ``CONSTRAINT_LADDER`` the server takes: a refusal (a 4xx, or a 5xx
        naming the field) moves down the ladder, decided once per server and logged once;
        a server that takes none is asked without a constraint.
    answer_max_tokens: token budget of the constrained answer.
    """

    model: str
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 300.0
    max_concurrency: int = 8
    max_retries: int = 4
    backoff: float = 1.0
    max_response_bytes: int = 16 * 2**20
    send_chat_template_kwargs: bool = True
    extra_body: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ValueError("backend.model is empty: set it to the model name the server serves")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"backend.base_url {self.base_url!r} must start with http:// or https://"
            )
        if self.max_concurrency < 1 or self.max_retries < 0 or self.backoff < 0:
            raise ValueError("backend needs max_concurrency >= 1, max_retries >= 0, backoff >= 0")
        if not (0 < self.timeout < math.inf) or self.max_response_bytes < 1:
            raise ValueError(
                "backend needs a finite timeout > 0 (seconds per request) and "
                "max_response_bytes >= 1"
            )
        # Frozen: the normal forms are set once, here.
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "timeout", float(self.timeout))


@register_backend("reasoning_ner.OpenAI.v1", OpenAIOptions)
class OpenAIBackend(ConstrainableBackend):
    """A server speaking the OpenAI chat completions API (see ``OpenAIOptions``)."""

    def __init__(self, options: OpenAIOptions):
        self.options = options
        self.extra_body = dict(options.extra_body or {})
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._constrained: bool | None = None  # "auto" resolved on first use
        self._rung = 0  # the way of CONSTRAINT_LADDER tried next; past its end: none
        self._refusals: list[str] = []  # why the server refused the ways above the rung
        self._ladder_logged = False
        self._other_model_warned = False
        self._key_refused: str | None = None  # why a saved pipeline may not send the key

    def __getstate__(self) -> dict[str, Any]:
        # Connections and locks stay with the process; a copy opens its own.
        state = dict(self.__dict__)
        state.update(_client=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def check_saved_settings(self, saved: SavedPipeline) -> None:
        """A saved pipeline sends the key only where the user allows (``trust``)."""
        self._key_refused = key_destination_problem(
            self.options.api_key_env, self.options.base_url, saved
        )

    @property
    def identity(self) -> dict[str, Any]:
        """What determines the answers (for caches); no credentials."""
        return {
            "backend": "openai",
            "base_url": self.options.base_url,
            "model": self.options.model,
            "extra_body": self.extra_body,
            "structured_output": self.options.structured_output,
            "answer_max_tokens": self.options.answer_max_tokens,
        }

    @property
    def constrained(self) -> bool:
        """Whether answers are constrained: the option, "auto" resolved against the model
        size the server reports (unknown: off), and off once the server refused every way
        of sending the constraint."""
        if self._rung >= len(CONSTRAINT_LADDER):
            return False
        if self._constrained is None:
            if self.options.structured_output != "auto":
                self._constrained = bool(self.options.structured_output)
            else:
                count = self.served_parameters()
                self._constrained = auto_constrains(count)
                if count is None:
                    logger.warning(
                        "%s does not report the size of %r: its answers are unconstrained; "
                        "set structured_output = true to constrain them",
                        self.options.base_url,
                        self.options.model,
                    )
        return self._constrained

    @property
    def refusals(self) -> list[str]:
        """Why the server refused the ways of the ladder above the one it takes."""
        return list(self._refusals)

    @property
    def constraint(self) -> str | None:
        """The way answers are constrained now (a name of ``CONSTRAINT_LADDER``), or None."""
        return CONSTRAINT_LADDER[self._rung][0] if self.constrained else None

    def served_parameters(self) -> int | None:
        """Parameters of the served model as the server reports them: the local folder a
        server on this machine names (vLLM's /v1/models ``root``), llama.cpp's
        ``meta.n_params`` in /v1/models, or Ollama's /api/show; None when none says."""
        entries = self._get_json("/models", None)
        entries = entries.get("data") if isinstance(entries, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or entry.get("id") != self.options.model:
                continue
            meta = entry.get("meta")
            if isinstance(meta, dict) and _count(meta.get("n_params")):
                return meta["n_params"]
            root = entry.get("root")
            local = urlparse(self.options.base_url).hostname in LOOPBACK_HOSTS
            if local and isinstance(root, str) and Path(root).is_dir():
                return parameter_count(ModelSource(root))
        # Ollama's native API sits beside its /v1.
        show = self._get_json("/api/show", {"model": self.options.model}, root=True)
        info = show.get("model_info") if isinstance(show, dict) else None
        count = info.get("general.parameter_count") if isinstance(info, dict) else None
        return _count(count) or None

    def _get_json(self, route: str, body: dict[str, Any] | None, root: bool = False) -> Any:
        """The JSON of one answer to ``route`` (a GET, or a POST of ``body``) under the API
        root (``root``: under the server's root), or None on any failure: for probes."""
        base = self.options.base_url.removesuffix("/v1") if root else self.options.base_url
        try:
            status, content, _ = self._exchange(base + route, body, self._headers())
            return json.loads(content) if status == 200 else None
        except (httpx.HTTPError, BackendError, ValueError, RecursionError) as error:
            logger.info("%s%s: %s", base, route, error)
            return None

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=self.options.max_concurrency)
                transport = httpx.HTTPTransport(limits=limits)
                enforce_deadlines(transport)
                self._client = httpx.Client(timeout=self.options.timeout, transport=transport)
            return self._client

    def generate_constrained(
        self, requests: Sequence[Request], settings: GenerationSettings, *, reasoning: bool
    ) -> list[Completion]:
        """All completions of the batch, or a ``BackendError`` carrying the ones that finished.
        Without reasoning the server's chat template gets ``enable_thinking=False``."""
        results: dict[int, Completion] = {}
        template = template_kwargs(settings.chat_template_kwargs, reasoning=reasoning)
        # Asked only when an answer has a shape: "auto" may ask the server for the model size.
        constrained = any(r.answer is not None for r in requests) and self.constrained
        failed = threading.Event()

        def complete(i: int, request: Request) -> Completion | None:
            if failed.is_set():  # the batch failed: send no new request (None: not sent)
                return None
            answer = request.answer if constrained else None
            try:
                return self._complete(
                    request.messages, settings.at_position(i), template, answer, reasoning
                )
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(
            max_workers=min(self.options.max_concurrency, max(len(requests), 1))
        ) as pool:
            futures = {pool.submit(complete, i, r): i for i, r in enumerate(requests)}
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failure = next((f.exception() for f in done if f.exception()), None)
            if failure is not None:
                for future in pending:
                    future.cancel()
                done, _ = wait(pending)  # let requests already in flight finish
            for future in futures:
                finished = future.done() and not future.cancelled() and not future.exception()
                if finished and (completion := future.result()) is not None:
                    results[futures[future]] = completion
        if isinstance(failure, BackendError):
            raise BackendError(str(failure), completed=results) from failure
        if failure is not None:  # not ours: its message may quote a header, so no chaining
            message = redact(f"{type(failure).__name__}: {failure}", self._api_key())
            raise BackendError(
                f"request to {self.options.base_url} failed: {message}", completed=results
            )
        return [results[i] for i in range(len(requests))]

    def _complete(
        self,
        messages: ChatMessages,
        settings: GenerationSettings,
        template: dict[str, Any],
        answer: AnswerShape | None,
        reasoning: bool,
    ) -> Completion:
        """One prompt's completion, timed; constrained to ``answer`` (its schema, or its
        grammar for the ladder's grammar rung) when there is one and the server takes a way
        to send it."""
        started = time.perf_counter()
        completion = None
        if answer is not None and self.constrained:
            completion = self._complete_constrained(messages, settings, template, answer, reasoning)
        if completion is None:
            completion = self._request(self._body(messages, settings, template))
        return replace(completion, seconds=time.perf_counter() - started)

    def _complete_constrained(
        self,
        messages: ChatMessages,
        settings: GenerationSettings,
        template: dict[str, Any],
        shape: AnswerShape,
        reasoning: bool,
    ) -> Completion | None:
        """Free reasoning up to ``</think>`` (when asked for), then the answer under the
        constraint, continuing the assistant message that holds the closed think block;
        None when the server refused every way of sending the constraint."""
        answer = answer_settings(settings, self.options.answer_max_tokens)
        body = self._body(messages, answer, template)
        thinking = None
        if reasoning:
            first = self._request(self._body(messages, reasoning_settings(settings), template))
            thinking = (thought(f"{first.reasoning or ''}\n{first.text}", settings), first)
            body["messages"] = [
                *messages,
                {"role": "assistant", "content": think_head(thinking[0])},
            ]
            body.update(continue_final_message=True, add_generation_prompt=False)
        while (rung := self._rung) < len(CONSTRAINT_LADDER):
            way, field = CONSTRAINT_LADDER[rung]
            try:
                completion = self._request(_constrain(body, way, shape), field)
            except RequestRefused as refusal:
                self._step_down(rung, str(refusal))
                continue
            self._settled(rung)
            return joined(completion, way, thinking)
        return None

    def _step_down(self, rung: int, reason: str) -> None:
        """The server refused the ladder's way ``rung``: the next one from now on (once,
        however many requests in flight were refused)."""
        with self._lock:
            if self._rung != rung:
                return
            self._refusals.append(f"{CONSTRAINT_LADDER[rung][0]}: {reason}")
            self._rung += 1
            if self._rung == len(CONSTRAINT_LADDER):
                logger.warning(
                    "%s refused constrained answers every way (%s); asking without the "
                    "constraint from now on: answers may not parse. Set structured_output = "
                    "false to skip the attempts, or serve the model with vLLM or llama.cpp",
                    self.options.base_url,
                    "; ".join(self._refusals),
                )

    def _settled(self, rung: int) -> None:
        """Log once, when the server took a way below the first, which one and why."""
        if self._refusals and not self._ladder_logged:
            with self._lock:
                if self._ladder_logged:
                    return
                self._ladder_logged = True
            logger.warning(
                "%s takes constrained answers as %s, after refusing %s",
                self.options.base_url,
                CONSTRAINT_LADDER[rung][0],
                "; ".join(self._refusals),
            )

    def probe_constraint(self) -> str | None:
        """The way this server takes the answer constraint (walking the ladder with one
        short request per way), or None: unconstrained (by the option, the unknown size of
        an "auto" model, or the server's refusals). For ``spacy-reasoningner info``."""
        if not self.constrained:
            return None
        shape = AnswerShape(answer_json_schema(Schema.from_config(["thing"])))
        answer = GenerationSettings(max_new_tokens=8)
        body = self._body([{"role": "user", "content": "Answer {}."}], answer, {})
        while (rung := self._rung) < len(CONSTRAINT_LADDER):
            way, field = CONSTRAINT_LADDER[rung]
            try:
                self._request(_constrain(body, way, shape), field)
            except RequestRefused as refusal:
                self._step_down(rung, str(refusal))
                continue
            return way
        return None

    def _body(
        self, messages: ChatMessages, settings: GenerationSettings, template: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.options.model,
            "messages": messages,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if settings.stop:
            body["stop"] = list(settings.stop)
        if settings.seed is not None:
            body["seed"] = settings.seed
        if template and self.options.send_chat_template_kwargs:
            body["chat_template_kwargs"] = template
        body.update(self.extra_body)
        return body

    def _request(self, body: dict[str, Any], constraint_field: str | None = None) -> Completion:
        content = self._post("/chat/completions", body, constraint_field)
        if content.lstrip().startswith(b"data:"):  # streamed though not asked to
            payload = self._joined_stream(content)
        else:
            payload = self._json(content)
        self._check_model_name(payload)
        return self._read_choice(payload, content)

    def _joined_stream(self, content: bytes) -> dict[str, Any]:
        """A streamed answer (server-sent events of ``chat.completion.chunk``s) joined into
        the one response it stands for: some servers stream whatever the request says."""
        text, reasoning, finish, usage = [], [], None, None
        for line in content.splitlines():
            data = line.strip().removeprefix(b"data:").strip()
            if not line.strip().startswith(b"data:") or data == b"[DONE]":
                continue
            chunk = self._json(data)
            usage = (chunk.get("usage") if isinstance(chunk, dict) else None) or usage
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            choice = choices[0] if isinstance(choices, list) and choices else {}
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                text.append(delta.get("content") or "")
                reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
                finish = choice.get("finish_reason") or finish
        if finish is None:
            raise BackendError(
                f"server {self.options.base_url} streamed an answer (not asked to) that never finished: "
                f"{excerpt(content, self._api_key())}"
            )
        message = {"content": "".join(text), "reasoning_content": "".join(reasoning) or None}
        return {"choices": [{"message": message, "finish_reason": finish}], "usage": usage}

    def _check_model_name(self, payload: Any) -> None:
        """Warn once when the server answers as another model than the one asked for
        (llama.cpp's and Ollama's servers may run whatever they loaded); a dated name of the
        same model (``gpt-4o`` answered by ``gpt-4o-2024-08-06``) is the same."""
        served = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(served, str) or self._other_model_warned:
            return
        if not (served.startswith(self.options.model) or self.options.model.startswith(served)):
            self._other_model_warned = True
            logger.warning(
                "%s answered as model %r, not %r as configured: check backend.model and what "
                "the server loaded (the cache keys its answers under %r)",
                self.options.base_url,
                served,
                self.options.model,
                self.options.model,
            )

    def _api_key(self) -> str | None:
        key = (
            os.environ.get(self.options.api_key_env, "").strip() if self.options.api_key_env else ""
        )
        if key and self._key_refused:
            raise BackendError(self._key_refused)
        if key and not (key.isascii() and key.isprintable()):
            raise BackendError(
                f"the API key in ${self.options.api_key_env} holds characters that cannot go in an HTTP "
                "header (non-ASCII or control characters): check how the variable is set"
            )
        return key or None

    def _headers(self) -> dict[str, str]:
        key = self._api_key()
        headers = {"Accept-Encoding": "gzip, deflate"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, route: str, body: dict[str, Any], constraint_field: str | None = None) -> bytes:
        """The body of a 200 answer, after retries. A request carrying an answer constraint
        in ``constraint_field`` is refused, not retried, by a 5xx that names that field
        (llama-cpp-python's server answers 500 to a response_format it does not know)."""
        url = self.options.base_url + route
        key = self._api_key()
        headers = self._headers()
        for attempt in range(self.options.max_retries + 1):
            asked_wait = None
            try:
                status, content, response_headers = self._exchange(url, body, headers)
            except httpx.TimeoutException:
                cause = f"no complete answer within {self.options.timeout:g} s"
            except httpx.HTTPError as e:  # transport errors; their text may quote headers
                cause = redact(f"{type(e).__name__}: {e}", key)
            else:
                if status == 200:
                    return content
                cause = f"HTTP {status}: {excerpt(content, key)}"
                names_field = constraint_field is not None and constraint_field.encode() in content
                if status not in RETRY_STATUS or (status >= 500 and names_field):
                    raise RequestRefused(
                        f"server {self.options.base_url} refused the request ({cause})"
                    )
                asked_wait = retry_after(response_headers.get("retry-after"))
            if attempt == self.options.max_retries:
                break
            delay = asked_wait if asked_wait is not None else self.options.backoff * 2**attempt
            delay = min(delay, MAX_BACKOFF_SECONDS) * (1 + 0.1 * random.random())
            logger.warning(
                "%s: %s; retry %d/%d in %.1f s",
                url,
                cause,
                attempt + 1,
                self.options.max_retries,
                delay,
            )
            time.sleep(delay)
        raise BackendError(
            f"server {self.options.base_url} failed after {self.options.max_retries + 1} attempts: {cause}"
        )

    def _exchange(
        self, url: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> tuple[int, bytes, httpx.Headers]:
        """One attempt (a POST of ``body``, a GET without one): status, decoded body and
        headers, within the deadline and size limit."""
        deadline = time.monotonic() + self.options.timeout
        DEADLINE.value = deadline
        method = "GET" if body is None else "POST"
        try:
            with self._http().stream(method, url, json=body, headers=headers) as response:
                reader = BodyReader(
                    response.headers.get("content-encoding"), self.options.max_response_bytes
                )
                for chunk in response.iter_raw():
                    reader.feed(chunk, self.options.base_url)
                    if time.monotonic() > deadline:  # for transports without the wrapped backend
                        raise httpx.ReadTimeout("deadline passed")
                return response.status_code, reader.finish(self.options.base_url), response.headers
        finally:
            DEADLINE.value = None

    def _json(self, content: bytes) -> Any:
        try:
            return json.loads(content)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
            raise BackendError(
                f"server {self.options.base_url} answered 200 with a body that is not JSON: "
                f"{excerpt(content, self._api_key())}"
            ) from None

    def _read_choice(self, payload: Any, content: bytes) -> Completion:
        """A Completion from a chat completions response, checked field by field; reasoning
        parsers put the think text in ``reasoning_content`` (vLLM, DeepSeek) or ``reasoning``
        (newer vLLM, Ollama)."""
        choices = payload.get("choices") if isinstance(payload, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise BackendError(
                f"server {self.options.base_url} answered without choices[0].message: "
                f"{excerpt(content, self._api_key())}"
            )
        text = message.get("content")
        if text is not None and not isinstance(text, str):
            raise BackendError(
                f"server {self.options.base_url} answered with message content of type "
                f"{type(text).__name__}, not text: it is not serving a chat model the way "
                "this backend expects"
            )
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        reasoning = reasoning if isinstance(reasoning, str) else None
        key = self._api_key()
        if key:  # a server that echoes headers into its answer must not put the key in a Doc
            text, reasoning = (
                redact_key(text or "", key),
                reasoning and redact_key(reasoning, key),
            )
        usage = payload.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            text=text or "",
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            reasoning=reasoning,
            n_tokens=_count(usage.get("completion_tokens")),
            prompt_tokens=_count(usage.get("prompt_tokens")),
            cached_prompt_tokens=_count(_cached_tokens(usage)),
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class RequestRefused(BackendError):
    """The server answered a request with a status that retrying cannot change (4xx)."""


def _constrain(body: dict[str, Any], way: str, shape: AnswerShape) -> dict[str, Any]:
    """``body`` with the answer constraint sent ``way`` (a name of ``CONSTRAINT_LADDER``):
    the schema, or for a grammar the shape's (grounded answers) or the schema's."""
    schema = dict(shape.schema)
    if way == "json_schema":
        json_schema = {"name": "entities", "schema": schema, "strict": True}
        return {**body, "response_format": {"type": "json_schema", "json_schema": json_schema}}
    if way == "json_object":
        return {**body, "response_format": {"type": "json_object", "schema": schema}}
    grammar = shape.grammar
    return {**body, "grammar": grammar if grammar is not None else schema_answer_grammar(schema)}


def _cached_tokens(usage: dict[str, Any]) -> Any:
    """OpenAI's ``usage.prompt_tokens_details.cached_tokens`` (vLLM serve reports it too)."""
    details = usage.get("prompt_tokens_details")
    return details.get("cached_tokens") if isinstance(details, dict) else None


def _count(value: Any) -> int | None:
    """A token count from ``usage``, or None when it is not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
