"""SFT, GRPO and assembly on real CoNLL-2003 sentences: a few steps on the tiny random model
(mechanics: rows, checkpoints and resumption, logs, saved folders), and one slow run showing
that SFT of the bundled SmolLM2 lowers the loss on held-back rows."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import spacy
import torch
from transformers import AutoTokenizer, TrainerCallback

from spacy_reasoningner.benchmark.readers import load_label_map, read_bio, relabel
from spacy_reasoningner.protocol import DEFAULT_CHAT_TEMPLATE, parse_completion
from training import grpo, sft, trainers
from training.assemble import AssembleConfig, assemble
from training.chat_data import (
    PromptOptions,
    drop_overlong,
    even_indices,
    gold_rows,
    grpo_dataset,
    load_training_data,
    proportional_indices,
    sample_prompts,
    sft_dataset,
    sft_row,
)
from training.config import CONFIG_DIR, ConfigError, from_block, load_profile
from training.curves import CURVES_NAME, METRICS_NAME, plot_curves
from training.samples import Sample
from training.schemas import clean_types, with_schema
from training.sources import SourceConfig

DATA = Path(
    os.environ.get("REASONINGNER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
CONLL = DATA / "conll2003"
needs_conll = pytest.mark.skipif(not CONLL.is_dir(), reason=f"needs CoNLL-2003 under {DATA}")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def one_thread() -> Any:
    """The tiny model's matrices are so small that a second thread only adds
    synchronisation, which costs a thousandfold on a machine busy with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def conll_records(n: int) -> list:
    """The first ``n`` CoNLL-2003 training sentences with the natural type names."""
    label_map = load_label_map(CONLL / "labels.json", naming="natural_name")
    records = relabel(read_bio(CONLL / "train.txt", dataset="conll2003")[:n], label_map)
    types = clean_types(label_map.values())
    return [with_schema(r, types) for r in records if len(r.text) > 20]


def rationale(sample: Sample) -> str:
    """A short reasoning naming every gold entity, as the CG stage's template mode writes."""
    lines = [f'"{m}" is a {label}.' for m, label in sample.entities]
    return " ".join(lines) or "The text names no entity of the schema."


def cg_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i, record in enumerate(conll_records(n)):
        sample = Sample.from_record(record, f"conll-{i}", generator="test-template")
        sample.reasoning = rationale(sample)
        rows.append(sample.to_row())
    return rows


