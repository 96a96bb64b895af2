"""Real OpenAI-compatible servers on a free loopback port, for tests and benchmarks:
``vllm serve`` of a model folder, llama.cpp's server (llama-cpp-python's) of a GGUF file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

SERVED_NAME = "smollm2"


def served_pipeline(url: str, cache: Path | None = None, *, config: dict, **backend: Any):
    """A blank English pipeline whose reasoning_ner (``config``, raw completions kept) asks
    the server at ``url`` for ``SERVED_NAME`` (more backend settings in ``backend``)."""
    import spacy

    nlp = spacy.blank("en")
    backend = {"@reasoning_ner_backends": "reasoning_ner.OpenAI.v1", "base_url": url, **backend}
    config = {**config, "backend": {"model": SERVED_NAME, **backend}, "keep_raw": True}
    if cache is not None:
        config["cache_path"] = str(cache)
    nlp.add_pipe("reasoning_ner", config=config)
    return nlp


class LoopbackServer:
    """A server process on a free port of 127.0.0.1, serving the model as ``SERVED_NAME``;
    its output goes to ``log`` (or nowhere)."""

    name = "server"

    def __init__(self, log: Path | None = None):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def finished_requests(self) -> int:
        """Chat completions the server has answered."""
        raise NotImplementedError

    def start(self, timeout: float = 300) -> None:
        output = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{self.name} did not come up within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and its engine process
            self.process.wait(timeout=30)


class VLLMServer(LoopbackServer):
    """``vllm serve`` of a model folder."""

    name = "vllm serve"

    def __init__(self, model_dir: Path, log: Path | None = None):
        super().__init__(log)
        self.model_dir = model_dir

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1"}

    def finished_requests(self) -> int:
        """Requests the server has completed, from its Prometheus metrics."""
        metrics = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return int(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("vllm:request_success_total")
            )
        )


class LlamaCppServer(LoopbackServer):
    """llama-cpp-python's server (``python -m llama_cpp.server``) of a GGUF file, on two
    threads; it logs every request it answered (uvicorn's access log) to ``log``."""

    name = "llama.cpp server"

    def __init__(self, gguf: Path, log: Path):
        super().__init__(log)
        self.gguf = gguf

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.gguf), "--model_alias", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", "4096", "--n_threads", "2", "--seed", "0",
        ]  # fmt: skip

    def finished_requests(self) -> int:
        """Chat completions the server answered with 200, from its access log."""
        assert self.log is not None
        return self.log.read_text(errors="replace").count(
            '"POST /v1/chat/completions HTTP/1.1" 200'
        )


def kill_mid_batch(server: LoopbackServer, pipe: Any, docs: list, after: int = 2) -> int:
    """Run ``pipe.pipe(docs)`` in one batch and kill ``server`` once it has finished
    ``after`` requests; the run must fail with a ``BackendError`` naming the server's
    attempts, leave every Doc as it was, and keep what finished in its cache: how many."""
    from spacy_reasoningner.backends import BackendError

    failure: list[BaseException] = []

    def run() -> None:
        try:
            list(pipe.pipe(docs, batch_size=len(docs)))
        except BaseException as error:  # collected for the assertions below
            failure.append(error)

    before = server.finished_requests()
    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 240
    while server.finished_requests() < before + after and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop()
    worker.join(timeout=300)
    assert failure and isinstance(failure[0], BackendError), failure
    assert "failed after 2 attempts" in str(failure[0])
    assert all(d.ents == () and d._.ner_raw is None for d in docs)  # no Doc half-annotated
    finished = len(pipe.cache)
    assert after <= finished < len(docs)
    return finished
