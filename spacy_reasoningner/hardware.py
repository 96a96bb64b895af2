"""What this machine's processor computes fast: bfloat16 matrix products on the CPU.

CPUs with AVX-512 BF16 or AMX tiles (recent Xeon and EPYC) can run bfloat16 matrix products
faster than float32 (bench/precision.py: 2x per step for training, 1.7-1.9x for prefill on the
default model); other CPUs emulate bfloat16, several times slower than float32. The flags
settle the second case; in the first, whether bfloat16 is faster for a model's matrices
depends on their shapes, the kernels and the memory, so it is measured
(``faster_cpu_dtype``).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# /proc/cpuinfo flags of native bfloat16 dot products.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

# Rows of the products measured: decoding one sequence, decoding a batch, reading a prompt.
MEASURED_ROWS = (1, 16, 256)


@functools.cache
def cpu_has_native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has native bfloat16 dot products (Linux; False where unknown)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool(BF16_CPU_FLAGS & set(flags.partition(":")[2].split()))


@functools.cache
def faster_cpu_dtype(hidden: int, intermediate: int) -> str:
    """ "bfloat16" where this CPU multiplies a model's matrices (``hidden`` x ``intermediate``,
    its MLP's) faster in bfloat16 than in float32, else "float32". Without native bfloat16
    (``cpu_has_native_bfloat16``) nothing is measured: it is emulated there. Measured once per
    shape and process (tens of milliseconds): the products of decoding one row, a batch, and
    reading a prompt (``MEASURED_ROWS``), best of three each, summed."""
    if not cpu_has_native_bfloat16():
        return "float32"
    seconds = {
        dtype: product_seconds(dtype, hidden, intermediate) for dtype in ("float32", "bfloat16")
    }
    choice = min(seconds, key=seconds.get)
    logger.info(
        "%dx%d products: float32 %.1f ms, bfloat16 %.1f ms: %s",
        hidden,
        intermediate,
        1000 * seconds["float32"],
        1000 * seconds["bfloat16"],
        choice,
    )
    return choice


def product_seconds(dtype: str, hidden: int, intermediate: int) -> float:
    """Seconds of the ``MEASURED_ROWS`` products by a ``hidden`` x ``intermediate`` matrix in
    ``dtype`` on the CPU (best of three each, after one warm-up)."""
    import torch

    # Constant values: filling is faster than drawing, and the kernels' speed does not depend
    # on the values (none are subnormal).
    weight = torch.full((hidden, intermediate), 0.01, dtype=getattr(torch, dtype))
    total = 0.0
    for rows in MEASURED_ROWS:
        inputs = torch.full((rows, hidden), 0.5, dtype=weight.dtype)
        torch.matmul(inputs, weight)
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            torch.matmul(inputs, weight)
            runs.append(time.perf_counter() - started)
        total += min(runs)
    return total