@pytest.fixture(scope="module")
def cg_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CG-format dataset (``save_to_disk``) of CoNLL sentences with a template rationale."""
    from datasets import Dataset

    folder = tmp_path_factory.mktemp("cg") / "dataset"
    Dataset.from_list(cg_rows(48)).save_to_disk(str(folder))
    return folder


def tiny_profile(model: Path, dataset: Path, output: Path, **overrides: Any) -> Any:
    """The cpu profile, shrunk to seconds on the tiny model."""
    return load_profile(
        "cpu",
        {
            "paths.data": str(DATA),
            "paths.output": str(output),
            "sft.model": str(model),
            "sft.dataset": str(dataset),
            "sft.eval_size": 4,
            "sft.trainer.max_length": 512,
            "sft.trainer.max_steps": 2,
            "sft.trainer.eval_steps": 2,
            "sft.trainer.save_steps": 1,
            "sft.trainer.per_device_train_batch_size": 2,
            "grpo.model": str(model),
            "grpo.prompts.origin": "dataset",
            "grpo.prompts.dataset": str(dataset),
            "grpo.trainer.max_steps": 2,
            "grpo.trainer.max_completion_length": 16,
            "grpo.trainer.num_generations": 2,
            "grpo.trainer.per_device_train_batch_size": 2,
            **overrides,
        },
    )


class StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1


def logged(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / METRICS_NAME).read_text().splitlines()
    return [json.loads(line) for line in lines]


# --------------------------------------------------------------------------- rows


@needs_conll
def test_dataset_rows_follow_the_protocol(cg_dataset: Path) -> None:
    from datasets import load_from_disk

    row = load_from_disk(str(cg_dataset))[0]
    assert row["schema"] == ["location", "organization", "person"]  # misc dropped, sorted
    target = row["completion"][0]["content"]
    parsed = Sample.from_row(row).task().parse(target)
    assert parsed.valid and parsed.reasoning
    assert sorted(parsed.mentions()) == sorted((e["text"], e["label"]) for e in row["entities"])


@needs_conll
def test_no_reasoning_rows_train_the_answer_alone(cg_dataset: Path) -> None:
    from datasets import load_from_disk

    rows = load_from_disk(str(cg_dataset))
    row = sft_row(rows[0], PromptOptions(reasoning=False))
    target = row["completion"][0]["content"]
    assert "<think>" not in target and target.startswith('{"entities"')
    assert "Answer with the JSON only." in row["prompt"][0]["content"]
    assert row["chat_template_kwargs"] == {"enable_thinking": False}
    with_reasoning = sft_dataset(rows, PromptOptions())
    assert with_reasoning.column_names == ["prompt", "completion"]
    assert with_reasoning[0]["completion"][0]["content"].startswith("<think>")
    assert sft_dataset(rows, PromptOptions(reasoning=False))[0]["completion"] == row["completion"]
    # The reference's 8B SFT names the source dataset in the prompt.
    sourced = sft_dataset(rows, PromptOptions(add_source=True))[0]
    assert sourced["prompt"][0]["content"].startswith("The text comes from the conll2003 dataset.")
    assert sourced["completion"] == with_reasoning[0]["completion"]
    # The reference's prompt has no closing line asking to reason first; ours does.
    stored = with_reasoning[0]["prompt"][0]["content"]
    plain = sft_dataset(rows, PromptOptions(reasoning_instruction=False))[0]["prompt"][0]["content"]
    assert "First reason step by step" in stored and "First reason" not in plain
    assert plain == stored.replace(stored.splitlines()[-2] + "\n", "")


@needs_conll
def test_reference_targets_are_indented_in_mention_order(cg_dataset: Path) -> None:
    """[sft] target_format = "reference": the reference's json.dumps(indent=2) of the sample's
    mentions in order, repeats kept, after the same think block; the prompt is unchanged."""
    from datasets import load_from_disk

    rows = load_from_disk(str(cg_dataset))
    index = next(i for i, r in enumerate(rows) if len(r["entities"]) >= 2)
    row = rows[index]
    ours = sft_row(row, PromptOptions())
    reference = sft_row(row, PromptOptions(target_format="reference"))
    assert reference["prompt"] == ours["prompt"]
    target = reference["completion"][0]["content"]
    thought, answer = target.split("</think>\n", 1)
    assert thought == ours["completion"][0]["content"].split("</think>", 1)[0]
    assert answer == json.dumps({"entities": Sample.from_row(row).answer()}, indent=2)
    assert answer.startswith('{\n  "entities": {\n')
    sample = Sample.from_row(row)
    sample.entities = [sample.entities[0], *sample.entities]  # a repeat stays a repeat
    repeated = json.loads(sample.completion(target_format="reference").split("</think>\n")[1])
    first_label = sample.entities[0][1]
    assert repeated["entities"][first_label].count(sample.entities[0][0]) >= 2
    with pytest.raises(ValueError, match="target_format 'pretty' is not one of"):
        sample.completion(target_format="pretty")


@needs_conll
def test_overlong_rows_are_dropped(cg_dataset: Path, tiny_model_dir: Path) -> None:
    from datasets import load_from_disk

    rows = sft_dataset(load_from_disk(str(cg_dataset)), PromptOptions())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = [
        len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], return_dict=False))
        for r in rows
    ]
    limit = sorted(lengths)[len(lengths) // 2]
    assert len(drop_overlong(rows, tokenizer, limit)) == sum(n <= limit for n in lengths)
    with pytest.raises(ValueError, match="longer than max_length"):
        drop_overlong(rows, tokenizer, 10)


@needs_conll
def test_overlong_rows_are_kept_and_cut_from_the_left_when_asked(
    cg_dataset: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """over_length = "truncate" with truncation_mode = "keep_end", as the reference: every
    row trains, the long ones cut to max_length from the left (the answer kept)."""
    profile = tiny_profile(
        tiny_model_dir,
        cg_dataset,
        tmp_path,
        **{
            "sft.over_length": "truncate",
            "sft.eval_size": 0,
            "sft.trainer.eval_strategy": "no",
            "sft.trainer.max_length": 96,
            "sft.trainer.truncation_mode": "keep_end",
        },
    )
    with pytest.warns(FutureWarning, match="keep_end"):  # TRL deprecates it, still does it
        trainer, _, _ = sft.build_trainer(profile)
    rows = sft_dataset(load_training_data(cg_dataset), PromptOptions())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(trainer.train_dataset) == len(rows)  # nothing dropped
    cut = 0
    for row, trained in zip(rows, trainer.train_dataset, strict=True):
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], return_dict=False)
        assert len(trained["input_ids"]) == min(len(full), 96)
        assert trained["input_ids"] == full[-96:]  # the end kept (when not cut: all of it)
        cut += len(full) > 96
    assert cut > 0  # some rows were long enough to be cut
    with pytest.raises(ConfigError, match="padding-free batches without packing"):
        sft.SFTStageConfig.from_profile(
            tiny_profile(
                tiny_model_dir,
                cg_dataset,
                tmp_path,
                **{"sft.over_length": "truncate", "sft.trainer.padding_free": True},
            )
        )


def counts(groups: list[str], picked: list[int]) -> dict[str, int]:
    return {g: sum(groups[i] == g for i in picked) for g in sorted(set(groups))}


def test_even_sampling_spreads_prompts_over_sources() -> None:
    groups = ["a"] * 10 + ["b"] * 10 + ["c"] * 2
    picked = even_indices(groups, 12, seed=0)
    # c gives all it has, a and b share the rest
    assert counts(groups, picked) == {"a": 5, "b": 5, "c": 2}
    assert len(set(picked)) == 12
    assert picked == even_indices(groups, 12, seed=0)
    assert picked != even_indices(groups, 12, seed=1)


def test_proportional_sampling_follows_source_sizes_as_the_reference() -> None:
    groups = ["a"] * 100 + ["b"] * 50 + ["c"] * 10
    picked = proportional_indices(groups, 16, seed=0)
    assert counts(groups, picked) == {"a": 10, "b": 5, "c": 1}
    assert len(set(picked)) == 16 and picked == proportional_indices(groups, 16, seed=0)
    # Sizes capped at 20: shares 16 x 20/50, 16 x 20/50, 16 x 10/50, rounded down.
    capped = proportional_indices(groups, 16, seed=0, max_per_group=20)
    assert counts(groups, capped) == {"a": 6, "b": 6, "c": 3}
    assert sorted(picked) != picked  # shuffled over sources, not grouped


@needs_conll
def test_gold_rows_become_grpo_prompts() -> None:
    records = conll_records(12)
    rows = gold_rows(records, [f"g{i}" for i in range(len(records))])
    sampled = grpo_dataset(
        sample_prompts(rows, 5, seed=0, sampling="even"), PromptOptions(reasoning=False)
    )
    assert len(sampled) == 5
    assert set(sampled.column_names) == {"prompt", "schema", "entities", "dataset"}
    assert "Answer with the JSON only." in sampled[0]["prompt"][0]["content"]


def test_unknown_trainer_settings_are_refused() -> None:
    from trl import SFTConfig

    with pytest.raises(ValueError, match=r"'learning_rat' \(did you mean 'learning_rate'\?\)"):
        trainers.trainer_config(SFTConfig, {"learning_rat": 1e-4}, "sft.trainer")
    with pytest.raises(ValueError, match=r"output_dir.*the stage's `output`"):
        trainers.trainer_config(SFTConfig, {"output_dir": "x"}, "sft.trainer")
    with pytest.raises(ValueError, match="'rank'"):
        trainers.lora_config({"enabled": True, "rank": 8}, "sft.lora")
    with pytest.raises(ValueError, match="'rank'"):  # a disabled block is checked as well
        trainers.lora_config({"enabled": False, "rank": 8}, "sft.lora")
    assert trainers.lora_config({"enabled": False, "r": 8}, "sft.lora") is None


def test_reward_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"'format'"):
        from_block(grpo.RewardConfig, {"f1": 1.0, "format": 1.0}, "grpo.rewards")
    with pytest.raises(ConfigError, match="reasoning_budget"):
        grpo.RewardConfig(length_penalty=1.0)
    with pytest.raises(ConfigError, match="every reward weight 0"):
        grpo.RewardConfig(f1=0.0, schema=0.0)
    functions, weights = grpo.reward_functions(grpo.RewardConfig(), None)
    assert weights == [10.0, 1.0]
    empty = [[{"role": "assistant", "content": '{"entities": {}}'}]]
    columns = {"schema": [["person"]], "entities": [[]]}
    assert [f(empty, **columns) for f in functions] == [[0.0], [1.0]]  # the reference
    ours = grpo.RewardConfig(empty_answer_credit=True)
    assert [f(empty, **columns) for f in grpo.reward_functions(ours, None)[0]] == [[1.0], [1.0]]


@pytest.mark.parametrize("name", ["cpu", "gpu-1.7b", "gpu-8b"])
def test_profiles_give_valid_trainer_settings(name: str) -> None:
    from trl import GRPOConfig, SFTConfig

    profile = load_profile(CONFIG_DIR / f"{name}.cfg")
    stage = sft.SFTStageConfig.from_profile(profile)
    args = trainers.trainer_config(SFTConfig, stage.trainer, "sft.trainer")
    stage_rl = grpo.GRPOStageConfig.from_profile(profile)
    rl = trainers.trainer_config(GRPOConfig, stage_rl.trainer, "grpo.trainer")
    assert rl.generation_batch_size % rl.num_generations == 0
    if name.startswith("gpu"):  # the reference implementation's recipe
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 8 == 256
        assert (args.learning_rate, args.num_train_epochs, args.max_length) == (2e-5, 5, 8192)
        assert (args.lr_scheduler_type, args.warmup_steps) == ("cosine", 0.03)
        assert (rl.num_generations, rl.temperature, rl.beta) == (16, 0.9, 0.04)
        assert (rl.epsilon, rl.epsilon_high, rl.learning_rate) == (0.2, 0.28, 1e-6)
        assert (rl.max_completion_length, rl.use_vllm, rl.vllm_mode) == (4096, True, "server")
        assert (rl.loss_type, rl.num_iterations) == ("dr_grpo", 4)
        assert (rl.lr_scheduler_type, rl.warmup_steps) == ("cosine", 0.1)
        assert rl.per_device_train_batch_size * rl.gradient_accumulation_steps * 7 == 448
        assert not rl.log_completions
        rewards = stage_rl.rewards
        assert (rewards.f1, rewards.schema, rewards.length_penalty) == (10.0, 1.0, 0.0)
        assert not (rewards.repaired_json_credit or rewards.empty_answer_credit)
        assert not rewards.strict_schema
        assert (stage_rl.prompts.sampling, stage_rl.prompts.max_per_source) == (
            "proportional",
            10000,
        )


def test_launch_configs_parse() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    deepspeed = json.loads((CONFIG_DIR / "deepspeed" / "zero3.json").read_text())
    assert deepspeed["zero_optimization"]["stage"] == 3
    for name in ("single-gpu", "zero3", "multi-node-zero3"):
        launch = load_config_from_file(str(CONFIG_DIR / "accelerate" / f"{name}.yaml"))
        file = launch.deepspeed_config.get("deepspeed_config_file")
        assert file is None or (CONFIG_DIR.parent / file).is_file()


# --------------------------------------------------------------------------- SFT


@needs_conll
def test_sft_trains_checkpoints_and_resumes(
    cg_dataset: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    profile = tiny_profile(tiny_model_dir, cg_dataset, tmp_path, **{"sft.lora.enabled": True})
    output = tmp_path / "sft"
    model_dir = sft.train(profile)

    assert model_dir == output / "model"
    assert (model_dir / "model.safetensors").is_file()
    assert (output / "adapter" / "adapter_config.json").is_file()
    assert not list(model_dir.glob("adapter_*"))  # merged: loads without peft
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.chat_template  # inference renders prompts as training did
    history = logged(output)
    assert [e["step"] for e in history if "loss" in e] == [1, 2]
    assert any("eval_loss" in e for e in history)
    assert (output / CURVES_NAME).stat().st_size > 0
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 2

    # An interrupted run continues from its last checkpoint: one more step, not three.
    longer = tiny_profile(
        tiny_model_dir,
        cg_dataset,
        tmp_path,
        **{"sft.trainer.max_steps": 3, "sft.lora.enabled": True},
    )
    trainer, folder, resume = sft.build_trainer(longer)
    counter = StepCounter()
    trainer.add_callback(counter)
    trainers.train_and_save(trainer, folder, resume)
    assert counter.steps == 1
    assert trainer.state.global_step == 3
    assert [e["step"] for e in logged(output) if "loss" in e] == [1, 2, 3]


def test_incomplete_checkpoints_are_skipped(tmp_path: Path) -> None:
    for step, complete in [(2, True), (10, True), (12, False)]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert trainers.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert trainers.last_checkpoint(tmp_path / "checkpoint-12") is None


@needs_conll
def test_full_sft_without_reasoning_and_default_chat_template(
    cg_dataset: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    for name in ("chat_template.jinja", "chat_template.json"):
        (base / name).unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    assert not AutoTokenizer.from_pretrained(base).chat_template

    profile = tiny_profile(
        base,
        cg_dataset,
        tmp_path,
        **{"sft.lora.enabled": False, "sft.reasoning": False, "sft.trainer.max_steps": 1},
    )
    model_dir = sft.train(profile)
    assert not (tmp_path / "sft" / "adapter").exists()
    assert AutoTokenizer.from_pretrained(model_dir).chat_template == DEFAULT_CHAT_TEMPLATE


# --------------------------------------------------------------------------- GRPO


@needs_conll
def test_grpo_two_steps_log_rewards_length_and_kl(
    cg_dataset: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    profile = tiny_profile(
        tiny_model_dir,
        cg_dataset,
        tmp_path,
        **{"grpo.rewards.length_penalty": 1.0, "grpo.rewards.reasoning_budget": 4},
    )
    model_dir = grpo.train(profile)

    assert (model_dir / "model.safetensors").is_file()
    steps = [e for e in logged(tmp_path / "grpo") if "kl" in e]
    assert [e["step"] for e in steps] == [1, 2]
    for name in ("f1_reward", "schema_reward", "length_penalty"):
        assert all(f"rewards/{name}/mean" in e for e in steps)
    assert all("completions/mean_length" in e for e in steps)
    assert (tmp_path / "grpo" / CURVES_NAME).is_file()
    state = json.loads((tmp_path / "grpo" / "trainer_state.json").read_text())
    assert any("rewards/f1_reward/mean" in e for e in state["log_history"])
    # The stage names where its prompts came from.
    report = json.loads((tmp_path / "grpo" / grpo.PROMPTS_REPORT_NAME).read_text())
    assert (report["pool"], report["inputs"]) == ("dataset", {"dataset": str(cg_dataset)})


@needs_conll
def test_grpo_prompts_from_gold_sources(tmp_path: Path, tiny_model_dir: Path) -> None:
    profile = tiny_profile(
        tiny_model_dir,
        tmp_path / "unused",
        tmp_path,
        **{"grpo.prompts.origin": "sources", "grpo.prompts.num_prompts": 6},
    )
    rows = grpo.prompt_rows(grpo.GRPOStageConfig.from_profile(profile))
    counts = {name: rows["dataset"].count(name) for name in set(rows["dataset"])}
    assert counts == {"conll2003": 3, "pile_ner": 3}
    schema = rows[0]["schema"]
    assert schema == sorted(schema) and "misc" not in schema


@needs_conll
def test_grpo_refuses_evaluation_domains(tmp_path: Path, tiny_model_dir: Path) -> None:
    profile = tiny_profile(
        tiny_model_dir,
        tmp_path / "unused",
        tmp_path,
        **{
            "grpo.prompts.origin": "sources",
            "grpo.sources.conll2003.path": str(DATA / "mit_movie" / "train.txt"),
            "grpo.sources.conll2003.labels": str(DATA / "mit_movie" / "labels.json"),
            "grpo.prompts.forbidden_datasets": ["conll2003"],
        },
    )
    with pytest.raises(ValueError, match="evaluation domains"):
        grpo.prompt_rows(grpo.GRPOStageConfig.from_profile(profile))


# The reference's GRPO pool, as its config/dataset/in_domain.json lists it.
REFERENCE_GRPO_SETS = [
    "ACE 2005", "AnatEM", "bc2gm", "bc4chemd", "bc5cdr", "Broad Tweet Corpus", "CoNLL 2003",
    "FabNER", "FindVehicle", "GENIA_NER", "HarveyNER", "mit-movie", "mit-restaurant",
    "MultiNERD", "ncbi", "Ontonotes", "PolyglotNER", "TweetNER7", "WikiANN en", "WikiNeural",
]  # fmt: skip
CONTAMINATED = "The BRCA1 gene was cloned ."


def row(sentence: str, *mentions: tuple[str, str]) -> dict[str, Any]:
    """An InstructUIE record: the sentence and its (name, type) entities with offsets."""
    entities = []
    for name, label in mentions:
        start = sentence.index(name)
        entities.append({"name": name, "type": label, "pos": [start, start + len(name)]})
    return {"sentence": sentence, "entities": entities}


def write_instructuie(root: Path, name: str, rows: list[dict[str, Any]], labels: list[str]) -> None:
    """An InstructUIE set as IE_INSTRUCTIONS/NER holds it: train.json and labels.json."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "train.json").write_text(json.dumps(rows))
    (folder / "labels.json").write_text(json.dumps(labels))


