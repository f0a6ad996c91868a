"""Detour-v0, v1 and v2: seeded layout and hidden coin, the expert passes on the coin's side, the average of both sides
hits the barrier (why the task is multimodal), on v1 even a policy that averages only a moment longer than the
expert before committing does, v2 delays every action by two steps and its expert plans through them, and bad
arguments are one line."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from imitlab.envs import make_env
from imitlab.envs.detour import MIN_ROUTE_LENGTH, DetourEnv, DetourV1Env, DetourV2Env
from imitlab.envs.detour_expert import DetourExpert

from test_cli_errors import one_error_line, run_cli

SIZE = 16  # the smallest camera: these tests are about geometry, not pixels


@pytest.fixture(scope="module")
def env() -> Iterator[DetourEnv]:
    env = DetourEnv(image_size=SIZE)
    yield env
    env.close()


def drive(env: DetourEnv, seed: int, act) -> tuple[dict, float]:
    """One episode under ``act(obs)``: the last info and the largest offset from the centre-line, signed."""
    obs, info = env.reset(seed=seed)
    widest = 0.0
    while True:
        obs, _, terminated, truncated, info = env.step(act(obs))
        offset = info["lateral_offset"] + env.driving_offset  # info measures from the episode's approach line
        if abs(offset) > abs(widest):
            widest = offset
        if terminated or truncated:
            return info, widest


def test_same_seed_same_layout_and_frames(env: DetourEnv) -> None:
    actions = np.random.default_rng(0).uniform(-0.3, 1.0, (10, 2)).astype(np.float32)
    other = DetourEnv(image_size=SIZE)
    try:
        for instance in (env, other):
            instance.reset(seed=3)
        assert (env.obstacle_s, env.pass_side) == (other.obstacle_s, other.pass_side)
        for action in actions:
            obs_a, reward_a, *_ = env.step(action)
            obs_b, reward_b, *_ = other.step(action)
            np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
            assert reward_a == reward_b
    finally:
        other.close()
    sides, lines = set(), []
    for seed in range(12):
        env.reset(seed=seed)
        sides.add(env.pass_side)
        lines.append(env.driving_offset)
    assert sides == {-1.0, 1.0} and np.ptp(lines) > 0.8  # both sides, from a spread of approach lines


def test_expert_passes_on_the_hidden_side(env: DetourEnv) -> None:
    expert = DetourExpert(env)
    seeds = {}
    for seed in range(20):  # the first two seeds of each side
        env.reset(seed=seed)
        if len([s for s in seeds.values() if s == env.pass_side]) < 2:
            seeds[seed] = env.pass_side
    assert sorted(seeds.values()) == [-1.0, -1.0, 1.0, 1.0]
    for seed, side in seeds.items():
        expert.reset()
        info, widest = drive(env, seed, expert.act)
        assert info["is_success"] and not info["collision"], (seed, info)
        assert np.sign(widest) == side and abs(widest) > 2.0


def averaging(env: DetourEnv, wait: int | None):
    """A policy that acts on the mean of the left and the right expert's actions until ``wait`` steps after they
    first differ (never: None), then as the expert of the episode's side: MSE's late commitment, drawn sharp."""
    left, right = DetourExpert(env), DetourExpert(env)  # each keeps its own throttle ramp
    apart: list[int] = []

    def act(obs: dict) -> np.ndarray:
        coin = env.pass_side
        env.pass_side = 1.0
        a = left.act(obs)
        env.pass_side = -1.0
        b = right.act(obs)
        env.pass_side = coin
        if apart or abs(a[0] - b[0]) > 0.05:
            apart.append(len(apart))
        if wait is not None and len(apart) > wait:
            return a if coin > 0 else b
        return (a + b) / 2

    return act


@pytest.mark.parametrize("env_class", [DetourEnv, DetourV1Env, DetourV2Env])
def test_the_average_of_both_sides_hits_the_barrier(env_class) -> None:
    env = env_class(image_size=SIZE)
    try:
        for seed in (0, 1):
            info, _ = drive(env, seed, averaging(env, None))
            assert info["collision"] and not info["is_success"]
            assert 0.2 < info["route_completion"] < 0.7  # stopped at the barrier, not elsewhere
    finally:
        env.close()


def test_on_v1_the_expert_passes_and_committing_a_moment_later_hits_the_barrier() -> None:
    """v1's car keeps the centre-line and its expert swerves late and tightly: following it 0.1 s late still
    passes, 0.5 s late does not (v0 leaves room for that)."""
    env = DetourV1Env(image_size=SIZE)
    try:
        for seed in (2, 3):
            expert = DetourExpert(env)
            expert.reset()
            info, widest = drive(env, seed, expert.act)
            assert info["is_success"] and abs(widest) > 2.0 and env.driving_offset == 0.0, (seed, info)
            info, _ = drive(env, seed, averaging(env, 1))
            assert info["is_success"], (seed, info)
            info, _ = drive(env, seed, averaging(env, 5))
            assert info["collision"] and not info["is_success"], (seed, info)
        v0 = DetourEnv(image_size=SIZE)
        info, _ = drive(v0, 2, averaging(v0, 5))
        v0.close()
        assert info["is_success"]
    finally:
        env.close()


def test_on_v2_an_action_applies_two_steps_later_and_the_expert_plans_through_the_pending_ones() -> None:
    """v2 is v1 with a 0.2 s actuator latency: its states under actions A are v1's under two zero actions then A.
    The expert, which runs the simulation ahead through the pending actions to plan, leaves it as it was, and
    passes on either side."""
    v1, v2 = DetourV1Env(image_size=SIZE), DetourV2Env(image_size=SIZE)
    try:
        actions = [np.array([0.6 * np.sin(k / 3), 0.5], np.float32) for k in range(12)]
        v1.reset(seed=4)
        v2.reset(seed=4)
        late = [v1.step(a)[0]["state"] for a in [np.zeros(2, np.float32)] * 2 + actions[:-2]]
        assert np.array_equal(np.stack(late), np.stack([v2.step(a)[0]["state"] for a in actions]))

        for seed in (2, 3):
            expert = DetourExpert(v2)
            expert.reset()
            obs, _ = v2.reset(seed=seed)
            for _ in range(5):
                obs = v2.step(np.array([0.3, 0.8], np.float32))[0]
            before = (v2.data.qpos.copy(), v2.data.qvel.copy(), v2.data.qacc_warmstart.copy(), v2.car.throttle)
            expert.act(obs)
            after = (v2.data.qpos, v2.data.qvel, v2.data.qacc_warmstart, v2.car.throttle)
            assert all(np.array_equal(b, a) for b, a in zip(before, after))
            expert.reset()
            info, widest = drive(v2, seed, expert.act)
            assert info["is_success"] and np.sign(widest) == v2.pass_side and abs(widest) > 2.0, (seed, info)
    finally:
        v1.close()
        v2.close()


def test_metrics_name_the_collision() -> None:
    assert DetourEnv.METRICS["collision"] == "last"
    env = make_env("imitlab/Detour-v0", image_size=SIZE)
    _, info = env.reset(seed=0)
    assert info["collision"] is False and abs(info["lateral_offset"]) <= 0.31  # starts near its approach line
    env.close()


@pytest.mark.parametrize("arg, message", [
    ("route_length=40", f"route_length=40 must be at least {MIN_ROUTE_LENGTH:g} m"),
    ("barrier_width=3.5", "barrier_width=3.5 must be from 0.5 to 2.9 m"),
])
def test_bad_layout_arguments_are_one_line(tmp_path, monkeypatch, capsys, arg, message) -> None:
    out = tmp_path / "demos"
    code, _, err = run_cli(monkeypatch, capsys, "record", "--env", "imitlab/Detour-v0", "--episodes", "1",
                           "--out", str(out), "--env-arg", arg)
    assert code == 1 and message in one_error_line(err)
    assert not out.exists()


def test_a_wider_barrier_is_what_the_car_hits() -> None:
    env = DetourEnv(image_size=SIZE, barrier_width=2.6)
    try:
        env.reset(seed=0)
        corners = env._obstacle_corners
        assert np.linalg.norm(corners[0] - corners[1]) == pytest.approx(2.6)  # across the road
        expert = DetourExpert(env)
        expert.reset()
        info, widest = drive(env, 0, expert.act)
        assert info["is_success"] and abs(widest) > 2.4
    finally:
        env.close()
