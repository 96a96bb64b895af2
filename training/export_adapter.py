"""Export what a profile trained as one LoRA adapter over its base model, with its provenance:
the form in which the package ships its default model (``spacy_reasoningner/adapters/``).

The SFT stage trains a LoRA adapter over the base model; the GRPO stage, with ``[grpo.lora]``,
a second one over the merged SFT model (so that the KL term's reference stays the SFT
model). Both are low-rank updates of the same weights, so they stack exactly into one adapter
of rank r_sft + r_grpo and scale 1:

    s1 B1 A1 + s2 B2 A2 = [s1 B1 | s2 B2] @ [A1 ; A2]

The output folder holds ``adapter_config.json``, ``adapter_model.safetensors`` (float16 by
default: half the size, and the merge computes in float32), the chat template the adapter
was trained with, the profile (``profile.cfg``), ``PROVENANCE.md`` (the commands, git
commit, base model, data summary, training and evaluation figures, and the weights'
SHA-256), ``DATA_REPORT.md`` (the CG stage's report) and ``DECONTAMINATION.md`` (what keeps
every evaluation set out of every training stage, with the counts).

    python -m training export-adapter cpu spacy_reasoningner/adapters/smollm2-135m-ner
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from confection import Config

from spacy_reasoningner.models import ADAPTER_CONFIG as CONFIG
from spacy_reasoningner.models import ADAPTER_WEIGHTS as WEIGHTS
from spacy_reasoningner.models import lora_scale, resolve_model, share_like_other_files
from spacy_reasoningner.weight_delta import DELTA_WEIGHTS, save_delta

from .assemble import AssembleConfig
from .build_data import DataConfig
from .config import StageConfig, load_profile, parse_overrides, require
from .decontamination import DecontaminationConfig, evaluation_splits
from .evaluate import EvaluateConfig
from .grpo import GRPOStageConfig, prompt_pool
from .sft import SFTStageConfig
from .sources import plan
from .trainers import ADAPTER_NAME

STAGES = ("sft", "grpo")
# Adapter features the stacking does not express; the stages never set them.
UNSUPPORTED = {"use_dora": False, "bias": "none", "modules_to_save": None, "rank_pattern": {}}


@dataclass
class ExportConfig(StageConfig):
    """``[export]``: which stage adapters are stacked, over which base model."""

    SECTION: ClassVar[str] = "export"

    base_model: str  # the model the first stage trained its adapter over
    # Stage adapters to stack, in training order.
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    # float16 halves the size; the merge at load time computes in float32.
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    seed: int = 0  # the profile's seed, recorded in the provenance
    # The results.md of an evaluation of this adapter's model (`spacy-reasoningner evaluate`,
    # bench/default_model.py --output), for an adapter that stops before the stage the
    # profile's own evaluation scores; null: the profile's [evaluate] output.
    results: Path | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.stages) - set(STAGES))
        require(
            bool(self.stages) and not unknown,
            f"[export] stages {unknown or self.stages} are not a non-empty subset of {STAGES}",
        )


def read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(adapter_config.json, weights) of a PEFT LoRA folder, refusing what cannot be stacked."""
    from safetensors.torch import load_file

    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(
            f"no LoRA adapter in {folder} ({CONFIG} and {WEIGHTS}): train the stage with "
            "its [<stage>.lora] enabled first"
        )
    config = json.loads((folder / CONFIG).read_text())
    for key, expected in UNSUPPORTED.items():
        if (config.get(key) or expected) != expected:
            raise ValueError(f"{folder}: adapters with {key}={config[key]!r} cannot be exported")
    return config, load_file(folder / WEIGHTS)


def module_names(weights: dict[str, Any]) -> set[str]:
    return {key.removesuffix(".lora_A.weight") for key in weights if key.endswith(".lora_A.weight")}


