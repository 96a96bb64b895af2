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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PromptOptions:
    """How the training prompts are rendered (the stored rows have the defaults)."""

    reasoning: bool = True  # False: the paper's ablation, the JSON answer alone
    reasoning_instruction: bool = (
        True  # our closing line (reason first / JSON only); not the reference's
    )
    add_source: bool = False  # name the source dataset, as the reference's 8B SFT does
    # The SFT target's JSON (samples.TARGET_FORMATS): "compact" (ours, the stored form) or
    # "reference" (indented, in mention order, repeats kept).
    target_format: str = "compact"

    @property
    def stored(self) -> bool:
        """The rows' stored prompt and completion are these."""
        return self == PromptOptions()


def prompt_messages(row: dict[str, Any], options: PromptOptions) -> list[dict[str, str]]:
    """The row's prompt; re-rendered when it is to differ from the stored one."""
    if options.stored:
        return row["prompt"]
    return Sample.from_row(row).messages(
        reasoning=options.reasoning,
        reasoning_instruction=options.reasoning_instruction,
        add_source=options.add_source,
    )


def sft_row(row: dict[str, Any], options: PromptOptions) -> dict[str, Any]:
    """The row as an SFT sample: think block + JSON answer, or without reasoning the JSON
    answer alone (the paper's ablation), the prompt rendered as ``options`` say."""
    sample = Sample.from_row(row)
    reasoning = options.reasoning
    completion = sample.completion(reasoning=reasoning, target_format=options.target_format)
    result = {
        "prompt": prompt_messages(row, options),
        "completion": [{"role": "assistant", "content": completion}],
    }
    if not reasoning:
        result["chat_template_kwargs"] = NO_THINKING
    return result


def sft_dataset(dataset: Dataset, options: PromptOptions) -> Dataset:
    """Prompt-completion rows: think block + JSON, or the JSON alone (``reasoning=False``)."""
    if options.stored:
        return dataset.select_columns(["prompt", "completion"])
    return dataset.map(sft_row, fn_kwargs={"options": options}, remove_columns=dataset.column_names)


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


def grpo_dataset(dataset: Dataset, options: PromptOptions) -> Dataset:
    """Prompts, plus the columns the rewards read (TRL passes them as keyword lists)."""
    rows = dataset.filter(lambda row: len(row["schema"]) > 0)
    return rows.map(
        lambda row: {"prompt": prompt_messages(row, options)},
        remove_columns=[c for c in rows.column_names if c not in ["prompt", *REWARD_COLUMNS]],
    )


SAMPLINGS = ("proportional", "even")


def proportional_indices(
    groups: Sequence[str], n: int, seed: int, max_per_group: int | None = None
) -> list[int]:
    """About ``n`` row indices, each group giving a share proportional to its size (capped
    at ``max_per_group``), shuffled: the reference's GRPO prompt sampling. Shares are rounded
    down, as the reference does, so a few fewer than ``n`` may come back."""
    rng = random.Random(seed)
    members = _members(groups)
    sizes = {g: min(len(m), max_per_group or len(m)) for g, m in members.items()}
    total = sum(sizes.values())
    picked: list[int] = []
    for group, rows in members.items():
        share = int(n * sizes[group] / total) if total else 0
        picked.extend(rng.sample(rows, len(rows))[:share])
    rng.shuffle(picked)
    return picked


def even_indices(groups: Sequence[str], n: int, seed: int) -> list[int]:
    """``n`` row indices spread evenly over ``groups`` (round robin over shuffled groups).

    Small groups give all they have and the rest of their share goes to the larger ones, so
    every source counts and none dominates (ours; the reference samples in proportion to
    size, see ``proportional_indices``).
    """
    rng = random.Random(seed)
    queues = [rng.sample(rows, len(rows)) for rows in _members(groups).values()]
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return picked


def _members(groups: Sequence[str]) -> dict[str, list[int]]:
    """Row indices per group, groups in sorted order (deterministic under the seed)."""
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    return dict(sorted(members.items()))


def sample_prompts(
    dataset: Dataset,
    n: int | None,
    seed: int,
    sampling: str = "proportional",
    max_per_source: int | None = None,
) -> Dataset:
    """``n`` rows over the ``dataset`` column (all rows when ``n`` is None or covers them),
    by ``sampling``: "proportional" to each source's size (the reference) or "even"."""
    n = len(dataset) if n is None else min(n, len(dataset))
    groups = dataset["dataset"]
    if sampling == "proportional":
        return dataset.select(proportional_indices(groups, n, seed, max_per_source))
    if sampling == "even":
        return dataset.select(even_indices(groups, n, seed))
    raise ValueError(f"sampling {sampling!r} is not one of {SAMPLINGS}")


def gold_rows(records: Sequence[NERRecord], guids: Sequence[str]) -> Dataset:
    """Rows of the CG format from gold records (schemas built), without reasoning."""
    rows = [Sample.from_record(r, g).to_row() for r, g in zip(records, guids, strict=True)]
    return Dataset.from_list(rows)
