"""Saved pipelines are code: loading one runs no shipped code and sends no key to a host
unless the user allows it at load time; the user's own usual pipelines need nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import spacy

from spacy_reasoningner.backends import BackendError
from spacy_reasoningner.trust import API_HOSTS_ENV, TRUST_REMOTE_CODE_ENV, UntrustedPipelineError

from ._faults import FaultServer, answer

# Imported by transformers when trust_remote_code is on: it leaves a mark, then is a model.
SHIPPED_CODE = """
import os
from pathlib import Path
from transformers import Qwen3ForCausalLM
Path(os.environ["SHIPPED_CODE_MARK"]).write_text("ran")
class ShippedModel(Qwen3ForCausalLM):
    pass
"""


def set_backend(folder: Path, **values) -> None:
    """Edit the backend block of a saved pipeline's config.cfg, as a sender could."""
    config = (folder / "config.cfg").read_text()
    for name, value in values.items():
        line = (
            f"{name} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}"
        )
        config, count = re.subn(rf"^{name} = .*$", line, config, flags=re.M)
        if not count:
            config = config.replace(
                "[components.reasoning_ner.backend]\n",
                f"[components.reasoning_ner.backend]\n{line}\n",
            )
    (folder / "config.cfg").write_text(config)


@pytest.fixture
def shipped_code_pipeline(tmp_path, tiny_model_dir) -> Path:
    """A pipeline whose model folder carries Python code, and whose config asks to run it."""
    nlp = spacy.blank("en")
    backend = {
        "@reasoning_ner_backends": "reasoning_ner.Transformers.v1",
        "model": str(tiny_model_dir),
    }
    nlp.add_pipe("reasoning_ner", config={"labels": ["person"], "backend": backend})
    folder = tmp_path / "pipeline"
    nlp.to_disk(folder)
    model = folder / "reasoning_ner" / "model"
    (model / "modeling_shipped.py").write_text(SHIPPED_CODE)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_shipped.ShippedModel"}
    (model / "config.json").write_text(json.dumps(config))
    set_backend(folder, trust_remote_code=True)
    return folder


def test_shipped_code_does_not_run_without_consent(shipped_code_pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("SHIPPED_CODE_MARK", str(tmp_path / "mark"))
    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)
    with pytest.raises(UntrustedPipelineError) as error:
        spacy.load(shipped_code_pipeline)
    message = str(error.value)
    assert f"{TRUST_REMOTE_CODE_ENV}={shipped_code_pipeline}" in message
    assert '"trust_remote_code": false' in message
    assert not (tmp_path / "mark").exists()
    # The override the message gives loads it, without the code.
    spacy.load(shipped_code_pipeline, config={"components": {"reasoning_ner": {"backend": {"trust_remote_code": False}}}})  # fmt: skip
    assert not (tmp_path / "mark").exists()


def test_shipped_code_runs_for_the_pipeline_the_user_allowed(shipped_code_pipeline, tmp_path):
    env = {
        **os.environ,
        "SHIPPED_CODE_MARK": str(tmp_path / "mark"),
        TRUST_REMOTE_CODE_ENV: str(shipped_code_pipeline),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
    }
    code = "import spacy, sys; spacy.load(sys.argv[1]); print('loaded')"
    out = subprocess.run(
        [sys.executable, "-c", code, str(shipped_code_pipeline)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.stdout.strip() == "loaded", out.stderr[-2000:]
    assert (tmp_path / "mark").read_text() == "ran"


def test_vllm_engine_kwargs_cannot_smuggle_remote_code(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)
    nlp = spacy.blank("en")
    backend = {"@reasoning_ner_backends": "reasoning_ner.VLLM.v1", "model": str(tiny_model_dir)}
    nlp.add_pipe("reasoning_ner", config={"labels": ["person"], "backend": backend})
    nlp.to_disk(tmp_path / "pipeline")
    set_backend(tmp_path / "pipeline", engine_kwargs={"trust_remote_code": True})
    with pytest.raises(UntrustedPipelineError, match="trust_remote_code = true"):
        spacy.load(tmp_path / "pipeline")


# --------------------------------------------------------------------------- keys


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(answer()) as running:
        yield running


def openai_pipeline(folder: Path, url: str, **backend) -> Path:
    nlp = spacy.blank("en")
    config = {"@reasoning_ner_backends": "reasoning_ner.OpenAI.v1", "model": "m", "base_url": url, "max_retries": 0, "timeout": 5, **backend}  # fmt: skip
    nlp.add_pipe("reasoning_ner", config={"labels": ["person"], "backend": config})
    nlp.to_disk(folder)
    return folder


def test_own_pipeline_sends_the_default_key_to_loopback(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-own")
    spacy.load(openai_pipeline(tmp_path / "p", server.url))("Ada")
    assert server.requests[0].headers["authorization"] == "Bearer sk-own"


def test_a_saved_pipeline_cannot_send_another_variable(tmp_path, server, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.delenv(API_HOSTS_ENV, raising=False)
    folder = openai_pipeline(tmp_path / "p", server.url)
    set_backend(folder, api_key_env="AWS_SECRET_ACCESS_KEY")
    with pytest.raises(BackendError) as error:
        spacy.load(folder)("Ada")
    assert not server.requests and "aws-secret" not in str(error.value)
    assert f"{API_HOSTS_ENV}=127.0.0.1" in str(error.value)


def test_a_saved_pipeline_cannot_send_the_key_to_another_host(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-own")
    monkeypatch.delenv(API_HOSTS_ENV, raising=False)
    folder = openai_pipeline(tmp_path / "p", "http://198.51.100.7:8000/v1")  # TEST-NET-2
    with pytest.raises(BackendError) as error:
        spacy.load(folder)("Ada")  # refused before any connection is tried
    message = str(error.value)
    assert "asks to send $OPENAI_API_KEY to 198.51.100.7:8000" in message
    assert f"{API_HOSTS_ENV}=198.51.100.7" in message and '"base_url": "http' in message
    assert "sk-own" not in message


def test_consent_by_environment_or_at_load_time(tmp_path, server, monkeypatch):
    monkeypatch.setenv("MY_GATEWAY_KEY", "gw-key")
    folder = openai_pipeline(tmp_path / "p", "http://198.51.100.7:8000/v1", api_key_env="MY_GATEWAY_KEY")  # fmt: skip
    override = {"components": {"reasoning_ner": {"backend": {"base_url": server.url}}}}
    spacy.load(folder, config=override)("Ada")  # the user named the server when loading
    assert server.requests[-1].headers["authorization"] == "Bearer gw-key"
    set_backend(folder, base_url=server.url)
    monkeypatch.setenv(API_HOSTS_ENV, "example.org, 127.0.0.1")
    spacy.load(folder)("Ada")  # the user allowed the host
    assert server.requests[-1].headers["authorization"] == "Bearer gw-key"


def test_pipelines_built_in_code_run_as_configured(server, monkeypatch):
    monkeypatch.setenv("MY_GATEWAY_KEY", "gw-key")
    monkeypatch.delenv(API_HOSTS_ENV, raising=False)
    nlp = spacy.blank("en")
    config = {"@reasoning_ner_backends": "reasoning_ner.OpenAI.v1", "model": "m", "base_url": server.url, "api_key_env": "MY_GATEWAY_KEY"}  # fmt: skip
    nlp.add_pipe("reasoning_ner", config={"labels": ["person"], "backend": config})
    nlp("Ada")
    assert server.requests[-1].headers["authorization"] == "Bearer gw-key"
