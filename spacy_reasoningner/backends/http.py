"""HTTP for the OpenAI-compatible backend: a hard deadline per attempt, bounded bodies,
redaction, ``Retry-After``.

httpx's timeouts are per socket operation, so a server that drips a byte a second never
times out; ``enforce_deadlines`` puts one deadline on every operation of an attempt.
Compressed bodies are inflated here a bounded amount at a time (``BodyReader``), so a small
gzip body cannot grow to gigabytes. ``redact`` removes the API key and any Bearer token from
text that may quote headers (servers echo them).
"""

from __future__ import annotations

import email.utils
import math
import re
import threading
import time
import zlib
from typing import Any

import httpcore
import httpx

from .base import BackendError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0
EXCERPT_CHARS = 200  # of a response body, in errors and warnings


# --------------------------------------------------------------------------- deadlines


class _Deadline(threading.local):
    value: float | None = None


DEADLINE = _Deadline()  # per thread: the attempt running in that thread


def bounded(timeout: float | None) -> float | None:
    """``timeout`` cut to what is left of the current thread's deadline."""
    deadline = DEADLINE.value
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("deadline passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits no longer than the deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, bounded(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return DeadlineStream(self._stream.start_tls(*args, **kwargs))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineNetwork(httpcore.NetworkBackend):
    def __init__(self, network: httpcore.NetworkBackend):
        self._network = network

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, *args: Any, **kwargs: Any
    ) -> httpcore.NetworkStream:
        stream = self._network.connect_tcp(host, port, bounded(timeout), *args, **kwargs)
        return DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, *args: Any, **kwargs: Any
    ) -> httpcore.NetworkStream:
        stream = self._network.connect_unix_socket(path, bounded(timeout), *args, **kwargs)
        return DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._network.sleep(seconds)


def enforce_deadlines(transport: httpx.HTTPTransport) -> None:
    """Put the deadline on every socket operation of ``transport``'s connections: httpx's
    timeouts are per read, so a server sending a byte a second would never time out. The
    pool's network backend is not public in httpx; without it, the deadline is checked
    between the chunks of the body only."""
    pool = getattr(transport, "_pool", None)
    network = getattr(pool, "_network_backend", None)
    if isinstance(network, httpcore.NetworkBackend):
        pool._network_backend = DeadlineNetwork(network)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- bodies


class BodyReader:
    """Collects a response body up to ``limit`` bytes after decompression, inflating gzip and
    deflate here a bounded amount at a time (a small compressed body can inflate to GBs)."""

    def __init__(self, encoding: str | None, limit: int):
        encoding = (encoding or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise httpx.DecodingError(f"unsupported Content-Encoding {encoding!r}")
        # wbits 32 + 15: a gzip or zlib header, detected.
        self._inflate = None if encoding == "identity" else zlib.decompressobj(32 + 15)
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = limit

    def feed(self, chunk: bytes, server: str) -> None:
        if self._inflate is not None:
            try:  # at most one byte past the limit: enough to know it is passed
                chunk = self._inflate.decompress(chunk, self._limit - self._size + 1)
            except zlib.error as e:
                raise httpx.DecodingError(f"compressed body is corrupt ({e})") from None
        self._keep(chunk, server)

    def finish(self, server: str) -> bytes:
        if self._inflate is not None:  # all input is consumed by now: little or nothing left
            self._keep(self._inflate.flush(), server)
            if not self._inflate.eof:
                raise httpx.DecodingError("compressed body ends before the end of its stream")
        return b"".join(self._parts)

    def _keep(self, data: bytes, server: str) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise BackendError(
                f"server {server} sent an answer larger than max_response_bytes="
                f"{self._limit}: stopped reading; raise the limit if the server is right"
            )
        self._parts.append(data)


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;\\]+")


def redact(text: str, key: str | None) -> str:
    """``text`` without the API key and without any Bearer token."""
    return _BEARER.sub(r"\1[redacted]", redact_key(text, key))


def redact_key(text: str, key: str | None) -> str:
    return text.replace(key, "[redacted]") if key else text


def excerpt(content: bytes, key: str | None) -> str:
    """The start of a response body for a message: decoded, redacted, capped."""
    text = content[: 4 * EXCERPT_CHARS].decode("utf-8", errors="replace")
    text = redact(" ".join(text.split()), key)  # whole, then capped: a key is never cut
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), clamped to
    [0, MAX_BACKOFF_SECONDS]; None when absent or not a usable value (nan, inf, garbage)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_BACKOFF_SECONDS)
