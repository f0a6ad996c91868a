"""The table-top arm env every manipulation task shares: model loading, control, observations, time limit.

A task subclass names its scene file and fills in three hooks: place its objects (``_reset_task``), measure
how far it is from done (``_goal_distance``) and decide success (``_is_success``). Everything the policy
sees is rendered: object and goal poses are deliberately left out of ``state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import as_file, files
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from imitlab.core.scalars import norm
from imitlab.envs import Expert
from imitlab.envs.manipulation.cameras import CameraRig
from imitlab.envs.manipulation.controller import ARM_JOINTS, HOME_QPOS, IKController, Workspace
from imitlab.envs.perturb import Perturber, SceneParts
from imitlab.envs.stability import mark_unstable, nonfinite_action, sim_instability

CONTROL_HZ = 10
#: Largest end-effector displacement one action asks for, per axis, metres per control step.
MAX_DELTA = 0.02
#: A new target builds on the previous target (so servo lag does not accumulate), but never on one further
#: than this from where the grip really is (so pressing against something cannot wind the target up).
TARGET_LEASH = 0.01
#: Joint-target interpolation fractions, one per equal slice of the control step's physics steps.
RAMP = (0.25, 0.5, 0.75, 1.0, 1.0)
#: Finger joint targets (each finger travels 0..4 cm, so the jaw opens up to 8 cm).
FINGER_OPEN = 0.04
FINGER_CLOSED = 0.0
#: Where the grip site may be commanded: in front of the arm, from 1.5 cm above the table up to 35 cm.
WORKSPACE = Workspace(low=np.array([0.30, -0.25, 0.015]), high=np.array([0.70, 0.25, 0.35]))
#: Box the episode's starting grip-site position is drawn from.
START_LOW = np.array([0.35, -0.12, 0.15])
START_HIGH = np.array([0.50, 0.12, 0.25])
#: Where distractor objects may stand on the table (x, y), metres.
DISTRACTOR_LOW = np.array([0.28, -0.30])
DISTRACTOR_HIGH = np.array([0.72, 0.30])
#: ``state`` layout: grip-site position (3, m, world frame), grip-site velocity (3, m/s), jaw opening (1, m),
#: arm joint angles (7, rad). Each entry is clipped to its bound (contacts can push a joint a hair past its limit).
STATE_LAYOUT = {"grip_pos": slice(0, 3), "grip_vel": slice(3, 6), "jaw_opening": slice(6, 7), "arm_qpos": slice(7, 14)}
STATE_DIM = STATE_LAYOUT["arm_qpos"].stop
STATE_MAX_SPEED = 5.0


def load_scene(name: str) -> mujoco.MjModel:
    """Compile ``assets/manipulation/<name>`` (its ``<include>``s resolve next to it)."""
    with as_file(files("imitlab.assets") / "manipulation" / name) as path:
        return mujoco.MjModel.from_xml_path(str(path))


class ArmEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Action: Box(-1, 1, (4,)) = grip-site displacement (x, y, z) times ``MAX_DELTA`` + gripper (<0 open, >0 close).

    Each 10 Hz step moves the commanded grip target by ``MAX_DELTA * action[:3]`` (from the previous target,
    leashed to within ``TARGET_LEASH`` of the real grip position), clips it to ``WORKSPACE``, solves IK for it
    (gripper kept pointing down) and lets the joint servos track the result for 25 physics steps of 4 ms.
    ``perturb`` (or ``reset(options={"perturb": ...})``): distribution shifts, see ``imitlab.envs.perturb``.
    A non-finite action or an unstable simulation ends the episode (terminated, reward 0) with ``sim_unstable``
    in ``info`` (see ``envs/stability.py``); a non-finite action never reaches the simulator.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    METRICS: ClassVar[dict[str, str]] = {"goal_distance": "last"}
    #: Names of the action dimensions (the evaluator labels its action bars with them).
    ACTION_LABELS: ClassVar[tuple[str, ...]] = ("dx", "dy", "dz", "gripper")
    #: Discrete decisions inside the action, for offline accuracy/recall/F1: name -> (action index, thresholds,
    #: classes); class i holds values in (thresholds[i-1], thresholds[i]]. Gripper: > 0 closes (see ``step``).
    DECISIONS: ClassVar[dict[str, tuple[int, tuple[float, ...], tuple[str, ...]]]] = {
        "move_x": (0, (-0.25, 0.25), ("x-", "hold", "x+")),
        "move_y": (1, (-0.25, 0.25), ("y-", "hold", "y+")),
        "move_z": (2, (-0.25, 0.25), ("down", "hold", "up")),
        "gripper": (3, (0.0,), ("open", "close")),
    }
    #: Names of the ``state`` dimensions, in STATE_LAYOUT's order, for statistics and video overlays.
    STATE_LABELS: ClassVar[tuple[str, ...]] = ("grip_x", "grip_y", "grip_z", "grip_vx", "grip_vy", "grip_vz",
                                               "jaw_opening", *ARM_JOINTS)
    SCENE: ClassVar[str]
    MAX_STEPS: ClassVar[int]
    #: Jaw state at the start of an episode.
    START_FINGERS: ClassVar[float] = FINGER_OPEN

    def __init__(self, image_size: int = 84, cameras: tuple[str, ...] = ("agentview",),
                 render_mode: str | None = None, max_steps: int | None = None,
                 perturb: Mapping[str, int] | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.max_steps = self.MAX_STEPS if max_steps is None else int(max_steps)
        self.model = load_scene(self.SCENE)
        self.data = mujoco.MjData(self.model)
        self.substeps = round(1.0 / (CONTROL_HZ * self.model.opt.timestep))
        if self.substeps % len(RAMP):
            raise ValueError(f"{self.substeps} physics steps per control step do not split into {len(RAMP)} slices")
        self.ik = IKController(self.model)
        self.perturber = Perturber(self.model, self._scene_parts(tuple(cameras)), perturb)
        self.rig = CameraRig(self.model, tuple(cameras), int(image_size), decorate=self.perturber.decorate)
        self.grip_site = self.model.site("grip").id
        self.arm_qpos = self.ik.qpos_adr
        self.finger_qpos = np.array([self.model.joint(j).qposadr[0] for j in ("finger_left", "finger_right")])
        self.arm_ctrl = np.array([self.model.actuator(f"act_{j}").id for j in ARM_JOINTS])
        self.finger_ctrl = np.array([self.model.actuator(a).id for a in ("act_finger_left", "act_finger_right")])
        image = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        arm_range = self.model.jnt_range[[self.model.joint(j).id for j in ARM_JOINTS]]
        low = [[-1.5] * 3, [-STATE_MAX_SPEED] * 3, [0.0], arm_range[:, 0]]
        high = [[1.5] * 3, [STATE_MAX_SPEED] * 3, [2 * FINGER_OPEN], arm_range[:, 1]]
        self._state_low = np.concatenate(low).astype(np.float32)
        self._state_high = np.concatenate(high).astype(np.float32)
        self.observation_space = spaces.Dict(
            {key: image for key in self.rig.keys}
            | {"state": spaces.Box(self._state_low, self._state_high, dtype=np.float32)})
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._steps = 0
        self._velocity = np.zeros(6)
        self._target = np.zeros(3)

    def _scene_parts(self, cameras: tuple[str, ...]) -> SceneParts:
        """What perturbations act on: the table and floor, the task's objects (every body not part of the arm)."""
        m = self.model
        arm_root = m.body("link0").id
        objects = tuple(g for g in range(m.ngeom) if m.geom_bodyid[g] != 0
                        and m.body_rootid[m.geom_bodyid[g]] != arm_root)
        movable = tuple(sorted({int(m.geom_bodyid[g]) for g in objects if m.body_mocapid[m.geom_bodyid[g]] < 0}))
        known = [m.camera(i).name for i in range(m.ncam)]
        return SceneParts(cameras=tuple(m.camera(c).id for c in cameras if c in known), scale=0.5,
                          surfaces=(m.material("table").id, m.material("floor").id), objects=objects,
                          bodies=movable, texture=m.texture("floor_tex").id, place_distractors=_table_sites)

    # Task hooks -------------------------------------------------------------------------------------------

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Place the task's objects and goal for a new episode (arm already placed)."""
        raise NotImplementedError

    def _goal_distance(self) -> float:
        """Distance (metres) of whatever must reach the goal from the goal."""
        raise NotImplementedError

    def _is_success(self) -> bool:
        raise NotImplementedError

    def _finger_target(self, action: np.ndarray) -> float:
        return FINGER_CLOSED if action[3] > 0 else FINGER_OPEN

    # Privileged state (experts, tests) --------------------------------------------------------------------

    @property
    def grip_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.grip_site].copy()

    @property
    def jaw_opening(self) -> float:
        return float(self.data.qpos[self.finger_qpos].sum())

    def make_expert(self) -> Expert:
        """The task's privileged scripted expert, bound to this env."""
        raise NotImplementedError

    # Gymnasium API ----------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.perturber.begin_episode(seed, options)
        mujoco.mj_resetData(self.model, self.data)
        start = self.np_random.uniform(START_LOW, START_HIGH)
        q = self.ik.solve(HOME_QPOS, start, iterations=50)
        self.data.qpos[self.arm_qpos] = q
        self.data.ctrl[self.arm_ctrl] = q
        self.data.qpos[self.finger_qpos] = self.START_FINGERS
        self.data.ctrl[self.finger_ctrl] = self.START_FINGERS
        self._reset_task(self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self._target = self.grip_pos
        self._steps = 0
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64).reshape(4)
        bad_action = nonfinite_action(action)
        if bad_action is not None:
            return self._end_unstable(bad_action)
        # np.minimum/np.maximum and scalars.norm give np.clip's and np.linalg.norm's numbers with less dispatch.
        action = self.perturber.act(np.minimum(np.maximum(action, -1.0), 1.0))
        grip = self.grip_pos
        lag = self._target - grip
        lag *= min(1.0, TARGET_LEASH / max(norm(lag), 1e-9))
        self._target = WORKSPACE.clip(grip + lag + MAX_DELTA * action[:3])
        start = self.data.ctrl[self.arm_ctrl].copy()
        goal = self.ik.solve(start, self._target)
        self.data.ctrl[self.finger_ctrl] = self._finger_target(action)
        # Joint targets ramp to the IK solution over most of the step: smooth motion, gentle on a held block.
        for fraction in RAMP:
            self.data.ctrl[self.arm_ctrl] = start + fraction * (goal - start)
            mujoco.mj_step(self.model, self.data, nstep=self.substeps // len(RAMP))
        mujoco.mj_forward(self.model, self.data)  # positions, contacts and images describe the final state
        self._steps += 1
        unstable = sim_instability(self.data)
        if unstable is not None:
            return self._end_unstable(unstable)
        info = self._info()
        terminated = bool(info["is_success"])
        truncated = not terminated and self._steps >= self.max_steps
        return self._observation(), -info["goal_distance"], terminated, truncated, info

    def _end_unstable(self, reason: str) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """The step that ends an episode whose simulation cannot be trusted (no reward, never a success)."""
        return self._observation(), 0.0, True, False, mark_unstable(self._info(), reason)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.rig.video_frame(self.data)

    def close(self) -> None:
        self.rig.close()

    # Internals --------------------------------------------------------------------------------------------

    def _observation(self) -> dict[str, np.ndarray]:
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, self.grip_site, self._velocity, 0)
        state = np.concatenate([self.data.site_xpos[self.grip_site], self._velocity[3:], [self.jaw_opening],
                                self.data.qpos[self.arm_qpos]]).astype(np.float32)
        np.clip(state, self._state_low, self._state_high, out=state)
        return self.perturber.observe(self.rig.observe(self.data) | {"state": state})

    def _info(self) -> dict[str, Any]:
        return {"is_success": self._is_success(), "goal_distance": self._goal_distance()}


def _table_sites(rng: np.random.Generator, count: int) -> np.ndarray:
    """Distractor positions on the table top."""
    xy = rng.uniform(DISTRACTOR_LOW, DISTRACTOR_HIGH, (count, 2))
    return np.column_stack([xy, np.zeros(count)])
