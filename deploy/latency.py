"""Per-step inference latency at batch 1: what a robot's control loop waits for each step."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def latency_ms(predict: Callable[[Mapping[str, np.ndarray]], Any], observations: Mapping[str, np.ndarray],
               repeats: int = 200, warmup: int = 20) -> dict[str, float]:
    """Median and 90th-percentile milliseconds of ``predict`` on single observations cycled from a batch."""
    n = len(observations["state"])
    singles = [{k: v[i] for k, v in observations.items()} for i in range(min(n, 64))]
    for i in range(warmup):
        predict(singles[i % len(singles)])
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        predict(singles[i % len(singles)])
        times[i] = time.perf_counter() - start
    return {"median_ms": float(np.median(times) * 1e3), "p90_ms": float(np.quantile(times, 0.9) * 1e3)}
