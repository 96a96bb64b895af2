"""The prepare stage: check the data folder against the checksums of project.yml's assets
and add the label files (``configs/labels/<dataset>.json``, compiled for this project: type
names under each naming convention and definitions) where they are missing.

    python -m training prepare-data --data ../shared/data
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import srsly
import typer

from .config import require

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


def asset_checksums(data: Path) -> dict[Path, str]:
    """``{file in the data folder: md5}`` from project.yml's assets."""
    project = srsly.read_yaml(ROOT / "project.yml")
    prefix = "${vars.data}/"
    return {
        data / asset["dest"][len(prefix) :]: asset["checksum"]
        for asset in project["assets"]
        if asset["dest"].startswith(prefix)
    }


def prepare(config: PrepareConfig) -> list[str]:
    """Problems found (missing or changed files); copies missing label files."""
    data = config.data
    problems = []
    for path, checksum in asset_checksums(data).items():
        if not path.is_file():
            problems.append(f"missing {path}: run `spacy project assets` or pass --vars.data")
        elif hashlib.md5(path.read_bytes()).hexdigest() != checksum:
            problems.append(f"{path} differs from the published file (md5 {checksum})")
    for labels in sorted(LABELS.glob("*.json")):
        target = data / labels.stem / "labels.json"
        if target.parent.is_dir() and not target.exists():
            shutil.copyfile(labels, target)
    return problems


def command(
    data: Annotated[Path, typer.Option(help="The data folder (project.yml's vars.data).")],
) -> None:
    """Check the benchmark files and add label files to the data folder."""
    problems = prepare(PrepareConfig(data))
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{data}: every asset present and unchanged; label files in place")
