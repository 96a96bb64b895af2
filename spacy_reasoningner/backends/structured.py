"""Constrained answers, shared by the backends that can constrain decoding.

The reasoning stays free; only the JSON answer is constrained, to the protocol's shape with
the schema's labels (``GenerationSettings.answer_schema``), so it always parses. Two passes:
the model reasons until ``</think>`` (or its end of sequence; a chain cut by the budget is
closed too, so every prompt gets an answer), then the answer is generated under the
constraint after the closed think block. Without reasoning (``enable_thinking`` false) only
the second pass runs.

``structured_output = "auto"`` turns this on for models below ``AUTO_MAX_PARAMETERS``: small
models are the ones that break the format, and the constraint costs them little.
"""

from __future__ import annotations

from collections.abc import Callable

from ..models import ModelSource, parameter_count
from ..protocol import THINK_CLOSE, THINK_OPEN
from .base import Completion, GenerationSettings

AUTO_MAX_PARAMETERS = 4_000_000_000
StructuredOption = bool | str  # True, False or "auto"


def check_option(value: StructuredOption) -> StructuredOption:
    if value not in (True, False, "auto"):
        raise ValueError(f'structured_output must be true, false or "auto", got {value!r}')
    return value


def structured_enabled(option: StructuredOption, source: ModelSource) -> bool:
    """Resolve ``"auto"`` from the model's size (unknown size: off)."""
    if option != "auto":
        return bool(option)
    count = parameter_count(source)
    return count is not None and count < AUTO_MAX_PARAMETERS


def generate_two_pass(
    texts: list[str],
    settings: GenerationSettings,
    reason: Callable[[list[str]], list[Completion]],
    answer: Callable[[list[str]], list[Completion]],
) -> list[Completion]:
    """``reason`` generates freely from rendered prompts and stops at ``</think>``; ``answer``
    generates the constrained JSON from rendered prompts ending in the closed think block."""
    heads = [""] * len(texts)
    used = [0] * len(texts)
    if settings.chat_template_kwargs.get("enable_thinking", True):
        for i, completion in enumerate(reason(texts)):
            thought = completion.text.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()
            heads[i] = f"{THINK_OPEN}\n{thought}\n{THINK_CLOSE}\n"
            used[i] = completion.n_tokens or 0
    completions = answer([t + h for t, h in zip(texts, heads, strict=True)])
    for text, head, n, completion in zip(texts, heads, used, completions, strict=True):
        completion.text = head + completion.text
        completion.n_tokens = (completion.n_tokens or 0) + n
        completion.prompt = text
    return completions
