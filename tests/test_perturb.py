"""Perturbations (envs/perturb.py): every one changes what it should, from the seed alone, and nothing else."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset, read_episode_file
from imitlab.demos.play import play
from imitlab.demos.recorder import record
from imitlab.envs import make_env
from imitlab.envs.perturb import DYNAMICS, PERTURBATIONS, VISUAL, parse_names, parse_perturb, random_severities

PUSH = ("imitlab/Push-v0", {"image_size": 48})
DRIVE = ("imitlab/LaneFollow-v0", {"image_size": 48, "route_length": 40.0})


@pytest.fixture(scope="module")
def push_env():
    env = make_env(PUSH[0], **PUSH[1])
    yield env
    env.close()


@pytest.fixture(scope="module")
def drive_env():
    env = make_env(DRIVE[0], **DRIVE[1])
    yield env
    env.close()


@pytest.mark.parametrize("spec, message", [
    ({"fog": 2}, "unknown perturbation 'fog'"),
    ({"lighting": 0}, "severity must be an integer from 1 to 5, got 0"),
    ({"lighting": 6}, "got 6"),
    ({"noise": "3"}, "got '3'"),
    ({"noise": True}, "got True"),
    (["lighting"], "perturb must map perturbation names"),
])
def test_bad_perturbation_is_one_clear_error(spec, message):
    with pytest.raises(ImitlabError, match=message):
        parse_perturb(spec)
    with pytest.raises(ImitlabError, match=message):
        make_env(PUSH[0], **PUSH[1], perturb=spec)


def test_names_expand_groups_and_severities_come_from_the_seed():
    assert parse_names("visual") == list(VISUAL) and parse_names(["dynamics", "delay"]) == list(DYNAMICS)
    with pytest.raises(ImitlabError, match="unknown perturbation 'glare'"):
        parse_names("lighting,glare")
    draws = [random_severities(["lighting", "colours"], seed) for seed in range(40)]
    assert draws == [random_severities(["lighting", "colours"], seed) for seed in range(40)]
    assert {s for d in draws for s in d.values()} == {1, 2, 3, 4, 5}  # 0 (off) is left out of the dict


def _rollout(env, seed, options=None, steps=8, action=None):
    obs, _ = env.reset(seed=seed, options=options)
    frames, states = [obs["image"]], [obs["state"]]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        a = action if action is not None else rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, *_ = env.step(a)
        frames.append(obs["image"])
        states.append(obs["state"])
    return np.stack(frames), np.stack(states)


@pytest.mark.parametrize("name", list(VISUAL))
def test_visual_perturbation_changes_pixels_not_the_scene_and_is_undone(push_env, name):
    clean_frames, clean_states = _rollout(push_env, 7)
    frames, states = _rollout(push_env, 7, {"perturb": {name: 4}})
    assert np.abs(frames.astype(int) - clean_frames).mean() > 0.5, name
    np.testing.assert_array_equal(states, clean_states)  # same episode, same physics: only the view changed
    again, _ = _rollout(push_env, 7, {"perturb": {name: 4}})
    np.testing.assert_array_equal(again, frames)  # a function of the seed
    restored, _ = _rollout(push_env, 7)
    np.testing.assert_array_equal(restored, clean_frames)  # the pristine model came back


@pytest.mark.parametrize("name", list(DYNAMICS))
def test_dynamics_perturbation_changes_motion_not_the_start(drive_env, name):
    push = np.array([0.4, 1.0], np.float32)
    clean_frames, clean_states = _rollout(drive_env, 3, action=push, steps=12)
    frames, states = _rollout(drive_env, 3, {"perturb": {name: 5}}, action=push, steps=12)
    np.testing.assert_array_equal(frames[0], clean_frames[0])
    assert np.abs(states[1:] - clean_states[1:]).max() > 1e-3, name
    again, again_states = _rollout(drive_env, 3, {"perturb": {name: 5}}, action=push, steps=12)
    np.testing.assert_array_equal(again_states, states)


def test_constructor_kwarg_applies_every_episode_and_reset_options_override_it():
    env = make_env(PUSH[0], **PUSH[1], perturb={"noise": 2})
    try:
        clean = make_env(PUSH[0], **PUSH[1])
        base = clean.reset(seed=1)[0]["image"]
        noisy1 = env.reset(seed=1)[0]["image"]
        noisy2 = env.reset(seed=2)[0]["image"]
        assert not np.array_equal(noisy1, base) and not np.array_equal(noisy2, clean.reset(seed=2)[0]["image"])
        np.testing.assert_array_equal(env.reset(seed=1, options={"perturb": {}})[0]["image"], base)
        clean.close()
    finally:
        env.close()


def test_delay_holds_actions_back(push_env):
    push_env.reset(seed=0, options={"perturb": {"delay": 5}})  # mean 2 steps late
    first = np.array([1.0, 0.0, 0.0, 0.0])
    applied = [push_env.unwrapped.perturber.act(first * k) for k in (1, 2, 3, 4)]
    np.testing.assert_array_equal(applied[0], np.zeros(4))
    np.testing.assert_array_equal(applied[2], first)
    np.testing.assert_array_equal(applied[3], first * 2)


def test_randomized_recording_stores_its_perturbations_and_resimulates(tmp_path):
    out = tmp_path / "dr"
    record("imitlab/Reach-v0", out, episodes=2, env_kwargs={"image_size": 48}, progress=False,
           randomize=["lighting", "colours", "camera_pose"])
    dataset = DemoDataset(out)
    assert "perturb" not in dataset.env_kwargs  # the header stays clean: evaluation defaults to no shift
    stored = [read_episode_file(p).attrs["perturb"] for p in dataset.episode_paths()]
    assert stored == [random_severities(["lighting", "colours", "camera_pose"], s) for s in (0, 1)]
    results = play(dataset, [], tmp_path / "videos", resimulate=True)
    assert [r.diverged_at for r in results] == [None, None]


def test_cli_bad_perturbation_is_one_line_and_exit_1(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from imitlab.cli import main; main()", "eval", "expert", "--env",
                           "imitlab/Reach-v0", "--episodes", "1", "--out", str(tmp_path / "e"),
                           "--env-arg", 'perturb={"lighting": 9}'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["imitlab: error: perturbation 'lighting': severity must be an integer from 1 to 5, got 9"]


def test_every_perturbation_is_described():
    assert set(PERTURBATIONS) == set(VISUAL) | set(DYNAMICS) and all(PERTURBATIONS.values())


def test_an_env_without_perturbations_is_refused_in_one_line(monkeypatch):
    import gymnasium as gym

    from imitlab.envs.perturb import check_perturbable

    class Plain(gym.Env):
        def __init__(self, image_size: int = 8):
            pass

    assert check_perturbable(PUSH[0], {"noise": 1}) == {"noise": 1}
    monkeypatch.setattr("imitlab.envs.env_class", lambda env_id: Plain)
    assert check_perturbable("imitlab/Plain-v0", None) == {}
    with pytest.raises(ImitlabError, match="imitlab/Plain-v0 does not take perturbations"):
        check_perturbable("imitlab/Plain-v0", {"noise": 1})