@pytest.fixture
def instructuie(tmp_path: Path) -> Path:
    """Two tiny InstructUIE sets; one bc2gm sentence is also an evaluation sentence."""
    root = tmp_path / "IE_INSTRUCTIONS" / "NER"
    write_instructuie(
        root,
        "CoNLL 2003",
        [
            row(
                "EU rejects German call to boycott British lamb .",
                ("EU", "organization"),
                ("German", "misc"),
            ),
            row(
                "Peter Blackburn reports from Brussels .",
                ("Peter Blackburn", "person"),
                ("Brussels", "location"),
            ),
            row("The talks ended without a deal ."),
        ],
        ["location", "misc", "organization", "person"],
    )
    genes = [
        ("Mutations in TP53 were found .", "TP53"),
        (CONTAMINATED, "BRCA1"),
        ("BRCA2 levels rose .", "BRCA2"),
    ]
    write_instructuie(root, "bc2gm", [row(s, (gene, "GENE")) for s, gene in genes], ["GENE"])
    evaluation = tmp_path / "evaluation" / "crossner_ai"
    evaluation.mkdir(parents=True)
    (evaluation / "dev.txt").write_text(
        "".join(f"{token} O\n" for token in CONTAMINATED.split()) + "\n"
    )
    return root


def gpu_grpo(root: Path, tmp_path: Path, **overrides: Any) -> grpo.GRPOStageConfig:
    """The gpu-1.7b profile's GRPO stage over tiny InstructUIE sets and evaluation data."""
    profile = load_profile(
        "gpu-1.7b",
        {
            "paths.data": str(tmp_path),
            "paths.output": str(tmp_path / "out"),
            "grpo.prompts.instructuie.path": str(root),
            "grpo.prompts.instructuie.datasets": ["CoNLL 2003", "bc2gm"],
            "grpo.prompts.decontamination.data": str(tmp_path / "evaluation"),
            "grpo.prompts.decontamination.datasets": ["crossner_ai"],
            **overrides,
        },
    )
    return grpo.GRPOStageConfig.from_profile(profile)


