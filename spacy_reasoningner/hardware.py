"""What this machine's processor computes fast: bfloat16 matrix products on the CPU.

CPUs with AVX-512 BF16 or AMX tiles (recent Xeon and EPYC) run bfloat16 matrix products
several times faster than float32 (bench/precision.py: 2x per step for training, 3-4x for
prefill on the default model), so the transformers backend and the training stages load
weights in bfloat16 there; other CPUs emulate bfloat16 slowly and keep float32.
"""

from __future__ import annotations

import functools
from pathlib import Path

# /proc/cpuinfo flags of native bfloat16 dot products.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has native bfloat16 dot products (Linux; False where unknown)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool(BF16_CPU_FLAGS & set(flags.partition(":")[2].split()))
