"""The smoke profile for real, as a user types it: `spacy project run all` and `distill` on a
tiny random model (every stage, launcher and code path the GPU profiles take that a CPU can
run), then `annotate` with the pipeline the run built, then the packaged wheel installed into a
fresh virtual environment and loaded from elsewhere. Minutes; the random model learns nothing,
so these tests check what ran and what it wrote, not scores."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import srsly

from ._data import DATA, needs_data

pytestmark = [pytest.mark.slow, needs_data]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "reasoning_ner_smoke"
VERSION = srsly.read_yaml(ROOT / "project.yml")["vars"]["package_version"]


def spacy_project_run(name: str, outputs: Path, *options: str) -> str:
    """`spacy project run <name> . --vars.profile smoke ...`, its output (the run must pass)."""
    command = [sys.executable, "-m", "spacy", "project", "run", name, ".", "--vars.profile"]
    command += ["smoke", "--vars.data", str(DATA), "--vars.outputs", str(outputs / "outputs")]
    command += ["--vars.packages", str(outputs / "packages"), "--vars.package_name", PACKAGE]
    run = subprocess.run(
        [*command, *options], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert run.returncode == 0, f"{name} failed:\n{run.stdout[-6000:]}\n{run.stderr[-6000:]}"
    return run.stdout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `all` workflow of the smoke profile, run once for this module's tests."""
    outputs = tmp_path_factory.mktemp("smoke")
    spacy_project_run("all", outputs)
    return outputs


def test_all_runs_every_stage_and_evaluates_with_one_model_load(smoke_run: Path) -> None:
    run = smoke_run / "outputs" / "smoke"
    for written in [
        "reasoning_data/dataset",
        "reasoning_data/samples.jsonl",
        "sft/model",
        "grpo/model",
        "grpo/prompts_report.json",
        "pipeline/config.cfg",
    ]:
        assert (run / written).exists(), written
    # No InstructUIE folder in the development data: the fallback pool, named as such.
    report = json.loads((run / "grpo" / "prompts_report.json").read_text())
    assert (report["requested"], report["pool"]) == ("instructuie", "sources"), report
    assert "IE_INSTRUCTIONS" in report["fallback"], report
    results = json.loads((run / "evaluation" / "results.json").read_text())
    # The pipeline was built with the evaluation backend: its weights were read once.
    assert results["model_loads"] == 1, results.get("model_loads_by_engine")
    assert {r["dataset"] for r in results["datasets"]} >= {"crossner_ai", "conll2003"}
    wheels = list((smoke_run / "packages").glob(f"en_{PACKAGE}-{VERSION}/dist/*.whl"))
    assert len(wheels) == 1, wheels


def test_annotate_runs_on_the_pipeline_the_workflow_built(smoke_run: Path) -> None:
    corpus = smoke_run / "corpus"
    corpus.mkdir()
    texts = ["Ada Lovelace lived in London.", "Grace Hopper worked for the US Navy."]
    (corpus / "texts.txt").write_text("\n".join(texts) + "\n")
    spacy_project_run("annotate", smoke_run, "--vars.corpus", str(corpus))
    annotated = smoke_run / "outputs" / "smoke" / "annotated"
    shards = sorted((annotated / "shards").glob("*.jsonl"))
    rows = [json.loads(line) for shard in shards for line in shard.read_text().splitlines()]
    assert [row["text"] for row in rows] == texts  # every document, once, in order
    assert (annotated / "rejects.jsonl").read_text() == ""
    assert all(isinstance(row["reasoning"], str) for row in rows)  # the model ran


def test_the_wheel_installs_and_loads_in_a_fresh_environment(smoke_run: Path) -> None:
    """Installed without dependencies into a new venv that sees this environment's packages
    (no network here: spaCy, torch and this package come from it), then loaded by name from a
    folder that is not the checkout."""
    [wheel] = (smoke_run / "packages").glob(f"en_{PACKAGE}-{VERSION}/dist/*.whl")
    venv = smoke_run / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # addsitedir, not a plain path line: the editable install's own .pth must run too.
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "parent_env.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, timeout=600)
    elsewhere = smoke_run / "elsewhere"
    elsewhere.mkdir()
    script = (
        f"import spacy; nlp = spacy.load('en_{PACKAGE}'); "
        "import en_" + PACKAGE + " as p; print(p.__file__); "
        "doc = nlp('Ada Lovelace lived in London.'); "
        "print(nlp.pipe_names, doc.has_extension('ner_reasoning'), doc._.ner_usage is not None)"
    )
    loaded = subprocess.run(
        [str(python), "-c", script], cwd=elsewhere, capture_output=True, text=True, timeout=600
    )
    assert loaded.returncode == 0, loaded.stderr[-4000:]
    where, summary = loaded.stdout.strip().splitlines()[-2:]
    assert where.startswith(site), where  # the installed wheel, not the run's folder
    assert summary == "['reasoning_ner'] True True", summary  # it ran the model on the text


def test_distill_trains_and_packages_a_student(smoke_run: Path) -> None:
    spacy_project_run("distill", smoke_run)
    run = smoke_run / "outputs" / "smoke" / "distill"
    assert (run / "data" / "train.spacy").is_file() and (run / "data" / "dev.spacy").is_file()
    wheels = list((smoke_run / "packages").glob(f"en_{PACKAGE}_student-{VERSION}/dist/*.whl"))
    assert len(wheels) == 1, wheels
