"""Arithmetic on single numbers that env loops run every control step."""

from __future__ import annotations


def clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]``, as ``float(np.clip(value, low, high))`` gives it (NaN stays NaN), without
    numpy's dispatch on a scalar, which costs microseconds several times a step."""
    return float(min(max(value, low), high))
