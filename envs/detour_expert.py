"""Privileged Detour expert: LaneFollow's pure pursuit along the episode's approach line (``driving_offset``),
swerving to the side the hidden coin chose (``DetourEnv.pass_side``) for a stretch around the barrier.

The swerve starts late (the barrier ~15 m ahead of the car) and is done in ~1.2 s: a policy that waits, as one
averaging the two sides does, has no room left to pass."""

from __future__ import annotations

import numpy as np

from imitlab.core.scalars import clamp
from imitlab.envs.detour import DetourEnv
from imitlab.envs.driving_expert import LaneFollowExpert, curve_speed

#: Offset of the passing line from the centre-line (m): 0.65 m beside the car and the default 2 m barrier.
PASS_OFFSET = 2.5
#: The path leaves the approach line ``SWERVE_START`` metres before the barrier, reaches the passing line
#: ``SWERVE_LENGTH`` later, holds it to ``RETURN_START`` past the barrier and is back ``SWERVE_LENGTH`` after that.
SWERVE_START = 10.0
SWERVE_LENGTH = 8.0
RETURN_START = 5.0
#: Top speed (m/s): slower than on LaneFollow, the swerve is a lane change within ~1.5 s.
CRUISE_SPEED = 7.0


class DetourExpert(LaneFollowExpert):
    """Pure pursuit on a path that leaves the approach line to ``pass_side`` around the barrier, then comes back."""

    def __init__(self, env: DetourEnv):
        super().__init__(env)
        self.env: DetourEnv = env

    def _offset(self, s: float) -> float:
        rel = s - self.env.obstacle_s
        out = _smoothstep((rel + SWERVE_START) / SWERVE_LENGTH) * (1.0 - _smoothstep((rel - RETURN_START) / SWERVE_LENGTH))
        lane = self.env.driving_offset
        return lane + (self.env.pass_side * PASS_OFFSET - lane) * out

    def _target_speed(self, s: float, speed: float) -> float:
        road = self.env.road
        assert road is not None
        return curve_speed(road, s, speed, cruise=CRUISE_SPEED)


def _smoothstep(x: float) -> float:
    """0 below 0, 1 above 1, and a cubic with zero slope at both ends between."""
    x = clamp(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
