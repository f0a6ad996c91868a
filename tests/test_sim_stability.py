"""Unstable simulations end the episode flagged ``sim_unstable`` instead of MuJoCo silently resetting the state."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from imitlab.envs.driving import LaneFollowEnv

from conftest import TINY_ENV_KWARGS


@pytest.fixture(scope="module")
def env() -> Iterator[LaneFollowEnv]:
    env = LaneFollowEnv(**TINY_ENV_KWARGS)
    yield env
    env.close()


def _drive(env: LaneFollowEnv, steps: int) -> None:
    env.reset(seed=3)
    for _ in range(steps):
        env.step(np.array([0.0, 0.5]))


def test_nan_action_ends_the_episode_flagged_and_never_reaches_the_model(env: LaneFollowEnv) -> None:
    _drive(env, 5)
    damping, xy = env.model.dof_damping.copy(), env.car.xy
    obs, reward, terminated, truncated, info = env.step(np.array([np.nan, 0.3]))
    assert (terminated, truncated, reward) == (True, False, 0.0)
    assert info["sim_unstable"] and "non-finite action" in info["sim_unstable_reason"] and not info["is_success"]
    np.testing.assert_array_equal(env.model.dof_damping, damping)  # NaN brake damping was never written
    np.testing.assert_array_equal(env.car.xy, xy)  # no auto-reset teleported the car
    assert np.all(np.isfinite(obs["state"]))


def test_diverging_physics_is_caught_from_mujocos_warning_counters(env: LaneFollowEnv) -> None:
    _drive(env, 5)
    env.data.qvel[0] = 1e12  # beyond mjMAXVAL: MuJoCo warns and auto-resets the whole state
    _, reward, terminated, _, info = env.step(np.array([0.0, 0.5]))
    assert terminated and reward == 0.0 and info["sim_unstable"]
    assert "mjWARN_BADQVEL" in info["sim_unstable_reason"] or "mjWARN_BADQACC" in info["sim_unstable_reason"]
    env.reset(seed=3)  # a reset clears the counters: the next episode is sound again
    assert "sim_unstable" not in env.step(np.array([0.0, 0.5]))[4]


def test_sound_episode_carries_no_flag(env: LaneFollowEnv) -> None:
    env.reset(seed=4)
    for _ in range(20):
        *_, terminated, truncated, info = env.step(np.array([0.0, 0.4]))
        assert "sim_unstable" not in info
        if terminated or truncated:
            break
