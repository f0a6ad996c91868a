"""Privileged lane-following expert: pure pursuit on the true lane centre plus a curvature-aware speed plan.

It reads the simulator's true car pose and the road geometry, which a learned policy never sees; that is what
makes it a reliable demonstrator.
"""

from __future__ import annotations

import numpy as np

from imitlab.core.scalars import clamp
from imitlab.envs.car import SpeedController, pure_pursuit_steer, rear_axle
from imitlab.envs.driving import LaneFollowEnv
from imitlab.envs.road import LANE_OFFSET, Road

#: Speed plan: top speed (m/s), allowed lateral acceleration in curves and planned braking (m/s^2).
CRUISE_SPEED = 10.0
LATERAL_ACCEL = 3.0
PLAN_DECEL = 2.0
#: Look-ahead distance grows with speed: ``LOOKAHEAD_BASE + LOOKAHEAD_GAIN * v``, clipped to the range.
LOOKAHEAD_BASE = 2.5
LOOKAHEAD_GAIN = 0.5
LOOKAHEAD_RANGE = (4.0, 10.0)


class LaneFollowExpert:
    """Pure pursuit towards a point on the right lane's centre ahead of the rear axle, and a P speed controller.

    The target speed is the lowest of the cruise speed and, for every curve within braking distance, the speed
    that keeps lateral acceleration at ``LATERAL_ACCEL`` once there (reached by braking at ``PLAN_DECEL``).
    """

    def __init__(self, env: LaneFollowEnv):
        self.env = env
        self._speed = SpeedController()

    def reset(self) -> None:
        """Start the throttle ramp from zero: the car starts every episode at rest."""
        self._speed.reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        env = self.env
        road = env.road
        assert road is not None, "reset the env before asking the expert"
        speed = env.car.forward_speed
        s = road.project(rear_axle(env.car)).s
        lookahead = self._lookahead(speed)
        target, _ = road.pose(s + lookahead, self._offset(s + lookahead))
        throttle = self._speed(self._target_speed(s, speed), speed)
        return np.array([pure_pursuit_steer(env.car, target), throttle], dtype=np.float32)

    def _lookahead(self, speed: float) -> float:
        """How far ahead (m) the pursued point lies at ``speed``."""
        return clamp(LOOKAHEAD_BASE + LOOKAHEAD_GAIN * speed, *LOOKAHEAD_RANGE)

    def _offset(self, s: float) -> float:
        """The lateral offset (m, left positive) to drive at arc length ``s``: the right lane's centre."""
        return LANE_OFFSET

    def _target_speed(self, s: float, speed: float) -> float:
        road = self.env.road
        assert road is not None
        return curve_speed(road, s, speed)


def curve_speed(road: Road, s: float, speed: float, cruise: float = CRUISE_SPEED,
                lateral_accel: float = LATERAL_ACCEL, decel: float = PLAN_DECEL) -> float:
    """The lowest of ``cruise`` and, for every curve within braking distance of ``s``, the speed that keeps
    lateral acceleration at ``lateral_accel`` once there (reached by braking at ``decel``)."""
    horizon = speed**2 / (2.0 * decel) + 5.0
    # road.s increases, so the samples in [s, s + horizon] are one slice (a mask over all of them costs more).
    ahead = slice(np.searchsorted(road.s, s, side="left"), np.searchsorted(road.s, s + horizon, side="right"))
    kappa = np.abs(road.curvature[ahead])
    if not kappa.any():
        return cruise
    # A curve x metres ahead allows v^2 = lateral_accel / kappa + 2 decel x now.
    allowed2 = lateral_accel / np.maximum(kappa, 1e-9) + 2.0 * decel * (road.s[ahead] - s)
    return float(min(cruise, np.sqrt(allowed2.min())))
