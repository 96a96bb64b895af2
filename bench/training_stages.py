"""What each training stage buys: the profile's evaluation (``[evaluate]``: datasets, split,
sentences per dataset, seed) of the base model, the SFT model and the GRPO model, each
assembled into a pipeline with the profile's ``[assemble]`` settings. Prints one row per stage:
string-level F1 (the paper's metric) per dataset, the CrossNER mean and the zero-shot mean,
offset F1, unparsed answers, reasoning tokens and seconds per sentence.

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
        "| unparsed | reasoning tokens mean | s / sentence |",
        "|---" * (len(datasets) + 7) + "|",
    ]
    for stage, result in rows:
        by_name = {d.dataset: d for d in result.datasets}
        crossner = [d.string.f1 for d in result.datasets if d.dataset.startswith("crossner_")]
        averages = result.averages()
        zero_shot = averages.get("zero-shot", averages["all"])["string"]["f1"]
        sentences = sum(d.sentences for d in result.datasets)
        unparsed = sum(d.unparsed or 0 for d in result.datasets)
        tokens = [d.reasoning_tokens_mean or 0.0 for d in result.datasets]
        seconds = [d.seconds_per_sentence for d in result.datasets]
        cells = [f"{by_name[name].string.f1:.1f}" for name in datasets]
        cells += [
            f"{statistics.fmean(crossner):.1f}" if crossner else "-",
            f"{zero_shot:.1f}",
            f"{averages['all']['offset']['f1']:.1f}",
            f"{unparsed}/{sentences}",
            f"{statistics.fmean(tokens):.0f}",
            f"{statistics.fmean(seconds):.1f}",
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
