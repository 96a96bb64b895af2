"""Reuse of the key/value cache across ``generate`` calls.

A document run alone (``nlp(text)``) makes two calls: the reasoning pass, then the answer
pass, whose prompt is the first prompt plus the reasoning the model just wrote; and the next
document's prompt repeats the instruction, notes and schema of the last one. Without reuse
every call reads its whole prompt again (about 200 tokens for a short sentence, a tenth of
its time on 2 CPU cores). ``PrefixCache`` keeps the cache of the last call and hands the next
call the part of it that covers their longest shared token prefix, as vLLM's automatic
prefix caching does for its batches.

A batch keeps the cache of the head all its prompts share (the transformers backend reads it
once for all rows and pads each row after it): the next batch or document with the same
instruction and schema starts from it. Only caches of full-attention layers are kept
(``DynamicCache`` of ``DynamicLayer``): sliding-window and linear-attention layers cannot be
cut back to a prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MIN_SHARED_TOKENS = 16  # below this, reading the prompt again costs less than the bookkeeping


class PrefixCache:
    """The key/value cache of the last single-prompt call and the tokens it covers."""

    def __init__(self, min_shared_tokens: int = MIN_SHARED_TOKENS):
        self.min_shared_tokens = min_shared_tokens
        self._tokens: list[int] = []
        self._cache: Any = None

    def take(self, token_ids: Sequence[int]) -> Any | None:
        """The kept cache cut back to the prefix it shares with ``token_ids``, or None when
        they share fewer than ``min_shared_tokens``. The cache is handed over, not copied:
        ``generate`` extends it in place, and ``keep`` stores it again after a call that
        completes (a call that fails leaves nothing half-extended behind)."""
        cache, tokens = self._cache, self._tokens
        self.clear()
        if cache is None:
            return None
        shared = shared_prefix_length([tokens, token_ids])
        # At least one prompt token is left to read: its logits give the first new token.
        reused = min(shared, len(token_ids) - 1)
        if reused < self.min_shared_tokens:
            return None
        cache.crop(reused - cache.get_seq_length())  # a negative count: tokens removed
        return cache

    def keep(self, sequence: Sequence[int], cache: Any) -> None:
        """Keep ``cache`` after a call that produced ``sequence`` (prompt and generated
        tokens; the cache covers all but the last, which was never read back)."""
        if not reusable(cache):
            self.clear()
            return
        self._tokens = list(sequence[: cache.get_seq_length()])
        self._cache = cache

    def clear(self) -> None:
        self._tokens, self._cache = [], None


def reusable(cache: Any) -> bool:
    """Whether ``cache`` can be cut back to any prefix: a ``DynamicCache`` of full-attention
    layers only (transformers releases without layered caches reuse nothing)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:
        return False
    layers = getattr(cache, "layers", None)
    return (
        type(cache) is DynamicCache
        and bool(layers)
        and all(type(layer) is DynamicLayer for layer in layers)
    )


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all ``rows`` have in common."""
    if not rows:
        return 0
    for i, tokens in enumerate(zip(*rows, strict=False)):
        if any(token != tokens[0] for token in tokens[1:]):
            return i
    return min(len(row) for row in rows)
