"""Keyboard teleoperation: one clear error without a display or GUI, and smooth actions from key events."""

from __future__ import annotations

import numpy as np
import pytest

from imitlab.core.errors import ImitlabError
from imitlab.demos import teleop
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.teleop import KeyboardDriver, check_display, record_teleop

UP_ARROW = 65362


def test_no_display_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(teleop.sys, "platform", "linux")
    with pytest.raises(ImitlabError, match="no display") as info:
        record_teleop("imitlab/LaneFollow-v0", tmp_path / "human", episodes=1)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "human").exists()


def test_headless_opencv_is_named_with_the_fix(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(teleop.cv2, "currentUIFramework", lambda: "")
    with pytest.raises(ImitlabError, match="opencv-python-headless.*pip install opencv-python"):
        check_display()
    monkeypatch.setattr(teleop.cv2, "currentUIFramework", lambda: "GTK3")
    check_display()


def test_keys_ramp_the_action_and_release_returns_it_to_neutral():
    driver = KeyboardDriver(steer_slew=0.25, throttle_slew=0.15)
    driver.press(ord("a"), now=0.0)
    driver.press(UP_ARROW, now=0.0)
    steps = [driver.step(now=0.1 * i) for i in range(5)]
    np.testing.assert_allclose([s[0] for s in steps], [0.25, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_allclose([s[1] for s in steps], [0.15, 0.3, 0.45, 0.6, 0.75], rtol=1e-6)
    # Auto-repeat keeps a held key alive; after the last event it lapses quickly.
    driver.press(ord("a"), now=0.5)
    driver.press(ord("a"), now=0.55)
    assert driver.step(now=0.6)[0] == 1.0
    after = [driver.step(now=0.8 + 0.1 * i)[0] for i in range(5)]
    np.testing.assert_allclose(after, [0.75, 0.5, 0.25, 0.0, 0.0], atol=1e-6)
    driver.press(ord("d"), now=2.0)
    assert driver.step(now=2.05)[0] < 0
    with pytest.raises(teleop._Quit):
        driver.press(ord("q"), now=3.0)
    driver.reset()
    assert not driver.action.any()


def test_teleop_loop_saves_human_episodes_until_quit(tmp_path, monkeypatch):
    """The whole loop with OpenCV's window calls faked: the human starts two episodes with W, then quits."""
    monkeypatch.setenv("DISPLAY", ":99")
    captions: list[str] = []
    starts = []

    def fake_annotate(frame, views, action, labels, caption):
        captions.append(caption)
        return np.zeros((4, 4, 3), np.uint8)

    def fake_wait_key(delay):
        if "press a driving key" not in captions[-1]:
            return -1
        starts.append(captions[-1])
        return ord("w") if len(starts) <= 2 else ord("q")

    for name, fake in {"currentUIFramework": lambda: "GTK3", "namedWindow": lambda *a: None,
                       "imshow": lambda *a: None, "getWindowProperty": lambda *a: 1.0,
                       "destroyAllWindows": lambda: None, "waitKeyEx": fake_wait_key}.items():
        monkeypatch.setattr(teleop.cv2, name, fake)
    monkeypatch.setattr(teleop, "annotate_frame", fake_annotate)

    summary = record_teleop("imitlab/LaneFollow-v0", tmp_path / "human", episodes=5, seed_start=3,
                            env_kwargs={"image_size": 16, "time_limit_s": 0.5})
    assert summary.episodes == 2 and summary.steps == 10
    episodes = list(DemoDataset(tmp_path / "human").episodes())
    assert [e.attrs["seed"] for e in episodes] == [3, 4] and {e.attrs["source"] for e in episodes} == {"human"}
    np.testing.assert_allclose(episodes[0].actions[:, 1], [0.15, 0.3, 0.45, 0.6, 0.75], rtol=1e-6)
    assert not episodes[0].actions[:, 0].any()
