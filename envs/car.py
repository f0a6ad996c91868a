"""The simulated car shared by the driving tasks: its MJCF, actuation, sensor state and a pure-pursuit controller.

LaneFollow-v0 and Town-v0 drive the same car (``assets/driving/car.xml``), so its constants, how an action
becomes steering / motor torque / brake damping, what ``state`` reports, and the experts' low-level control
live here once.
"""

from __future__ import annotations

from importlib import resources

import mujoco
import numpy as np

from imitlab.core.scalars import clamp
from imitlab.envs.stability import nonfinite_action, sim_instability

#: Control frequency (Hz); each control step runs ``1 / (CONTROL_HZ * timestep)`` physics steps.
CONTROL_HZ = 10
#: Car geometry the experts need: front-to-rear axle distance (m), steering limit (rad), rear axle offset (m).
WHEELBASE = 2.6
MAX_STEER = 0.5
REAR_AXLE_X = -1.3
#: Chassis half length and half width (m), from car.xml: the footprint used for collision checks.
HALF_LENGTH = 2.05
HALF_WIDTH = 0.85
#: Wheel-joint damping (N m s / rad) added at full brake; damping only resists spin, so it never reverses.
BRAKE_DAMPING = 25.0
#: Bounds of ``state`` = [forward speed, yaw rate, steering angle, previous throttle]; readings are clipped to them.
STATE_LOW = np.array([-50.0, -20.0, -1.0, -1.0], np.float32)
STATE_HIGH = -STATE_LOW

_WHEEL_DOFS = ("spin_fl", "spin_fr", "spin_rl", "spin_rr")


def car_xml() -> str:
    """The car scene's MJCF text (a ground plane plus the car), which each task adapts."""
    return resources.files("imitlab.assets").joinpath("driving", "car.xml").read_text()


class Car:
    """The ``car`` body of a compiled model: pose, speed, actuation and the ``state`` observation."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData):
        self.model = model
        self.data = data
        self.substeps = int(round(1.0 / (CONTROL_HZ * model.opt.timestep)))
        self._body = model.body("car").id
        self._steer_qpos = [model.joint(n).qposadr[0] for n in ("steer_fl", "steer_fr")]
        self._wheel_dofs = np.array([model.joint(n).dofadr[0] for n in _WHEEL_DOFS])
        self._wheel_damping = model.dof_damping[self._wheel_dofs].copy()
        self.throttle = 0.0

    @property
    def xy(self) -> np.ndarray:
        """Car body origin (centre, axle height) in world x, y."""
        return self.data.xpos[self._body][:2].copy()

    @property
    def yaw(self) -> float:
        """Car heading in the world frame (rad)."""
        rot = self.data.xmat[self._body]
        return float(np.arctan2(rot[3], rot[0]))

    @property
    def forward_speed(self) -> float:
        """Velocity along the car's forward axis (m/s)."""
        rot = self.data.xmat[self._body].reshape(3, 3)
        return float(rot[:, 0] @ self.data.qvel[:3])

    def reset(self, xy: np.ndarray, heading: float) -> None:
        """Reset the simulation and put the car at rest at ``xy`` facing ``heading``."""
        mujoco.mj_resetData(self.model, self.data)
        self.model.dof_damping[self._wheel_dofs] = self._wheel_damping
        self.data.qpos[:3] = (xy[0], xy[1], self.model.body_pos[self._body][2])
        self.data.qpos[3:7] = (np.cos(heading / 2), 0.0, 0.0, np.sin(heading / 2))
        mujoco.mj_forward(self.model, self.data)
        self.throttle = 0.0

    def step(self, action: np.ndarray) -> str | None:
        """Apply ``[steering, throttle]`` (clipped to [-1, 1]) for one control period of physics; returns why the
        simulation can no longer be trusted (see ``stability.py``), or None. A non-finite action is not applied:
        it would become NaN controls and brake damping."""
        action = np.asarray(action, dtype=np.float64).reshape(2)
        bad_action = nonfinite_action(action)
        if bad_action is not None:
            return bad_action
        steer, throttle = np.minimum(np.maximum(action, -1.0), 1.0)
        self.data.ctrl[:2] = steer * MAX_STEER
        self.data.ctrl[2:] = max(throttle, 0.0)
        self.model.dof_damping[self._wheel_dofs] = self._wheel_damping + BRAKE_DAMPING * max(-throttle, 0.0)
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self.throttle = float(throttle)
        return sim_instability(self.data)

    def state(self) -> np.ndarray:
        """``[forward speed, yaw rate, steering angle, previous throttle]``, clipped to the state bounds."""
        left, right = self._steer_qpos
        steer = (float(self.data.qpos[left]) + float(self.data.qpos[right])) / 2.0
        yaw_rate = float(self.data.qvel[5])  # free joint angular velocity is in the body frame: z is yaw
        state = np.array([self.forward_speed, yaw_rate, steer, self.throttle], dtype=np.float32)
        return np.minimum(np.maximum(state, STATE_LOW), STATE_HIGH)  # np.clip's dispatch costs more than this

    def footprint(self) -> np.ndarray:
        """The chassis' four corners in world x, y, shape (4, 2)."""
        return box_corners(self.xy, self.yaw, HALF_LENGTH, HALF_WIDTH)


