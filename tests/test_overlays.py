"""Video overlays and report colours that read right: labels never under their bars, captions never in the side
panel, clips end with the outcome, state dimensions by name, and no green for a failed "best" episode."""

from __future__ import annotations

import numpy as np
import pytest

from imitlab.envs import make_env, state_labels
from imitlab.evaluation.evaluate import EvalSummary
from imitlab.evaluation.html_report import _BEST_FAILED, _FAILURE, _SUCCESS, _trace_colour, html_report
from imitlab.evaluation.rollout import EpisodeResult
from imitlab.evaluation.video import FAILURE_RGB, SUCCESS_RGB, annotate_frame, outcome_card

FRAME = np.full((240, 320, 3), 90, np.uint8)  # a grey scene: no white and no bar colours of its own


def _rows_with(image: np.ndarray, colour: tuple[int, int, int]) -> set[int]:
    return set(np.nonzero(np.all(image == colour, axis=-1).any(axis=1))[0].tolist())


def _white_rows(image: np.ndarray) -> set[int]:
    return set(np.nonzero(np.all(image >= 200, axis=-1).any(axis=1))[0].tolist())


@pytest.mark.parametrize("action", [np.array([-0.04, 1.0]), np.array([0.9, -0.7])])
def test_action_labels_are_never_drawn_over_their_bars(action):
    composed = annotate_frame(FRAME, [np.zeros((48, 48, 3), np.uint8)], action, ["steer", "throttle"], "seed 1")
    panel = composed[:, FRAME.shape[1]:]
    bar_rows = _rows_with(panel, SUCCESS_RGB) | _rows_with(panel, FAILURE_RGB)
    assert bar_rows and not bar_rows & _white_rows(panel)


def test_a_long_caption_wraps_inside_the_frame_and_never_reaches_the_panel():
    caption = "demo_000123  seed 123456  noisy_expert  step 179/180  with a caption longer than the frame is wide"
    black_view = np.zeros((48, 48, 3), np.uint8)  # fills the panel's top, where the caption used to run on
    composed = annotate_frame(FRAME[:, :240], [black_view], np.zeros(2), ["steer", "throttle"], caption)
    assert composed.shape == (240, 240 + 120, 3)
    assert not _white_rows(composed[:40, 240:])
    assert _white_rows(composed[:14, :240]) and _white_rows(composed[14:32, :240])  # two lines in the frame


def test_state_values_are_listed_by_the_envs_names():
    assert state_labels("imitlab/LaneFollow-v0", 4) == ["speed", "yaw_rate", "steer_angle", "prev_throttle"]
    assert state_labels("imitlab/LaneFollow-v0", 3) == ["state[0]", "state[1]", "state[2]"]  # not the env's layout
    env = make_env("imitlab/Reach-v0", image_size=32)
    try:
        obs, _ = env.reset(seed=0)
        names = state_labels("imitlab/Reach-v0", len(obs["state"]))
    finally:
        env.close()
    assert names[:3] == ["grip_x", "grip_y", "grip_z"] and names[-1] == "joint7" and len(set(names)) == len(names)
    with_state = annotate_frame(FRAME, [], np.zeros(2), ["steer", "throttle"], "s", state=np.ones(4),
                                state_labels=["speed", "yaw_rate", "steer_angle", "prev_throttle"])
    without = annotate_frame(FRAME, [], np.zeros(2), ["steer", "throttle"], "s")
    assert not np.array_equal(with_state, without)


def test_outcome_card_says_success_or_failure_in_its_colour():
    composed = annotate_frame(FRAME, [], np.zeros(2), ["steer", "throttle"], "seed 1")
    success, failure = outcome_card(composed, True, 12.5, 180), outcome_card(composed, False, 0.3, 40)
    assert success.shape == failure.shape == composed.shape
    assert _rows_with(success, SUCCESS_RGB) and not _rows_with(success, FAILURE_RGB)
    assert _rows_with(failure, FAILURE_RGB) and not _rows_with(failure, SUCCESS_RGB)


def _episode(seed: int, success: bool, episode_return: float) -> EpisodeResult:
    return EpisodeResult(seed=seed, success=success, episode_return=episode_return, length=3, terminated=False,
                         metrics={}, inference_ms=0.1, actions=[[0.1, 0.2]] * 3)


def test_when_every_episode_fails_the_best_one_is_not_drawn_green():
    page = html_report(EvalSummary("expert", "imitlab/LaneFollow-v0", {},
                                   [_episode(1, False, 2.0), _episode(2, False, 1.0)]).to_json())
    assert f"color:{_BEST_FAILED}" in page and "best (seed 1, failure)" in page
    assert f"color:{_SUCCESS}" not in page
    success, failure = {"success": True}, {"success": False}
    assert (_trace_colour(success, best=True), _trace_colour(failure, best=False)) == (_SUCCESS, _FAILURE)