def test_grpo_pool_defaults_to_the_reference_sets_without_the_zero_shot_domains() -> None:
    default = grpo.InstructUIEConfig().datasets
    assert default == [s for s in REFERENCE_GRPO_SETS if not s.startswith("mit-")]


def test_gpu_grpo_prompts_come_from_the_instructuie_sets_when_present(
    instructuie: Path, tmp_path: Path
) -> None:
    config = gpu_grpo(instructuie, tmp_path)
    rows, report = grpo.sampled_prompts(config)
    assert (report["requested"], report["pool"], report["fallback"]) == (
        "instructuie",
        "instructuie",
        None,
    )
    # Every set's share of the 5,000, the evaluation sentence removed first.
    assert report["per_dataset"] == {"CoNLL 2003": 3, "bc2gm": 2}
    assert report["decontamination_removed"] == {"bc2gm": {"crossner_ai/dev": 1}}
    assert CONTAMINATED not in rows["text"]
    conll = [r for r in rows if r["dataset"] == "CoNLL 2003"]
    # The reference's schema: labels.json lowercased and sorted, misc-like types out.
    assert all(r["schema"] == ["location", "organization", "person"] for r in conll)
    eu = next(r for r in conll if r["text"].startswith("EU"))
    assert eu["entities"] == [{"text": "EU", "label": "organization"}]
    assert {tuple(r["schema"]) for r in rows if r["dataset"] == "bc2gm"} == {("gene",)}
    assert report["without_entities"] == 1
    grpo.write_prompts(rows, tmp_path / "grpo", report)
    written = json.loads((tmp_path / "grpo" / grpo.PROMPTS_REPORT_NAME).read_text())
    assert written["pool"] == "instructuie" and written["inputs"]["bc2gm"].endswith("train.json")


