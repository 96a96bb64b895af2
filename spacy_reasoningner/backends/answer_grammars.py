"""The transformers backend's answer constraint: xgrammar matchers, one per row of a
``generate`` call, that also skip the text the grammar forces.

Every forward pass costs the same on a CPU (about 45 ms for SmolLM2-135M on 2 cores,
memory-bound), whether the token it yields was the model's choice or the only one the
grammar left. The answer's grammar forces its opening (``{"entities": {``) and, once the
last list closes, its closing braces and the end token. So:

* the forced opening is read as part of the prompt, cut back by its last token, which may
  merge with what the model writes next (`` {`` against `` {"`` or `` {}``): the prompt then
  holds the tokens the model would have written;
* a row stops as soon as the grammar admits nothing but its forced closing text and an end
  token; the closing text is appended without generating it.

About five forward passes fewer per answer (three of the opening, the closing braces, the
end token). The matchers take each token when it is chosen (in the stopping criterion, which
runs right after), so the logits processor only masks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


class AnswerGrammars:
    """Matchers of one ``generate`` call's rows: ``prefixes`` to append to the prompts,
    ``logits_processor`` and ``stopping_criterion`` to pass to ``generate``, then
    ``complete(row, text)`` for each row's answer text."""

    def __init__(self, grammars: Sequence[Any], tokenizer: Any):
        import xgrammar

        self._xgrammar = xgrammar
        self.matchers = [xgrammar.GrammarMatcher(g) for g in grammars]
        self.vocab_size = grammars[0].tokenizer_info.vocab_size if grammars else 0
        self.prefixes = [_forced_opening(m, tokenizer) for m in self.matchers]
        self.tails = [""] * len(self.matchers)
        self.done = [False] * len(self.matchers)
        self._bitmask = xgrammar.allocate_token_bitmask(len(self.matchers), self.vocab_size)

    def complete(self, row: int, generated: str) -> str:
        """The row's answer: the forced opening, what the model wrote, the forced closing."""
        return self.prefixes[row] + generated + self.tails[row]

    @property
    def logits_processor(self) -> Any:
        from transformers import LogitsProcessor

        grammars = self

        class Mask(LogitsProcessor):
            def __call__(self, input_ids: Any, scores: Any) -> Any:
                return grammars._mask(scores)

        return Mask()

    @property
    def stopping_criterion(self) -> Any:
        from transformers import StoppingCriteria

        grammars = self

        class Accept(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return grammars._accept(input_ids[:, -1].tolist(), input_ids.device)

        return Accept()

    def _mask(self, scores: Any) -> Any:
        """Logits of the open rows masked to their grammar's next tokens (finished rows are
        left alone: their tokens are replaced by padding)."""
        rows = [i for i, done in enumerate(self.done) if not done]
        for i in rows:
            self.matchers[i].fill_next_token_bitmask(self._bitmask, i)
        if rows:
            device = scores.device
            masked = scores.to("cpu") if device.type != "cuda" else scores
            self._xgrammar.apply_token_bitmask_inplace(
                masked, self._bitmask.to(masked.device), indices=rows
            )
            scores = masked.to(device)
        return scores

    def _accept(self, tokens: list[int], device: Any) -> Any:
        """Take each open row's new token; a row is done at its end token, or when only its
        forced closing text and an end token can follow."""
        import torch

        for i, token in enumerate(tokens):
            if self.done[i]:
                continue
            matcher = self.matchers[i]
            if not matcher.accept_token(token):
                # Only a processor after the mask that raised a refused token gets here: end
                # the row, so that the answer is parsed and reported as incomplete.
                logger.warning("the answer grammar refused token %d; the answer ends there", token)
                self.done[i] = True
                continue
            if matcher.is_terminated():
                self.done[i] = True
                continue
            # Whether the row would be complete after its forced text (checked on a copy
            # only when there is forced text: the next step's mask needs the matcher as is).
            closing, probe = _forced_text(matcher), matcher
            if closing:
                probe = matcher.fork()
                if not probe.accept_string(closing):
                    continue
            if probe.is_completed() and self._only_end_tokens(probe):
                self.done[i], self.tails[i] = True, closing
        return torch.tensor(self.done, dtype=torch.bool, device=device)

    def _only_end_tokens(self, matcher: Any) -> bool:
        import torch

        bitmask = self._xgrammar.allocate_token_bitmask(1, self.vocab_size)
        matcher.fill_next_token_bitmask(bitmask, 0)
        bits = (bitmask[0].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        allowed = bits.flatten()[: self.vocab_size].nonzero().flatten().tolist()
        return set(allowed) <= set(matcher.stop_token_ids)


def _forced_opening(matcher: Any, tokenizer: Any) -> str:
    """The text the grammar forces from its start, without its last token (which may merge
    with the first token the model chooses), taken by ``matcher``."""
    forced = _forced_text(matcher)
    ids = tokenizer.encode(forced, add_special_tokens=False) if forced else []
    prefix = tokenizer.decode(ids[:-1]) if len(ids) > 1 else ""
    if not forced.startswith(prefix) or not matcher.accept_string(prefix):
        return ""
    return prefix


def _forced_text(matcher: Any) -> str:
    """The text the grammar forces next; none inside a character whose bytes a token split
    (xgrammar then holds bytes that are not text yet)."""
    try:
        return matcher.find_jump_forward_string()
    except UnicodeDecodeError:
        return ""
