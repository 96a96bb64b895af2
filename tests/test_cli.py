"""The command line interface: input formats, pipeline options, JSONL output and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from typer.testing import CliRunner

import tests._scripted_backend  # noqa: F401 (registers tests.Scripted.v1 for spacy.load)
from spacy_reasoningner import __version__, cli
from spacy_reasoningner.cli import app
from spacy_reasoningner.models import DEFAULT_MODEL
from tests._data import DATA, needs_data

OUTPUT_KEYS = ["text", "entities", "reasoning", "unaligned", "truncated"]
SCRIPTED_ANSWER = (
    "<think>Alice is a person and Paris a city.</think>"
    '{"entities": {"person": ["Alice"], "location": ["Paris", "Atlantis"], "animal": ["cat"]}}'
)

runner = CliRunner()


def run(*args: str, stdin: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def lines_of(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


@pytest.fixture
def tiny(tiny_model_dir: Path) -> list[str]:
    """Options for a fast pipeline on the tiny random model (output is noise, shape is not)."""
    # A random model never closes a constrained answer: unconstrained keeps these tests quick.
    return ["--labels", "person,location", "--model", str(tiny_model_dir), "--max-new-tokens", "8",
            "--structured-output", "false"]  # fmt: skip


@pytest.fixture(scope="module")
def scripted_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved pipeline whose model always gives SCRIPTED_ANSWER, with renamed extensions."""
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person", "location"],
            "backend": {
                "@reasoning_ner_backends": "tests.Scripted.v1",
                "completion": SCRIPTED_ANSWER,
            },
            "reasoning_attr": "cli_why",
            "unaligned_attr": "cli_missed",
            "truncated_attr": "cli_cut",
        },
    )
    path = tmp_path_factory.mktemp("scripted-pipeline")
    nlp.to_disk(path)
    return path


# --------------------------------------------------------------------------- output


def test_scripted_pipeline_entities_offsets_and_extensions(scripted_pipeline: Path):
    result = run("predict", "--pipeline", scripted_pipeline, "Bob met Alice in Paris.")
    assert result.exit_code == 0, result.output
    [record] = lines_of(result.stdout)
    assert list(record) == OUTPUT_KEYS
    assert record["text"] == "Bob met Alice in Paris."
    assert record["entities"] == [
        {"text": "Alice", "label": "person", "start": 8, "end": 13},
        {"text": "Paris", "label": "location", "start": 17, "end": 22},
    ]
    # Read from the component's configured extension names (cli_why, cli_missed, cli_cut).
    assert record["reasoning"] == "Alice is a person and Paris a city."
    missed = {(u["text"], u["label"]) for u in record["unaligned"]}
    assert missed == {("Atlantis", "location"), ("cat", "animal")}
    assert all(u["reason"] for u in record["unaligned"])
    assert record["truncated"] is False


def test_stdin_jsonl_is_detected_and_fields_pass_through(scripted_pipeline: Path):
    stdin = "\n".join(
        [
            json.dumps({"id": "a", "text": "Alice in Paris.", "meta": {"source": "x"}}),
            "",
            json.dumps({"text": "", "id": "empty"}),
            json.dumps({"id": "c", "text": "Nobody here."}),
        ]
    )
    result = run("predict", "--pipeline", scripted_pipeline, "--batch-size", "2", stdin=stdin)
    assert result.exit_code == 0, result.output
    records = lines_of(result.stdout)
    assert [r["id"] for r in records] == ["a", "empty", "c"]
    assert records[0]["meta"] == {"source": "x"}
    assert list(records[0]) == ["id", "meta", *OUTPUT_KEYS]
    assert [e["text"] for e in records[0]["entities"]] == ["Alice", "Paris"]
    assert records[1]["text"] == "" and records[1]["entities"] == []
    assert records[2]["entities"] == []


