"""Saving and loading: weights inside the pipeline folder, offline load, ``spacy package`` wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy

OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture
def saved_pipeline(tmp_path, tiny_model_dir) -> Path:
    """A pipeline saved from a model copy that is deleted afterwards."""
    source = tmp_path / "source-model"
    shutil.copytree(tiny_model_dir, source)
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": {"person": "a human being", "location": "a place"},
            "backend": {
                "@reasoning_ner_backends": "reasoning_ner.Transformers.v1",
                "model": str(source),
                # Free generation: 6 tokens always cut it (the truncation flag is checked).
                "structured_output": False,
            },
            "generation": {"max_new_tokens": 6},
        },
    )
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(source)
    return tmp_path / "pipeline"


def test_weights_and_tokenizer_live_inside_the_pipeline_folder(saved_pipeline):
    model_dir = saved_pipeline / "reasoning_ner" / "model"
    assert (model_dir / "model.safetensors").exists()
    assert (model_dir / "tokenizer.json").exists()
    assert not [p for p in model_dir.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    assert "[components.reasoning_ner.backend]" in (saved_pipeline / "config.cfg").read_text()


def test_saved_weights_are_readable_by_other_users(saved_pipeline):
    """An installed wheel is read by users other than its installer: no 0600 files (the mode
    transformers' staged safetensors shards are written with)."""
    umask = os.umask(0)
    os.umask(umask)
    if umask != 0o022:
        pytest.skip(f"the expected modes assume umask 022, not {umask:03o}")
    files = [p for p in saved_pipeline.rglob("*") if p.is_file()]
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}
    folders = [saved_pipeline, *(p for p in saved_pipeline.rglob("*") if p.is_dir())]
    assert {oct(p.stat().st_mode & 0o777) for p in folders} == {"0o755"}


def test_saved_pipeline_loads_and_runs_offline_without_the_source_model(saved_pipeline):
    code = (
        "import spacy, sys\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "pipe = nlp.get_pipe('reasoning_ner')\n"
        "doc = nlp('Ada Lovelace lived in London.')\n"
        "print(pipe.labels, pipe.schema.definitions['person'], pipe.stats['completions'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(saved_pipeline)],
        capture_output=True,
        text=True,
        env=OFFLINE_ENV,
        check=True,
    )
    # One completion: the model ran from the pipeline folder.
    assert out.stdout.strip() == "('person', 'location') a human being 1"


def test_to_disk_from_disk_round_trip_in_process(saved_pipeline, tmp_path):
    nlp = spacy.load(saved_pipeline)
    pipe = nlp.get_pipe("reasoning_ner")
    assert pipe.backend.loaded
    nlp.to_disk(tmp_path / "again")
    assert (tmp_path / "again" / "reasoning_ner" / "model" / "model.safetensors").exists()


def test_to_bytes_explains_the_alternative(saved_pipeline):
    nlp = spacy.load(saved_pipeline)
    with pytest.raises(NotImplementedError, match=r"use nlp\.to_disk"):
        nlp.to_bytes()


