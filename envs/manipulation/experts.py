"""Privileged scripted experts: small state machines over the true object poses.

They are written to be imitated from images: every phase moves in a straight line towards one waypoint
with saturating proportional control (so actions are smooth and a function of what the camera shows),
the gripper command only flips at phase boundaries, and each phase looks different (arm above the
block, arm low, jaw closed, block lifted, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from imitlab.core.scalars import clamp, norm
from imitlab.envs.manipulation.arm_env import MAX_DELTA

if TYPE_CHECKING:
    from imitlab.envs.manipulation.tasks import PickPlaceEnv, PushEnv, ReachEnv

OPEN, CLOSE = -1.0, 1.0


def toward(current: np.ndarray, waypoint: np.ndarray, gain: float = 0.5) -> np.ndarray:
    """Displacement action moving ``gain`` of the way to ``waypoint``, scaled down (same direction) to fit the box."""
    move = gain * (waypoint - current) / MAX_DELTA
    return move / max(1.0, float(np.abs(move).max()))


def _action(move: np.ndarray, gripper: float) -> np.ndarray:
    return np.append(move, gripper).astype(np.float32)


class ReachExpert:
    """Straight to the target."""

    def __init__(self, env: ReachEnv):
        self.env = env

    def reset(self) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return _action(toward(self.env.grip_pos, self.env.target_pos), OPEN)


class PushExpert:
    """Pushes the block straight at the goal, re-aiming every step: the hand stays on the line from the goal
    through the block, behind the block, and presses it forward along that line.

    The action is a function of where the hand, block and goal are, with no remembered phase and no choice
    between push directions, so what the cameras show decides what to do. (Two earlier experts pushed in an x
    leg then a y leg: image policies hovered where the expert switched phase or axis, a switch that depends on
    centimetres the 84 px view barely resolves.) The closed fingers are a flat pad: a push off the pad's normal
    lets the block slide sideways, which the re-aiming corrects. In the lane behind the block: go down and push;
    low beside the block: rise; otherwise travel above the table to the lane's entrance and descend there.

    Under DART noise the demos visit the edges of those regions constantly, so the regions are generous and the
    action changes smoothly inside the lane. (The previous version aimed back at the entrance whenever the hand
    was 4 mm above pushing height and left the lane 1.5 cm off the line: in noisy demos the label flipped
    between forward and back, or push and rise, several times per episode, on differences no camera shows.)
    """

    HOVER_Z = 0.09
    PUSH_Z = 0.02
    #: Distance behind the block centre where the hand enters the pushing lane.
    ENTRANCE = 0.06
    #: The lane: this close to the goal-block line, and this far behind the block centre along it. Near the goal
    #: the line turns fast as the block slides on the pad; the hand still overlaps the block's face at the edge.
    LANE_HALF_WIDTH = 0.025
    LANE_BEHIND = (0.02, 0.085)
    #: Grip point distance behind the block centre while pushing along x and along y (the pad is wider than
    #: deep); a few millimetres less than touching, so the hand keeps pressing.
    CONTACT_OFFSET = (0.03, 0.036)
    PUSH_STEP = 0.02
    #: Height above PUSH_Z where the aim starts sliding from the entrance to the push, and the band it slides over.
    LAND_BAND = (0.01, 0.015)
    #: Beside the block (closer than CLEAR_RADIUS) and below CLEAR_Z, the hand rises before moving sideways.
    CLEAR_Z = 0.06
    CLEAR_RADIUS = 0.09

    def __init__(self, env: PushEnv):
        self.env = env

    def reset(self) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        grip, block, goal = self.env.grip_pos, self.env.block_pos[:2], self.env.goal_xy
        offset = goal - block
        distance = norm(offset)
        unit = offset / max(distance, 1e-9)
        relative = grip[:2] - block
        depth = -float(unit @ relative)  # how far behind the block centre, along the push
        across = abs(float(unit[0] * relative[1] - unit[1] * relative[0]))
        entrance = block - self.ENTRANCE * unit
        if across < self.LANE_HALF_WIDTH and self.LANE_BEHIND[0] < depth < self.LANE_BEHIND[1]:
            contact = float(np.abs(unit) @ self.CONTACT_OFFSET)
            push_to = block + unit * (min(self.PUSH_STEP, distance) - contact)
            # High in the lane the hand descends at the entrance; low it pushes. Between, the aim slides from
            # one to the other, so a few millimetres of height never flip the action from forward to back.
            high = clamp((grip[2] - self.PUSH_Z - self.LAND_BAND[0]) / self.LAND_BAND[1], 0.0, 1.0)
            aim = high * entrance + (1.0 - high) * push_to
            return _action(toward(grip, np.append(aim, self.PUSH_Z)), CLOSE)
        if grip[2] < self.CLEAR_Z and norm(relative) < self.CLEAR_RADIUS:
            return _action(toward(grip, np.append(grip[:2], self.HOVER_Z)), CLOSE)
        z = self.PUSH_Z if norm(grip[:2] - entrance) < 0.01 else self.HOVER_Z
        return _action(toward(grip, np.append(entrance, z)), CLOSE)


class PickPlaceExpert:
    """Above the block, down, close, lift, over the bin, lower, open; back to the start if the block is dropped."""

    HOVER_DZ = 0.08
    CARRY_Z = 0.16
    RELEASE_Z = 0.09
    CLOSE_STEPS = 3

    def __init__(self, env: PickPlaceEnv):
        self.env = env
        self.phase = "above_block"
        self.count = 0

    def reset(self) -> None:
        self.phase = "above_block"
        self.count = 0

    def _enter(self, phase: str) -> None:
        self.phase, self.count = phase, 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        env = self.env
        grip, block, bin_xy = env.grip_pos, env.block_pos, env.bin_xy
        self.count += 1
        held = norm(block - grip) < 0.02 and env.jaw_opening < 0.05
        if self.phase in ("lift", "carry", "lower") and not held:
            self._enter("above_block")
        if self.phase == "above_block":
            hover = block + [0.0, 0.0, self.HOVER_DZ]
            if norm(grip - hover) < 0.015:
                self._enter("descend")
            else:
                return _action(toward(grip, hover), OPEN)
        if self.phase == "descend":
            if norm(grip - block) < 0.006:
                self._enter("grasp")
            else:
                return _action(toward(grip, block), OPEN)
        if self.phase == "grasp":
            if self.count > self.CLOSE_STEPS:
                self._enter("lift")
            else:
                return _action(toward(grip, block), CLOSE)
        if self.phase == "lift":
            if grip[2] > self.CARRY_Z - 0.02:
                self._enter("carry")
            else:
                return _action(toward(grip, np.append(grip[:2], self.CARRY_Z)), CLOSE)
        if self.phase == "carry":
            over_bin = np.append(bin_xy, self.CARRY_Z)
            if norm(grip[:2] - bin_xy) < 0.01:
                self._enter("lower")
            else:
                return _action(toward(grip, over_bin), CLOSE)
        if self.phase == "lower":
            if grip[2] < self.RELEASE_Z + 0.01:
                self._enter("release")
            else:
                return _action(toward(grip, np.append(bin_xy, self.RELEASE_Z)), CLOSE)
        return _action(toward(grip, np.append(bin_xy, self.RELEASE_Z)), OPEN)
