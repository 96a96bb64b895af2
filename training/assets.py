"""The project's data assets (project.yml's ``assets`` under ``vars.data``): where each file
lies, whether it is the published one, and how to fetch it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import srsly

ROOT = Path(__file__).resolve().parents[1]


def data_assets(data: Path) -> dict[Path, dict[str, Any]]:
    """``{file in the data folder: its asset}`` for project.yml's assets under ``vars.data``."""
    project = srsly.read_yaml(ROOT / "project.yml")
    prefix = "${vars.data}/"
    return {
        data / asset["dest"][len(prefix) :]: asset
        for asset in project["assets"]
        if asset["dest"].startswith(prefix)
    }


def checksum_problem(path: Path, asset: dict[str, Any]) -> str:
    """What differs between ``path`` and the asset's published digest (spaCy's md5
    ``checksum``, or the ``sha256`` this project checks where no md5 is published); empty
    when it matches."""
    for key, algorithm in (("checksum", "md5"), ("sha256", "sha256")):
        if key in asset and hashlib.new(algorithm, path.read_bytes()).hexdigest() != asset[key]:
            return (
                f"{path} differs from the published file ({algorithm} {asset[key]}): delete it "
                "and run `spacy project assets` again"
            )
    return ""


def fetch_hint(asset: dict[str, Any]) -> str:
    extra = " --extra" if asset.get("extra") else ""
    return f"run `spacy project assets{extra}` ({asset['url']}) or pass --vars.data"


def split_problems(data: Path, datasets: list[str], split: str) -> list[str]:
    """The evaluation files of ``split`` that are not there or differ from their asset. Dev
    is always there (MIT's is a seeded slice of train); the test splits come as assets."""
    if split == "dev":
        return []
    assets = data_assets(data)
    problems = []
    for dataset in datasets:
        path = data / dataset / f"{split}.txt"
        asset = assets.get(path)
        if path.is_file():
            problems.append(checksum_problem(path, asset) if asset else "")
        else:
            hint = fetch_hint(asset) if asset else "add the file or evaluate another split"
            problems.append(f"no {split} split of {dataset} at {path}: {hint}")
    return [p for p in problems if p]
