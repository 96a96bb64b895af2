"""The prepare stage, the first of every workflow: check the data folder against the
checksums of project.yml's assets and add the label files (``configs/labels/<dataset>.json``,
compiled for this project: type names under each naming convention and definitions) where
they are missing. Given the workflow's profile it also checks, before any stage starts, that
the profile exists, that the evaluation split it reads is there, and that this machine has the
GPUs its stages are launched on.

    python -m training prepare-data --data ../shared/data [--profile gpu-8b]
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .assets import checksum_problem, data_assets, fetch_hint, split_problems
from .config import load_profile, require

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "configs" / "labels"


@dataclass
class PrepareConfig:
    """The prepare stage's one setting: the data folder (project.yml's ``vars.data``)."""

    data: Path

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        require(
            self.data.is_dir(),
            f"no data folder {self.data}: run `spacy project assets` or pass --vars.data",
        )


def prepare(config: PrepareConfig) -> list[str]:
    """Problems found (missing or changed files); copies missing label files. Every asset with
    an md5 must be there; the others (the test splits, the extra corpora) are checked when
    present, and required by the profile that reads them (``profile_problems``)."""
    data = config.data
    problems = []
    for path, asset in data_assets(data).items():
        if path.is_file():
            problems.append(checksum_problem(path, asset))
        elif "checksum" in asset and not asset.get("extra"):
            problems.append(f"missing {path}: {fetch_hint(asset)}")
    for labels in sorted(LABELS.glob("*.json")):
        target = data / labels.stem / "labels.json"
        if target.parent.is_dir() and not target.exists():
            shutil.copyfile(labels, target)
    return [p for p in problems if p]


def profile_problems(profile_name: str, data: Path) -> list[str]:
    """What stops the ``all`` workflow of a profile before it starts: an unknown profile, an
    evaluation split that is not there, GPUs its stages are launched on that this machine
    does not have."""
    from .launch import check_gpus, plan_stage, visible_gpus

    override = {"paths.data": str(data)}
    try:
        profile = load_profile(profile_name, override)
    except FileNotFoundError as error:
        return [f"{error} (--vars.profile)"]
    evaluation = profile.get("evaluate", {})
    problems = split_problems(
        data, list(evaluation.get("datasets", [])), evaluation.get("split", "dev")
    )
    available: int | None = None
    for stage in ("data", "sft", "grpo", "evaluate"):
        args = ["--paths.data", str(data)]
        plan = plan_stage(stage, profile_name, args, profile)
        if plan.gpus_needed():
            available = visible_gpus() if available is None else available
            problems += [
                f"profile {profile_name!r}, stage {stage!r}: {p}; on a CPU machine use "
                "--vars.profile cpu (or smoke)"
                for p in check_gpus(plan, available)
            ]
    return problems


def command(
    data: Annotated[Path, typer.Option(help="The data folder (project.yml's vars.data).")],
    profile: Annotated[
        str | None,
        typer.Option(help="The workflow's profile: checked before any stage starts."),
    ] = None,
) -> None:
    """Check the benchmark files and add label files to the data folder."""
    problems = prepare(PrepareConfig(data))
    if profile is not None:
        problems += profile_problems(profile, data)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    checked = f"; profile {profile} can start here" if profile else ""
    typer.echo(f"{data}: every asset present and unchanged; label files in place{checked}")
