"""CPU time for growth checks: tests compare how time grows with size, never wall-clock limits."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_cpu_seconds(function: Callable[[], object], repeats: int = 3) -> float:
    """CPU time of the fastest of ``repeats`` runs (other processes' load hardly moves it)."""
    timings = []
    for _ in range(repeats):
        started = time.process_time()
        function()
        timings.append(time.process_time() - started)
    return min(timings)


def grows_linearly(run: Callable[[int], object], small: int, large: int) -> bool:
    """True when ``run(large)`` costs at most 4x its share of ``run(small)`` (plus 20 ms of
    noise): linear work passes with room to spare, quadratic work (16x more for 4x) fails."""
    small_time = best_cpu_seconds(lambda: run(small))
    large_time = best_cpu_seconds(lambda: run(large))
    return large_time <= 4 * (large / small) * small_time + 0.02
