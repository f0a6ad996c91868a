"""Arm control: IK accuracy and orientation, workspace clipping, action handling, gripper, grasp holding."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from imitlab.envs.manipulation import PickPlaceEnv, PushEnv, ReachEnv
from imitlab.envs.manipulation.arm_env import MAX_DELTA, WORKSPACE
from imitlab.envs.manipulation.controller import DOWN, HOME_QPOS
from imitlab.envs.manipulation.experts import toward
from imitlab.envs.manipulation.tasks import BLOCK_HALF

SIZE = 16


@pytest.fixture(scope="module")
def reach() -> ReachEnv:
    env = ReachEnv(image_size=SIZE, max_steps=1000)
    yield env
    env.close()


def pointing_down(env: ReachEnv) -> float:
    """Cosine between the gripper's approach axis and straight down."""
    return float(-env.data.site_xmat[env.grip_site].reshape(3, 3)[2, 2])


@pytest.mark.parametrize("target", [[0.32, -0.22, 0.03], [0.68, 0.22, 0.03], [0.5, 0.0, 0.33], [0.4, 0.2, 0.2]])
def test_ik_solution_is_exact(reach: ReachEnv, target: list[float]) -> None:
    q = reach.ik.solve(HOME_QPOS, np.array(target), iterations=50)
    pos, rot = reach.ik.site_pose(q)
    assert np.linalg.norm(pos - target) < 1e-3
    assert np.abs(rot - DOWN).max() < 1e-3
    assert np.all(q >= reach.ik.q_low) and np.all(q <= reach.ik.q_high)


def plain_ik(reach: ReachEnv, q: np.ndarray, target: np.ndarray, iterations: int) -> np.ndarray:
    """The IK written with numpy's plain calls (gathers, vstack, np.linalg.solve/norm, np.clip): what ``solve``
    must equal bit for bit, so that trajectories recorded before its buffers and LAPACK calls stay reproducible."""
    ik = reach.ik
    for _ in range(iterations):
        pos, rot = ik.site_pose(q)
        x, y, z = rot[:, 0], rot[:, 1], rot[:, 2]
        err = np.concatenate([target - pos, 0.5 * np.array([y[2] - z[1], x[2] + z[0], -x[1] - y[0]])])
        if np.linalg.norm(err) < ik.tolerance:
            break
        jacp, jacr = np.zeros((3, reach.model.nv)), np.zeros((3, reach.model.nv))
        mujoco.mj_jacSite(reach.model, ik.data, jacp, jacr, ik.site_id)
        jac = np.vstack([jacp[:, ik.dof_adr], jacr[:, ik.dof_adr]])
        jjt = jac @ jac.T
        posture = ik.posture_gain * (HOME_QPOS - q)
        posture -= jac.T @ np.linalg.solve(jjt, jac @ posture)
        dq = jac.T @ np.linalg.solve(jjt + ik._damping, err) + posture
        q = np.clip(q + dq, ik.q_low, ik.q_high)
    return q


def test_ik_equals_plain_numpy_bit_for_bit(reach: ReachEnv) -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        q = HOME_QPOS + rng.normal(0.0, 0.3, 7)
        target = np.array([0.5, 0.0, 0.15]) + rng.normal(0.0, 0.05, 3)
        for iterations in (2, 50):
            assert np.array_equal(reach.ik.solve(q, target, iterations), plain_ik(reach, q, target, iterations))


@pytest.mark.parametrize("target", [[0.35, -0.2, 0.05], [0.65, 0.2, 0.03], [0.5, 0.1, 0.3]])
def test_commanded_target_is_reached_pointing_down(reach: ReachEnv, target: list[float]) -> None:
    reach.reset(seed=0)
    for _ in range(40):
        reach.step(np.append(toward(reach.grip_pos, np.array(target)), -1.0))
    assert np.linalg.norm(reach.grip_pos - target) < 0.01
    assert pointing_down(reach) > 0.999


def test_zero_action_holds_still(reach: ReachEnv) -> None:
    reach.reset(seed=1)
    reach.step(np.zeros(4))
    start = reach.grip_pos
    for _ in range(10):
        reach.step(np.zeros(4))
    assert np.linalg.norm(reach.grip_pos - start) < 2e-3


