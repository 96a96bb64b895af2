"""Corpus annotation with the local engine: inputs and shards, outputs and rejects, manifest,
resumption after a failed shard and after a killed process, and the CLI. The Ray engine is
tested against these outputs in test_annotate_ray.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from confection import Config
from spacy.tokens import DocBin
from typer.testing import CliRunner

import spacy_reasoningner.annotate
from spacy_reasoningner.annotate import AnnotateOptions, PipelineSpec, ShardFailed, annotate
from spacy_reasoningner.annotate.sources import plan_shards, read_shard, resolve_inputs
from spacy_reasoningner.annotate.worker import ShardAnnotator, ShardJob
from spacy_reasoningner.cli import EXIT_REJECTS, app
from spacy_reasoningner.overrides import parse_overrides
from tests import _corpus
from tests._corpus import (
    CODE,
    FAILING_SHARD_LINES,
    logged,
    names_answer,
    names_spec,
    output_lines,
    rejects,
    write_corpus,
    write_lines,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


def expected_entities(text: str) -> list[str]:
    """What the names backend makes of a text: every distinct capitalized word."""
    return list(json.loads(names_answer(text).split("</think>")[1])["entities"]["person"])


# --------------------------------------------------------------------------- inputs


def test_inputs_resolve_and_cut_into_shards(corpus: Path):
    files = resolve_inputs([str(corpus)])  # a folder: every known suffix, sorted
    assert [Path(f.path).name for f in files] == ["a.txt", "b.jsonl", "c.spacy", "d.txt"]
    assert [f.format for f in files] == ["text", "jsonl", "docbin", "text"]
    assert [Path(f.path).name for f in resolve_inputs([str(corpus / "*.txt")])] == [
        "a.txt",
        "d.txt",
    ]
    shards = plan_shards(files, shard_size=3)
    # a.txt: 7 documents (the blank line 4 is none, and opens shard 2) -> 3+3+1; b.jsonl:
    # 8 lines -> 3+3+2;
    # c.spacy: 3 Docs; d.txt: 3 lines.
    assert [(Path(s.path).name, s.first, s.docs) for s in shards] == [
        ("a.txt", 1, 3), ("a.txt", 4, 3), ("a.txt", 8, 1),
        ("b.jsonl", 1, 3), ("b.jsonl", 4, 3), ("b.jsonl", 7, 2),
        ("c.spacy", 0, 3), ("d.txt", 1, 3),
    ]  # fmt: skip
    assert [s.id for s in shards] == [f"{i:05d}" for i in range(8)]
    items = [item for shard in shards for item in read_shard(shard)]
    assert len(items) == sum(s.docs for s in shards) == 21
    assert read_shard(shards[0])[0].text == "Alice met Bob number 0 in Paris."  # no BOM
    assert read_shard(shards[1])[0].text == "Alice met Bob number 3 in Paris."  # no \r
    bad = {
        (Path(s.path).name, i.location): i.error for s in shards for i in read_shard(s) if i.error
    }
    assert bad == {
        ("b.jsonl", 3): "not valid JSON: Expecting value at column 1",
        ("b.jsonl", 4): "the object has no 'text' field",
        ("d.txt", 2): "not valid UTF-8: invalid start byte at byte 5",
    }


def test_inputs_that_name_nothing_or_an_unknown_format_are_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="names no file"):
        resolve_inputs([str(tmp_path / "missing-*.jsonl")])
    (tmp_path / "notes.md").write_text("Alice\n")
    with pytest.raises(ValueError, match="--format"):
        resolve_inputs([str(tmp_path / "notes.md")])
    assert resolve_inputs([str(tmp_path / "notes.md")], "text")[0].format == "text"


# --------------------------------------------------------------------------- a whole run


def test_local_run_writes_shards_rejects_and_manifest(corpus: Path, tmp_path: Path):
    out = tmp_path / "out"
    summary = annotate(
        [str(corpus)],
        out,
        names_spec(tmp_path),
        AnnotateOptions(shard_size=3, jsonl=True, batch_size=2),
        progress=False,
    )
    lines = output_lines(out)
    texts = [line["text"] for line in lines]
    # Every readable document once, in input order; the bad ones are in the rejects.
    assert len(texts) == len(set(texts)) == 17
    assert texts[:7] == [f"Alice met Bob number {i} in Paris." for i in range(7)]
    for line in lines:  # (DocBin inputs keep their earlier ORG entity: see below)
        assert sorted({e["text"] for e in line["entities"]}) == sorted(
            expected_entities(line["text"])
        )
        assert line["reasoning"] == "Capitalized words are people."
    carol = next(line for line in lines if line["text"] == "Carol saw Dave 3.")
    assert carol["id"] == 3  # JSONL fields pass through
    assert carol["source"] == {"file": str(corpus / "b.jsonl"), "line": 6}
    assert [
        (Path(r["file"]).name, r.get("line"), r["reason"].split(":")[0]) for r in rejects(out)
    ] == [
        ("b.jsonl", 3, "not valid JSON"),
        ("b.jsonl", 4, "the object has no 'text' field"),
        ("b.jsonl", 8, "BackendError"),
        ("d.txt", 2, "not valid UTF-8"),
    ]
    # DocBin shards keep user data: reasoning, unaligned, truncated, the source, earlier ents.
    nlp = spacy.blank("en")
    docs = [
        d
        for p in sorted((out / "shards").glob("*.spacy"))
        for d in DocBin().from_disk(p).get_docs(nlp.vocab)
    ]
    assert [d.text for d in docs] == texts
    heidi = next(d for d in docs if d.text == "Acme hired Heidi 1.")
    assert [(e.text, e.label_) for e in heidi.ents] == [("Acme", "ORG"), ("Heidi", "person")]
    assert heidi.user_data["batch"] == 1
    assert heidi.user_data["annotate.source"] == {"file": str(corpus / "c.spacy"), "index": 1}
    assert heidi._.ner_reasoning == "Capitalized words are people."
    assert heidi._.ner_truncated is False
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete, 4 rejected"
    assert manifest["counts"]["docs"] == summary.counts["docs"] == 17
    assert manifest["counts"]["rejected"] == summary.rejected == 4
    assert manifest["counts"]["entities"] == sum(len(line["entities"]) for line in lines)
    assert manifest["models"][0]["backend"] == {"backend": "tests.Names.v1"}
    assert manifest["models"][0]["labels"] == ["person"]
    assert manifest["settings"]["shard_size"] == 3
    assert len(manifest["shards"]) == len(manifest["done"]) == 8
    assert summary.complete and summary.skipped == 0 and summary.new_docs == 21


def test_a_failing_document_in_a_batch_above_the_components_duplicates_nothing(tmp_path: Path):
    """--batch-size 6 over a component of batch_size 2: the run's size reaches the component,
    and when a later chunk fails no Doc of the chunks before it stays in the shard twice."""
    lines = ["Ann one.", "Ben two.", "Cy three.", "Dee four.", "Eve will FAIL.", "Flo six."]
    corpus, _ = write_lines(tmp_path / "corpus", lines)
    block = {"@reasoning_ner_backends": "tests.Names.v1"}
    spec = PipelineSpec.from_component(
        {"labels": ["person"], "backend": block, "batch_size": 2}, code=[CODE]
    )
    out = tmp_path / "out"
    summary = annotate(
        [str(corpus)],
        out,
        spec,
        AnnotateOptions(shard_size=6, batch_size=6, jsonl=True),
        progress=False,
    )
    assert [line["text"] for line in output_lines(out)] == lines[:4] + lines[5:]
    assert summary.counts["docs"] == 5 and summary.rejected == 1
    annotator = ShardAnnotator(ShardJob(spec, str(tmp_path / "other"), "run", batch_size=6))
    assert annotator.component.batch_size == annotator.batch_size == 6


def test_shards_read_back_in_a_new_process_answer_the_extensions(tmp_path: Path):
    """A user reading the DocBin shards later has imported the package, not built a
    component: the default extensions must be there."""
    corpus, _ = write_lines(tmp_path / "corpus", ["Ann met Ben."])
    annotate([str(corpus)], tmp_path / "out", names_spec(tmp_path), progress=False)
    [shard] = (tmp_path / "out" / "shards").glob("*.spacy")
    script = (
        "import spacy, spacy_reasoningner; from spacy.tokens import DocBin; "
        f"[doc] = DocBin().from_disk({str(shard)!r}).get_docs(spacy.blank('en').vocab); "
        "print(doc._.ner_reasoning, [e.text for e in doc.ents])"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "Capitalized words are people. ['Ann', 'Ben']"


def test_a_run_that_failed_at_start_does_not_block_the_corrected_command(tmp_path: Path):
    import dataclasses

    corpus, lines = write_lines(tmp_path / "corpus", ["Ann one.", "Ben two."])
    out = tmp_path / "out"
    good = names_spec(tmp_path)
    with pytest.raises(ValueError, match="label"):
        annotate([str(corpus)], out, dataclasses.replace(good, labels=[""]), progress=False)
    assert (out / "manifest.json").exists()  # it records the failed attempt
    # The corrected command, without --overwrite:
    summary = annotate([str(corpus)], out, good, AnnotateOptions(jsonl=True), progress=False)
    assert summary.complete and [line["text"] for line in output_lines(out)] == lines
    # A run that finished shards is still protected.
    with pytest.raises(ValueError, match="holds a run with other pipeline"):
        annotate([str(corpus)], out, dataclasses.replace(good, labels=["place"]), progress=False)


def test_a_backend_without_identity_stops_a_cached_run_at_start(tmp_path: Path):
    corpus, lines = write_lines(tmp_path / "corpus", ["Ann one.", "Ben two."])
    block = {"@reasoning_ner_backends": "tests.AnonymousNames.v1"}
    spec = PipelineSpec.from_component({"labels": ["person"], "backend": block}, code=[CODE])
    with pytest.raises(ValueError, match=r"AnonymousNames has no 'identity'.*or pass --no-cache"):
        annotate([str(corpus)], tmp_path / "out", spec, progress=False)
    summary = annotate(
        [str(corpus)],
        tmp_path / "out",
        spec,
        AnnotateOptions(cache=False, jsonl=True),
        progress=False,
    )
    assert summary.complete and [line["text"] for line in output_lines(tmp_path / "out")] == lines


def test_rerun_skips_finished_shards_and_refuses_other_settings(corpus: Path, tmp_path: Path):
    out = tmp_path / "out"
    spec = names_spec(tmp_path, log="log.txt")
    annotate(
        [str(corpus)], out, spec, AnnotateOptions(shard_size=4, keep_going=True), progress=False
    )
    generated = logged(tmp_path)
    again = annotate(
        [str(corpus)], out, spec, AnnotateOptions(shard_size=4, keep_going=True), progress=False
    )
    assert logged(tmp_path) == generated  # nothing regenerated
    assert again.skipped == again.shards and again.new_docs == 0 and again.counts["docs"] == 17
    with pytest.raises(ValueError, match="holds a run with other shards"):
        annotate([str(corpus)], out, spec, AnnotateOptions(shard_size=5), progress=False)
    (corpus / "a.txt").write_text("Zed alone.\n")
    with pytest.raises(
        ValueError, match="other inputs; give another output folder, or --overwrite"
    ):
        annotate([str(corpus)], out, spec, AnnotateOptions(shard_size=4), progress=False)
    fresh = annotate(
        [str(corpus)], out, spec, AnnotateOptions(shard_size=4, overwrite=True), progress=False
    )
    assert fresh.skipped == 0 and fresh.counts["docs"] == 11
    assert not any("Alice" in line["text"] for line in output_lines(out))


def test_a_shard_where_every_document_fails_stops_the_run_and_a_rerun_resumes(tmp_path: Path):
    corpus, lines = write_lines(tmp_path / "corpus", FAILING_SHARD_LINES)
    out = tmp_path / "out"
    spec = names_spec(tmp_path, log="log.txt", heal_marker="healed")
    with pytest.raises(
        ShardFailed, match=r"shard 00001 .* all 2 documents failed, the last with BackendError"
    ):
        annotate([str(corpus)], out, spec, AnnotateOptions(shard_size=2), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and list(manifest["done"]) == ["00000"]
    assert not (out / "shards" / "00001.spacy").exists()
    assert logged(tmp_path) == ["Una one.", "Vic two."]
    (tmp_path / "healed").touch()  # the cause is fixed
    summary = annotate([str(corpus)], out, spec, AnnotateOptions(shard_size=2), progress=False)
    assert summary.complete and summary.skipped == 1 and summary.rejected == 0
    assert logged(tmp_path) == lines  # each document generated once over both runs
    # --keep-going rejects such documents instead.
    (tmp_path / "healed").unlink()
    going = annotate(
        [str(corpus)],
        tmp_path / "out2",
        spec,
        AnnotateOptions(shard_size=2, keep_going=True),
        progress=False,
    )
    assert going.complete and going.rejected == 2 and going.counts["docs"] == 4


def test_killed_process_resumes_without_regenerating_finished_work(tmp_path: Path):
    """SIGKILL in the middle of a shard: done shards are skipped and the batches that finished
    before the kill come from the response cache, so every document is generated once."""
    lines = [f"Person{i} Name{i} here." for i in range(12)]
    lines[6] = "Now KILL Worker."
    corpus, _ = write_lines(tmp_path / "corpus", lines)
    command = [
        sys.executable, "-m", "spacy_reasoningner", "annotate", str(corpus), "-o", str(tmp_path / "out"),
        "--labels", "person", "--code", CODE, "--shard-size", "4", "--batch-size", "2",
        "--backend", json.dumps({"@reasoning_ner_backends": "tests.Names.v1",
                                 "log": str(tmp_path / "log.txt"), "kill_marker": str(tmp_path / "killed")}),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == -9, first.stderr  # killed by SIGKILL
    assert logged(tmp_path) == lines[:6]  # shard 0, and shard 1's first batch (cached)
    assert (tmp_path / "out" / "shards" / "00000.done.json").exists()
    assert not (tmp_path / "out" / "shards" / "00001.done.json").exists()
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "12 docs annotated in 3 shards (1 done before)" in second.stderr
    assert logged(tmp_path) == lines  # nothing generated twice
    docs = [
        d
        for p in sorted((tmp_path / "out" / "shards").glob("*.spacy"))
        for d in DocBin().from_disk(p).get_docs(spacy.blank("en").vocab)
    ]
    assert [d.text for d in docs] == lines


# --------------------------------------------------------------------------- CLI


runner = CliRunner()


def test_cli_annotates_with_a_saved_pipeline_and_relabels_it(corpus: Path, tmp_path: Path):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner",
        config={"labels": ["thing"], "backend": {"@reasoning_ner_backends": "tests.Names.v1"}},
    )
    nlp.to_disk(tmp_path / "pipeline")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["annotate", str(corpus / "*.txt"), "-o", str(out), "--pipeline", str(tmp_path / "pipeline"),
         "--labels", "person", "--code", CODE, "--jsonl", "--no-cache",
         "--components.reasoning_ner.max_chars", "500"],
    )  # fmt: skip
    assert result.exit_code == EXIT_REJECTS, result.output  # d.txt line 2 is not UTF-8
    assert "9 docs annotated in 2 shards (0 done before)" in result.stderr
    assert "1 rejected" in result.stderr
    assert {e["label"] for line in output_lines(out) for e in line["entities"]} == {"person"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["pipeline"]["overrides"] == {
        "components.reasoning_ner.max_chars": 500
    }
    assert manifest["settings"]["pipeline"]["labels"] == ["person"]
    assert not (out / "cache").exists()


def test_cli_usage_errors(corpus: Path, tmp_path: Path):
    out = ["-o", str(tmp_path / "out")]
    cases = [
        (["--components.x", "1", *out], 2, "no inputs"),
        ([str(corpus), *out], 2, "no entity types"),
        ([str(corpus), *out, "--pipeline", "p", "--model", "m"], 2, "--model configures a new"),
        ([str(corpus), *out, "--labels", "person", "--backend", "[1]"], 1, "must be a JSON object"),
        ([str(tmp_path / "none*.txt"), *out, "--labels", "person"], 1, "names no file"),
        # Config overrides are read by the package's own parser (spaCy's is private).
        ([str(corpus), *out, "--labels", "person", "--max_chars", "5"], 1, "names no setting"),
        (
            [str(corpus), *out, "--labels", "person", "--components.x", "1", "2"],
            1,
            "unexpected argument '2'",
        ),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, ["annotate", *args])
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr, (args, result.stderr)


def test_config_overrides_read_like_spacy_train():
    args = ["--cg.seed", "3", "--sft.reasoning", "--x.y=abc", "--a.b", "[1, 2]", "--p.q", "a b"]
    assert parse_overrides(args) == {
        "cg.seed": 3,
        "sft.reasoning": True,
        "x.y": "abc",
        "a.b": [1, 2],
        "p.q": "a b",
    }
    with pytest.raises(ValueError, match="names no setting"):
        parse_overrides(["--seed", "3"])
    with pytest.raises(ValueError, match="unexpected argument 'stray'"):
        parse_overrides(["stray"])


def test_ray_engine_without_ray_names_the_extra(corpus: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    monkeypatch.delitem(sys.modules, "spacy_reasoningner.annotate.ray_engine", raising=False)
    monkeypatch.delattr(spacy_reasoningner.annotate, "ray_engine", raising=False)
    with pytest.raises(ImportError, match=r'pip install "spacy-reasoningner\[ray\]"'):
        annotate(
            [str(corpus)],
            tmp_path / "out",
            names_spec(tmp_path),
            AnnotateOptions(engine="ray"),
            progress=False,
        )


def test_pipeline_spec_needs_one_source():
    with pytest.raises(ValueError, match="path or a config"):
        PipelineSpec()
    assert _corpus.names_answer("Ann met Bo.").endswith('{"entities": {"person": ["Ann", "Bo"]}}')


def test_a_json_line_too_deep_or_too_long_is_a_reject_not_a_crash(tmp_path: Path):
    lines = [
        '{"text": "Alice met Bob."}',
        '{"text": "x", "n": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"text": "x", "n": ' + "1" * 5000 + "}",
    ]
    (tmp_path / "deep.jsonl").write_text("\n".join(lines) + "\n")
    (shard,) = plan_shards(resolve_inputs([str(tmp_path / "deep.jsonl")]), shard_size=10)
    items = read_shard(shard)
    assert items[0].text == "Alice met Bob."
    assert [i.error for i in items[1:]] == [
        "JSON that cannot be read: RecursionError",
        "JSON that cannot be read: ValueError",
    ]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"engine": "spark"}, "engine 'spark' is not one of"),
        ({"input_format": "csv"}, "input format 'csv' is not auto or one of"),
        ({"shard_size": 0}, "shard_size and batch_size must be >= 1"),
        ({"batch_size": 0}, "shard_size and batch_size must be >= 1"),
    ],
)
def test_annotate_options_are_checked_when_made(options: dict, problem: str):
    """A typed spec: a wrong option fails where it is written, before any file is read."""
    with pytest.raises(ValueError, match=problem):
        AnnotateOptions(**options)


def test_a_spec_from_the_command_lines_options(tmp_path: Path):
    """The library builds what the CLI's options ask for: a new pipeline of labels on a
    model, or a saved one whose labels and backend are replaced; contradictions are errors."""
    model = "bundled:tiny-random-qwen3"
    new = PipelineSpec.from_options(labels=["person"], model=model)
    component = Config().from_str(new.config)["components"]["reasoning_ner"]
    assert (component["labels"], component["backend"]["model"]) == (["person"], model)
    saved_config = Config().from_str(new.config)
    saved_config["components"]["ner_llm"] = saved_config["components"].pop("reasoning_ner")
    saved_config.to_disk(tmp_path / "config.cfg")  # what spacy.load reads first
    block = {"@reasoning_ner_backends": "tests.Names.v1"}
    saved = PipelineSpec.from_options(
        pipeline=str(tmp_path), labels=["place"], backend=block, overrides={"a.b": 1}
    )
    assert (saved.path, saved.labels, saved.config) == (str(tmp_path), ["place"], None)
    # The backend block replaces the saved component's, found by its factory.
    assert saved.overrides == {"a.b": 1, "components.ner_llm.backend": block}
    with pytest.raises(ValueError, match="no entity types"):
        PipelineSpec.from_options(model=model)
    with pytest.raises(ValueError, match="--model configures a new pipeline"):
        PipelineSpec.from_options(pipeline=str(tmp_path), model=model)
