"""The two passes of a constrained answer, as every backend that decodes them runs them:
free reasoning from the opened think block up to ``</think>``, then the answer under its
constraint after the closed think block. The completion carries the two apart: the answer
as its text, the reasoning (as the answer pass read it) as its reasoning."""

from __future__ import annotations

from dataclasses import replace

from ..protocol import REASONING_STOPS, THINK_CLOSE, THINK_OPEN, reasoning_text
from .base import Completion, GenerationSettings


def reasoning_settings(settings: GenerationSettings) -> GenerationSettings:
    """The first pass: free, stopped where the think block closes."""
    return replace(settings, stop=REASONING_STOPS)


def answer_settings(settings: GenerationSettings, budget: int) -> GenerationSettings:
    """The second pass: the answer's own budget, ended by its constraint, not by stops."""
    return replace(settings, max_new_tokens=budget, stop=())


def thought(reasoning_pass: str, settings: GenerationSettings) -> str:
    """The reasoning the answer pass continues and the completion returns: the first pass's
    text without tags, a loop cut off at its first repeated line when
    ``stop_reasoning_loops``."""
    return reasoning_text(reasoning_pass, stop_loops=settings.stop_reasoning_loops)


def think_head(thought: str) -> str:
    """The closed think block the answer pass continues from."""
    return f"{THINK_OPEN}\n{thought}\n{THINK_CLOSE}\n"


def joined(
    answer: Completion,
    constraint: str,
    reasoning: tuple[str, Completion] | None = None,
    prompt: str | None = None,
) -> Completion:
    """One completion of both passes: the answer as text, the thought of the reasoning pass
    (``reasoning``: the thought and the pass's completion) apart, the tokens both passes
    generated and read counted together (unknown when either pass did not count)."""
    if reasoning is None:
        return replace(answer, constraint=constraint, prompt=prompt or answer.prompt)
    text, first = reasoning
    return replace(
        answer,
        reasoning=text,  # the answer pass continues the closed block: it reasons no more
        n_tokens=_add(answer.n_tokens, first.n_tokens),
        prompt_tokens=_add(answer.prompt_tokens, first.prompt_tokens),
        cached_prompt_tokens=_add(answer.cached_prompt_tokens, first.cached_prompt_tokens),
        constraint=constraint,
        prompt=prompt or answer.prompt,
    )


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b
