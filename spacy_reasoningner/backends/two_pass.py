"""The two passes of a constrained answer, as every backend that decodes them runs them:
free reasoning from the opened think block up to ``</think>``, then the answer under its
constraint after the closed think block, joined into one completion."""

from __future__ import annotations

from dataclasses import replace

from ..protocol import REASONING_STOPS, closed_think_block
from .base import Completion, GenerationSettings


def reasoning_settings(settings: GenerationSettings) -> GenerationSettings:
    """The first pass: free, stopped where the think block closes."""
    return replace(settings, stop=REASONING_STOPS)


def answer_settings(settings: GenerationSettings, budget: int) -> GenerationSettings:
    """The second pass: the answer's own budget, ended by its constraint, not by stops."""
    return replace(settings, max_new_tokens=budget, stop=())


def think_head(reasoning: str, settings: GenerationSettings) -> str:
    """The closed think block the answer pass continues (a reasoning loop cut off at its
    first repeated line when ``stop_reasoning_loops``)."""
    return closed_think_block(reasoning, stop_loops=settings.stop_reasoning_loops)


def joined(
    answer: Completion,
    constraint: str,
    head: str = "",
    reasoning: Completion | None = None,
    prompt: str | None = None,
) -> Completion:
    """One completion of both passes: the think block before the answer, the tokens both
    passes generated and read counted together (unknown when either pass did not count)."""
    if reasoning is None:
        return replace(answer, constraint=constraint, prompt=prompt or answer.prompt)
    return replace(
        answer,
        text=head + answer.text,
        reasoning=None,  # the head holds it
        n_tokens=_add(answer.n_tokens, reasoning.n_tokens),
        prompt_tokens=_add(answer.prompt_tokens, reasoning.prompt_tokens),
        cached_prompt_tokens=_add(answer.cached_prompt_tokens, reasoning.cached_prompt_tokens),
        constraint=constraint,
        prompt=prompt or answer.prompt,
    )


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b