def test_the_zero_shot_domains_stay_refused_in_the_instructuie_pool(
    instructuie: Path, tmp_path: Path
) -> None:
    films = row("Show me films by Ridley Scott .", ("Ridley Scott", "director"))
    write_instructuie(instructuie, "mit-movie", [films], ["director"])
    config = gpu_grpo(
        instructuie, tmp_path, **{"grpo.prompts.instructuie.datasets": ["bc2gm", "mit-movie"]}
    )
    with pytest.raises(ValueError, match=r"\['mit-movie'\] are evaluation domains"):
        grpo.sampled_prompts(config)


def test_gpu_grpo_prompts_fall_back_to_our_pool_and_say_so(
    instructuie: Path, tmp_path: Path
) -> None:
    absent = tmp_path / "nowhere"
    config = gpu_grpo(absent, tmp_path)
    # Our pool: one tiny gold source in place of the profile's CoNLL-2003 and Pile-NER.
    config.sources = {
        "ours": SourceConfig("ours", instructuie / "CoNLL 2003" / "train.json", "instructuie")
    }
    rows, report = grpo.sampled_prompts(config)
    assert (report["requested"], report["pool"]) == ("instructuie", "sources")
    assert str(absent) in report["fallback"] and report["per_dataset"] == {"ours": 3}
    grpo.write_prompts(rows, tmp_path / "grpo", report)
    written = json.loads((tmp_path / "grpo" / grpo.PROMPTS_REPORT_NAME).read_text())
    assert written["pool"] == "sources" and str(absent) in written["fallback"]
    # Without the fallback, and with a set missing, the stage stops and says what to do.
    with pytest.raises(FileNotFoundError, match=r"no InstructUIE folder .*InstructUIE#data"):
        grpo.sampled_prompts(gpu_grpo(absent, tmp_path, **{"grpo.prompts.fallback": None}))
    partial = gpu_grpo(
        instructuie, tmp_path, **{"grpo.prompts.instructuie.datasets": ["bc2gm", "ncbi"]}
    )
    with pytest.raises(FileNotFoundError, match=r"incomplete .*ncbi/train\.json"):
        grpo.sampled_prompts(partial)


