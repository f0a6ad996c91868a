"""Scripted experts: they solve held-out seeds, act inside the action space, and restart cleanly on reset."""

from __future__ import annotations

import numpy as np
import pytest

from imitlab.envs import make_env, make_expert

SIZE = 16
#: Episode-length bands the experts are written for (10 Hz steps); short, consistent demos suit cloning.
LENGTHS = {"imitlab/Reach-v0": (3, 20), "imitlab/Push-v0": (15, 70), "imitlab/PickPlace-v0": (25, 70)}


@pytest.mark.parametrize("env_id", list(LENGTHS))
def test_expert_succeeds_with_valid_actions(env_id: str) -> None:
    env = make_env(env_id, image_size=SIZE)
    expert = make_expert(env)
    low, high = LENGTHS[env_id]
    for seed in (1_000_000, 1_000_001, 1_000_002):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        for steps in range(1, env.unwrapped.max_steps + 1):
            action = expert.act(obs)
            assert action.dtype == np.float32 and env.action_space.contains(action)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert terminated and info["is_success"], f"{env_id} seed {seed}"
        assert low <= steps <= high
    env.close()


def test_pick_place_expert_restarts_on_reset() -> None:
    env = make_env("imitlab/PickPlace-v0", image_size=SIZE)
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    expert.reset()
    for _ in range(20):
        obs = env.step(expert.act(obs))[0]
    assert expert.phase != "above_block"
    obs, _ = env.reset(seed=0)
    expert.reset()
    assert expert.phase == "above_block"
    assert expert.act(obs)[3] < 0  # approaches with the gripper open
    env.close()
