"""Misbehaving chat-completions servers on 127.0.0.1, for robustness tests and benchmarks.

A real server cannot be made to drip bytes, send an endless body or a gzip bomb, or echo the
caller's headers on demand, so ``FaultServer`` plays those failures at the byte level over a
real socket: each request is answered by a ``Scenario``, a function that writes the raw
response. The server records every request (headers included) so a test can check what the
client sent, and every byte it wrote so it can check what reached the client.
"""

from __future__ import annotations

import contextlib
import json
import socketserver
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass
class Request:
    """One request as the server read it."""

    number: int  # 1 for the first request the server received
    headers: dict[str, str]
    body: dict[str, Any]


class Reply:
    """Writes a response on a connection; scenarios use it."""

    def __init__(self, handler: socketserver.StreamRequestHandler, server: FaultServer):
        self._handler, self._server = handler, server

    def send(self, data: bytes) -> None:
        self._server.sent.append(data)
        self._handler.wfile.write(data)
        self._handler.wfile.flush()

    def head(self, status: int, headers: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status} Status", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def full(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.head(status, {"Content-Length": str(len(body)), **(headers or {})})
        self.send(body)

    def json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.full(
            status,
            json.dumps(payload).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )


Scenario = Callable[[Request, Reply], None]


def chat_payload(content: Any = '{"entities": {}}', reasoning: str | None = None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "choices": [{"message": message, "finish_reason": "stop"}],
        "usage": {"completion_tokens": 3},
    }


class FaultServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering every POST with ``scenario``."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.requests: list[Request] = []
        self.sent: list[bytes] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request_line = self.rfile.readline(65536)
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := self.rfile.readline(65536).decode("latin-1").strip()) != "":
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                raw = self.rfile.read(int(headers.get("content-length", "0")))
                with outer._lock:
                    request = Request(len(outer.requests) + 1, headers, json.loads(raw or b"{}"))
                    outer.requests.append(request)
                # OSError: the client hung up, as it should on endless answers.
                with contextlib.suppress(OSError):
                    outer.scenario(request, Reply(self, outer))

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wrote(self, secret: str) -> bool:
        """Whether ``secret`` was in anything the server sent back."""
        return any(secret.encode() in data for data in self.sent)


# --------------------------------------------------------------------------- scenarios


def answer(content: Any = '{"entities": {}}') -> Scenario:
    """A well-formed answer with ``content`` as the message content (any JSON value)."""
    return lambda request, reply: reply.json(200, chat_payload(content))


def slow_drip(seconds_per_byte: float = 0.2, headers_too: bool = False) -> Scenario:
    """A correct answer, one byte at a time: the body, or the whole response."""

    def scenario(request: Request, reply: Reply) -> None:
        body = json.dumps(chat_payload()).encode()
        head = {"Content-Length": str(len(body)), "Content-Type": "application/json"}
        if headers_too:
            lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in head.items())]
            body = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        else:
            reply.head(200, head)
        for byte in body:
            time.sleep(seconds_per_byte)
            reply.send(bytes([byte]))

    return scenario


def endless_chunked(chunk_bytes: int = 65536) -> Scenario:
    """A chunked body that never ends (until the client hangs up)."""

    def scenario(request: Request, reply: Reply) -> None:
        reply.head(200, {"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
        chunk = f"{chunk_bytes:x}\r\n".encode() + b" " * chunk_bytes + b"\r\n"
        while True:
            reply.send(chunk)

    return scenario


@cache
def _bomb(inflated_bytes: int) -> bytes:
    """gzip of ``inflated_bytes`` zeros, compressed a megabyte at a time (never held whole)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"0" * 2**20
    parts = [packer.compress(block) for _ in range(inflated_bytes // len(block))]
    parts.append(packer.compress(b"0" * (inflated_bytes % len(block))))
    return b"".join([*parts, packer.flush()])


def gzip_bomb(inflated_bytes: int = 512 * 2**20) -> Scenario:
    """A small gzip body that inflates to ``inflated_bytes`` (compressed here, up front)."""
    body = _bomb(inflated_bytes)
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    return lambda request, reply: reply.full(200, body, headers)


def echo_headers(status: int = 400, as_json: bool = True) -> Scenario:
    """Answers ``status`` with the request's headers (Authorization included) in the body,
    as some proxies and debug servers do."""

    def scenario(request: Request, reply: Reply) -> None:
        if as_json:
            reply.json(status, {"error": "bad request", "received_headers": request.headers})
        else:
            text = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
            reply.full(status, text.encode(), {"Content-Type": "text/plain"})

    return scenario


def non_json(
    status: int = 200, body: bytes = b"<html><body>Gateway says hi</body></html>"
) -> Scenario:
    return lambda request, reply: reply.full(status, body, {"Content-Type": "text/html"})


def failing_first(
    failures: int,
    status: int = 503,
    headers: dict[str, str] | None = None,
    then: Scenario | None = None,
) -> Scenario:
    """``status`` (with ``headers``) for the first ``failures`` requests, then ``then``."""
    then = then or answer()

    def scenario(request: Request, reply: Reply) -> None:
        if request.number <= failures:
            reply.json(status, {"error": "try later"}, headers)
        else:
            then(request, reply)

    return scenario
