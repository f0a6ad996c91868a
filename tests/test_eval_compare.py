"""Paired comparison statistics: McNemar counts, Newcombe's paired interval, exact p-values, per-seed tables."""

from __future__ import annotations

import pytest

from imitlab.evaluation.compare import comparison, comparison_markdown, mcnemar_exact_p, paired_mean_diff, paired_success
from imitlab.evaluation.evaluate import EvalSummary
from imitlab.evaluation.rollout import EpisodeResult


def _outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


def test_counts_and_difference():
    a, b = _outcomes(both=14, only_a=5, only_b=0, neither=22)
    result = paired_success(a, b)
    assert (result["both_succeed"], result["only_a"], result["only_b"], result["neither"]) == (14, 5, 0, 22)
    assert result["success_diff"] == pytest.approx(5 / 41)


def test_newcombe_interval_on_altmans_worked_example():
    # Altman et al., Statistics with Confidence (2000), table 6.2: 14 / 5 / 0 / 22. Newcombe's method 10
    # (Wilson intervals of both margins, correlation corrected by n/2) gives 0.0115 to 0.2265.
    low, high = paired_success(*_outcomes(14, 5, 0, 22))["success_diff_ci95"]
    assert low == pytest.approx(0.011483, abs=1e-5)
    assert high == pytest.approx(0.226493, abs=1e-5)


@pytest.mark.parametrize("table", [(0, 0, 0, 10), (10, 0, 0, 0), (3, 4, 4, 3), (0, 7, 0, 0), (5, 0, 9, 1), (1, 1, 1, 1)])
def test_interval_contains_estimate_stays_in_range_and_flips_with_the_order(table):
    both, only_a, only_b, neither = table
    forward = paired_success(*_outcomes(*table))
    backward = paired_success(*reversed(_outcomes(*table)))
    low, high = forward["success_diff_ci95"]
    assert -1.0 <= low <= forward["success_diff"] <= high <= 1.0
    assert backward["success_diff_ci95"] == pytest.approx([-high, -low])
    assert backward["mcnemar_p"] == pytest.approx(forward["mcnemar_p"])


def test_identical_agents_show_no_difference():
    result = paired_success([True, False, True, True], [True, False, True, True])
    assert result["success_diff"] == 0.0
    assert result["mcnemar_p"] == 1.0
    low, high = result["success_diff_ci95"]
    assert low < 0.0 < high


def test_mcnemar_exact_matches_a_binomial_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    for only_a, only_b in [(5, 0), (9, 2), (3, 3), (0, 12), (17, 8)]:
        expected = scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert mcnemar_exact_p(only_a, only_b) == pytest.approx(expected)


def test_paired_success_rejects_unequal_lengths():
    with pytest.raises(ValueError):
        paired_success([True], [True, False])


def test_paired_mean_diff_bootstrap_brackets_the_mean():
    result = paired_mean_diff([1.0, 2.0, 3.0, 4.0], [0.5, 2.5, 1.0, 3.0])
    assert result["mean_diff"] == pytest.approx(0.75)
    assert result["ci95"][0] <= 0.75 <= result["ci95"][1]
    assert paired_mean_diff([1.0, 2.0], [1.0, 2.0])["ci95"] == [0.0, 0.0]


def _summary(name: str, outcomes: list[bool], seeds: list[int]) -> EvalSummary:
    episodes = [EpisodeResult(seed=s, success=ok, episode_return=float(ok), length=10, terminated=not ok, metrics={},
                              inference_ms=1.0) for s, ok in zip(seeds, outcomes)]
    return EvalSummary(agent=name, env_id="imitlab/LaneFollow-v0", env_kwargs={}, episodes=episodes)


def test_comparison_pairs_by_seed_and_names_the_discordant_seeds():
    seeds = [1_000_000, 1_000_001, 1_000_002]
    result = comparison(_summary("A", [True, True, False], seeds), _summary("B", [True, False, True], seeds))
    assert [p["success_diff"] for p in result["per_seed"]] == [0, 1, -1]
    text = comparison_markdown(result)
    assert "1000001 (A)" in text and "1000002 (B)" in text


def test_comparison_refuses_different_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        comparison(_summary("A", [True], [1]), _summary("B", [True], [2]))