# --------------------------------------------------------------------------- assembly


@needs_conll
def test_assembled_pipeline_loads_and_runs(
    cg_dataset: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = AssembleConfig(
        model=tiny_model_dir,
        output=tmp_path / "not-yet" / "pipeline",  # parents are created
        labels=["person", "location"],
        component={"generation": {"max_new_tokens": 8}, "keep_raw": True},
    )
    output = assemble(config)
    assert (output / "reasoning_ner" / "model" / "model.safetensors").is_file()
    nlp = spacy.load(output)
    pipe = nlp.get_pipe("reasoning_ner")
    assert pipe.labels == ("person", "location")
    doc = nlp("Angela Merkel visited Paris.")
    # The weights came from the pipeline folder, and the component ran them on the text
    # under the assembled settings.
    assert pipe.backend.source.path == str(output / "reasoning_ner" / "model")
    assert (pipe.stats["docs"], pipe.stats["windows"]) == (1, 1)
    [window] = doc._.ner_raw
    assert '["location", "person"]' in window["prompt"] and "Angela Merkel" in window["prompt"]
    # The reasoning stops at 8 new tokens; the answer pass, constrained to compact JSON in the
    # schema, closes even for the random model.
    assert not doc._.ner_truncated and parse_completion(window["completion"], pipe.schema).parsed
    assert window["reasoning"] is not None and doc._.ner_reasoning == window["reasoning"]
    with pytest.raises(ConfigError, match="must not set backend"):
        AssembleConfig(model=tiny_model_dir, output=output, labels=["x"], component={"backend": {}})


def test_curves_skip_panels_without_data(tmp_path: Path) -> None:
    assert plot_curves([{"epoch": 1.0, "step": 1}], tmp_path / "none.png") is None
    history = [{"step": s, "loss": 1.0 / s, "rewards/f1_reward/mean": 0.1 * s} for s in (1, 2)]
    assert plot_curves(history, tmp_path / "c.png").stat().st_size > 0


# --------------------------------------------------------------------------- behaviour


@pytest.mark.slow
@needs_conll
def test_sft_of_smollm2_lowers_the_held_back_loss(bundled_model_dir: Path, tmp_path: Path) -> None:
    from datasets import Dataset

    torch.set_num_threads(int(os.environ.get("TORCH_NUM_THREADS", "2")))  # a real model
    folder = tmp_path / "cg" / "dataset"
    Dataset.from_list(cg_rows(160)).save_to_disk(str(folder))
    profile = tiny_profile(
        bundled_model_dir,
        folder,
        tmp_path,
        **{
            "sft.eval_size": 16,
            "sft.trainer.max_steps": 30,
            "sft.trainer.eval_steps": 30,
            "sft.trainer.save_steps": 30,
            "sft.trainer.per_device_train_batch_size": 4,
        },
    )
    trainer, output, resume = sft.build_trainer(profile)
    before = trainer.evaluate()["eval_loss"]
    trainers.train_and_save(trainer, output, resume)
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.8 * before, (before, after)


# --------------------------------------------------------------------------- export


def test_provenance_says_a_resumed_stage_was_timed_for_its_last_steps(tmp_path: Path) -> None:
    from training.export_adapter import stage_lines

    history = [{"step": 1, "loss": 0.9}, {"step": 360, "loss": 0.1, "eval_loss": 0.16}]
    summary = {"train_runtime": 2807.0, "train_steps_per_second": 0.053}
    (tmp_path / "trainer_state.json").write_text(
        json.dumps({"global_step": 360, "log_history": [*history, summary]})
    )
    assert stage_lines("sft", tmp_path) == [
        "- sft: 360 steps; 2807 s for the last 149 (resumed from a checkpoint); "
        "train loss 0.900 -> 0.100; held-back loss 0.160"
    ]
    summary["train_steps_per_second"] = 360 / 2807
    (tmp_path / "trainer_state.json").write_text(
        json.dumps({"global_step": 360, "log_history": [*history, summary]})
    )
    assert "; 2807 s; " in stage_lines("sft", tmp_path)[0]


@needs_conll
def test_exported_adapter_equals_sft_then_grpo(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SFT's LoRA over the base, then GRPO's over the merged SFT model (other rank, rsLoRA,
    fewer modules), stack into one adapter whose merge gives the same weights."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from spacy_reasoningner.models import merge_lora
    from spacy_reasoningner.weight_delta import DELTA_WEIGHTS
    from training.export_adapter import export

    profile = tiny_profile(tiny_model_dir, tmp_path / "unused", tmp_path / "out")
    stages = {
        "sft": LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False),
        "grpo": LoraConfig(
            r=4,
            lora_alpha=8,
            use_rslora=True,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
        ),
    }
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for stage, config in stages.items():
        peft_model = get_peft_model(model, config)
        peft_model.save_pretrained(tmp_path / "out" / stage / "adapter")
        model = peft_model.merge_and_unload()
    profile["export"]["dtype"] = "float32"
    stale = tmp_path / "exported" / DELTA_WEIGHTS  # from an export of a full fine-tune
    stale.parent.mkdir()
    stale.write_bytes(b"stale")
    exported = export(profile, tmp_path / "exported", "cpu-0.5b", "python -m training ...")
    assert not stale.exists()  # it would be merged beneath the new adapter
    assert json.loads((exported / "adapter_config.json").read_text())["r"] == 12
    provenance = (exported / "PROVENANCE.md").read_text()
    assert "sft + grpo" in provenance
    assert "spacy project run grpo . --vars.profile cpu-0.5b" in provenance
    assert "\npython -m training ...\n" in provenance  # the export as it was run
    # Readable by every user of an installed wheel, not 0600 as safetensors writes.
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in exported.iterdir())
    # The folder of an adapter over another base model is not overwritten.
    profile["export"]["base_model"] = "bundled:qwen2.5-coder-0.5b-instruct"
    with pytest.raises(ValueError, match=r"holds an adapter over .* --vars\.adapter_dir"):
        export(profile, exported)
    decontamination = (exported / "DECONTAMINATION.md").read_text()
    assert "crossner_ai" in decontamination and "removed" in decontamination
    merged = tmp_path / "merged"
    merged.mkdir()
    merge_lora(tiny_model_dir, exported, merged)
    weights = load_file(merged / "model.safetensors")
    for name, expected in model.state_dict().items():
        assert torch.allclose(weights[name], expected, atol=1e-5), name


