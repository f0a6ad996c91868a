"""Privileged Detour expert: LaneFollow's pure pursuit along the episode's approach line (``driving_offset``),
swerving to the side the hidden coin chose (``DetourEnv.pass_side``) for a stretch around the barrier, as the env's
``LAYOUT`` says.

The swerve starts late and is done in about a second: a policy that waits, as one averaging the two sides does,
has little room left to pass (Detour-v1: none)."""

from __future__ import annotations

import mujoco
import numpy as np

from imitlab.core.scalars import clamp
from imitlab.envs.detour import DetourEnv
from imitlab.envs.driving_expert import LOOKAHEAD_BASE, LOOKAHEAD_GAIN, LaneFollowExpert, curve_speed

#: What the look-ahead through pending actions saves and restores: everything that integrates.
_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
#: Top speed (m/s): slower than on LaneFollow, the swerve is a lane change within ~1.5 s.
CRUISE_SPEED = 7.0


class DetourExpert(LaneFollowExpert):
    """Pure pursuit on a path that leaves the approach line to ``pass_side`` around the barrier, then comes back."""

    def __init__(self, env: DetourEnv):
        super().__init__(env)
        self.env: DetourEnv = env

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """LaneFollow's pursuit; with an actuator latency (``ACTION_DELAY``), from where the car will be when this
        action applies: the simulation is run ahead through the actions still pending, then put back as it was."""
        env = self.env
        if not env.ACTION_DELAY:
            return super().act(obs)
        model, data, car = env.model, env.data, env.car
        state = np.empty(mujoco.mj_stateSize(model, _STATE))
        mujoco.mj_getState(model, data, state, _STATE)
        damping, throttle = model.dof_damping.copy(), car.throttle
        try:
            for pending in env.pending_actions():
                car.step(pending)
            return super().act(obs)
        finally:
            mujoco.mj_setState(model, data, state, _STATE)
            model.dof_damping[:], car.throttle = damping, throttle
            mujoco.mj_forward(model, data)

    def _offset(self, s: float) -> float:
        layout = self.env.LAYOUT
        rel = s - self.env.obstacle_s
        out = _smoothstep((rel + layout.swerve_start) / layout.swerve_length) * (
            1.0 - _smoothstep((rel - layout.return_start) / layout.swerve_length))
        lane = self.env.driving_offset
        return lane + (self.env.pass_side * layout.pass_offset - lane) * out

    def _lookahead(self, speed: float) -> float:
        return clamp(LOOKAHEAD_BASE + LOOKAHEAD_GAIN * speed, *self.env.LAYOUT.lookahead)

    def _target_speed(self, s: float, speed: float) -> float:
        road = self.env.road
        assert road is not None
        return curve_speed(road, s, speed, cruise=CRUISE_SPEED)


def _smoothstep(x: float) -> float:
    """0 below 0, 1 above 1, and a cubic with zero slope at both ends between."""
    x = clamp(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
