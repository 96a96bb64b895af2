"""Decontamination by content, on a small benchmark folder written by the tests: every
evaluation split (dev, test, a dev slice carved out of train) is kept out of training, a
source whose content is a zero-shot domain is refused whatever its name, and the evaluation
guard checks the data of every training stage (CG samples and GRPO prompts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_reasoningner.benchmark import OverlapError
from spacy_reasoningner.benchmark.overlap import read_training_texts
from training.config import load_profile
from training.decontamination import DecontaminationConfig, evaluation_splits
from training.evaluate import EvaluateConfig, evaluate_profile
from training.samples import Sample
from training.sources import SourceConfig, plan

from ._scripted_backend import save_scripted_pipeline


def sentences(prefix: str, n: int) -> list[str]:
    return [f"{prefix} sentence number {i} mentions Alice in Paris" for i in range(n)]


def write_bio(path: Path, texts: list[str]) -> Path:
    """BIO lines: the first word of each sentence is a person."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = []
    for text in texts:
        words = text.split()
        tags = ["B-PER", *["O"] * (len(words) - 1)]
        blocks.append("\n".join(f"{w}\t{t}" for w, t in zip(words, tags, strict=True)))
    path.write_text("\n\n".join(blocks) + "\n")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """indomain: train/dev/test; nodev: train only (an MIT-like dataset); domain: a
    zero-shot domain with train and dev."""
    root = tmp_path / "data"
    write_bio(root / "indomain" / "train.txt", sentences("Train", 20))
    write_bio(root / "indomain" / "dev.txt", sentences("Dev", 5))
    write_bio(root / "indomain" / "test.txt", sentences("Test", 5))
    write_bio(root / "nodev" / "train.txt", sentences("Nodev", 40))
    write_bio(root / "domain" / "train.txt", sentences("Domain", 30))
    write_bio(root / "domain" / "dev.txt", sentences("Domaindev", 5))
    # Files other than splits hold no sentences (definitions, labels, READMEs).
    (root / "domain" / "definitions.json").write_text('[{"named_entity": "person"}]')
    (root / "domain" / "labels.json").write_text("{}")
    return root


def config(data: Path) -> DecontaminationConfig:
    return DecontaminationConfig(data=data, datasets=["indomain", "nodev", "domain"], seed=0)


def test_every_evaluation_split_is_indexed(data: Path) -> None:
    splits = evaluation_splits(config(data), forbidden=["domain"])
    assert sorted(splits) == [
        "domain/dev",
        "domain/train",  # a zero-shot domain: all of its data
        "indomain/dev",
        "indomain/test",  # test files where the user has them
        "nodev/dev",  # the evaluation's seeded slice of train (4 of 40)
    ]
    assert len(splits["nodev/dev"]) == 4


def test_training_text_from_any_evaluation_split_is_removed(data: Path, tmp_path: Path) -> None:
    mixed = sentences("Train", 10) + sentences("Test", 2) + sentences("Nodev", 40)
    source = SourceConfig("mixed", write_bio(tmp_path / "mixed.txt", mixed))
    planned = plan(
        [source],
        seed=0,
        drop_types=[],
        forbidden_datasets=["domain"],
        decontamination=config(data),
    )
    assert planned.contaminated == {"mixed": {"indomain/test": 2, "nodev/dev": 4}}
    assert len(planned.records) == 10 + 36


def test_a_zero_shot_domain_under_another_name_is_refused(data: Path, tmp_path: Path) -> None:
    renamed = SourceConfig("harmless", data / "domain" / "train.txt")
    with pytest.raises(ValueError, match=r"'harmless': 30 of its 30 texts .* 'domain'"):
        plan(
            [renamed],
            seed=0,
            drop_types=[],
            forbidden_datasets=["domain"],
            decontamination=config(data),
        )
    # A few shared sentences are removed, the source is kept.
    some = sentences("Train", 10) + sentences("Domain", 2)
    source = SourceConfig("some", write_bio(tmp_path / "some.txt", some))
    planned = plan(
        [source], seed=0, drop_types=[], forbidden_datasets=["domain"], decontamination=config(data)
    )
    assert planned.contaminated == {"some": {"domain/train": 2}} and len(planned.records) == 10


def test_missing_evaluation_data_is_an_error(data: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'absent'"):
        evaluation_splits(DecontaminationConfig(data=data, datasets=["absent"]), forbidden=[])


def test_the_evaluation_guard_checks_the_grpo_prompts(data: Path, tmp_path: Path) -> None:
    pipeline = save_scripted_pipeline(tmp_path / "pipeline")
    cg_log = tmp_path / "samples.jsonl"
    cg_log.write_text(json.dumps({"text": "Nothing from the benchmark.", "kept": True}) + "\n")
    prompts = tmp_path / "prompts.jsonl"
    leaked = Sample("g1", "indomain", sentences("Dev", 1)[0], ["person"], [])
    prompts.write_text(json.dumps(leaked.to_dict()) + "\n")
    assert read_training_texts(prompts) == [leaked.text]
    overrides = {
        "evaluate.pipeline": str(pipeline),
        "evaluate.data": str(data),
        "evaluate.datasets": ["indomain"],
        "evaluate.output": str(tmp_path / "out"),
        "evaluate.training_data": [str(cg_log), str(prompts)],
    }
    config = EvaluateConfig.from_profile(load_profile("cpu", overrides))
    with pytest.raises(OverlapError, match="indomain: 1"):
        evaluate_profile(config)
    # The CG samples alone do not overlap: the guard has to read the prompts to see it.
    config.training_data = [cg_log]
    result, _ = evaluate_profile(config)
    assert result.datasets[0].overlapping == 0
