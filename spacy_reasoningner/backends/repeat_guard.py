"""Answer lists that close at their first repeated mention, for both local backends.

A small model's constrained answer often loops on one mention ("Humane", "Humane", ...) up to
the grammar's bound on mentions, the largest share of its slowest answers. After the answer
constraint has masked the logits, the backends refuse the tokens holding a comma that would
continue a list after a mention it already holds (``protocol.mention_list_repeats``); the
constraint then leaves ``]`` or a longer span (another mention). The transformers backend
runs it as a ``LogitsProcessor``, vLLM as a per-request logits processor
(``vllm_repeat_guard``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..protocol import mention_list_repeats


def comma_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokenizer's tokens holding a comma (126 of SmolLM2's 49k): the only tokens
    the guard ever refuses, so it costs a decode only where a comma may come next."""
    return sorted(i for token, i in tokenizer.get_vocab().items() if "," in token)


def refused_commas(
    tokenizer: Any, answer_ids: Any, allowed: Sequence[int], allowed_total: int, head: str = ""
) -> list[int]:
    """Of the comma tokens the constraint ``allowed``, those that would continue the answer
    ``head`` + ``answer_ids`` (text in the prompt, then ids so far, a list or a tensor) after
    a repeated mention; none when they are all ``allowed_total`` tokens the constraint leaves
    (the guard never refuses every token)."""
    answer = head + tokenizer.decode(answer_ids, skip_special_tokens=True)
    refused = [t for t in allowed if mention_list_repeats(answer + tokenizer.decode([t]))]
    return refused if len(refused) < allowed_total else []


def guard_row(tokenizer: Any, comma_ids: Any, head: str = "") -> Callable[[Any, Any], Any]:
    """``guard(answer_ids, scores)``: one row of masked logits (a 1-D tensor), its refused
    commas set to -inf in place; the answer (``head``, the part of it the prompt already
    holds, then ``answer_ids``) is decoded only where a comma is allowed. Two arguments:
    vLLM tells per-request processors apart by their arity.
    ``comma_ids``: a long tensor of ``comma_token_ids``, on the scores' device."""
    import torch

    def guard(answer_ids: Any, scores: Any) -> Any:
        candidates = comma_ids[comma_ids < scores.shape[-1]]
        allowed = candidates[torch.isfinite(scores[candidates])].tolist()
        if allowed:
            total = int(torch.isfinite(scores).sum())
            refused = refused_commas(tokenizer, answer_ids, allowed, total, head)
            if refused:
                scores[refused] = float("-inf")
        return scores

    return guard
