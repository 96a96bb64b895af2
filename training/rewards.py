"""Rewards of the RE stage (GRPO), in TRL's reward-function signature.

TRL calls each function with ``completions`` (conversational: one ``[{"role": "assistant",
"content": ...}]`` list per completion) and every other dataset column as a keyword list, one
value per completion: here ``schema`` (type names as the model saw them) and ``entities``
(gold ``{"text", "label"}`` dicts). Parsing and scoring are the protocol's, so the reward
measures exactly what evaluation measures:

* ``f1_reward``: the paper's string-level F1 of the parsed answer against gold;
* ``schema_reward``: 1 when the answer is one well-formed JSON object whose labels are all in
  the schema, else 0;
* ``length_penalty``: 0 up to a budget of reasoning tokens, then down to -1 at twice the
  budget (the paper's main limitation is verbose chains; off unless the profile weights it).

The profile combines them with ``GRPOConfig.reward_weights`` (the paper: 10 x F1 + 1 x schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spacy_reasoningner.protocol import ParsedCompletion, Schema, parse_completion, string_prf

Completion = str | list[dict[str, str]]


def completion_text(completion: Completion) -> str:
    """The text of a completion, conversational (TRL's list of messages) or plain."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content") or "" for message in completion)


def parse(completion: Completion, schema: Sequence[str]) -> ParsedCompletion:
    return parse_completion(completion_text(completion), Schema.from_config(list(schema)))


def completion_f1(parsed: ParsedCompletion, gold: Sequence[dict[str, str]]) -> float:
    """String-level F1 of one completion. No answer object scores 0, even against empty gold:
    otherwise rambling without any JSON would earn full marks on sentences without entities.
    A correct "no entities" answer scores 1 (the metric's 0/0 would give those sentences no
    learning signal)."""
    if not parsed.parsed:
        return 0.0
    counts = string_prf(parsed.mentions(), [(e["text"], e["label"]) for e in gold])
    if counts.n_pred == 0 and counts.n_gold == 0:
        return 1.0
    return counts.f1


def f1_reward(
    completions: Sequence[Completion],
    schema: Sequence[Sequence[str]],
    entities: Sequence[Sequence[dict[str, str]]],
    **kwargs: Any,
) -> list[float]:
    return [
        completion_f1(parse(completion, types), gold)
        for completion, types, gold in zip(completions, schema, entities, strict=True)
    ]


def schema_reward(
    completions: Sequence[Completion], schema: Sequence[Sequence[str]], **kwargs: Any
) -> list[float]:
    """1 for a strictly valid answer: it parses without repairs, has the protocol's shape and
    names only schema types (``ParsedCompletion.valid``); 0 otherwise."""
    return [
        float(parse(completion, types).valid)
        for completion, types in zip(completions, schema, strict=True)
    ]


def length_penalty(
    completions: Sequence[Completion],
    schema: Sequence[Sequence[str]],
    *,
    tokenizer: Any,
    budget: int,
    **kwargs: Any,
) -> list[float]:
    """Minus the share of the budget by which the reasoning overruns it, capped at -1.

    Bind ``tokenizer`` and ``budget`` with ``functools.partial`` (TRL then logs the reward as
    ``length_penalty``). An unclosed think block counts whole: it is the costliest overrun.
    """
    if budget < 1:
        raise ValueError(f"the reasoning budget must be at least 1 token, got {budget}")
    penalties = []
    for completion, types in zip(completions, schema, strict=True):
        reasoning = parse(completion, types).reasoning
        n_tokens = len(tokenizer(reasoning, add_special_tokens=False)["input_ids"])
        penalties.append(-min(1.0, max(0, n_tokens - budget) / budget))
    return penalties