def box_corners(xy: np.ndarray, heading: float, half_length: float, half_width: float) -> np.ndarray:
    """The four corners (4, 2), in order around it, of a rectangle centred at ``xy`` whose long axis is ``heading``."""
    forward = np.array([np.cos(heading), np.sin(heading)])
    left = np.array([-forward[1], forward[0]])
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64)
    return xy + signs[:, :1] * half_length * forward + signs[:, 1:] * half_width * left


def pure_pursuit_steer(car: Car, target: np.ndarray) -> float:
    """Steering action in [-1, 1] that puts the rear axle on a circle through ``target`` (pure pursuit)."""
    yaw = car.yaw
    forward = np.array([np.cos(yaw), np.sin(yaw)])
    rear = car.xy + REAR_AXLE_X * forward
    rel = target - rear
    local_y = -forward[1] * rel[0] + forward[0] * rel[1]
    steer_angle = np.arctan(2.0 * WHEELBASE * local_y / max(float(rel @ rel), 1e-6))  # curvature 2 y / L^2
    return clamp(steer_angle / MAX_STEER, -1.0, 1.0)


def rear_axle(car: Car) -> np.ndarray:
    """Rear axle centre in world x, y: the point pure pursuit steers."""
    yaw = car.yaw
    return car.xy + REAR_AXLE_X * np.array([np.cos(yaw), np.sin(yaw)])


class SpeedController:
    """Throttle = feed-forward (rolling losses) + gain * speed error, changing at most ``slew`` per step.

    The slew limit keeps demonstrations free of jumps (e.g. full throttle the moment a curve ends); a separate,
    faster ``brake_slew`` lets the town expert stop for a red light or a braking car in time.
    """

    def __init__(self, feedforward: float = 0.12, gain: float = 0.5, slew: float = 0.15, brake_slew: float = 0.15):
        self.feedforward = feedforward
        self.gain = gain
        self.slew = slew
        self.brake_slew = brake_slew
        self.throttle = 0.0

    def reset(self) -> None:
        """The car starts every episode at rest: start the ramp from zero."""
        self.throttle = 0.0

    def __call__(self, target_speed: float, speed: float) -> float:
        """The throttle for this step; a target of 0 means hold the car with full brake."""
        if target_speed <= 0.0:
            throttle = -1.0
        else:
            throttle = self.feedforward + self.gain * (target_speed - speed)
        release = self.brake_slew if self.throttle < 0.0 else self.slew  # letting go of the brake is as quick
        throttle = clamp(throttle, self.throttle - self.brake_slew, self.throttle + release)
        self.throttle = clamp(throttle, -1.0, 1.0)
        return self.throttle