def test_full_action_moves_max_delta_per_step(reach: ReachEnv) -> None:
    reach.reset(seed=2)
    reach.step(np.zeros(4))
    start = reach.grip_pos
    for _ in range(3):
        reach.step(np.array([1.0, -1.0, 0.0, -1.0]))
    moved = reach.grip_pos - start
    np.testing.assert_allclose(moved[:2], [3 * MAX_DELTA, -3 * MAX_DELTA], atol=0.006)


@pytest.mark.parametrize("axis,sign", [(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)])
def test_target_is_clipped_to_workspace(reach: ReachEnv, axis: int, sign: int) -> None:
    reach.reset(seed=3)
    action = np.zeros(4)
    action[axis] = sign
    for _ in range(30):
        reach.step(action)
    bound = WORKSPACE.high[axis] if sign > 0 else WORKSPACE.low[axis]
    assert reach.grip_pos[axis] == pytest.approx(bound, abs=0.005)
    assert pointing_down(reach) > 0.995


def test_out_of_range_actions_are_clipped_and_nan_ends_the_episode_flagged() -> None:
    big, unit = ReachEnv(image_size=SIZE), ReachEnv(image_size=SIZE)
    big.reset(seed=4)
    unit.reset(seed=4)
    obs_big = big.step(np.array([5.0, -7.0, 3.0, 9.0]))[0]
    obs_unit = unit.step(np.array([1.0, -1.0, 1.0, 1.0]))[0]
    np.testing.assert_array_equal(obs_big["state"], obs_unit["state"])
    ctrl = big.data.ctrl.copy()
    obs, reward, terminated, truncated, info = big.step(np.array([np.nan, 0.0, 0.0, 0.0]))
    assert (terminated, truncated, reward) == (True, False, 0.0)
    assert info["sim_unstable"] and "non-finite action" in info["sim_unstable_reason"] and not info["is_success"]
    np.testing.assert_array_equal(big.data.ctrl, ctrl)  # nothing reached the simulator
    np.testing.assert_array_equal(obs["state"], obs_big["state"])
    big.close()
    unit.close()


def test_gripper_opens_and_closes(reach: ReachEnv) -> None:
    reach.reset(seed=5)
    assert reach.jaw_opening > 0.075
    for _ in range(3):
        reach.step(np.array([0, 0, 0, 1.0]))
    assert reach.jaw_opening < 0.005
    for _ in range(3):
        reach.step(np.array([0, 0, 0, -1.0]))
    assert reach.jaw_opening > 0.075


def test_push_keeps_gripper_closed() -> None:
    env = PushEnv(image_size=SIZE)
    env.reset(seed=0)
    assert env.jaw_opening < 0.005
    for _ in range(3):
        env.step(np.array([0, 0, 0, -1.0]))
    assert env.jaw_opening < 0.005
    env.close()


def test_grasped_block_does_not_slip() -> None:
    """Close on the block, lift 12 cm, hold 3 s, then carry it sideways: it stays put in the hand."""
    env = PickPlaceEnv(image_size=SIZE, max_steps=1000)
    env.reset(seed=6)
    block = env.block_pos
    for waypoint in (block + [0, 0, 0.08], block):
        for _ in range(15):
            env.step(np.append(toward(env.grip_pos, waypoint), -1.0))
    for _ in range(4):
        env.step(np.array([0, 0, 0, 1.0]))
    for _ in range(8):
        env.step(np.array([0, 0, 0.75, 1.0]))
    assert env.block_pos[2] > BLOCK_HALF + 0.1
    held = env.block_pos - env.grip_pos
    for _ in range(30):
        env.step(np.array([0, 0, 0, 1.0]))
    assert np.linalg.norm(env.block_pos - env.grip_pos - held) < 0.002
    for _ in range(8):
        env.step(np.array([-1.0, 1.0, 0, 1.0]))
    assert np.linalg.norm(env.block_pos - env.grip_pos - held) < 0.004
    assert 0.04 < env.jaw_opening < 2 * BLOCK_HALF
    env.close()