def stack_adapters(
    adapters: list[tuple[dict[str, Any], dict[str, Any]]], base_model: str, dtype: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One adapter (config, weights) equal to the sum of the updates of ``adapters``."""
    import torch

    ranks = [config["r"] for config, _ in adapters]
    modules = sorted(set().union(*(module_names(weights) for _, weights in adapters)))
    stacked: dict[str, Any] = {}
    for module in modules:
        a_parts, b_parts = [], []
        for config, weights in adapters:
            a = weights.get(f"{module}.lora_A.weight")
            b = weights.get(f"{module}.lora_B.weight")
            a_parts.append(None if a is None else a.float())
            b_parts.append(None if b is None else lora_scale(config) * b.float())
        fan_in = next(a for a in a_parts if a is not None).shape[1]
        fan_out = next(b for b in b_parts if b is not None).shape[0]
        # A module only one stage adapted gets zero blocks for the other.
        for i, rank in enumerate(ranks):
            if a_parts[i] is None:
                a_parts[i], b_parts[i] = torch.zeros(rank, fan_in), torch.zeros(fan_out, rank)
        stacked[f"{module}.lora_A.weight"] = torch.cat(a_parts, dim=0).to(getattr(torch, dtype))
        stacked[f"{module}.lora_B.weight"] = torch.cat(b_parts, dim=1).to(getattr(torch, dtype))
    rank = sum(ranks)
    targets = sorted({name.rsplit(".", 1)[-1] for name in modules})
    config = {
        **adapters[0][0],
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,  # scale 1: the stage scales are folded into B
        "use_rslora": False,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "alpha_pattern": {},
        "inference_mode": True,
    }
    return config, stacked


def split_full_stage(
    stages: Sequence[str], outputs: dict[str, Path]
) -> tuple[str | None, list[str]]:
    """(the first stage, if it trained full weights; the LoRA stages stacked over it)."""
    full = stages[0] if not (outputs[stages[0]] / ADAPTER_NAME / CONFIG).is_file() else None
    lora_stages = list(stages[1:] if full else stages)
    require(
        full is None or (outputs[full] / "model").is_dir(),
        f"[export] stage {stages[0]!r} has neither a LoRA adapter ({ADAPTER_NAME}/) nor a model "
        f"folder in {outputs[stages[0]]}: run the stage first",
    )
    require(
        bool(lora_stages),
        f"[export] stage {full!r} trained full weights: ship them with a LoRA stage after it "
        "(e.g. grpo with [grpo.lora] enabled), or use the model folder as it is",
    )
    return full, lora_stages


def write_delta(model: Path, base_model: str, path: Path) -> dict[str, Any]:
    """A full fine-tune's difference from the base model, in 4 bits (``weight_delta``)."""
    from safetensors.torch import load_file

    def weights(folder: Path) -> dict[str, Any]:
        return {
            k: v
            for shard in sorted(folder.glob("*.safetensors"))
            for k, v in load_file(shard).items()
        }

    base = weights(Path(resolve_model(base_model).path))
    return save_delta(weights(model), base, path)


def stage_outputs(profile: Config) -> dict[str, Path]:
    """Output folders of the stages the provenance reports on, from their typed sections."""
    return {
        "cg": DataConfig.from_profile(profile).output,
        "sft": SFTStageConfig.from_profile(profile).output,
        "grpo": GRPOStageConfig.from_profile(profile).output,
        "evaluate": EvaluateConfig.from_profile(profile).output,
    }


def export(
    profile: Config, output: Path, name: str = "cpu", command_line: str | None = None
) -> Path:
    """Write the stacked adapter of the ``[export]`` stages and its provenance to ``output``;
    ``name`` (the profile's) and ``command_line`` (the export as it was run) say in the
    provenance how to reproduce it."""
    from safetensors.torch import save_file

    config = ExportConfig.from_profile(profile)
    outputs = stage_outputs(profile)
    full, lora_stages = split_full_stage(config.stages, outputs)
    folders = [outputs[stage] / ADAPTER_NAME for stage in lora_stages]
    adapters = [read_adapter(f) for f in folders]
    stacked, weights = stack_adapters(adapters, config.base_model, config.dtype)
    check_same_base(output, stacked["base_model_name_or_path"])
    output.mkdir(parents=True, exist_ok=True)
    if full is not None:
        delta = write_delta(outputs[full] / "model", config.base_model, output / DELTA_WEIGHTS)
        stacked["weight_delta"] = {"stage": full, **delta}
    else:  # a delta left by an earlier export would be merged under this adapter
        (output / DELTA_WEIGHTS).unlink(missing_ok=True)
    (output / CONFIG).write_text(json.dumps(stacked, indent=2, sort_keys=True) + "\n")
    save_file(weights, output / WEIGHTS, metadata={"format": "pt"})
    for template in folders[0].glob("chat_template.*"):
        shutil.copyfile(template, output / template.name)
    (output / "profile.cfg").write_text(profile.to_str())
    (output / "PROVENANCE.md").write_text(
        provenance(profile, config, output, stacked, name, command_line)
    )
    data_report = outputs["cg"] / "report.md"
    if data_report.is_file():
        shutil.copyfile(data_report, output / "DATA_REPORT.md")
    (output / "DECONTAMINATION.md").write_text(decontamination_report(profile, outputs))
    share_like_other_files(output)  # safetensors writes 0600: unreadable to other users
    return output


def check_same_base(output: Path, base_model: str) -> None:
    """Refuse to replace an adapter over another base model (a shipped one, say, by a
    profile with another base): its folder names the model it holds."""
    existing = output / CONFIG
    if not existing.is_file():
        return
    other = json.loads(existing.read_text()).get("base_model_name_or_path")
    if other != base_model:
        raise ValueError(
            f"{output} holds an adapter over {other}, and this export is over {base_model}: "
            "write it to another folder (spacy project run adapter: --vars.adapter_dir DIR), "
            "or remove that folder first"
        )


def decontamination_report(profile: Config, outputs: dict[str, Path]) -> str:
    """How the profile keeps its evaluation sets out of training, with what was removed."""
    data = DataConfig.from_profile(profile)
    grpo = GRPOStageConfig.from_profile(profile)
    report_path = outputs["cg"] / "report.json"
    cg_removed = (
        json.loads(report_path.read_text())["decontamination_removed"]
        if report_path.is_file()
        else "(no CG report)"
    )
    # The splits are read from disk: once for the CG data, reused when GRPO drew from it.
    cg_splits = _checked_splits(data.decontamination, data.forbidden_datasets)
    lines = [
        "# Decontamination report",
        "",
        "Training text is compared with the evaluation splits by hashes of normalized "
        "sentences (passages are checked line by line and sentence by sentence); what "
        "overlaps is removed before sampling.",
        "",
        "## Training sources",
        "",
        *[f"- CG/SFT `{name}`: `{s.path}`" for name, s in data.sources.items()],
    ]
    pool = prompt_pool(grpo)
    if pool.origin != "dataset":
        planned = plan(
            pool.sources,
            seed=grpo.prompts.seed,
            drop_types=grpo.prompts.drop_types,
            forbidden_datasets=grpo.prompts.forbidden_datasets,
            decontamination=grpo.prompts.decontamination,
        )
        kind = "" if pool.origin == "sources" else f" ({pool.origin})"
        lines += [f"- GRPO prompts{kind} `{s.name}`: `{s.path}`" for s in pool.sources]
        lines += [f"- GRPO prompts: {pool.fallback}"] if pool.fallback else []
        grpo_removed: Any = planned.contaminated
        grpo_splits = _checked_splits(grpo.prompts.decontamination, grpo.prompts.forbidden_datasets)
    else:
        lines.append(f"- GRPO prompts: the CG dataset `{grpo.prompts.dataset}`")
        grpo_removed = "(the CG dataset's, above)"
        grpo_splits = cg_splits
    lines += [
        "",
        "## Zero-shot evaluation domains",
        "",
        "Refused as a source by every stage (a source naming one stops the run): "
        + ", ".join(f"`{d}`" for d in data.forbidden_datasets)
        + ". MIT Movie and MIT Restaurant have no dev split: evaluation draws a seeded slice "
        "of their train files, which no stage reads.",
        "",
        "## Overlap with evaluation splits",
        "",
        f"- CG/SFT: checked against "
        f"{', '.join(cg_splits)}; "
        f"removed per source and split: {cg_removed}",
        f"- GRPO: checked against {', '.join(grpo_splits)}; removed: {grpo_removed}",
        *evaluation_overlap_lines(outputs["evaluate"] / "results.json"),
        "",
        "## Types",
        "",
        "Negative types (absent types added to a training schema) come from "
        f"`{profile.get('types', {}).get('negative_pool', 'the corpus types')}` minus the "
        "profile's `[types] not_negative` list, which holds every evaluation dataset's type "
        "name: no training schema imitates an evaluation schema. Evaluation types that are "
        "also gold types of a training source (person, location, organization of CoNLL-2003; "
        "Pile-NER's own types) are asked only where the source annotates them.",
    ]
    return "\n".join(lines) + "\n"


def evaluation_overlap_lines(results_path: Path) -> list[str]:
    """The evaluate stage's own check: evaluation sentences found in the CG samples."""
    if not results_path.is_file():
        return [f"- evaluation: (no results at {results_path})"]
    datasets = json.loads(results_path.read_text())["datasets"]
    counts = ", ".join(f"{d['dataset']} {d['overlapping']}" for d in datasets)
    return [
        "- evaluation (the evaluate stage compares every evaluation sentence with the CG "
        f"samples and stops on an overlap): sentences found in training data: {counts}"
    ]


# --------------------------------------------------------------------------- provenance


def provenance(
    profile: Config,
    config: ExportConfig,
    output: Path,
    adapter: dict[str, Any],
    name: str = "cpu",
    command_line: str | None = None,
) -> str:
    weights = output / WEIGHTS
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    outputs = stage_outputs(profile)
    delta = adapter.get("weight_delta")
    stacked_stages = config.stages[1:] if delta else config.stages
    base = f"`{adapter['base_model_name_or_path']}`"
    lora = (
        f"rank-{adapter['r']} LoRA adapter ({', '.join(adapter['target_modules'])}) stacked "
        f"from the {' + '.join(stacked_stages)} stage adapters of the profile in `profile.cfg`"
    )
    summary = (
        f"The {delta['stage']} stage's full fine-tune of {base} as a 4-bit weight delta "
        f"(`{DELTA_WEIGHTS}`), under a {lora}."
        if delta
        else f"A {lora}, over {base}."
    )
    lines = [
        f"# {output.name}: provenance",
        "",
        summary,
        "",
        f"- weights: `{WEIGHTS}`, {weights.stat().st_size / 1e6:.1f} MB, sha256 `{digest}`",
        *(
            [
                f"- weight delta: `{DELTA_WEIGHTS}`, {delta['bytes'] / 1e6:.1f} MB, "
                f"{delta['tensors']} tensors, sha256 "
                f"`{hashlib.sha256((output / DELTA_WEIGHTS).read_bytes()).hexdigest()}`; "
                f"the rounding's relative error on the update: {delta['relative_error']:.3f}"
            ]
            if delta
            else []
        ),
        f"- exported: {datetime.date.today().isoformat()}, from git commit {git_commit()}",
        f"- seed: {config.seed}",
        "",
        "## Reproduce",
        "",
        "```bash",
        *reproduce_lines(config, name, command_line),
        "```",
        "",
        "## Data (CG stage)",
        "",
        *data_lines(outputs["cg"] / "report.json"),
        "",
        "## Training",
        "",
        *[line for stage in config.stages for line in stage_lines(stage, outputs[stage])],
        "",
        *evaluation_section(profile, config, outputs),
    ]
    return "\n".join(lines) + "\n"


def reproduce_lines(config: ExportConfig, name: str, command_line: str | None) -> list[str]:
    """The stages the adapter comes from, as `spacy project run` commands, then the export."""
    run = f"spacy project run {{}} . --vars.profile {name} --vars.data ../shared/data"
    lines = [
        f"{run.format(stage)}   # {STAGE_COMMENTS[stage]}" for stage in ("data", *config.stages)
    ]
    lines.append(command_line or run.format("adapter") + "   # this folder")
    return lines


STAGE_COMMENTS = {"data": "CG: the reasoning data", "sft": "CT: SFT", "grpo": "RE: GRPO"}


def evaluation_section(
    profile: Config, config: ExportConfig, outputs: dict[str, Path]
) -> list[str]:
    """The evaluation of the adapter's model: ``[export] results``, else the profile's own
    when the adapter includes the stage the assembled pipeline was built from."""
    assembled = Path(AssembleConfig.from_profile(profile).model)
    rounding = f"before the export's {config.dtype} rounding"
    if config.results is not None:
        model = outputs[config.stages[-1]] / "model"
        heading = f"## Evaluation of `{model}` ({config.results}, {rounding})"
        return [heading, "", *evaluation_lines(config.results)]
    if assembled != outputs[config.stages[-1]] / "model":
        return [
            "## Evaluation",
            "",
            f"(none: the profile evaluates `{assembled}`, a later stage than this adapter's "
            f"last, {config.stages[-1]}; give [export] results)",
        ]
    heading = f"## Evaluation of the profile's pipeline (`{assembled}`, {rounding})"
    return [heading, "", *evaluation_lines(outputs["evaluate"] / "results.md")]


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
        return commit + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def data_lines(report_path: Path) -> list[str]:
    if not report_path.is_file():
        return [f"(no data report at {report_path})"]
    report = json.loads(report_path.read_text())
    kept = ", ".join(f"{src}: {n.get('kept', 0)}" for src, n in report["per_source"].items())
    tokens = report.get("reasoning_tokens", {})
    return [
        f"- mode: {report['mode']}; kept {report['kept']} of {report['samples']} samples ({kept})",
        f"- removed as overlapping evaluation splits: {report['decontamination_removed']}",
        f"- reasoning tokens per sample: mean {tokens.get('mean', 0):.1f}, "
        f"p95 {tokens.get('p95', 0)}",
        "- no sample from the zero-shot evaluation domains (CrossNER, MIT Movie/Restaurant)",
    ]


def stage_lines(stage: str, folder: Path) -> list[str]:
    state_path = folder / "trainer_state.json"
    if not state_path.is_file():
        return [f"- {stage}: (no trainer_state.json in {state_path.parent})"]
    state = json.loads(state_path.read_text())
    history = state.get("log_history", [])
    losses = [entry["loss"] for entry in history if "loss" in entry]
    evals = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    steps = state.get("global_step", 0)
    parts = [f"{steps} steps"]
    parts.extend(run_time(history, steps))
    if losses:
        parts.append(f"train loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    if evals:
        parts.append(f"held-back loss {' -> '.join(f'{v:.3f}' for v in evals)}")
    if rewards:
        parts.append(f"mean reward per step {', '.join(f'{v:.2f}' for v in rewards)}")
    return [f"- {stage}: {'; '.join(parts)}"]


def run_time(history: list[dict[str, Any]], steps: int) -> list[str]:
    """The trainer's run time, said to be the last session's when the stage resumed from a
    checkpoint (the trainer times only the steps it ran since)."""
    summary = next((e for e in history if "train_runtime" in e), None)
    if not summary or not summary["train_runtime"]:
        return []
    seconds = summary["train_runtime"]
    ran = round(seconds * summary.get("train_steps_per_second", 0))
    if 0 < ran < steps:
        return [f"{seconds:.0f} s for the last {ran} (resumed from a checkpoint)"]
    return [f"{seconds:.0f} s"]


def evaluation_lines(results_path: Path) -> list[str]:
    if not results_path.is_file():
        return [f"(no evaluation results at {results_path})"]
    # Its headings one level down, under this file's own.
    lines = results_path.read_text().strip().splitlines()
    return ["#" + line if line.startswith("#") else line for line in lines]


def command(
    ctx: typer.Context,
    profile: Annotated[
        str, typer.Argument(help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path.")
    ],
    output: Annotated[Path, typer.Argument(help="Folder to write the adapter to.")],
) -> None:
    """Export the trained LoRA adapter(s) as one adapter over the base model + provenance.

    Which stages and the weight dtype come from [export] (e.g. --export.dtype float32)."""
    command_line = shlex.join(["python", "-m", "training", "export-adapter", profile, str(output)])
    command_line = " ".join([command_line, *map(shlex.quote, ctx.args)])
    name = Path(profile).stem if profile.endswith(".cfg") else profile
    folder = export(load_profile(profile, parse_overrides(ctx.args)), output, name, command_line)
    typer.echo(f"adapter: {folder}  (provenance: {folder / 'PROVENANCE.md'})")


def _checked_splits(config: DecontaminationConfig, forbidden: Sequence[str]) -> list[str]:
    """The evaluation splits (``<dataset>/<split>``) a stage's data was checked against."""
    return sorted(evaluation_splits(config, forbidden))
