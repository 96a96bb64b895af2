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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import spacy
import typer

from spacy_reasoningner.protocol import Schema

from .config import StageConfig, load_profile, parse_overrides, require

BACKEND = "reasoning_ner.Transformers.v1"


@dataclass
class AssembleConfig(StageConfig):
    """``[assemble]``: the spaCy pipeline around the trained weights."""

    SECTION: ClassVar[str] = "assemble"

    model: Path  # a Hugging Face model folder (the GRPO or SFT stage's model/)
    output: Path
    # Default labels of the packaged component: a list, or a mapping label -> definition.
    labels: Any
    lang: str = "en"
    # Further settings of the reasoning_ner component (reasoning, generation, max_chars, ...).
    component: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Schema.from_config(self.labels)  # a clear error for bad labels, before any work
        for key in ("backend", "labels"):
            require(
                key not in self.component,
                f"[assemble.component] must not set {key}: it is built from [assemble] "
                f"{'model' if key == 'backend' else 'labels'}",
            )


def assemble(config: AssembleConfig) -> Path:
    """Write the pipeline to ``config.output`` and return it."""
    if not (config.model / "config.json").is_file():
        raise FileNotFoundError(
            f"no model at {config.model}: train it first (python -m training sft/grpo "
            "<profile>) or set assemble.model to a Hugging Face model folder"
        )
    nlp = spacy.blank(config.lang)
    nlp.add_pipe(
        "reasoning_ner",
        config={
            **config.component,
            "labels": config.labels,
            "backend": {"@reasoning_ner_backends": BACKEND, "model": str(config.model)},
        },
    )
    config.output.parent.mkdir(parents=True, exist_ok=True)  # to_disk makes the last level only
    nlp.to_disk(config.output)
    return config.output


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Package the trained model as a spaCy pipeline (weights inside the pipeline folder)."""
    config = AssembleConfig.from_profile(load_profile(profile, parse_overrides(ctx.args)))
    output = assemble(config)
    typer.echo(f"pipeline: {output}  (spacy.load({str(output)!r}))")
