"""Town-v0: API contract, determinism, commands obeyed at a junction, lights, collisions, bad kwargs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from imitlab.envs import make_env, make_expert, time_limit_s
from imitlab.envs.car import HALF_LENGTH
from imitlab.envs.town.env import (INFRACTIONS, TIME_MARGIN_S, TIME_SPEED, TownConfigError, TownEnv,
                                   time_limit_bound_s)
from imitlab.envs.town.graph import DIRECTIONS, Town
from imitlab.envs.town.planner import COMMAND_NAMES, GO_STRAIGHT, TURN_LEFT, TURN_RIGHT, sample_route
from imitlab.envs.town.traffic import CYCLE_S, GREEN_S, RED, YELLOW, YELLOW_S

SIZE = 32
TOWN = 0


@pytest.fixture(scope="module")
def env() -> Iterator[TownEnv]:
    env = TownEnv(town=TOWN, traffic=0, image_size=SIZE, weather="clear_noon")
    yield env
    env.close()


def four_way_approach(town: Town) -> tuple[int, int]:
    """A lane (node, direction) that arrives at a 4-way junction from a 4-way or 3-way node."""
    for node, direction in town.lanes():
        target = int(town.neighbours[node, direction])
        if (town.neighbours[target] >= 0).all():
            return node, direction
    raise AssertionError("town has no 4-way junction")


def drive(env: TownEnv, options: dict | None = None, seed: int = 0, policy=None) -> tuple[dict, list[int]]:
    """Run one episode with the expert (or ``policy(obs)``); return the last info and the commands seen."""
    expert = env.make_expert()
    obs, info = env.reset(seed=seed, options=options)
    expert.reset()
    commands = [int(obs["command"])]
    done = False
    while not done:
        action = expert.act(obs) if policy is None else policy(obs)
        obs, _, terminated, truncated, info = env.step(action)
        commands.append(int(obs["command"]))
        done = terminated or truncated
    return info, commands


def test_spaces_and_observation(env: TownEnv) -> None:
    assert env.observation_space["command"] == gym.spaces.Discrete(len(COMMAND_NAMES))
    assert env.observation_space["image"].shape == (SIZE, SIZE, 3)
    assert env.observation_space["state"].shape == (4,)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert set(info) >= {"is_success", "route_completion", "command", "distance", *INFRACTIONS}
    assert all(info[name] == 0 for name in INFRACTIONS)
    assert set(TownEnv.METRICS) >= set(INFRACTIONS) | {"route_completion"}
    assert obs["image"].std() > 10  # a scene, not a blank frame


def test_gymnasium_and_sb3_checkers() -> None:
    env = TownEnv(town=TOWN, traffic=2, image_size=24, grid=3)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    env.close()


def test_registered_with_an_expert() -> None:
    env = make_env("imitlab/Town-v0", image_size=16, traffic=1, task="one_turn", grid=3, render_mode="rgb_array")
    obs, _ = env.reset(seed=3)
    expert = make_expert(env)
    expert.reset()
    assert env.action_space.contains(expert.act(obs))
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    env.close()


def test_same_seed_is_bit_identical() -> None:
    runs = []
    for _ in range(2):  # fresh instances (own GL contexts, own traffic) must agree
        env = TownEnv(town=TOWN, traffic=6, image_size=SIZE, weather="train")
        expert = env.make_expert()
        obs, _ = env.reset(seed=5)
        expert.reset()
        trace = []
        for _ in range(40):
            obs, reward, terminated, truncated, info = env.step(expert.act(obs))
            trace.append((obs["image"].copy(), obs["state"].copy(), int(obs["command"]), reward,
                          env.traffic.poses()[0].copy()))
        runs.append(trace)
        env.close()
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2:4] == b[2:4]
        np.testing.assert_array_equal(a[4], b[4])


def test_towns_and_seeds_differ(env: TownEnv) -> None:
    assert not np.allclose(Town.generate(0).nodes, Town.generate(1).nodes)
    routes = set()
    for seed in range(4):
        env.reset(seed=seed)
        routes.add(tuple(env.route.lanes))
    assert len(routes) > 1


def test_commands_send_the_expert_down_three_roads(env: TownEnv) -> None:
    """The same junction, reached on the same lane, left / straight / right: three different exits."""
    node, direction = four_way_approach(env.town)
    junction = int(env.town.neighbours[node, direction])
    ends = {}
    for out_dir, expected in (((direction + 1) % 4, TURN_LEFT), (direction, GO_STRAIGHT),
                              ((direction + 3) % 4, TURN_RIGHT)):
        env.lights.offsets[junction] = 0.0 if direction % 2 == 0 else CYCLE_S / 2  # green on arrival
        info, commands = drive(env, {"lanes": [[node, direction], [junction, out_dir]]})
        assert info["is_success"], info
        assert expected in commands and set(commands) <= {0, expected}
        assert sum(info[name] for name in INFRACTIONS) == 0
        heading = DIRECTIONS[out_dir]
        ends[out_dir] = env.car.xy
        offset = env.car.xy - env.town.nodes[junction]
        assert offset @ heading > 10.0  # well down the chosen street
    assert len({tuple(np.round(xy)) for xy in ends.values()}) == 3


def test_expert_stops_at_red_and_a_naive_driver_runs_it(env: TownEnv) -> None:
    node, direction = four_way_approach(env.town)
    junction = int(env.town.neighbours[node, direction])
    lanes = {"lanes": [[node, direction], [junction, direction]], "s_start": 2.0}
    # Our light turned red 0.5 s before the start (it stays red for most of the next 16 s).
    axis_shift = 0.0 if direction % 2 == 0 else CYCLE_S / 2
    env.lights.offsets[junction] = (axis_shift + GREEN_S + YELLOW_S + 0.5) % CYCLE_S
    assert env.lights.state(junction, direction, 0.0) == RED
    info, _ = drive(env, lanes)
    assert info["is_success"] and info["red_light"] == 0, info
    expert = env.make_expert()

    def full_throttle(obs: dict) -> np.ndarray:
        return np.array([expert.act(obs)[0], 0.6], dtype=np.float32)  # steer like the expert, never brake

    info, _ = drive(env, lanes, policy=full_throttle)
    assert info["red_light"] >= 1


def test_expert_holds_a_go_on_yellow_only_while_it_reaches_the_line_before_red(env: TownEnv) -> None:
    """A car that decided to go on a yellow and was held at the line (it yielded) stops for the rest of the
    yellow when it can no longer reach the line before the red, instead of starting late into the red."""
    node, direction = four_way_approach(env.town)
    junction = int(env.town.neighbours[node, direction])
    line = env.town.lane_length(node, direction)
    lanes = {"lanes": [[node, direction], [junction, (direction + 1) % 4]], "s_start": line - HALF_LENGTH - 0.6}
    axis_shift = 0.0 if direction % 2 == 0 else CYCLE_S / 2
    env.lights.offsets[junction] = (GREEN_S + YELLOW_S - 0.8 - axis_shift) % CYCLE_S  # 0.8 s of yellow left
    expert = env.make_expert()
    obs, info = env.reset(options=lanes)
    expert.reset()
    me = env.ego_mover()
    assert env.lights.state(junction, direction, 0.0) == YELLOW and me.junction.s_enter - line < 1.0
    expert._go_on_yellow = (me.junction, True)  # it had decided to go on this yellow
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        done = terminated or truncated
    assert info["is_success"] and info["red_light"] == 0, info


def test_perturbations_act_on_top_of_the_weather_and_are_undone() -> None:
    """``perturb`` as on the other envs: same route and start, other pixels or motion; nothing carries over to
    a clean episode, whether or not the weather changes between them."""
    from imitlab.envs.perturb import check_perturbable

    assert check_perturbable("imitlab/Town-v0", {"lighting": 2}) == {"lighting": 2}
    kwargs = {"town": TOWN, "traffic": 2, "image_size": SIZE, "weather": "train", "grid": 3, "task": "one_turn"}
    shifted, clean = TownEnv(**kwargs, perturb={"lighting": 4}), TownEnv(**kwargs)
    drawn = {"lighting": 4, "colours": 4, "camera_pose": 3, "noise": 2, "delay": 3}
    weathers = []
    for seed, perturb in ((0, drawn), (1, None), (2, drawn), (3, None)):
        obs, _ = shifted.reset(seed=seed, options={"perturb": perturb or {}})
        ref, _ = clean.reset(seed=seed)
        weathers.append(shifted._weather.name)
        assert shifted.route.lanes == clean.route.lanes and np.array_equal(obs["state"], ref["state"])
        if perturb:
            assert np.abs(obs["image"].astype(int) - ref["image"]).mean() > 5
            for _ in range(10):
                obs, *_ = shifted.step(np.array([0.0, 0.8], np.float32))
                ref, *_ = clean.step(np.array([0.0, 0.8], np.float32))
            assert not np.allclose(obs["state"], ref["state"])  # the delay holds the throttle back
        else:
            np.testing.assert_array_equal(obs["image"], ref["image"])
            weather = shifted._weather  # and the scene is this episode's weather, not the one before it
            assert np.allclose(shifted.model.light_diffuse[0], weather.sun)
            assert np.allclose(shifted.model.vis.headlight.ambient, weather.ambient)
    assert weathers[0] == weathers[1] and weathers[2] != weathers[3], weathers  # both paths were taken
    obs, _ = shifted.reset(seed=1)  # the constructor's perturbation applies when the options name none
    ref, _ = clean.reset(seed=1)
    assert np.abs(obs["image"].astype(int) - ref["image"]).mean() > 5
    shifted.close()
    clean.close()


def test_time_limit_is_known_before_the_first_episode() -> None:
    town = Town.generate(TOWN)
    rng = np.random.default_rng(0)
    for task in ("straight", "one_turn", "navigation"):
        bound = time_limit_bound_s(town, task)
        routes = [sample_route(town, task, rng) for _ in range(100)]
        assert max(TIME_MARGIN_S + (r.s_goal - r.s_start) / TIME_SPEED for r in routes) <= bound
    env = make_env("imitlab/Town-v0", image_size=16, task="one_turn", grid=3)
    assert time_limit_s(env) == time_limit_bound_s(env.unwrapped.town, "one_turn")  # what evaluation's workers read
    env.reset(seed=0)
    assert time_limit_s(env) <= time_limit_bound_s(env.unwrapped.town, "one_turn")
    env.close()


def test_kerb_and_vehicle_collisions_end_the_episode(env: TownEnv) -> None:
    for seed in range(3):  # full lock into the parked cars or the kerb across the street
        env.reset(seed=seed)
        for _ in range(80):
            _, _, terminated, _, info = env.step(np.array([1.0, 0.8], dtype=np.float32))
            if terminated:
                break
        assert terminated and info["collision_kerb"] + info["collision_static"] == 1 and not info["is_success"]
        assert info["opposite_lane"] == 1

    busy = TownEnv(town=TOWN, traffic=1, image_size=16)
    obs, _ = busy.reset(seed=2)
    route = busy.route
    ahead = route.s_start + 20.0  # park the traffic car in our lane, 20 m ahead
    busy.traffic.points[0, : len(route.road.points)] = route.road.points[: busy.traffic.points.shape[1]]
    busy.traffic.heading[0, : len(route.road.heading)] = route.road.heading[: busy.traffic.heading.shape[1]]
    busy.traffic.s[0], busy.traffic.desired[0] = ahead, 0.0
    expert = busy.make_expert()
    for _ in range(150):
        obs, _, terminated, _, info = busy.step(np.array([expert.act(obs)[0], 0.7], dtype=np.float32))
        if terminated:
            break
    busy.close()
    assert terminated and info["collision_vehicle"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weather": "monsoon"}, "unknown weather 'monsoon'"),
        ({"traffic": -1}, "traffic must be a non-negative"),
        ({"task": "one_turn", "grid": 2}, "impossible in town 0 (grid 2)"),
        ({"task": "parking"}, "unknown task 'parking'"),
    ],
)
def test_bad_kwargs_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(TownConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        TownEnv(image_size=16, **kwargs)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


def test_bad_kwargs_from_the_cli_are_one_line_and_exit_1(tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "imitlab"
    result = subprocess.run(
        [str(cli), "record", "--env", "imitlab/Town-v0", "--episodes", "1", "--out", str(tmp_path / "demos"),
         "--env-arg", "weather=monsoon"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imitlab: error:") and "monsoon" in lines[0], result.stderr


@pytest.mark.parametrize("arg", ["weather=monsoon", "traffic=-1", "grid=2 task=one_turn"])
def test_bad_kwargs_stop_an_evaluation_before_its_workers_start(arg: str, tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    from imitlab.cli import main

    env_args = [item for pair in arg.split() for item in ("--env-arg", pair)]
    monkeypatch.setattr(sys, "argv", ["imitlab", "eval", "expert", "--env", "imitlab/Town-v0", "--episodes", "1",
                                      "--out", str(tmp_path / "eval"), *env_args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(lines) == 1 and lines[0].startswith("imitlab: error:"), lines
    assert arg.split()[-1].split("=")[1] in lines[0] and "worker" not in lines[0]
    assert not (tmp_path / "eval").exists()


def test_recorded_town_demos_keep_the_command(tmp_path: Path) -> None:
    from imitlab.demos.dataset import DemoDataset, read_episode_file
    from imitlab.demos.recorder import record

    kwargs = {"image_size": 16, "traffic": 2, "task": "one_turn", "grid": 3, "weather": "clear_noon"}
    record("imitlab/Town-v0", tmp_path / "demos", episodes=1, noise_std=0.0, env_kwargs=kwargs, progress=False)
    dataset = DemoDataset(tmp_path / "demos")
    env = TownEnv(**kwargs)
    assert dataset.observation_space == env.observation_space
    env.close()
    episode = read_episode_file(dataset.episode_paths()[0])
    commands = episode.obs["command"]
    assert commands.shape == (len(episode.actions),) and np.issubdtype(commands.dtype, np.integer)
    assert set(np.unique(commands)) == {0, int(commands.max())} and commands.max() in (TURN_LEFT, TURN_RIGHT)
