"""Interleaved timing, so that two candidates see the same machine state."""

import statistics
import time
from collections.abc import Callable


def interleaved_median(
    fns: dict[str, Callable[[], object]],
    repeats: int = 15,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each function, calls alternating round-robin, on ``clock``
    (``time.process_time``: this process's CPU time, for single-threaded work on a shared
    machine, where the wall clock also counts the time other processes hold the core)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