@needs_conll
def test_a_full_fine_tune_exports_as_a_4_bit_delta_under_the_grpo_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """SFT of full weights, then GRPO's LoRA over it: the export holds the SFT update as a
    4-bit delta and the LoRA as it is; merged, they give the trained weights up to the
    delta's rounding (half a step of its group), vectors exactly."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from spacy_reasoningner.models import merge_lora
    from spacy_reasoningner.weight_delta import DELTA_WEIGHTS, LEVELS
    from training.export_adapter import export

    profile = tiny_profile(tiny_model_dir, tmp_path / "unused", tmp_path / "out")
    profile["export"].update(dtype="float32", base_model=str(tiny_model_dir))
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "out" / "sft" / "model")
    sft_weights = {k: v.clone() for k, v in model.state_dict().items()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(tmp_path / "out" / "grpo" / "adapter")
    model = peft_model.merge_and_unload()

    exported = export(profile, tmp_path / "exported")
    config = json.loads((exported / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["weight_delta"]["stage"] == "sft"
    assert config["weight_delta"]["relative_error"] < 0.2
    merged = tmp_path / "merged"
    merged.mkdir()
    merge_lora(tiny_model_dir, exported, merged)
    weights = load_file(merged / "model.safetensors")
    for name, expected in model.state_dict().items():
        if name not in weights:  # tied lm_head
            continue
        delta = sft_weights[name] - base[name]
        if delta.dim() == 1:
            assert torch.allclose(weights[name], expected, atol=1e-6), name
            continue
        half_step = delta.abs().amax() / LEVELS / 2
        assert (weights[name] - expected).abs().amax() <= half_step * 1.01 + 1e-6, name
    assert (exported / DELTA_WEIGHTS).stat().st_size < 0.3 * sum(
        v.numel() * 2 for v in base.values()
    )
    shutil.rmtree(tmp_path / "out" / "sft" / "model")
    with pytest.raises(ConfigError, match="neither a LoRA adapter"):
        export(profile, tmp_path / "again")


def test_the_trl_shims_refuse_a_trl_they_were_not_written_for(monkeypatch):
    import trl

    from training.trl_compat import check_trl_version, vllm_on_cpu

    check_trl_version()  # the pinned one
    monkeypatch.setattr(trl, "__version__", "1.17.0")
    refused = r"TRL 1\.17\.0 is installed; .* written for TRL 1\.16"
    with pytest.raises(RuntimeError, match=refused), vllm_on_cpu():
        pass
