"""The one rule for constrained answers, shared by every backend that can constrain them.

``structured_output`` is ``true``, ``false`` or ``"auto"``: with ``"auto"`` the JSON answer
is constrained for models below ``AUTO_MAX_PARAMETERS`` parameters, as far as the size can
be read (a local model folder: in process, or the one a loopback server names), and left
free otherwise. Small models are the ones that break the format, and the constraint costs
them little; the reasoning before the answer always stays free.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import ModelSource, parameter_count

AUTO_MAX_PARAMETERS = 4_000_000_000
StructuredOption = bool | str  # True, False or "auto"
# A constrained answer stops at its closing brace; the budget only bounds a model that loops.
# 512 tokens hold the answer for a full 2000-character window dense with entities.
ANSWER_MAX_TOKENS = 512


def structured_enabled(option: StructuredOption, source: ModelSource | None) -> bool:
    """Resolve ``"auto"`` from the model's size (unknown model or size: off)."""
    if option != "auto":
        return bool(option)
    return auto_constrains(parameter_count(source) if source is not None else None)


def auto_constrains(parameters: int | None) -> bool:
    """What ``"auto"`` decides for a model of that many parameters (unknown: off)."""
    return parameters is not None and parameters < AUTO_MAX_PARAMETERS


@dataclass(frozen=True, kw_only=True)
class AnswerOptions:
    """The options of the answer constraint, taken by every backend that can constrain.

    structured_output: true, false or "auto" (the rule above).
    answer_max_tokens: token budget of the constrained answer.
    """

    structured_output: StructuredOption = "auto"
    answer_max_tokens: int = ANSWER_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.structured_output not in (True, False, "auto"):
            raise ValueError(
                f'structured_output must be true, false or "auto", got {self.structured_output!r}'
            )
        if self.answer_max_tokens < 1:
            raise ValueError(f"answer_max_tokens must be >= 1, got {self.answer_max_tokens}")
