"""Training rows in the forms the trainers read.

The CG stage writes one dataset (``datasets.Dataset.save_to_disk``) of ``Sample`` rows: the
sample's fields and TRL's conversational prompt-completion form of it (``prompt``,
``completion``). SFT reads the latter as is, or re-renders it without reasoning for the
paper's ablation; GRPO reads the prompt and keeps ``schema`` and ``entities`` for the rewards.
GRPO prompts may also come from gold corpora: those are read exactly as the CG stage reads its
sources and turned into the same rows, so every stage sees one format.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from spacy_reasoningner.benchmark.readers import NERRecord

from .samples import Sample

logger = logging.getLogger(__name__)

# Rendering a no-reasoning turn: Qwen3-style templates then write an empty think block, as
# the component asks for at inference when reasoning is off.
NO_THINKING = {"enable_thinking": False}
REWARD_COLUMNS = ["schema", "entities", "dataset"]


def load_training_data(path: str | Path) -> Dataset:
    path = Path(path)
    if not (path / "dataset_info.json").exists():
        raise FileNotFoundError(
            f"no training dataset at {path}: run `python -m training build-data <profile>` "
            "first, or point the profile at a folder written by Dataset.save_to_disk"
        )
    return load_from_disk(str(path))


def prompt_messages(row: dict[str, Any], reasoning: bool) -> list[dict[str, str]]:
    """The row's prompt; re-rendered when the model is to answer without reasoning."""
    return row["prompt"] if reasoning else Sample.from_row(row).messages(reasoning=False)


def answer_only(row: dict[str, Any]) -> dict[str, Any]:
    """The row as an SFT sample without reasoning: the JSON answer alone is the target."""
    sample = Sample.from_row(row)
    return {
        "prompt": sample.messages(reasoning=False),
        "completion": [{"role": "assistant", "content": sample.completion(reasoning=False)}],
        "chat_template_kwargs": NO_THINKING,
    }


def sft_dataset(dataset: Dataset, reasoning: bool) -> Dataset:
    """Prompt-completion rows: think block + JSON, or the JSON alone (``reasoning=False``)."""
    if reasoning:
        return dataset.select_columns(["prompt", "completion"])
    return dataset.map(answer_only, remove_columns=dataset.column_names)


def drop_overlong(
    dataset: Dataset, tokenizer: Any, max_length: int | None, num_proc: int | None = None
) -> Dataset:
    """Rows whose templated prompt + completion fit ``max_length`` tokens.

    The trainer would truncate longer rows, cutting the answer off the target and teaching
    the model to stop mid-JSON; dropping them is the lesser loss.
    """
    if max_length is None:
        return dataset

    def fits(row: dict[str, Any]) -> bool:
        ids = tokenizer.apply_chat_template(
            row["prompt"] + row["completion"],
            tokenize=True,
            return_dict=False,
            **(row.get("chat_template_kwargs") or {}),
        )
        return len(ids) <= max_length

    kept = dataset.filter(fits, num_proc=num_proc)
    logger.info(
        "Dropped %d of %d rows longer than %d tokens",
        len(dataset) - len(kept),
        len(dataset),
        max_length,
    )
    if len(kept) == 0:
        raise ValueError(
            f"every training row is longer than max_length={max_length} tokens: raise it "
            "or use shorter sources"
        )
    return kept


def grpo_dataset(dataset: Dataset, reasoning: bool) -> Dataset:
    """Prompts, plus the columns the rewards read (TRL passes them as keyword lists)."""
    rows = dataset.filter(lambda row: len(row["schema"]) > 0)
    return rows.map(
        lambda row: {"prompt": prompt_messages(row, reasoning)},
        remove_columns=[c for c in rows.column_names if c not in ["prompt", *REWARD_COLUMNS]],
    )


def stratified_indices(groups: Sequence[str], n: int, seed: int) -> list[int]:
    """``n`` row indices spread evenly over ``groups`` (round robin over shuffled groups).

    Small groups give all they have and the rest of their share goes to the larger ones, so
    every source counts and none dominates (the reference samples its GRPO prompts this way).
    """
    rng = random.Random(seed)
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    queues = [rng.sample(rows, len(rows)) for _, rows in sorted(members.items())]
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return picked


def stratified_sample(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    """``n`` rows stratified over the ``dataset`` column; all rows, shuffled, when ``n`` is
    None or covers them."""
    n = len(dataset) if n is None else min(n, len(dataset))
    return dataset.select(stratified_indices(dataset["dataset"], n, seed))


def gold_rows(records: Sequence[NERRecord], guids: Sequence[str]) -> Dataset:
    """Rows of the CG format from gold records (schemas built), without reasoning."""
    rows = [Sample.from_record(r, g).to_row() for r, g in zip(records, guids, strict=True)]
    return Dataset.from_list(rows)
