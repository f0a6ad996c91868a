"""LaneFollow-v0: API contract, determinism, physics behaviour (steering, braking, leaving the road), expert."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from imitlab.envs import make_env, make_expert
from imitlab.envs.car import MAX_STEER
from imitlab.envs.driving import OFFROAD_PENALTY, PROGRESS_REWARD, LaneFollowEnv

SIZE = 64


@pytest.fixture(scope="module")
def env() -> Iterator[LaneFollowEnv]:
    env = LaneFollowEnv(image_size=SIZE)
    yield env
    env.close()


def rollout(env: gym.Env, seed: int, actions: np.ndarray) -> list[tuple]:
    obs, _ = env.reset(seed=seed)
    trace = [(obs["image"].copy(), obs["state"].copy(), 0.0)]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        trace.append((obs["image"].copy(), obs["state"].copy(), reward))
        if terminated or truncated:
            break
    return trace


def test_spaces_and_observation(env: LaneFollowEnv) -> None:
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert env.observation_space["image"].shape == (SIZE, SIZE, 3)
    assert env.observation_space["image"].dtype == np.uint8
    assert env.observation_space["state"].shape == (4,)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert set(info) >= {"is_success", "route_completion", "lateral_offset"}
    assert set(LaneFollowEnv.METRICS) == {"route_completion", "lateral_offset"}
    assert LaneFollowEnv.metadata["render_fps"] == 10
    assert abs(info["lateral_offset"]) <= 0.31  # starts near the right lane's centre
    np.testing.assert_array_equal(obs["state"], 0.0)  # at rest, wheels straight


def test_gymnasium_and_sb3_checkers() -> None:
    env = LaneFollowEnv(image_size=SIZE)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    env.close()


def test_same_seed_is_bit_identical(env: LaneFollowEnv) -> None:
    actions = np.random.default_rng(0).uniform(-0.3, 1.0, (15, 2)).astype(np.float32)
    env.reset(seed=12)  # the ground texture is repainted in place: the previous road must leave no trace
    first = rollout(env, 11, actions)
    other = LaneFollowEnv(image_size=SIZE)  # a fresh instance (own GL context) must agree too
    second = rollout(other, 11, actions)
    other.close()
    assert len(first) == len(second)
    for (img_a, state_a, rew_a), (img_b, state_b, rew_b) in zip(first, second):
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(state_a, state_b)
        assert rew_a == rew_b


def test_different_seeds_give_different_roads(env: LaneFollowEnv) -> None:
    env.reset(seed=1)
    road_a = env.road.points.copy()
    env.reset(seed=2)
    road_b = env.road.points
    n = min(len(road_a), len(road_b))
    assert np.abs(road_a[:n] - road_b[:n]).max() > 5.0


def test_camera_sees_the_road_ahead(env: LaneFollowEnv) -> None:
    """Guards the texture's orientation and its upload: the lane in front of the car is grey asphalt."""
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        patch = obs["image"][-SIZE // 4 :, SIZE // 3 : 2 * SIZE // 3].reshape(-1, 3).astype(int)
        red, green, blue = np.median(patch, axis=0)
        assert abs(green - red) < 12 and abs(green - blue) < 12, (seed, red, green, blue)


def test_steering_turns_the_wheels_and_the_car(env: LaneFollowEnv) -> None:
    env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(np.array([1.0, 0.6], np.float32))
    speed, yaw_rate, steer, throttle = obs["state"]
    assert steer == pytest.approx(MAX_STEER, abs=0.02)
    assert speed > 1.0 and yaw_rate > 0.2  # left steer turns the car left (counter-clockwise)
    assert throttle == pytest.approx(0.6)


def test_brakes_stop_but_never_reverse(env: LaneFollowEnv) -> None:
    env.reset(seed=0)
    for _ in range(25):
        obs, *_ = env.step(np.array([0.0, 1.0], np.float32))
    assert obs["state"][0] > 4.0
    speeds = []
    for _ in range(60):
        obs, *_ = env.step(np.array([0.0, -1.0], np.float32))
        speeds.append(obs["state"][0])
    assert min(speeds) > -0.05
    assert speeds[-1] < 0.3


def test_full_steer_leaves_the_road_and_terminates(env: LaneFollowEnv) -> None:
    env.reset(seed=3)
    for step in range(150):
        _, reward, terminated, truncated, info = env.step(np.array([-1.0, 0.8], np.float32))
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert reward < -OFFROAD_PENALTY / 2
    assert not info["is_success"]
    assert abs(info["lateral_offset"]) > 1.75  # beyond the road edge from the lane centre


def test_time_limit_truncates() -> None:
    env = LaneFollowEnv(image_size=SIZE, time_limit_s=1.0)
    env.reset(seed=0)
    for step in range(1, 11):
        _, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        assert not terminated
        assert truncated == (step == 10)
    assert not info["is_success"]
    env.close()


@pytest.mark.parametrize("seed", [0, 1_000_000, 1_000_001])
def test_expert_completes_the_route(env: LaneFollowEnv, seed: int) -> None:
    expert = env.make_expert()
    obs, _ = env.reset(seed=seed)
    expert.reset()
    total, steps, offsets, previous = 0.0, 0, [], np.zeros(2)
    while True:
        action = expert.act(obs)
        assert env.action_space.contains(action)
        assert np.abs(action - previous).max() <= 0.2  # smooth enough to imitate
        previous = action
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        steps += 1
        offsets.append(abs(info["lateral_offset"]))
        if terminated or truncated:
            break
    assert info["is_success"] and not terminated
    assert info["route_completion"] == 1.0
    assert 120 <= steps <= 250
    assert max(offsets) < 0.6
    assert total == pytest.approx(PROGRESS_REWARD * env.route_length, abs=0.15)


def test_registered_id_and_video_frames() -> None:
    env = make_env("imitlab/LaneFollow-v0", image_size=SIZE, render_mode="rgb_array")
    expert = make_expert(env)
    obs, _ = env.reset(seed=5)
    expert.reset()
    obs, *_ = env.step(expert.act(obs))
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a real picture, not a blank buffer
    env.close()


def test_rejects_unknown_render_mode() -> None:
    with pytest.raises(ValueError, match="render_mode"):
        LaneFollowEnv(image_size=SIZE, render_mode="human")


def test_close_is_idempotent() -> None:
    env = LaneFollowEnv(image_size=SIZE, render_mode="rgb_array")
    env.reset(seed=0)
    env.close()
    env.close()
