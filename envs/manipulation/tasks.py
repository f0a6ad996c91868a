"""The three table-top tasks: where their objects go, how close they are to done, when they succeed."""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from imitlab.core.scalars import norm
from imitlab.envs.manipulation.arm_env import FINGER_CLOSED, ArmEnv
from imitlab.envs.manipulation.experts import PickPlaceExpert, PushExpert, ReachExpert

#: Half the block's edge; its centre rests this high above the table.
BLOCK_HALF = 0.0225


def _sample_apart(rng: np.random.Generator, low: np.ndarray, high: np.ndarray, other: np.ndarray,
                  min_dist: float, max_dist: float = np.inf) -> np.ndarray:
    """A uniform point of the box ``[low, high]`` whose distance from ``other`` is in ``[min_dist, max_dist]``."""
    while True:
        point = rng.uniform(low, high)
        if min_dist <= np.linalg.norm(point - other) <= max_dist:
            return point


class _BlockTask(ArmEnv):
    """Shared by the tasks with the red block: its pose and its free joint."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        joint = self.model.joint("block")
        self.block_qpos = joint.qposadr[0]
        self.block_qvel = joint.dofadr[0]
        self.block_geom = self.model.geom("block").id

    @property
    def block_pos(self) -> np.ndarray:
        return self.data.qpos[self.block_qpos:self.block_qpos + 3].copy()

    def _place_block(self, xy: np.ndarray) -> None:
        self.data.qpos[self.block_qpos:self.block_qpos + 7] = [xy[0], xy[1], BLOCK_HALF, 1.0, 0.0, 0.0, 0.0]


class ReachEnv(ArmEnv):
    """Bring the grip point (between the finger tips) within 2.5 cm of the green ball."""

    SCENE = "reach.xml"
    MAX_STEPS = 50
    SUCCESS_RADIUS = 0.025
    TARGET_LOW = np.array([0.35, -0.20, 0.04])
    TARGET_HIGH = np.array([0.65, 0.20, 0.28])

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.target_mocap = self.model.body("target").mocapid[0]

    @property
    def target_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self.target_mocap].copy()

    def _reset_task(self, rng: np.random.Generator) -> None:
        mujoco.mj_kinematics(self.model, self.data)
        self.data.mocap_pos[self.target_mocap] = _sample_apart(rng, self.TARGET_LOW, self.TARGET_HIGH,
                                                               self.grip_pos, min_dist=0.12)

    def _goal_distance(self) -> float:
        return norm(self.grip_pos - self.target_pos)

    def _is_success(self) -> bool:
        return self._goal_distance() < self.SUCCESS_RADIUS

    def make_expert(self) -> ReachExpert:
        return ReachExpert(self)


class PushEnv(_BlockTask):
    """Push the block (gripper held closed; ``action[3]`` is ignored) until its centre is within 3.5 cm of the disc."""

    SCENE = "push.xml"
    DECISIONS = {name: rule for name, rule in ArmEnv.DECISIONS.items() if name != "gripper"}  # held closed
    MAX_STEPS = 120
    START_FINGERS = FINGER_CLOSED
    SUCCESS_RADIUS = 0.035
    BLOCK_LOW = np.array([0.42, -0.12])
    BLOCK_HIGH = np.array([0.58, 0.12])
    GOAL_LOW = np.array([0.36, -0.20])
    GOAL_HIGH = np.array([0.66, 0.20])

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.goal_mocap = self.model.body("goal").mocapid[0]

    @property
    def goal_xy(self) -> np.ndarray:
        return self.data.mocap_pos[self.goal_mocap, :2].copy()

    def _reset_task(self, rng: np.random.Generator) -> None:
        block = rng.uniform(self.BLOCK_LOW, self.BLOCK_HIGH)
        self._place_block(block)
        self.data.mocap_pos[self.goal_mocap, :2] = _sample_apart(rng, self.GOAL_LOW, self.GOAL_HIGH, block,
                                                                 min_dist=0.12, max_dist=0.20)

    def _finger_target(self, action: np.ndarray) -> float:
        return FINGER_CLOSED

    def _goal_distance(self) -> float:
        return norm(self.block_pos[:2] - self.goal_xy)

    def _is_success(self) -> bool:
        return self._goal_distance() < self.SUCCESS_RADIUS

    def make_expert(self) -> PushExpert:
        return PushExpert(self)


class PickPlaceEnv(_BlockTask):
    """Grasp the block and drop it in the blue bin: success once it rests inside, released by the fingers."""

    SCENE = "pick_place.xml"
    MAX_STEPS = 150
    #: Inner half-width of the bin (walls 1 cm thick, outer half-width 7 cm) and its wall height.
    BIN_INNER_HALF = 0.06
    BIN_WALL_HEIGHT = 0.05
    BLOCK_LOW = np.array([0.40, -0.15])
    BLOCK_HIGH = np.array([0.60, 0.15])
    BIN_LOW = np.array([0.40, -0.18])
    BIN_HIGH = np.array([0.60, 0.18])
    #: Block centre speed below which it counts as resting, m/s.
    REST_SPEED = 0.05

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.bin_mocap = self.model.body("bin").mocapid[0]
        self.finger_geoms = {self.model.body(b).geomadr[0] for b in ("left_finger", "right_finger")}

    @property
    def bin_xy(self) -> np.ndarray:
        return self.data.mocap_pos[self.bin_mocap, :2].copy()

    def _reset_task(self, rng: np.random.Generator) -> None:
        block = rng.uniform(self.BLOCK_LOW, self.BLOCK_HIGH)
        self._place_block(block)
        self.data.mocap_pos[self.bin_mocap, :2] = _sample_apart(rng, self.BIN_LOW, self.BIN_HIGH, block,
                                                                min_dist=0.17)

    def _goal_distance(self) -> float:
        goal = np.append(self.bin_xy, BLOCK_HALF)
        return norm(self.block_pos - goal)

    def _fingers_touch_block(self) -> bool:
        contact = self.data.contact
        for g1, g2 in zip(contact.geom1, contact.geom2):
            if self.block_geom in (g1, g2) and (g1 in self.finger_geoms or g2 in self.finger_geoms):
                return True
        return False

    def _is_success(self) -> bool:
        block = self.block_pos
        inside = bool(np.all(np.abs(block[:2] - self.bin_xy) < self.BIN_INNER_HALF))
        speed = norm(self.data.qvel[self.block_qvel:self.block_qvel + 3])
        return (inside and block[2] < self.BIN_WALL_HEIGHT - 0.01 and speed < self.REST_SPEED
                and not self._fingers_touch_block())

    def make_expert(self) -> PickPlaceExpert:
        return PickPlaceExpert(self)
