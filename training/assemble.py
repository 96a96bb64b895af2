"""Package a trained model folder as a spaCy pipeline: a blank language plus the
``reasoning_ner`` component on the transformers backend, saved with the weights inside the
pipeline folder (``spacy.load`` needs nothing else).

``[assemble]`` names the model folder (the GRPO or SFT stage's ``model/``), the output
folder, the language and the default labels (a list, or a mapping label -> definition);
``[assemble.component]`` holds any further settings of the component (``reasoning``,
``generation``, ``max_chars``, ...).

    python -m training assemble cpu [--assemble.model outputs/cpu/sft/model]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import spacy
import typer
from confection import Config
from spacy.cli._util import parse_config_overrides

from .config import load_profile, section

BACKEND = "reasoning_ner.Transformers.v1"


def assemble(
    model: str | Path,
    output: str | Path,
    labels: Any,
    lang: str = "en",
    component: dict[str, Any] | None = None,
) -> Path:
    """Write the pipeline to ``output`` and return it."""
    model = Path(model)
    if not (model / "config.json").is_file():
        raise FileNotFoundError(
            f"no model at {model}: train it first (python -m training sft/grpo <profile>) "
            "or set assemble.model to a Hugging Face model folder"
        )
    settings = dict(component or {})
    if "backend" in settings:
        raise ValueError("[assemble.component] must not set backend: it is built from `model`")
    nlp = spacy.blank(lang)
    nlp.add_pipe(
        "reasoning_ner",
        config={
            **settings,
            "labels": labels,
            "backend": {"@reasoning_ner_backends": BACKEND, "model": str(model)},
        },
    )
    Path(output).parent.mkdir(parents=True, exist_ok=True)  # to_disk makes the last level only
    nlp.to_disk(output)
    return Path(output)


def assemble_profile(profile: Config) -> Path:
    block = section(profile, "assemble")
    return assemble(
        block["model"],
        block["output"],
        block["labels"],
        block.get("lang", "en"),
        dict(block.get("component", {})),
    )


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Package the trained model as a spaCy pipeline (weights inside the pipeline folder)."""
    output = assemble_profile(load_profile(profile, parse_config_overrides(ctx.args)))
    typer.echo(f"pipeline: {output}  (spacy.load({str(output)!r}))")