def test_output_file_text_field_and_forced_text_format(scripted_pipeline: Path, tmp_path: Path):
    source = tmp_path / "in.ndjson"
    source.write_text(json.dumps({"body": "Alice", "n": 1}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run(
        "predict", "--pipeline", scripted_pipeline, "-i", source, "--text-field", "body", "-o", out
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    [record] = lines_of(out.read_text(encoding="utf-8"))
    assert record["n"] == 1 and record["text"] == "Alice" and "body" not in record

    # --format text takes each line as a document even when it looks like JSON.
    result = run("predict", "--pipeline", scripted_pipeline, "--format", "text", "-i", source)
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in lines_of(result.stdout)] == [source.read_text().strip()]


def test_tiny_model_keeps_every_document_in_order(tiny: list[str], tmp_path: Path):
    texts = tmp_path / "docs.txt"
    texts.write_text("Alice lives in Paris.\n\n   \nBob works for Acme in Berlin.\r\nCarol.\n")
    jsonl = tmp_path / "more.jsonl"
    rows = [{"id": i, "text": f"Document number {i}.", "meta": {"i": i}} for i in range(3)]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run("predict", *tiny, "--batch-size", "2", "-i", texts, "--input", jsonl)
    assert result.exit_code == 0, result.output
    records = lines_of(result.stdout)
    expected = ["Alice lives in Paris.", "Bob works for Acme in Berlin.", "Carol."]
    assert [r["text"] for r in records] == expected + [r["text"] for r in rows]
    assert [r.get("id") for r in records[3:]] == [0, 1, 2]
    assert [r.get("meta") for r in records[3:]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    for record in records:
        assert set(OUTPUT_KEYS) <= set(record)
        assert isinstance(record["reasoning"], str)
        assert isinstance(record["unaligned"], list)
        assert isinstance(record["truncated"], bool)
        for ent in record["entities"]:
            assert record["text"][ent["start"] : ent["end"]] == ent["text"]
            assert ent["label"] in {"person", "location"}


def test_tiny_model_texts_as_arguments(tiny: list[str]):
    result = run("predict", *tiny, "--no-reasoning", "--temperature", "0", "One.", "Two.")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in lines_of(result.stdout)] == ["One.", "Two."]


def test_labels_file_with_definitions_reaches_the_component(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    definitions = {"person": "a human being", "Medical Condition": "a disease or symptom"}
    labels_file = tmp_path / "labels.json"
    labels_file.write_text(json.dumps(definitions))
    built = []
    load = cli._load_pipeline
    monkeypatch.setattr(cli, "_load_pipeline", lambda *a: built.append(load(*a)) or built[-1])
    args = ["--labels-file", labels_file, "--model", tiny_model_dir, "--max-new-tokens", "8",
            "--structured-output", "false"]  # fmt: skip
    result = run("predict", *args, "--max-chars", "500", "Alice has the flu.")
    assert result.exit_code == 0, result.output
    [(_, component)] = built
    assert component.labels == ("person", "Medical Condition")
    assert component.schema.definitions == definitions
    assert component.settings.max_chars == 500
    assert component.generation.max_new_tokens == 8
    assert component.backend.reference == str(tiny_model_dir)
    assert len(lines_of(result.stdout)) == 1


def test_python_dash_m_reads_stdin(tiny_model_dir: Path):
    command = [sys.executable, "-m", "spacy_reasoningner", "predict", "--labels", "person"]
    command += [
        "--model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "8",
        "--structured-output",
        "false",
    ]
    done = subprocess.run(
        command,
        input="Alice went home.\nBob stayed.\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert [r["text"] for r in lines_of(done.stdout)] == ["Alice went home.", "Bob stayed."]


def test_info(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACY_REASONINGNER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "some-model").mkdir(parents=True)
    (tmp_path / "cache" / "some-model" / "weights").write_bytes(b"x" * 3 * 2**20)
    result = run("info")
    assert result.exit_code == 0, result.output
    assert __version__ in result.stdout
    assert DEFAULT_MODEL in result.stdout
    assert "bundled:smollm2-135m-ner: available" in result.stdout
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert "reasoning_ner.Transformers.v1" in lines["backends"]
    assert "tests.Scripted.v1" in lines["backends"]  # registered ones too
    assert lines["device"].startswith("cpu (") and "vLLM" in lines["device"]
    assert lines["model cache"] == f"{tmp_path / 'cache'} (3 MB: some-model)"


def test_version_option():
    result = run("--version")
    assert result.exit_code == 0 and result.stdout == f"spacy-reasoningner {__version__}\n"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("lines", "bad_line", "message"),
    [
        (['{"text": "ok"}', "", '{"text": "fine"}', '{"text": broken}'], 4, "not valid JSON"),
        (['{"text": "ok"}', '{"id": 2}'], 2, "has no 'text' field (choose it with --text-field)"),
        (['{"text": "ok"}', '{"text": 3}'], 2, "non-string 'text' field"),
        (['{"text": "ok"}', '["text"]'], 2, "expected a JSON object"),
        (
            ['{"text": "ok"}', '{"text": "a", "n": ' + "[" * 5000 + "]" * 5000 + "}"],
            2,
            "RecursionError",
        ),
        (['{"text": "a", "n": ' + "1" * 5000 + "}"], 1, "cannot be read: ValueError"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, lines, bad_line, message):
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = run("predict", "--labels", "person", "--input", source)
    assert result.exit_code == 1
    assert f"{source}, line {bad_line}: " in result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_jsonl_error_on_stdin_names_stdin():
    result = run("predict", "--labels", "person", stdin='{"text": "a"}\n{"id": 1}\n')
    assert result.exit_code == 1
    assert "<stdin>, line 2: " in result.stderr


def test_missing_labels_is_an_error():
    result = run("predict", "Alice")
    assert result.exit_code == 2
    assert "no entity types" in result.stderr
    assert "--labels" in result.stderr and "--pipeline" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labels", "a", "--labels-file", "{labels}"], "not both"),
        (["--labels-file", "{labels}", "--pipeline", "x"], "--labels-file"),
        (["--pipeline", "x", "--model", "m", "--no-reasoning"], "--model, --no-reasoning"),
        (["--labels", "a", "-i", "{labels}", "Alice"], "not both"),
    ],
)
def test_conflicting_options(tmp_path: Path, args, message):
    labels = tmp_path / "labels.json"
    labels.write_text('["a"]')
    result = run("predict", *[a.format(labels=labels) for a in args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_bad_labels_and_model_are_clear_errors(tmp_path: Path):
    labels = tmp_path / "labels.json"
    labels.write_text('{"person": ')
    result = run("predict", "--labels-file", labels, "Alice")
    assert result.exit_code == 1 and f"cannot read labels from {labels}" in result.stderr

    result = run("predict", "--labels", " , ", "Alice")
    assert result.exit_code == 1 and "labels is empty" in result.stderr

    result = run("predict", "--labels", "person", "--model", tmp_path / "nowhere", "Alice")
    assert result.exit_code == 1 and "nowhere': no such file or folder" in result.stderr

    result = run("predict", "--labels", "person", "-i", tmp_path / "missing.txt")
    assert result.exit_code == 1 and "cannot read" in result.stderr


def test_pipeline_without_reasoning_ner_is_an_error(tmp_path: Path):
    spacy.blank("en").to_disk(tmp_path / "blank")
    result = run("predict", "--pipeline", tmp_path / "blank", "Alice")
    assert result.exit_code == 1
    assert "exactly one reasoning_ner component, found: none" in result.stderr


# --------------------------------------------------------------------------- evaluate


@needs_data
def test_evaluate_writes_results_json_markdown_and_chart(scripted_pipeline: Path, tmp_path: Path):
    out = tmp_path / "eval"
    args = ["--data", DATA, "--datasets", "crossner_ai,mit_movie", "--limit", "2", "-o", out]
    result = run("evaluate", scripted_pipeline, *args)
    assert result.exit_code == 0, result.output
    assert "| crossner_ai | 2 |" in result.stdout and "| mit_movie | 2 |" in result.stdout
    assert "mit_movie: no dev split" in result.stdout
    saved = json.loads((out / "results.json").read_text())
    assert [d["dataset"] for d in saved["datasets"]] == ["crossner_ai", "mit_movie"]
    assert (out / "results.md").read_text() == result.stdout.rstrip("\n") + "\n"
    assert (out / "f1.png").read_bytes().startswith(b"\x89PNG")


@needs_data
def test_evaluate_one_file_with_its_labels_json(scripted_pipeline: Path, tmp_path: Path):
    bio = tmp_path / "conll2003" / "sample.txt"
    bio.parent.mkdir()
    bio.write_text("Alice NNP B-NP B-PER\nflew VBD B-VP O\nto TO B-PP O\nParis NNP B-NP B-LOC\n")
    labels = DATA / "conll2003" / "labels.json"
    result = run("evaluate", scripted_pipeline, "--file", bio, "--labels-json", labels)
    assert result.exit_code == 0, result.output
    # The scripted answer names Alice (person) and Paris (location): natural CoNLL names.
    # The reference metric counts every string answered (the unaligned one too): precision
    # 50; grounded and offset F1 count the entities set.
    row = "| conll2003 | 1 | 50.0 | 100.0 | 66.7 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |"
    assert row in result.stdout


@needs_data
def test_evaluate_refuses_overlap_with_training_data(scripted_pipeline: Path, tmp_path: Path):
    log = tmp_path / "samples.jsonl"
    log.write_text(json.dumps({"text": "Alice flew to Paris .", "kept": True}) + "\n")
    bio = tmp_path / "mine.bio"
    bio.write_text("Alice\tB-person\nflew\tO\nto\tO\nParis\tB-location\n.\tO\n")
    args = ["evaluate", scripted_pipeline, "--file", bio, "--training", tmp_path]
    result = run(*args)
    assert result.exit_code == 1
    assert "evaluation sentences found in the training data" in result.stderr
    result = run(*args, "--allow-overlap")
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --data DIR with --datasets, or --file PATH"),
        (["--data", "{tmp}"], "--data needs --datasets"),
        (["--data", "{tmp}", "--datasets", "nowhere"], "no dev split of 'nowhere'"),
    ],
)
def test_evaluate_option_errors(scripted_pipeline: Path, tmp_path: Path, args, message):
    result = run("evaluate", scripted_pipeline, *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code in (1, 2)
    assert message in result.stderr


def test_evaluate_report_without_matplotlib_fails_before_the_model_runs(
    scripted_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    bio = tmp_path / "mine.bio"
    bio.write_text("Alice\tB-person\nflew\tO\nto\tO\nParis\tB-location\n")
    report = tmp_path / "report"
    result = run("evaluate", scripted_pipeline, "--file", bio, "-o", report)
    assert result.exit_code == 1
    assert "pip install 'spacy-reasoningner[train]'" in result.stderr
    assert "| dataset |" not in result.stdout and not report.exists()  # nothing was evaluated
