"""The evaluation stage: score the assembled pipeline on the zero-shot domains (the five
CrossNER domains, MIT Movie and MIT Restaurant) and on CoNLL-2003 dev (in-domain), with the
paper's string-level F1 and spaCy's offset-level F1 per dataset and as plain means.

``[evaluate]`` names the pipeline, the data folder, the datasets, the split, the sentences per
dataset (seeded) and the output folder, and lists the training data (the CG stage's
``samples.jsonl``) that no evaluation sentence may appear in. MIT has no dev split: a seeded
slice of its train split stands in, and the results say so.

    python -m training evaluate cpu [--evaluate.limit 200]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import spacy
import typer

from spacy_reasoningner.benchmark import (
    EvaluationResult,
    evaluate,
    load_eval_set,
    read_training_texts,
)

from .config import StageConfig, load_profile, parse_overrides, require


@dataclass
class EvaluateConfig(StageConfig):
    """``[evaluate]``: the evaluation stage."""

    SECTION: ClassVar[str] = "evaluate"

    pipeline: Path
    data: Path  # <data>/<dataset>/<split>.txt and labels.json
    datasets: list[str]
    output: Path
    split: str = "dev"
    # Sentences per dataset, sampled with the seed (null: all).
    limit: int | None = None
    seed: int = 0
    # Naming convention of labels.json; null: each dataset's default (instructuie_name, as
    # the paper; natural_name for CoNLL-2003, whose instructuie names are placeholders).
    naming: str | None = None
    # A definition field of labels.json (e.g. "definition_slimer"); null: names only.
    definitions: str | None = None
    # Documents per backend call; null: the component's batch_size.
    batch_size: int | None = None
    # Training data that no evaluation sentence may appear in (the CG stage's samples.jsonl
    # or any file the readers accept). An overlap stops the stage unless allow_overlap,
    # which reports it as a warning in the results.
    training_data: list[Path] = field(default_factory=list)
    allow_overlap: bool = False

    def __post_init__(self) -> None:
        require(bool(self.datasets), "[evaluate] datasets is empty: name at least one")
        require(self.limit is None or self.limit >= 1, "[evaluate] limit must be >= 1 or null")
        require(
            self.batch_size is None or self.batch_size >= 1,
            "[evaluate] batch_size must be >= 1 or null",
        )


def evaluate_profile(config: EvaluateConfig) -> tuple[EvaluationResult, list[Path]]:
    """Run the evaluation; return the result and the files written."""
    if not config.pipeline.is_dir():
        raise FileNotFoundError(
            f"no pipeline at {config.pipeline}: build it first (python -m training assemble "
            "<profile>) or set evaluate.pipeline"
        )
    eval_sets = [
        load_eval_set(
            config.data,
            dataset,
            config.split,
            naming=config.naming,
            definitions=config.definitions,
            limit=config.limit,
            seed=config.seed,
        )
        for dataset in config.datasets
    ]
    texts = [text for path in config.training_data for text in read_training_texts(path)]
    result = evaluate(
        spacy.load(config.pipeline),
        eval_sets,
        training=texts if config.training_data else None,
        allow_overlap=config.allow_overlap,
        batch_size=config.batch_size,
        name=str(config.pipeline),
        limit=config.limit,
        seed=config.seed,
    )
    return result, result.save(config.output)


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Evaluate the pipeline: per-dataset and mean F1 (string and offset level) and more."""
    config = EvaluateConfig.from_profile(load_profile(profile, parse_overrides(ctx.args)))
    result, paths = evaluate_profile(config)
    typer.echo(result.to_markdown())
    typer.echo(f"results: {', '.join(str(p) for p in paths)}")
