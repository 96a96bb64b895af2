"""The answer-repeat guard (``repeat_guard``) as a vLLM v1 logits processor.

vLLM applies structured outputs' grammar bitmask before custom logits processors, so, as in
the transformers backend, the guard only sees tokens the answer constraint allows. The engine
loads it by name (``vllm.GUARD_FQCN``), in its own process where it runs one; a request turns
it on with ``extra_args={GUARD_FLAG: True}`` (the answer pass of ``VLLMBackend``).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.tokenizers import cached_tokenizer_from_config
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from .repeat_guard import comma_token_ids, guard_row
from .vllm import GUARD_FLAG


class MentionRepeatGuard(AdapterLogitsProcessor):
    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        tokenizer = cached_tokenizer_from_config(vllm_config.model_config)
        commas = torch.tensor(comma_token_ids(tokenizer), dtype=torch.long, device=device)
        self._guard = guard_row(tokenizer, commas)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token greedy decoding picks

    def new_req_logits_processor(self, params: Any) -> Any:
        return self._guard if (params.extra_args or {}).get(GUARD_FLAG) else None
