"""project.yml as a user types it: every workflow of every profile dry-runs through
`spacy project run`, `spacy project document` renders, and the prepare command, first in every
workflow, stops a run that cannot work (unknown profile, missing or changed asset, GPUs this
machine lacks) with a message that names the fix. The smoke profile's real run is
tests/test_smoke_profile.py (slow)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import srsly

from ._data import DATA, needs_data

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.stem for p in (ROOT / "configs").glob("*.cfg"))
WORKFLOWS = sorted(srsly.read_yaml(ROOT / "project.yml")["workflows"])


def spacy_project(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spacy", "project", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def with_vars(text: str, values: dict[str, object]) -> str:
    """``text`` with its ``${vars.x}`` replaced, as spaCy interpolates them (vars may refer to
    vars)."""
    while "${vars." in text:
        text = re.sub(r"\$\{vars\.(\w+)\}", lambda m: str(values[m[1]]), text)
    return text


def prepare(data: Path, profile: str) -> subprocess.CompletedProcess[str]:
    command = ["prepare-data", "--data", str(data), "--profile", profile]
    return subprocess.run(
        [sys.executable, "-m", "training", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def refusal(data: Path, profile: str) -> str:
    """What prepare says when it stops ``profile`` on ``data`` (it must stop)."""
    run = prepare(data, profile)
    assert run.returncode == 1, run.stdout + run.stderr
    return run.stderr


def test_the_profiles_are_the_five_documented() -> None:
    assert PROFILES == ["cpu", "cpu-0.5b", "gpu-1.7b", "gpu-8b", "smoke"]
    assert WORKFLOWS == ["all", "distill"]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_every_workflow_of_every_profile_dry_runs(workflow: str, profile: str) -> None:
    run = spacy_project(
        # --force: spaCy skips steps a local project.lock records as done, even when dry
        "run",
        workflow,
        ".",
        "--vars.profile",
        profile,
        "--vars.data",
        str(DATA),
        "--dry",
        "--force",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    project = srsly.read_yaml(ROOT / "project.yml")
    scripts = {c["name"]: c["script"] for c in project["commands"]}
    for step in project["workflows"][workflow]:  # every step, its script with the profile's vars
        assert re.search(rf"=+ {step} =+", run.stdout), step
        for line in scripts[step]:
            line = with_vars(line, {**project["vars"], "profile": profile, "data": str(DATA)})
            assert line.removeprefix("python ") in run.stdout, line
    assert f"prepare-data --data {DATA} --profile {profile}" in run.stdout


def test_project_document_renders_every_command(tmp_path: Path) -> None:
    readme = tmp_path / "PROJECT.md"
    run = spacy_project("document", ".", "--output", str(readme))
    assert run.returncode == 0, run.stdout + run.stderr
    text = readme.read_text()
    for command in srsly.read_yaml(ROOT / "project.yml")["commands"]:
        assert f"`{command['name']}`" in text


@needs_data
def test_prepare_passes_a_profile_this_machine_can_run() -> None:
    run = prepare(DATA, "smoke")
    assert run.returncode == 0, run.stderr
    assert "profile smoke can start here" in run.stdout


@needs_data
def test_an_unknown_profile_stops_the_workflow_before_any_stage() -> None:
    run = spacy_project("run", "all", ".", "--vars.profile", "gpu-80b", "--vars.data", str(DATA))
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "no profile" in output and "gpu-80b" in output and "'gpu-8b'" in output
    assert "--vars.profile" in output
    assert not re.search(r"=+ data =+", output)  # the data stage never started


@needs_data
@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="a machine with GPUs can run the GPU profiles"
)
def test_a_gpu_profile_on_a_machine_without_gpus_is_refused() -> None:
    message = refusal(DATA, "gpu-8b")
    assert "profile 'gpu-8b', stage 'sft': it runs on 8 GPUs" in message
    assert "this machine shows 0" in message
    assert "--vars.profile cpu" in message


@needs_data
def test_the_gpu_profiles_evaluate_on_test_splits_that_must_be_fetched() -> None:
    # The test splits are not in the development data on purpose.
    message = refusal(DATA, "gpu-1.7b")
    assert "no test split of crossner_ai" in message
    assert "spacy project assets" in message
    assert "zliucr/CrossNER/2e7ba2a7798c961e3f29fbc51252c5a8d40224bf" in message


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"no benchmark data at {DATA}")
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy)
    return copy


def test_a_missing_asset_is_named_with_its_download(data_copy: Path) -> None:
    (data_copy / "conll2003" / "dev.txt").unlink()
    message = refusal(data_copy, "cpu")
    assert f"missing {data_copy / 'conll2003' / 'dev.txt'}" in message
    assert "spacy project assets" in message


def test_an_asset_with_another_checksum_is_refused(data_copy: Path) -> None:
    with (data_copy / "crossner_music" / "dev.txt").open("a") as handle:
        handle.write("Extra O\n")
    test_split = data_copy / "crossner_ai" / "test.txt"  # a sha256 asset, checked when present
    test_split.write_text("Not O\nthe O\nfile O\n")
    message = refusal(data_copy, "cpu")
    assert "crossner_music/dev.txt differs from the published file (md5" in message
    assert "crossner_ai/test.txt differs from the published file (sha256 7595ad38" in message
    assert "delete it and run `spacy project assets` again" in message
