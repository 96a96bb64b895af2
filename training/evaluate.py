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

from pathlib import Path
from typing import Any

import spacy
import typer
from confection import Config
from spacy.cli._util import parse_config_overrides

from spacy_reasoningner.benchmark import (
    EvaluationResult,
    evaluate,
    load_eval_set,
    read_training_texts,
)

from .config import load_profile, section


def evaluate_profile(profile: Config) -> tuple[EvaluationResult, list[Path]]:
    """Run the evaluation of ``[evaluate]``; return the result and the files written."""
    block = section(profile, "evaluate")
    pipeline = Path(block["pipeline"])
    if not pipeline.is_dir():
        raise FileNotFoundError(
            f"no pipeline at {pipeline}: build it first (python -m training assemble <profile>) "
            "or set evaluate.pipeline"
        )
    limit, seed = block.get("limit"), int(block.get("seed", 0))
    options: dict[str, Any] = {
        "naming": block.get("naming"),
        "definitions": block.get("definitions"),
        "limit": limit,
        "seed": seed,
    }
    split = block.get("split", "dev")
    eval_sets = [load_eval_set(block["data"], d, split, **options) for d in block["datasets"]]
    training_data = list(block.get("training_data") or [])
    texts = [text for path in training_data for text in read_training_texts(path)]
    result = evaluate(
        spacy.load(pipeline),
        eval_sets,
        training=texts if training_data else None,
        allow_overlap=bool(block.get("allow_overlap", False)),
        batch_size=block.get("batch_size"),
        name=str(pipeline),
        limit=limit,
        seed=seed,
    )
    return result, result.save(block["output"])


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Evaluate the pipeline: per-dataset and mean F1 (string and offset level) and more."""
    result, paths = evaluate_profile(load_profile(profile, parse_config_overrides(ctx.args)))
    typer.echo(result.to_markdown())
    typer.echo(f"results: {', '.join(str(p) for p in paths)}")
