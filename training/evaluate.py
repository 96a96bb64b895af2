"""The evaluation stage: score the assembled pipeline on the paper's seven zero-shot sets (the
five CrossNER domains, MIT Movie and MIT Restaurant) and on CoNLL-2003 (in-domain, reported
apart), with the paper's string-level F1 and spaCy's offset-level F1 per dataset; the headline
is the mean over the zero-shot sets (see ``EvaluationResult.headline``).

``[evaluate]`` names the pipeline, the data folder, the datasets, the split, the sentences per
dataset (seeded) and the output folder, and lists the training data (the CG stage's
``samples.jsonl``) that no evaluation sentence may appear in. The GPU profiles evaluate on the
test splits, as the paper (project.yml assets; the launcher checks their sha256 before the
stage starts); the cpu profile on dev, where MIT has none: a seeded slice of its train split
stands in, and the results say so. ``results.json`` counts the model loads the stage caused
(``model_loads``: 1, the evaluation backend's).

    python -m training evaluate cpu [--evaluate.limit 200]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import spacy
import typer
from spacy.language import Language
from spacy.util import load_config

from spacy_reasoningner.backends.base import SerializableBackend
from spacy_reasoningner.backends.local import loads_since, weight_loads
from spacy_reasoningner.benchmark import (
    EvaluationResult,
    evaluate,
    load_eval_set,
    read_training_texts,
)
from spacy_reasoningner.component import reasoning_component_name

from .config import StageConfig, build_backend, load_profile, parse_overrides, require


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
    # A backend block ({"@reasoning_ner_backends": ...}) that replaces the pipeline's for the
    # evaluation, on the pipeline's saved model (GPU profiles: vLLM); empty: the pipeline's.
    backend: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.datasets), "[evaluate] datasets is empty: name at least one")
        require(self.limit is None or self.limit >= 1, "[evaluate] limit must be >= 1 or null")
        require(
            self.batch_size is None or self.batch_size >= 1,
            "[evaluate] batch_size must be >= 1 or null",
        )


def load_pipeline(config: EvaluateConfig) -> Language:
    """The pipeline, with ``config.backend`` as its reasoning_ner backend when given.

    The pipeline is built with that backend from the start (``spacy.load`` with the backend
    block replaced), so its saved backend is never created and never loads its weights: the
    model is loaded once, by the evaluation backend, from the pipeline's folder. Loading the
    pipeline first and swapping backends afterwards held two copies (an 8B model in
    transformers beside vLLM's engine, which then does not fit on the GPU).
    """
    if not config.backend:
        return spacy.load(config.pipeline)
    saved = load_config(config.pipeline / "config.cfg", interpolate=False)
    name = reasoning_component_name(saved, f"{config.pipeline} (given [evaluate.backend])")
    model = config.pipeline / name / "model"
    # Built here only to check its kind: the engines load nothing until they are used.
    probe = build_backend(config.backend)
    if not isinstance(probe, SerializableBackend) or not model.is_dir():
        raise ValueError(
            "[evaluate.backend] must be a backend that loads the pipeline's saved model "
            f"(transformers or vLLM), and {model} must hold it"
        )
    block = {"components": {name: {"backend": dict(config.backend)}}}
    return spacy.load(config.pipeline, config=block)


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
    before = weight_loads()
    result = evaluate(
        load_pipeline(config),
        eval_sets,
        training=texts if config.training_data else None,
        allow_overlap=config.allow_overlap,
        batch_size=config.batch_size,
        name=str(config.pipeline),
        limit=config.limit,
        seed=config.seed,
    )
    # The engines load lazily (vLLM on its first batch): counted over loading and evaluating.
    result.count_model_loads(loads_since(before))
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
