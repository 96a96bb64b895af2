"""The reward rules side by side: GRPO-style rollouts of a model, scored by the reference
implementation's rewards and by each of our variants ([grpo.rewards] flags).

Prompts: the cpu profile's GRPO prompts (``[grpo.prompts]``: gold CoNLL-2003 and Pile-NER
sentences, decontaminated and sampled as the stage does). Each prompt gets ``--generations``
completions at temperature 0.9 (as in GRPO) from the vLLM engine, unconstrained. For each rule
set it prints the mean total reward (10 x F1 + 1 x schema), the share of completions whose F1
or schema reward differs from the reference's, and the share of prompt groups whose rewards
are all equal: GRPO learns nothing from such a group (its advantages are 0).

    python bench/reward_rules.py [--prompts 16] [--generations 4] [--model bundled:smollm2-135m-ner]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the training/ stages

from _common import data_argument

from spacy_reasoningner.backends import GenerationSettings
from training.chat_data import PromptOptions, grpo_dataset
from training.config import load_profile
from training.grpo import GRPOStageConfig, prompt_rows
from training.rewards import f1_reward, schema_reward

RULES = {
    "reference": {},
    "+ empty_answer_credit": {"empty_answer_credit": True},
    "+ repaired_json_credit": {"repaired_json_credit": True},
    "+ strict_schema": {"strict_schema": True},
    "ours (cpu profile)": {
        "empty_answer_credit": True,
        "repaired_json_credit": True,
        "strict_schema": True,
    },
}


def rewards(completions: list, columns: dict, rule: dict) -> tuple[list[float], list[float]]:
    f1_options = {k: v for k, v in rule.items() if k != "strict_schema"}
    f1 = f1_reward(completions, **columns, **f1_options)
    schema = schema_reward(completions, **columns, strict_schema=rule.get("strict_schema", False))
    return f1, schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data_argument(parser)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--model", default="bundled:smollm2-135m-ner")
    args = parser.parse_args()

    overrides = {"paths.data": str(args.data), "grpo.prompts.num_prompts": args.prompts}
    config = GRPOStageConfig.from_profile(load_profile("cpu", overrides))
    rows = grpo_dataset(prompt_rows(config), PromptOptions())

    from spacy_reasoningner.backends.vllm import VLLMBackend, VLLMOptions

    engine = VLLMBackend(VLLMOptions(model=args.model, max_model_len=2048, structured_output=False))
    engine.load()
    prompts = [row["prompt"] for row in rows for _ in range(args.generations)]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.9, seed=0)
    texts = [c.text for c in engine.generate(prompts, settings)]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {
        "schema": [row["schema"] for row in rows for _ in range(args.generations)],
        "entities": [row["entities"] for row in rows for _ in range(args.generations)],
    }
    empty = sum(not row["entities"] for row in rows)
    print(
        f"{len(rows)} prompts ({empty} without entities) x {args.generations} completions, "
        f"{args.model}, temperature 0.9, max_new_tokens {args.max_new_tokens}, vLLM, unconstrained"
    )
    reference = rewards(completions, columns, RULES["reference"])
    print(
        f"\n{'rules':<26}{'mean reward':>12}{'F1 differs':>12}{'schema differs':>16}{'flat groups':>13}"
    )
    for name, rule in RULES.items():
        f1, schema = rewards(completions, columns, rule)
        totals = [10 * f + s for f, s in zip(f1, schema, strict=True)]
        groups = [totals[i : i + args.generations] for i in range(0, len(totals), args.generations)]
        flat = sum(len(set(g)) == 1 for g in groups) / len(groups)
        f1_differs = sum(a != b for a, b in zip(f1, reference[0], strict=True)) / len(f1)
        schema_differs = sum(a != b for a, b in zip(schema, reference[1], strict=True)) / len(f1)
        mean = statistics.fmean(totals)
        print(f"{name:<26}{mean:>12.2f}{f1_differs:>12.1%}{schema_differs:>16.1%}{flat:>13.1%}")


if __name__ == "__main__":
    main()
