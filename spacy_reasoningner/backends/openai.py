"""OpenAI-compatible chat completions backend: vLLM serve, llama.cpp server, Ollama, hosted APIs.

Requests of a batch run concurrently (bounded), each retried with exponential backoff on
connection errors, timeouts, 429 and 5xx. The API key is read from a named environment
variable at request time: it is never stored on the backend, in a saved pipeline or a cache
key, and never logged.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import httpx

from ..protocol import ChatMessages, template_kwargs
from ..registry import backends
from .base import (
    AnswerFormat,
    BackendError,
    Completion,
    ConstrainableBackend,
    GenerationSettings,
)

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0


@backends.register("reasoning_ner.OpenAI.v1")
class OpenAIBackend(ConstrainableBackend):
    """A server speaking the OpenAI chat completions API.

    model: the served model name (what ``vllm serve``, Ollama or the provider calls it).
    base_url: the API root, ending in /v1.
    api_key_env: environment variable holding the API key; unset or empty sends no key.
    timeout: seconds per request (reasoning chains are long: be generous).
    max_concurrency: requests in flight at once.
    max_retries: retries per request after connection errors, timeouts, 429 and 5xx.
    backoff: first retry delay in seconds, doubled on each retry (plus jitter).
    send_chat_template_kwargs: send generation.chat_template_kwargs (vLLM reads them, e.g.
        enable_thinking for Qwen3); turn off for servers that reject unknown fields.
    extra_body: extra request fields, e.g. {"top_k": 20} or a provider's reasoning options.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 300.0,
        max_concurrency: int = 8,
        max_retries: int = 4,
        backoff: float = 1.0,
        send_chat_template_kwargs: bool = True,
        extra_body: dict[str, Any] | None = None,
    ):
        if not model:
            raise ValueError("backend.model is empty: set it to the model name the server serves")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"backend.base_url {base_url!r} must start with http:// or https://")
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(
                "backend needs max_concurrency >= 1, max_retries >= 0, timeout > 0 and backoff >= 0"
            )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.send_chat_template_kwargs = send_chat_template_kwargs
        self.extra_body = dict(extra_body or {})
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> dict[str, Any]:
        """What determines the answers (for caches); no credentials."""
        return {
            "backend": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "extra_body": self.extra_body,
        }

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=self.max_concurrency)
                self._client = httpx.Client(timeout=self.timeout, limits=limits)
            return self._client

    def generate_constrained(
        self,
        prompts: Sequence[ChatMessages],
        settings: GenerationSettings,
        answer_format: AnswerFormat,
    ) -> list[Completion]:
        """All completions of the batch, or a ``BackendError`` carrying the ones that finished.
        Without reasoning the server's chat template gets ``enable_thinking=False``."""
        results: dict[int, Completion] = {}
        template = template_kwargs(settings.chat_template_kwargs, reasoning=answer_format.reasoning)
        with ThreadPoolExecutor(
            max_workers=min(self.max_concurrency, max(len(prompts), 1))
        ) as pool:
            futures = {
                pool.submit(self._complete, p, settings, template): i for i, p in enumerate(prompts)
            }
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failure = next((f.exception() for f in done if f.exception()), None)
            if failure is not None:
                for future in pending:
                    future.cancel()
                done, _ = wait(pending)  # let requests already in flight finish
            for future in futures:
                if future.done() and not future.cancelled() and future.exception() is None:
                    results[futures[future]] = future.result()
        if failure is not None:
            raise BackendError(str(failure), completed=results) from failure
        return [results[i] for i in range(len(prompts))]

    def _complete(
        self, messages: ChatMessages, settings: GenerationSettings, template: dict[str, Any]
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if settings.stop:
            body["stop"] = list(settings.stop)
        if settings.seed is not None:
            body["seed"] = settings.seed
        if template and self.send_chat_template_kwargs:
            body["chat_template_kwargs"] = template
        body.update(self.extra_body)
        return _read_choice(self._post("/chat/completions", body))

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + route
        headers = {}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self._http().post(url, json=body, headers=headers)
            except httpx.TimeoutException:
                cause = f"no answer within {self.timeout:g} s"
            except httpx.TransportError as e:
                cause = f"{type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    return response.json()
                cause = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUS:
                    raise BackendError(f"server {self.base_url} refused the request ({cause})")
                retry_after = _retry_after(response)
            if attempt == self.max_retries:
                break
            delay = retry_after if retry_after is not None else self.backoff * 2**attempt
            delay = min(delay, MAX_BACKOFF_SECONDS) * (1 + 0.1 * random.random())
            logger.warning(
                "%s: %s; retry %d/%d in %.1f s", url, cause, attempt + 1, self.max_retries, delay
            )
            time.sleep(delay)
        raise BackendError(
            f"server {self.base_url} failed after {self.max_retries + 1} attempts: {cause}"
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _read_choice(payload: dict[str, Any]) -> Completion:
    """A Completion from a chat completions response; reasoning parsers put the think text
    in ``reasoning_content`` (vLLM, DeepSeek) or ``reasoning`` (newer vLLM, Ollama)."""
    try:
        choice = payload["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"response has no choices[0].message: {str(payload)[:300]}") from None
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    usage = payload.get("usage") or {}
    return Completion(
        text=message.get("content") or "",
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        reasoning=reasoning if isinstance(reasoning, str) else None,
        n_tokens=usage.get("completion_tokens"),
    )
