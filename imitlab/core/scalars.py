"""Arithmetic on single numbers that env loops run every control step."""

from __future__ import annotations

import math

import numpy as np


def clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]``, as ``float(np.clip(value, low, high))`` gives it (NaN stays NaN), without
    numpy's dispatch on a scalar, which costs microseconds several times a step."""
    return float(min(max(value, low), high))


def norm(vector: np.ndarray) -> float:
    """``float(np.linalg.norm(vector))`` of a contiguous 1-D float vector, the same number (numpy computes it as
    ``sqrt(x.dot(x))`` too) without the wrapper's checks, which cost more than the arithmetic on 2-7 numbers."""
    return math.sqrt(vector.dot(vector))
