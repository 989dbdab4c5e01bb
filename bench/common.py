"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs (the least disturbed by other load on a shared machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def figure(value, baseline, unit: str, target, lower_is_better: bool = False, ratio: float | None = None) -> dict:
    """One entry of bench/results.json; the ratio is value/baseline (or baseline/value for lower-is-better)."""
    if ratio is None and baseline not in (None, 0) and value not in (None, 0):
        ratio = baseline / value if lower_is_better else value / baseline
    return {
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "unit": unit,
        "target": target,
        "lower_is_better": lower_is_better,
    }
