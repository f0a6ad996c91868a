"""Saliency maps: the Adebayo et al. model-randomisation sanity check on a tiny policy, and `explain` videos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset
from imitlab.evaluation.saliency import attribution, explain, randomization_check, rank_correlation
from imitlab.policies import load_policy


@pytest.fixture(scope="module")
def frames(tiny_demos):
    """Four frames spread over each of the four demonstrations."""
    parts = []
    for episode in DemoDataset(tiny_demos).episodes():
        rows = np.linspace(0, len(episode) - 1, 4).astype(int)
        parts.append({k: v[rows] for k, v in episode.obs.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_gradcam_maps_change_when_the_weights_are_randomised(tiny_run, frames):
    policy, _ = load_policy(tiny_run / "best")
    maps = attribution(policy, frames, "gradcam")["image"]
    assert maps.shape == (16, 48, 48) and maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0
    assert rank_correlation(maps, attribution(policy, frames, "gradcam")["image"]) > 0.999  # the metric can fail
    rho = randomization_check(policy, frames, "gradcam")["image"]
    assert rho < 0.6, f"Grad-CAM maps barely depend on the weights (rank correlation {rho:.2f})"


def test_explain_writes_saliency_videos_and_the_check(tiny_run, tmp_path):
    report = explain(tiny_run, [1_000_000], tmp_path / "explain", env_kwargs={"time_limit_s": 1.5}, progress=False)
    (episode,) = report["episodes"]
    video = cv2.VideoCapture(episode["video"])
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == episode["length"] <= 15
    still = cv2.imread(episode["frame"])
    assert still is not None and still.shape[0] == 240
    saved = json.loads((tmp_path / "explain" / "explain.json").read_text())
    assert saved["method"] == "gradcam" and set(saved["randomization_check"]["rank_correlation"]) == {"image"}
    with pytest.raises(ImitlabError, match="demonstration seeds"):
        explain(tiny_run, [0], tmp_path / "x", progress=False)
    with pytest.raises(ImitlabError, match="unknown saliency method"):
        explain(tiny_run, [1_000_000], tmp_path / "x", method="lime", progress=False)
