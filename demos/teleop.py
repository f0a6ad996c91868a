"""Human demonstrations: drive a task from the keyboard in an OpenCV window (``imitlab record --teleop``).

Keys: W / up arrow throttle, S / down arrow or space brake, A / left arrow steer left, D / right arrow steer
right; R restarts the current episode (discarding it), Q or Esc quits. Every finished episode is saved with
``source="human"`` and can be re-simulated from its seed like an expert's.

OpenCV reports key presses, not key releases, so a key counts as held for a short time after each event
(the OS's auto-repeat keeps refreshing it), and the action moves towards its target at a limited rate so
the demonstrations have no jumps a policy could not reproduce.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imitlab.core.errors import ImitlabError
from imitlab.core.observation_keys import image_keys_of_frames
from imitlab.demos.controls import DrivingControls
from imitlab.demos.dataset import DemoWriter
from imitlab.demos.recorder import RecordSummary, collect_episode, first_seed
from imitlab.evaluation.video import annotate_frame

WINDOW = "imitlab teleop"
#: Key codes as ``cv2.waitKeyEx`` returns them: letters, then arrows on X11/GTK/Qt, Windows and macOS; each set is
#: one control of :class:`imitlab.demos.controls.DrivingControls`.
_LEFT = {ord("a"), ord("A"), 65361, 2424832, 63234}
_RIGHT = {ord("d"), ord("D"), 65363, 2555904, 63235}
_UP = {ord("w"), ord("W"), 65362, 2490368, 63232}
_DOWN = {ord("s"), ord("S"), ord(" "), 65364, 2621440, 63233}
_QUIT = {ord("q"), ord("Q"), 27}
_RESTART = {ord("r"), ord("R")}


class _Quit(Exception):
    """The human asked to stop; the episode in progress is discarded."""


class _Restart(Exception):
    """The human asked to redo the current seed."""


def check_display() -> None:
    """Raise one ImitlabError saying what is missing when no teleoperation window can be opened."""
    problems = []
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        problems.append("there is no display (DISPLAY and WAYLAND_DISPLAY are unset); run it in a desktop "
                        "session or over `ssh -X`")
    if not cv2.currentUIFramework():
        problems.append("the installed OpenCV has no GUI support (opencv-python-headless); install the GUI "
                        "build: pip uninstall -y opencv-python-headless && pip install opencv-python")
    if problems:
        raise ImitlabError("keyboard teleoperation needs a window, but " + "; and ".join(problems))


@dataclass
class KeyboardDriver:
    """Key events -> a smooth ``[steering, throttle]`` action (the shared :class:`DrivingControls` scheme, fed
    with the keys held according to the key events)."""

    first_hold_s: float = 0.6
    """A fresh press counts as held this long (covers the OS's delay before auto-repeat starts)."""
    repeat_hold_s: float = 0.12
    """An auto-repeated event extends the hold by this much (so releasing a held key stops quickly)."""
    steer_slew: float = 0.25
    """Largest steering change per control step."""
    throttle_slew: float = 0.15
    """Largest throttle change per control step (the driving expert's limit)."""
    _held_until: dict[str, float] = field(default_factory=dict)
    _last_event: dict[str, float] = field(default_factory=dict)
    _controls: DrivingControls = field(init=False)
    _action: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))

    def __post_init__(self) -> None:
        self._controls = DrivingControls(steer_slew=self.steer_slew, throttle_slew=self.throttle_slew)

    def reset(self) -> None:
        self._held_until.clear()
        self._last_event.clear()
        self._controls.reset()
        self._action = np.zeros(2, np.float32)

    def press(self, key: int, now: float) -> None:
        """Register one key event; raises on the quit and restart keys."""
        if key in _QUIT:
            raise _Quit
        if key in _RESTART:
            raise _Restart
        for name, keys in (("left", _LEFT), ("right", _RIGHT), ("up", _UP), ("down", _DOWN)):
            if key in keys:
                repeating = now - self._last_event.get(name, -np.inf) < self.first_hold_s
                self._held_until[name] = now + (self.repeat_hold_s if repeating else self.first_hold_s)
                self._last_event[name] = now

    @property
    def action(self) -> np.ndarray:
        """The last action :meth:`step` returned."""
        return self._action.copy()

    def step(self, now: float) -> np.ndarray:
        """The action for the next control step, moved towards the held keys' target by at most the slew."""
        held = {name for name, until in self._held_until.items() if until >= now}
        self._action = self._controls.step(held)
        return self._action.copy()


def _show(frame: np.ndarray) -> None:
    cv2.imshow(WINDOW, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
        raise _Quit


def record_teleop(env_id: str, out: str | Path, episodes: int, seed_start: int | None = None,
                  env_kwargs: dict[str, Any] | None = None) -> RecordSummary:
    """Record ``episodes`` human-driven episodes on seeds ``seed_start, ...`` (as :func:`first_seed` chooses it)
    into ``out`` (source "human").

    Stops early, keeping every finished episode, when the human quits or closes the window.
    """
    from imitlab.envs import make_env

    check_display()
    seed_start = first_seed(out, episodes, seed_start)
    env_kwargs = dict(env_kwargs or {})
    env = make_env(env_id, render_mode="rgb_array", **env_kwargs)
    try:
        if env.action_space.shape != (2,):
            raise ImitlabError(f"keyboard teleoperation drives 2-D [steering, throttle] actions; {env_id} has "
                               f"{env.action_space.shape[0]}-D actions")
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
        except cv2.error as exc:
            raise ImitlabError(f"cannot open the teleoperation window: {str(exc).strip().splitlines()[-1]}") from None
        writer = DemoWriter(out, env_id, env_kwargs, env.observation_space, env.action_space)
        period = 1.0 / float(env.metadata.get("render_fps", 10))
        labels = ["steer", "throttle"]
        driver = KeyboardDriver()
        summary = RecordSummary(path=Path(out), episodes=0, steps=0, successes=0)
        seed = seed_start
        step = 0

        def frame(obs: dict[str, np.ndarray], caption: str) -> np.ndarray:
            views = [obs[k] for k in image_keys_of_frames(obs)]
            return annotate_frame(env.render(), views, driver.action, labels, caption)

        def new_episode() -> None:
            nonlocal step
            driver.reset()
            step = 0

        def wait_to_start(obs: dict[str, np.ndarray]) -> None:
            """Hold the first frame until the human presses a driving key."""
            while True:
                _show(frame(obs, f"seed {seed}: press a driving key to start, q to quit"))
                key = cv2.waitKeyEx(50)
                if key != -1:
                    driver.press(key, time.monotonic())
                    return

        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            nonlocal step
            if step == 0:
                wait_to_start(obs)
            deadline = time.monotonic() + period
            _show(frame(obs, f"seed {seed}  step {step}  (r: restart, q: quit)"))
            while (remaining := deadline - time.monotonic()) > 0:
                key = cv2.waitKeyEx(max(1, int(remaining * 1000)))
                if key != -1:
                    driver.press(key, time.monotonic())
            step += 1
            return driver.step(time.monotonic())

        while summary.episodes < episodes:
            try:
                episode = collect_episode(env, act, seed, on_reset=new_episode)
            except _Restart:
                continue
            except _Quit:
                break
            episode.attrs.update(source="human", env_id=env_id, env_kwargs=env_kwargs)
            writer.append(episode)
            summary.episodes += 1
            summary.steps += len(episode)
            summary.successes += int(episode.attrs["success"])
            seed += 1
        return summary
    finally:
        env.close()
        if cv2.currentUIFramework():
            cv2.destroyAllWindows()