@pytest.mark.slow
def test_spacy_package_builds_a_wheel_that_installs_and_loads_offline(saved_pipeline, tmp_path):
    packages = tmp_path / "packages"
    packages.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "package",
            str(saved_pipeline),
            str(packages),
            "--name",
            "tiny_reasoner",
            "--version",
            "0.0.1",
            "--build",
            "wheel",
        ],
        check=True,
        capture_output=True,
        env=OFFLINE_ENV,
    )
    (wheel,) = packages.rglob("*.whl")
    assert wheel.stat().st_size < 50_000_000
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    requirements = (next(target.glob("en_tiny_reasoner-*.dist-info")) / "METADATA").read_text()
    assert "Requires-Dist: spacy-reasoningner" in requirements
    code = (
        "import spacy\n"
        "nlp = spacy.load('en_tiny_reasoner')\n"
        "doc = nlp('Grace Hopper visited Paris.')\n"
        "print(nlp.pipe_names, nlp.get_pipe('reasoning_ner').backend.model.__class__.__name__)\n"
    )
    env = {**OFFLINE_ENV, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "['reasoning_ner'] Qwen3ForCausalLM"


def test_spacy_evaluate_cli_reports_entity_scores(tmp_path):
    from spacy.tokens import DocBin

    answer = '<think>x</think>{"entities": {"person": ["Ada Lovelace"], "location": ["Paris"]}}'
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person", "location"],
            "backend": {"@reasoning_ner_backends": "tests.Scripted.v1", "completion": answer},
        },
    )
    nlp.to_disk(tmp_path / "pipeline")
    gold = nlp.make_doc("Ada Lovelace lived in London.")
    gold.ents = [gold.char_span(0, 12, "person"), gold.char_span(22, 28, "location")]
    DocBin(docs=[gold]).to_disk(tmp_path / "gold.spacy")
    code = Path(__file__).with_name("_scripted_backend.py")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "evaluate",
            str(tmp_path / "pipeline"),
            str(tmp_path / "gold.spacy"),
            "--code",
            str(code),
            "--output",
            str(tmp_path / "scores.json"),
        ],
        capture_output=True,
        text=True,
        env=OFFLINE_ENV,
        check=True,
    )
    assert "NER F" in out.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert (scores["ents_p"], scores["ents_r"]) == (1.0, 0.5)
    assert scores["ents_per_type"]["location"]["r"] == 0.0


def test_labels_given_at_initialize_survive_saving_with_definitions(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner", config={"backend": {"@reasoning_ner_backends": "tests.Scripted.v1"}}
    )
    labels = {"person": "a human being", "city": "a town"}
    nlp.config["initialize"]["components"]["reasoning_ner"] = {"labels": labels}
    nlp.initialize()
    nlp.to_disk(tmp_path / "pipeline")
    schema = spacy.load(tmp_path / "pipeline").get_pipe("reasoning_ner").schema
    assert schema.labels == ("person", "city")
    assert schema.definitions == {"person": "a human being", "city": "a town"}


def test_labels_given_to_initialize_win_over_the_configs_after_saving(tmp_path):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={"labels": ["person"], "backend": {"@reasoning_ner_backends": "tests.Scripted.v1"}},
    )
    pipe.initialize(labels=["city", "river"])
    nlp.to_disk(tmp_path / "pipeline")
    assert spacy.load(tmp_path / "pipeline").get_pipe("reasoning_ner").labels == ("city", "river")


def test_spacy_assemble_validates_and_builds_from_a_config_file(tmp_path):
    """A config file naming registered parts (backend, ents filter, scorer) assembles with
    spaCy's own CLI; a misspelt setting is refused by spaCy's config validation."""
    config = """
[nlp]
lang = "en"
pipeline = ["reasoning_ner"]

[components]

[components.reasoning_ner]
factory = "reasoning_ner"
labels = ["person", "city"]
max_chars = 500

[components.reasoning_ner.backend]
@reasoning_ner_backends = "tests.Scripted.v1"
completion = "{\\"entities\\": {\\"person\\": [\\"Ada\\"]}}"

[components.reasoning_ner.ents_filter]
@misc = "reasoning_ner.prefer_new_ents.v1"
"""
    code = str(Path(__file__).with_name("_scripted_backend.py"))
    (tmp_path / "ok.cfg").write_text(config)
    (tmp_path / "bad.cfg").write_text(config.replace("max_chars", "max_char"))
    command = [sys.executable, "-m", "spacy", "assemble", "--code", code]
    subprocess.run(
        [*command, str(tmp_path / "ok.cfg"), str(tmp_path / "out")],
        check=True,
        capture_output=True,
        env=OFFLINE_ENV,
    )
    nlp = spacy.load(tmp_path / "out")
    pipe = nlp.get_pipe("reasoning_ner")
    assert (pipe.labels, pipe.settings.max_chars) == (("person", "city"), 500)
    assert [e.text for e in nlp("Ada met Bo.").ents] == ["Ada"]
    refused = subprocess.run(
        [*command, str(tmp_path / "bad.cfg"), str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        env=OFFLINE_ENV,
    )
    assert refused.returncode != 0
    assert "max_char" in refused.stdout + refused.stderr
