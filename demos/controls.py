"""Human control schemes shared by every teleoperation front end: held controls (keys, gamepad) -> actions.

A front end (the OpenCV window of ``demos/teleop.py``, the browser page of ``imitlab studio``) turns its own key
codes into control names ("left", "up", "x+", "gripper", ...) and hands the set of held controls to a
:class:`ControlScheme`, which keeps the few bits of state a human action needs (the driving action's slew limit,
the gripper toggle) and returns the action for each control step. One scheme per kind of task:

* driving (2-D ``[steering, throttle]``): steering +1 is full left, throttle < 0 brakes; both move towards the
  held keys' target at a limited rate per step, so the demonstrations have no jumps a policy could not make;
* arm (``[dx, dy, dz, gripper]``, plus ``yaw`` when the action has it): each held axis key asks for the full
  displacement of one step; the gripper control toggles open/closed on each press.

Gamepads: axes in [-1, 1] pass through a dead zone (rescaled so the output still starts at 0 and reaches 1)
and replace the keys' value on the dimensions where they are outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from imitlab.core.errors import ImitlabError

#: Gamepad axis magnitudes below this count as centred (sticks rarely rest exactly at 0).
DEAD_ZONE = 0.15

#: Browser ``KeyboardEvent.code`` -> control name, per scheme (shown on the page as the key legend).
DRIVING_KEYS: dict[str, str] = {
    "ArrowLeft": "left", "KeyA": "left", "ArrowRight": "right", "KeyD": "right",
    "ArrowUp": "up", "KeyW": "up", "ArrowDown": "down", "KeyS": "down", "Space": "down",
}
ARM_KEYS: dict[str, str] = {
    "KeyW": "x+", "KeyS": "x-", "KeyA": "y+", "KeyD": "y-", "ArrowUp": "z+", "ArrowDown": "z-",
    "Space": "gripper", "KeyQ": "yaw+", "KeyE": "yaw-",
}


def dead_zone(value: float, zone: float = DEAD_ZONE) -> float:
    """0 inside ``[-zone, zone]``, else rescaled linearly so the output runs from 0 at the edge to +-1."""
    magnitude = abs(value)
    if magnitude <= zone:
        return 0.0
    return float(np.sign(value) * min(1.0, (magnitude - zone) / (1.0 - zone)))


@dataclass
class ControlScheme:
    """Base: the action for one control step from the held controls and the gamepad's axes."""

    action_dim: int
    keys: dict[str, str]
    """Key code -> control name (what the page captures and its legend)."""

    def reset(self) -> None:
        """Forget per-episode state (call on every env reset)."""

    def continue_from(self, action: np.ndarray) -> None:
        """Carry on from ``action`` (assist mode: what the expert last did), so taking over causes no jump."""

    def step(self, held: set[str], axes: Mapping[str, float] | None = None) -> np.ndarray:
        raise NotImplementedError


@dataclass
class DrivingControls(ControlScheme):
    """``[steering, throttle]`` moving towards the held keys' target by at most the slew per step.

    Gamepad axes: ``steer`` (stick x, right positive) and ``throttle`` (right trigger minus left trigger)."""

    action_dim: int = 2
    keys: dict[str, str] = field(default_factory=lambda: dict(DRIVING_KEYS))
    steer_slew: float = 0.25
    """Largest steering change per control step."""
    throttle_slew: float = 0.15
    """Largest throttle change per control step (the driving expert's limit)."""
    _action: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))

    def reset(self) -> None:
        self._action = np.zeros(2, np.float32)

    def continue_from(self, action: np.ndarray) -> None:
        self._action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)

    @staticmethod
    def target(held: set[str], axes: Mapping[str, float] | None = None) -> np.ndarray:
        """Where the held keys (or the gamepad, where it is outside its dead zone) ask the action to go."""
        target = np.array([float("left" in held) - float("right" in held),
                           float("up" in held) - float("down" in held)], dtype=np.float32)
        axes = axes or {}
        steer, throttle = dead_zone(axes.get("steer", 0.0)), dead_zone(axes.get("throttle", 0.0))
        if steer:
            target[0] = -steer  # stick right steers right, which is negative steering
        if throttle:
            target[1] = throttle
        return target

    def step(self, held: set[str], axes: Mapping[str, float] | None = None) -> np.ndarray:
        limit = np.array([self.steer_slew, self.throttle_slew], dtype=np.float32)
        change = np.clip(self.target(held, axes) - self._action, -limit, limit)
        self._action = np.clip(self._action + change, -1.0, 1.0).astype(np.float32)
        return self._action.copy()


#: Arm action dimension -> the (positive, negative) controls that drive it; the gripper is index 3.
_ARM_AXES = {0: ("x+", "x-"), 1: ("y+", "y-"), 2: ("z+", "z-"), 4: ("yaw+", "yaw-")}


@dataclass
class ArmControls(ControlScheme):
    """``[dx, dy, dz, gripper(, yaw)]``: one full step of displacement per held key; the gripper toggles.

    Gamepad axes: ``x``, ``y``, ``z`` and ``yaw`` (positive = the ``+`` key); the gripper toggles on the
    ``gripper`` control as for the key."""

    action_dim: int = 4
    keys: dict[str, str] = field(default_factory=lambda: dict(ARM_KEYS))
    start_closed: bool = False
    """Jaw state at the start of an episode."""
    _closed: bool = False
    _was_held: bool = False

    def __post_init__(self) -> None:
        if self.action_dim not in (4, 5):
            raise ImitlabError(f"arm controls drive [dx, dy, dz, gripper(, yaw)] actions, not {self.action_dim}-D ones")
        if self.action_dim == 4:
            self.keys = {code: name for code, name in self.keys.items() if not name.startswith("yaw")}
        self.reset()

    def reset(self) -> None:
        self._closed = self.start_closed
        self._was_held = False

    def continue_from(self, action: np.ndarray) -> None:
        self._closed = bool(action[3] > 0)  # the jaw stays as the expert left it

    @property
    def gripper_closed(self) -> bool:
        return self._closed

    def step(self, held: set[str], axes: Mapping[str, float] | None = None) -> np.ndarray:
        if "gripper" in held and not self._was_held:
            self._closed = not self._closed
        self._was_held = "gripper" in held
        action = np.zeros(self.action_dim, np.float32)
        axes = axes or {}
        for dim, (plus, minus) in _ARM_AXES.items():
            if dim < self.action_dim:
                stick = dead_zone(axes.get(plus[:-1], 0.0))
                action[dim] = stick if stick else float(plus in held) - float(minus in held)
        action[3] = 1.0 if self._closed else -1.0
        return action


def controls_for(action_labels: list[str]) -> ControlScheme:
    """The scheme for a task, chosen by its action's dimension names (``envs.action_labels``)."""
    if action_labels[:2] == ["steer", "throttle"] or len(action_labels) == 2:
        return DrivingControls()
    if len(action_labels) in (4, 5) and action_labels[3] == "gripper":
        return ArmControls(action_dim=len(action_labels))
    raise ImitlabError(f"no human control scheme for actions {action_labels}: teleoperation drives [steer, "
                       "throttle] or [dx, dy, dz, gripper(, yaw)]")
