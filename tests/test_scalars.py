"""clamp and norm stand in for float(np.clip(...)) and np.linalg.norm in env loops: they must give the very same
numbers."""

from __future__ import annotations

import math

import numpy as np

from imitlab.core.scalars import clamp, norm


def test_clamp_equals_numpy_clip_bit_for_bit() -> None:
    values = np.random.default_rng(0).normal(0.0, 2.0, 500)
    for value in [*values, np.float64(1.0), -1.0, 0.0, -0.0, np.inf, -np.inf, 1e-300]:
        got, want = clamp(value, -1.0, 1.0), float(np.clip(value, -1.0, 1.0))
        assert type(got) is float and got == want and math.copysign(1.0, got) == math.copysign(1.0, want)
    assert math.isnan(clamp(float("nan"), -1.0, 1.0))


def test_norm_equals_numpy_norm_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    for size in (2, 3, 7):
        for vector in rng.normal(0.0, 0.1, (200, size)):
            got = norm(vector)
            assert type(got) is float and got == float(np.linalg.norm(vector))
    assert norm(np.zeros(3)) == 0.0 and math.isnan(norm(np.array([np.nan, 1.0])))
