"""What each training stage buys: the profile's evaluation (``[evaluate]``: datasets, split,
sentences per dataset, seed) of the base model, the SFT model and the GRPO model, each
assembled into a pipeline with the profile's ``[assemble]`` settings. Prints one row per stage:
per dataset the reference string F1 (the paper's metric) / grounded string F1 (ours), the
CrossNER and zero-shot means of both, offset F1, answers that are not JSON (reference) or
that our parser could not read, reasoning tokens and seconds per sentence.

Run after ``spacy project run all`` (or the sft and grpo stages) with the same profile:

    python bench/training_stages.py cpu --paths.data ../shared/data [--evaluate.limit 20]

Each stage's pipeline and results land in ``<paths.output>/stages/<stage>/``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.assemble import AssembleConfig, assemble
from training.config import load_profile, parse_overrides
from training.evaluate import EvaluateConfig, evaluate_profile
from training.grpo import GRPOStageConfig
from training.sft import SFTStageConfig
from training.trainers import MODEL_NAME, model_path

STAGES = ("base", "sft", "grpo")


def stage_model(profile_name: str, overrides: dict, stage: str) -> str:
    profile = load_profile(profile_name, overrides)
    if stage == "base":
        return model_path(profile["paths"]["base_model"])
    config = {"sft": SFTStageConfig, "grpo": GRPOStageConfig}[stage].from_profile(profile)
    return str(config.output / MODEL_NAME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path.")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    args, extra = parser.parse_known_args()
    overrides = parse_overrides(extra)
    output = Path(load_profile(args.profile, overrides)["paths"]["output"]) / "stages"
    rows = []
    for stage in args.stages:
        folder = output / stage
        stage_overrides = {
            **overrides,
            "assemble.model": stage_model(args.profile, overrides, stage),
            "assemble.output": str(folder / "pipeline"),
            "evaluate.pipeline": str(folder / "pipeline"),
            "evaluate.output": str(folder / "evaluation"),
        }
        profile = load_profile(args.profile, stage_overrides)
        assemble(AssembleConfig.from_profile(profile))
        result, _ = evaluate_profile(EvaluateConfig.from_profile(profile))
        print(result.to_markdown(), flush=True)
        rows.append((stage, result))
    print(table(rows))


def table(rows: list) -> str:
    datasets = [d.dataset for d in rows[0][1].datasets]
    short = [name.removeprefix("crossner_") for name in datasets]
    lines = [
        "| stage | " + " | ".join(short) + " | CrossNER mean | zero-shot mean | offset F1 mean "
        "| not JSON | unparsed | reasoning tokens mean | s / sentence |",
        "|---" * (len(datasets) + 8) + "|",
    ]
    for stage, result in rows:
        by_name = {d.dataset: d for d in result.datasets}
        averages = result.averages()
        zero_shot = averages.get("zero-shot", averages["all"])
        crossner = [d for d in result.datasets if d.dataset.startswith("crossner_")]
        sentences = sum(d.sentences for d in result.datasets)
        cells = [both(by_name[name].reference.f1, by_name[name].grounded.f1) for name in datasets]
        cells += [
            both(*(statistics.fmean(getattr(d, m).f1 for d in crossner) for m in METRICS))
            if crossner
            else "-",
            both(*(zero_shot[m]["f1"] for m in METRICS)),
            f"{averages['all']['offset']['f1']:.1f}",
            f"{sum(d.not_json or 0 for d in result.datasets)}/{sentences}",
            f"{sum(d.unparsed or 0 for d in result.datasets)}/{sentences}",
            f"{statistics.fmean(d.reasoning_tokens_mean or 0.0 for d in result.datasets):.0f}",
            f"{statistics.fmean(d.seconds_per_sentence for d in result.datasets):.1f}",
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cells: reference string F1 (the paper's metric) / grounded string F1 (ours).")
    return "\n".join(lines)


METRICS = ("reference", "grounded")


def both(reference: float, grounded: float) -> str:
    return f"{reference:.1f} / {grounded:.1f}"


if __name__ == "__main__":
    main()
