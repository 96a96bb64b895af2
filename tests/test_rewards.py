"""GRPO rewards on hand-made completions, in TRL's call form: the reference implementation's
rules by default, and each of our variants."""

from __future__ import annotations

import functools

import pytest

from training.rewards import f1_reward, length_penalty, schema_reward

SCHEMA = ["location", "organization", "person"]
GOLD = [{"text": "Angela Merkel", "label": "person"}, {"text": "Berlin", "label": "location"}]
EXACT = '{"entities": {"person": ["Angela Merkel"], "location": ["Berlin"]}}'


def chat(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def rewards(
    contents: list[str], gold: list[dict[str, str]] = GOLD, **options: bool
) -> tuple[list[float], list[float]]:
    """(F1, schema) rewards of ``contents`` against one gold, as TRL would call them."""
    completions = [chat(c) for c in contents]
    columns = {"schema": [SCHEMA] * len(contents), "entities": [gold] * len(contents)}
    strict = options.pop("strict_schema", False)
    return (
        f1_reward(completions, **columns, **options),
        schema_reward(completions, **columns, strict_schema=strict),
    )


def test_exact_answer_scores_full_marks() -> None:
    assert rewards([f"<think>\nMerkel is a person.\n</think>\n{EXACT}"]) == ([1.0], [1.0])
    assert rewards([EXACT], strict_schema=True, repaired_json_credit=True) == ([1.0], [1.0])


def test_string_level_matching_ignores_case_articles_and_ascii_punctuation() -> None:
    answer = '{"entities": {"Person": ["angela merkel."], "location": ["the Berlin"]}}'
    assert rewards([answer]) == ([1.0], [1.0])  # label case does not leave the schema
    # Unicode punctuation is part of the mention, as in the reference.
    curly = '{"entities": {"person": ["Angela Merkel\u201d"], "location": ["Berlin"]}}'
    assert rewards([curly])[0] == [pytest.approx(0.5)]


def test_partial_answer_scores_f1() -> None:
    f1, _ = rewards(['{"entities": {"person": ["Angela Merkel"]}}'])  # P 1, R 1/2
    assert f1 == [pytest.approx(2 / 3)]


def test_empty_gold_and_empty_answer() -> None:
    empty = '<think>none</think>\n{"entities": {}}'
    assert rewards([empty], gold=[]) == ([0.0], [1.0])  # the reference's 0/0
    assert rewards([empty], gold=[], empty_answer_credit=True) == ([1.0], [1.0])


def test_empty_gold_and_no_answer_scores_zero() -> None:
    # Otherwise rambling without JSON would earn full F1 on sentences without entities.
    for options in ({}, {"empty_answer_credit": True, "repaired_json_credit": True}):
        assert rewards(["I cannot find any entities here."], gold=[], **options) == ([0.0], [0.0])


def test_invalid_json() -> None:
    f1, schema = rewards(['{"entities": {"person": ["Angela Merkel" "Berlin"}}', "{not json"])
    assert (f1, schema) == ([0.0, 0.0], [0.0, 0.0])


def test_repaired_json_earns_f1_only_with_our_variant() -> None:
    answer = "{'entities': {'person': ['Angela Merkel'], 'location': ['Berlin'],},}"
    assert rewards([answer]) == ([0.0], [0.0])
    assert rewards([answer], repaired_json_credit=True) == ([1.0], [0.0])
    prose = f"Here you go: {EXACT}"
    assert rewards([prose]) == ([0.0], [0.0])
    assert rewards([prose], repaired_json_credit=True)[0] == [1.0]


def test_fenced_json_with_prose_around_is_read_by_the_reference() -> None:
    answer = f"Sure.\n```json\n{EXACT}\n```\nDone."
    assert rewards([answer]) == ([1.0], [1.0])
    assert rewards([answer], strict_schema=True)[1] == [0.0]  # ours: prose is a departure


def test_label_outside_schema() -> None:
    answer = '{"entities": {"person": ["Angela Merkel"], "location": ["Berlin"], "date": ["1990"]}}'
    f1, schema = rewards([answer])
    assert f1 == [pytest.approx(0.8)]  # the reference counts it as a false positive
    assert schema == [0.0]
    # Our parser reads only schema labels: the stray mention costs the schema reward alone.
    assert rewards([answer], repaired_json_credit=True)[0] == [1.0]


def test_non_string_items() -> None:
    numbers = '{"entities": {"person": ["Angela Merkel", 7], "location": ["Berlin"]}}'
    assert rewards([numbers]) == ([1.0], [1.0])  # the reference skips them
    assert rewards([numbers], strict_schema=True)[1] == [0.0]
    broken = '{"entities": {"person": 7}}'  # the reference fails on it: no credit at all
    assert rewards([broken]) == ([0.0], [0.0])


def test_wrong_label_for_right_mention_is_a_miss() -> None:
    f1, _ = rewards(['{"entities": {"organization": ["Angela Merkel"], "location": ["Berlin"]}}'])
    assert f1 == [pytest.approx(0.5)]


def test_duplicates_count_once() -> None:
    answer = '{"entities": {"person": ["Angela Merkel", "Angela Merkel", "angela merkel"], "location": ["Berlin"]}}'
    duplicated_gold = [*GOLD, GOLD[0]]
    assert rewards([answer], gold=duplicated_gold) == ([1.0], [1.0])


def test_truncated_completion() -> None:
    inside_reasoning = "<think>\nMerkel is a person and Berlin"
    inside_answer = (
        '<think>ok</think>\n{"entities": {"person": ["Angela Merkel"], "location": ["Ber'
    )
    assert rewards([inside_reasoning, inside_answer]) == ([0.0, 0.0], [0.0, 0.0])
    f1, _ = rewards([inside_reasoning, inside_answer], repaired_json_credit=True)
    assert f1[0] == 0.0  # no answer at all
    assert f1[1] == pytest.approx(2 / 3)  # the complete mention counts, the cut one not


def test_plain_string_completions() -> None:
    f1 = f1_reward(['{"entities": {"person": ["Angela Merkel"]}}'], [SCHEMA], [GOLD[:1]])
    assert f1 == [1.0]


def test_combined_weighting_is_the_papers() -> None:
    """TRL sums reward_weights x rewards; the stage's default weights are the paper's:
    10 x F1 + 1 x schema, and no length penalty."""
    from training.grpo import RewardConfig, reward_functions

    functions, weights = reward_functions(RewardConfig(), WordTokenizer())
    contents = [
        EXACT,  # 10 + 1
        '{"entities": {"person": ["Angela Merkel"]}}',  # 10 x 2/3 + 1
        "{'entities': {'person': ['Angela Merkel'], 'location': ['Berlin']}}",  # 0 + 0
        "no answer",  # 0
    ]
    columns = {"schema": [SCHEMA] * 4, "entities": [GOLD] * 4}
    scores = [f([chat(c) for c in contents], **columns) for f in functions]
    totals = [sum(w * s[i] for w, s in zip(weights, scores, strict=True)) for i in range(4)]
    assert totals == pytest.approx([11.0, 10 * 2 / 3 + 1, 0.0, 0.0])


class WordTokenizer:
    """One token per whitespace-separated word."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(text.split())))}


def test_length_penalty_on_reasoning_beyond_the_budget() -> None:
    penalty = functools.partial(length_penalty, tokenizer=WordTokenizer(), budget=10)
    answer = '{"entities": {}}'
    completions = [
        chat(f"<think>{' '.join(['w'] * 8)}</think>{answer}"),  # within budget
        chat(f"<think>{' '.join(['w'] * 15)}</think>{answer}"),  # half the budget over
        chat(f"<think>{' '.join(['w'] * 40)}</think>{answer}"),  # capped
        chat("<think>" + " ".join(["w"] * 25)),  # unclosed: all of it is reasoning
        chat(answer),  # no reasoning
    ]
    assert penalty(completions, schema=[SCHEMA] * 5) == [0.0, -0.5, -1.0, -1.0, 0.0]


def test_the_stage_binds_the_length_penalty_under_the_name_trl_logs() -> None:
    from trl.trainer.utils import get_callable_name

    from training.grpo import RewardConfig, reward_functions

    rewards = RewardConfig(length_penalty=0.5, reasoning_budget=10)
    functions, weights = reward_functions(rewards, WordTokenizer())
    names = [get_callable_name(f) for f in functions]
    assert names == ["f1_reward", "schema_reward", "length_penalty"]
    assert weights == [10.0, 1.0, 0.5]
    overrun = chat(f"<think>{' '.join(['w'] * 15)}</think>" + '{"entities": {}}')
    assert functions[2]([overrun], schema=[SCHEMA]) == [-0.5]  # tokenizer and budget bound


def test_length_penalty_needs_a_budget() -> None:
    with pytest.raises(ValueError, match="budget"):
        length_penalty([chat("x")], schema=[SCHEMA], tokenizer=WordTokenizer(), budget=0)
