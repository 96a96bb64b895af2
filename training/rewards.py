"""Rewards of the RE stage (GRPO), in TRL's reward-function signature.

TRL calls each function with ``completions`` (conversational: one ``[{"role": "assistant",
"content": ...}]`` list per completion) and every other dataset column as a keyword list, one
value per completion: here ``schema`` (type names as the model saw them) and ``entities``
(gold ``{"text", "label"}`` dicts). By default the rewards are the reference
implementation's, read with ``protocol.reference_answer`` (strict JSON, nothing repaired):

* ``f1_reward``: the string-level F1 of the answer against gold; 0 when the answer does not
  load as JSON, and 0 when gold and answer are both empty (the reference's 0/0);
* ``schema_reward``: 1 when the answer loads as JSON and every label is in the schema;
* ``length_penalty``: 0 up to a budget of reasoning tokens, then down to -1 at twice the
  budget (the paper's main limitation is verbose chains; ours, off unless weighted).

Our variants are keyword options, bound by the GRPO stage from ``[grpo.rewards]``:
``repaired_json_credit`` (F1 of what the component's tolerant parser reads, so a repaired or
prose-wrapped answer still earns its F1), ``empty_answer_credit`` (a correct "no entities"
answer scores 1, giving those sentences a learning signal) and ``strict_schema`` (the schema
reward asks for the protocol's exact form: no repairs, no prose, string items, labels in
schema). The profile combines the rewards with ``GRPOConfig.reward_weights`` (the paper:
10 x F1 + 1 x schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spacy_reasoningner.protocol import (
    ParsedCompletion,
    Schema,
    parse_completion,
    reference_answer,
    string_prf,
)

Completion = str | list[dict[str, str]]


def completion_text(completion: Completion) -> str:
    """The text of a completion, conversational (TRL's list of messages) or plain."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content") or "" for message in completion)


def parse(completion: Completion, schema: Sequence[str]) -> ParsedCompletion:
    """The component's tolerant reading of a completion."""
    return parse_completion(completion_text(completion), Schema.from_config(list(schema)))


def completion_f1(
    completion: Completion,
    schema: Sequence[str],
    gold: Sequence[dict[str, str]],
    *,
    repaired_json_credit: bool = False,
    empty_answer_credit: bool = False,
) -> float:
    """String-level F1 of one completion against gold. Without any answer object the score
    is 0, even against empty gold: otherwise rambling without JSON would earn full marks."""
    if repaired_json_credit:
        parsed = parse(completion, schema)
        answered, predicted = parsed.parsed, parsed.mentions()
    else:
        answer = reference_answer(completion_text(completion))
        answered, predicted = answer.loads and answer.readable, list(answer.mentions)
    if not answered:
        return 0.0
    counts = string_prf(predicted, [(e["text"], e["label"]) for e in gold])
    if empty_answer_credit and counts.n_pred == 0 and counts.n_gold == 0:
        return 1.0
    return counts.f1


def f1_reward(
    completions: Sequence[Completion],
    schema: Sequence[Sequence[str]],
    entities: Sequence[Sequence[dict[str, str]]],
    *,
    repaired_json_credit: bool = False,
    empty_answer_credit: bool = False,
    **kwargs: Any,
) -> list[float]:
    return [
        completion_f1(
            completion,
            types,
            gold,
            repaired_json_credit=repaired_json_credit,
            empty_answer_credit=empty_answer_credit,
        )
        for completion, types, gold in zip(completions, schema, entities, strict=True)
    ]


def schema_reward(
    completions: Sequence[Completion],
    schema: Sequence[Sequence[str]],
    *,
    strict_schema: bool = False,
    **kwargs: Any,
) -> list[float]:
    """1 when the answer loads as JSON and names only schema types (the reference); with
    ``strict_schema``, when it is strictly valid: parsed without repairs, the protocol's
    shape, only schema types (``ParsedCompletion.valid``). 0 otherwise."""
    if strict_schema:
        return [float(parse(c, types).valid) for c, types in zip(completions, schema, strict=True)]
    return [
        float(reference_answer(completion_text(c)).in_schema(types))
        for c, types in zip(completions, schema, strict=True)
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
