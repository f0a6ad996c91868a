"""clamp stands in for float(np.clip(...)) on scalars in env loops: it must give the very same numbers."""

from __future__ import annotations

import math

import numpy as np

from imitlab.core.scalars import clamp


def test_clamp_equals_numpy_clip_bit_for_bit() -> None:
    values = np.random.default_rng(0).normal(0.0, 2.0, 500)
    for value in [*values, np.float64(1.0), -1.0, 0.0, -0.0, np.inf, -np.inf, 1e-300]:
        got, want = clamp(value, -1.0, 1.0), float(np.clip(value, -1.0, 1.0))
        assert type(got) is float and got == want and math.copysign(1.0, got) == math.copysign(1.0, want)
    assert math.isnan(clamp(float("nan"), -1.0, 1.0))
