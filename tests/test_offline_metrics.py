"""Offline decision metrics: the arithmetic, the frames they use, and their place in the eval report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imitlab.agents import resolve_agent
from imitlab.core.errors import ImitlabError
from imitlab.evaluation.evaluate import EvalSummary, write_report
from imitlab.evaluation.offline import classification_metrics, decisions_of, discretise, offline_metrics
from imitlab.evaluation.rollout import EpisodeResult


def test_discretise_puts_boundaries_in_the_lower_class():
    np.testing.assert_array_equal(discretise(np.array([-0.2, -0.1, 0.0, 0.1, 0.2]), (-0.1, 0.1)), [0, 0, 1, 1, 2])


def test_classification_metrics_match_a_hand_computed_confusion_matrix():
    m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ("r", "s", "l"))
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["accuracy"] == pytest.approx(0.6) and m["macro_recall"] == pytest.approx(0.5)
    assert m["classes"]["s"]["precision"] == pytest.approx(2 / 3) and m["classes"]["s"]["f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_every_env_names_its_decisions():
    assert set(decisions_of("imitlab/LaneFollow-v0")) == {"steer", "brake"}
    assert "gripper" in decisions_of("imitlab/PickPlace-v0") and "gripper" not in decisions_of("imitlab/Push-v0")


def test_offline_metrics_on_held_out_expert_frames_reach_the_report(tiny_run, tmp_path):
    spec = resolve_agent(str(tiny_run))
    offline = offline_metrics(spec, seeds=[1_000_000])
    assert offline["frames"] > 10 and offline["seeds"] == [1_000_000] and offline["action_mse"] > 0
    steer = offline["decisions"]["steer"]
    assert sum(c["support"] for c in steer["classes"].values()) == offline["frames"]
    assert 0 <= steer["accuracy"] <= 1 and np.sum(steer["confusion"]) == offline["frames"]
    with pytest.raises(ImitlabError, match="held-out"):
        offline_metrics(spec, seeds=[0])  # a demonstration seed
    episode = EpisodeResult(seed=1_000_000, success=False, episode_return=1.0, length=3, terminated=True,
                            metrics={}, inference_ms=1.0)
    summary = EvalSummary(agent=str(tiny_run), env_id=spec.env_id, env_kwargs=spec.env_kwargs, episodes=[episode],
                          offline=offline)
    paths = write_report(summary, tmp_path)
    assert json.loads(paths["json"].read_text())["offline"]["decisions"]["brake"] == offline["decisions"]["brake"]
    assert "offline steer: accuracy / macro recall / macro F1" in paths["markdown"].read_text()
    assert "offline steer" in paths["html"].read_text()
