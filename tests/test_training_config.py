"""Typed stage configurations: every profile section is read into one dataclass, defaults
written once, misspelt keys and wrong types refused with a hint. Pure logic: the profiles
are read, no data or model is needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from spacy_reasoningner.benchmark.datasets import ZERO_SHOT_DATASETS
from spacy_reasoningner.protocol import MISC_LIKE_LABELS
from training.assemble import AssembleConfig
from training.build_data import DataConfig
from training.config import ConfigError, StageConfig, load_profile
from training.evaluate import EvaluateConfig
from training.export_adapter import ExportConfig
from training.grpo import GRPOStageConfig
from training.sft import SFTStageConfig
from training.sources import SourceConfig
from training.teacher import Mode

STAGES: list[type[StageConfig]] = [
    DataConfig,
    SFTStageConfig,
    GRPOStageConfig,
    AssembleConfig,
    EvaluateConfig,
    ExportConfig,
]


def build(stage: type[StageConfig], profile: str = "cpu", **overrides: Any) -> Any:
    return stage.from_profile(load_profile(profile, overrides))


@pytest.mark.parametrize("profile", ["cpu", "cpu-0.5b", "gpu-1.7b", "gpu-8b"])
def test_every_stage_reads_every_profile(profile: str) -> None:
    configs = {stage: build(stage, profile) for stage in STAGES}
    data = configs[DataConfig]
    assert isinstance(data.mode, Mode) and isinstance(data.output, Path)
    assert all(isinstance(s, SourceConfig) for s in data.sources.values())
    assert all(name == s.name for name, s in data.sources.items())
    assert configs[GRPOStageConfig].prompts.seed == data.seed


def test_a_profile_extends_its_base_and_interpolates_after_the_merge() -> None:
    cpu, small = load_profile("cpu"), load_profile("cpu-0.5b")
    # What cpu-0.5b sets wins; references written in cpu.cfg follow cpu-0.5b's paths.
    assert small["paths"]["base_model"] == "bundled:qwen2.5-coder-0.5b-instruct"
    assert small["sft"]["model"] == small["paths"]["base_model"]
    assert small["cg"]["output"] == "outputs/cpu-0.5b/reasoning_data"
    assert small["grpo"]["model"] == "outputs/cpu-0.5b/sft/model"
    assert small["sft"]["lora"]["enabled"] and not cpu["sft"]["lora"]["enabled"]
    # What it leaves alone is the base's, nested keys of a section it touches included.
    assert small["sft"]["trainer"]["max_length"] == cpu["sft"]["trainer"]["max_length"]
    assert small["cg"]["sources"] == {
        name: {**source} for name, source in cpu["cg"]["sources"].items()
    }
    assert "profile" not in small
    # Command-line overrides apply to the merged profile.
    assert (
        load_profile("cpu-0.5b", {"sft.trainer.max_steps": 7})["sft"]["trainer"]["max_steps"] == 7
    )


def test_profile_bases_are_checked(tmp_path: Path) -> None:
    (tmp_path / "a.cfg").write_text('[profile]\nbase = "b"\n')
    (tmp_path / "b.cfg").write_text('[profile]\nbase = "a"\n')
    with pytest.raises(ConfigError, match=re.escape("in a circle: a.cfg -> b.cfg -> a.cfg")):
        load_profile(tmp_path / "a.cfg")
    (tmp_path / "c.cfg").write_text('[profile]\nbase = "cpu"\nbasis = "cpu"\n')
    with pytest.raises(ConfigError, match="takes only `base`"):
        load_profile(tmp_path / "c.cfg")
    (tmp_path / "d.cfg").write_text('[profile]\nbase = "no-such-profile"\n')
    with pytest.raises(
        FileNotFoundError, match="extends profile 'no-such-profile', which is neither"
    ):
        load_profile(tmp_path / "d.cfg")


@pytest.mark.parametrize(
    ("stage", "key", "hint"),
    [
        (DataConfig, "cg.batch_sise", "batch_size"),
        (DataConfig, "cg.quality.judge_treshold", "judge_threshold"),
        (DataConfig, "cg.sources.conll2003.limt", "limit"),
        (SFTStageConfig, "sft.eval_sise", "eval_size"),
        (SFTStageConfig, "sft.trainer.learning_rat", "learning_rate"),
        (GRPOStageConfig, "grpo.prompts.num_prompt", "num_prompts"),
        (GRPOStageConfig, "grpo.rewards.lenght_penalty", "length_penalty"),
        (GRPOStageConfig, "grpo.sources.pile_ner.negative_type", "negative_types"),
        (AssembleConfig, "assemble.lnag", "lang"),
        (EvaluateConfig, "evaluate.limt", "limit"),
        (ExportConfig, "export.dtpye", "dtype"),
    ],
)
def test_misspelt_keys_are_refused_with_the_closest_name(
    stage: type[StageConfig], key: str, hint: str
) -> None:
    section, _, name = key.rpartition(".")
    with pytest.raises(ConfigError, match=rf"\[{section}\].*'{name}' \(did you mean '{hint}'\?\)"):
        build(stage, **{key: 1})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cg.batch_size", "many", r"cg.batch_size must be a whole number"),
        ("cg.batch_size", 0, r"batch_size must be >= 1"),
        ("cg.mode", "magic", r"cg.mode = 'magic' is not one of \['reannotate'"),
        ("cg.quality.judge", "yes", r"cg.quality.judge must be true or false"),
        ("cg.quality.min_gold_f1", 2, r"min_gold_f1 must be in \[0, 1\]"),
        ("cg.sources.conll2003.format", "csv", r"format 'csv' is not one of"),
        ("cg.sources", {}, r"\[cg.sources\] is empty"),
        ("cg.decontamination.files", ["a.txt"], r"cg.decontamination.files must be a section"),
    ],
)
def test_wrong_values_are_refused(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(DataConfig, **{key: value})


def test_model_modes_need_their_backends() -> None:
    with pytest.raises(ConfigError, match=r"needs a teacher"):
        DataConfig(
            output=Path("x"), sources={"s": SourceConfig("s", Path("s"))}, mode=Mode.reannotate
        )
    with pytest.raises(ConfigError, match=r"judge = true needs a \[cg.judge\]"):
        build(DataConfig, **{"cg.quality.judge": True, "cg.judge": {}})


def test_defaults_are_written_once() -> None:
    """The misc-like types and the zero-shot domains come from the package, not the profile."""
    data = build(DataConfig)
    grpo = build(GRPOStageConfig)
    assert data.drop_types == grpo.prompts.drop_types == sorted(MISC_LIKE_LABELS)
    assert data.forbidden_datasets == grpo.prompts.forbidden_datasets == list(ZERO_SHOT_DATASETS)
    pile = data.sources["pile_ner"]
    assert (pile.labels, pile.naming, pile.definitions) == (None, "natural_name", None)


def test_grpo_prompt_origin_needs_its_input() -> None:
    with pytest.raises(ConfigError, match=r'origin = "dataset" needs dataset'):
        build(GRPOStageConfig, **{"grpo.prompts.origin": "dataset", "grpo.prompts.dataset": None})
    with pytest.raises(ConfigError, match=r"origin = 'elsewhere' is not one of"):
        build(GRPOStageConfig, **{"grpo.prompts.origin": "elsewhere"})
    with pytest.raises(ConfigError, match=r"needs \[grpo.prompts.instructuie\] path"):
        build(GRPOStageConfig, **{"grpo.prompts.origin": "instructuie"})


def test_export_stages_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"not a non-empty subset"):
        build(ExportConfig, **{"export.stages": ["sft", "dpo"]})
    with pytest.raises(ConfigError, match=r"dtype = 'int8' is not one of"):
        build(ExportConfig, **{"export.dtype": "int8"})


@pytest.mark.parametrize("profile", ["gpu-1.7b", "gpu-8b"])
def test_gpu_profiles_take_the_reference_grpo_objective(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRL 1.16's importance-sampling and KL bias corrections (on by TRL's defaults) and
    Liger kernels are off, as in the reference's GRPO run; on a GPU machine with liger-kernel
    installed too, where SFT does take Liger."""
    import torch
    from trl import SFTConfig

    from training import trainers
    from training.grpo import grpo_args

    stage = build(GRPOStageConfig, profile)
    for key in ("vllm_importance_sampling_correction", "use_bias_correction_kl"):
        assert stage.trainer[key] is False, key
    args = grpo_args(stage, output_dir="unused")
    assert not (args.vllm_importance_sampling_correction or args.use_bias_correction_kl)
    assert not args.use_liger_kernel
    # A GPU with liger-kernel installed (use_cpu only lets bf16 pass the check on this machine).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_: True)
    monkeypatch.setattr(trainers, "importable", lambda module: True)
    stage.trainer.pop("use_liger_kernel")  # the stage's own default, not the profile's line
    gpu = grpo_args(stage, output_dir="unused", use_cpu=True)
    assert gpu.bf16 and not gpu.use_liger_kernel
    sft = trainers.trainer_config(SFTConfig, {"use_cpu": True}, "sft.trainer")
    assert sft.use_liger_kernel
    stage.trainer["use_liger_kernel"] = True  # the option
    assert grpo_args(stage, output_dir="unused", use_cpu=True).use_liger_kernel
