"""Wilson score interval: known values and edge cases."""

import pytest

from imitlab.evaluation.stats import wilson_interval


def test_matches_reference_values():
    # 45/50: reference interval from the Wilson formula (z = 1.96) is about [0.786, 0.957].
    low, high = wilson_interval(45, 50)
    assert low == pytest.approx(0.7864, abs=1e-3)
    assert high == pytest.approx(0.9565, abs=1e-3)


def test_edges_stay_inside_unit_interval_and_are_not_degenerate():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.2 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and 0.65 < low < 0.8


def test_interval_narrows_with_more_trials():
    small = wilson_interval(9, 10)
    large = wilson_interval(90, 100)
    assert (large[1] - large[0]) < (small[1] - small[0])


def test_zero_trials_is_an_error():
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
