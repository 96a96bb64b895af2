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
instruction and schema starts from it. ``KeptRows`` keeps each row of a batched reasoning
pass, cut to its own tokens, and the answer pass's rows continue them: a batch reads neither
its prompts nor its reasoning twice. Only caches of full-attention layers are kept
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


# A row's key/value tensors, one (keys, values) pair per layer, each [heads, tokens, dim].
RowLayers = list[tuple[Any, Any]]

MAX_KEPT_ROW_BYTES = 2**30  # rows of a pass kept for the next one (an 8B model's 4k tokens
# take about 0.6 GB each in bfloat16: such rows are not kept, the shared head still is)


class KeptRows:
    """The key/value caches of the rows of the last batched pass, each cut to its own tokens
    (padding and what followed its end left out), for the rows of the next pass: the answer
    pass of a batch continues each row's reasoning, and any row takes the head it shares with
    a kept one. Rows written during a pass (``add``) serve the pass after it (``rotate``)."""

    def __init__(self, max_bytes: int = MAX_KEPT_ROW_BYTES):
        self.max_bytes = max_bytes
        self._kept: list[tuple[list[int], RowLayers]] = []
        self._pending: list[tuple[list[int], RowLayers]] = []
        self._pending_bytes = 0

    def longest_prefix(self, token_ids: Sequence[int]) -> tuple[int, RowLayers | None]:
        """The number of leading tokens of ``token_ids`` a kept row covers (at least one is
        left to read) and that row's layers, or (0, None)."""
        best, layers = 0, None
        for tokens, row in self._kept:
            shared = min(shared_prefix_length([tokens, token_ids]), len(token_ids) - 1)
            if shared > best:
                best, layers = shared, row
        return best, layers

    def add(self, tokens: Sequence[int], layers: RowLayers) -> None:
        """Keep a row for the next pass, unless the pass's rows exceed ``max_bytes``."""
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if self._pending_bytes + size <= self.max_bytes:
            self._pending.append((list(tokens), layers))
            self._pending_bytes += size

    def rotate(self) -> None:
        """End a pass: its rows replace those of the pass before."""
        self._kept, self._pending, self._pending_bytes = self._pending, [], 0

    def clear(self) -> None:
        self._kept, self._pending, self._pending_bytes = [], [], 0


def row_layers(cache: Any, row: int, positions: Any) -> RowLayers:
    """Row ``row`` of a batch's ``DynamicCache`` at cache ``positions`` (a tensor of indices)."""
    return [
        (layer.keys[row][:, positions], layer.values[row][:, positions]) for layer in cache.layers
    ]


def batch_of_rows(rows: Sequence[tuple[int, RowLayers | None]]) -> Any:
    """A ``DynamicCache`` of the first ``n`` tokens of each ``(n, layers)``, left-padded to
    the longest (the attention mask must hide the padding: ``n`` tokens last in each row)."""
    from transformers.cache_utils import DynamicCache

    width = max(n for n, _ in rows)
    template = next(layers for n, layers in rows if n)
    batch = []
    for layer, (keys, values) in enumerate(template):
        heads, _, dim = keys.shape
        batch_keys = keys.new_zeros((len(rows), heads, width, dim))
        batch_values = values.new_zeros((len(rows), heads, width, values.shape[-1]))
        for i, (n, layers) in enumerate(rows):
            if n:
                batch_keys[i, :, width - n :] = layers[layer][0][:, :n]
                batch_values[i, :, width - n :] = layers[layer][1][:, :n]
        batch.append((batch_keys, batch_values))
    return DynamicCache(ddp_cache_data=batch)
