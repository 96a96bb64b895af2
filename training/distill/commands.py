"""The ``python -m training distill-*`` commands: options parsed, the stage called."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..config import load_profile, parse_overrides
from .config import DistillConfig
from .data import distill_data
from .evaluate import distill_evaluate, headline
from .student import distill_package, distill_train


def _config(ctx: typer.Context, profile: str) -> DistillConfig:
    return DistillConfig.from_profile(load_profile(profile, parse_overrides(ctx.args)))


def data_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Teacher annotations (or gold) -> filtered, label-mapped train/dev DocBins."""
    report = distill_data(_config(ctx, profile))
    typer.echo(json.dumps(report.to_dict(), indent=2))


def train_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Train the student with spacy train (config from spacy init config)."""
    typer.echo(f"student: {distill_train(_config(ctx, profile))}")


def package_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
    name: str = typer.Option(..., help="Package name (the language code is prefixed)."),
    version: str = typer.Option(..., help="Package version."),
    output: Annotated[Path, typer.Option(help="Folder of the package.")] = Path("packages"),
    build: str = typer.Option("wheel", help="spacy package --build: sdist, wheel or none."),
) -> None:
    """Package the student with spacy package (its meta.json carries the provenance)."""
    typer.echo(f"package: {distill_package(_config(ctx, profile), output, name, version, build)}")


def evaluate_command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Teacher vs student on gold dev sentences: F1, agreement, docs/s."""
    rows = distill_evaluate(_config(ctx, profile))
    typer.echo(json.dumps(headline(rows), indent=2))
