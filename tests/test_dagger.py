"""DAgger: policy-driven episodes labelled by the expert are added (to a new folder) and trained on."""

from __future__ import annotations

import json

import numpy as np

from imitlab.demos.dataset import DemoDataset
from imitlab.core.seeds import DAGGER_SEED_START
from imitlab.envs import make_env, make_expert
from imitlab.training.bc import TrainConfig
from imitlab.training.dagger import DaggerConfig, run_dagger

from conftest import TINY_ENV_ID, TINY_ENV_KWARGS


def test_one_round_aggregates_expert_labelled_policy_rollouts(tiny_demos, tmp_path):
    before = [p.stat().st_mtime_ns for p in DemoDataset(tiny_demos).episode_paths()]
    out = tmp_path / "dagger"
    log = run_dagger(DaggerConfig(
        TrainConfig(dataset=str(tiny_demos), out=str(out), backbone="nature_cnn", pretrained=False, epochs=1,
                    eval_episodes=1, progress=False),
        rounds=1, episodes=2, beta=0.0, epochs=2))

    collected = DemoDataset(out / "dagger_demos")
    attrs = collected.episode_attrs()
    assert [a["seed"] for a in attrs] == [DAGGER_SEED_START, DAGGER_SEED_START + 1]
    assert all(a["source"] == "dagger" for a in attrs)
    # beta = 0: the policy drove; every label is what the expert would do in the visited state.
    episode = next(collected.episodes())
    env = make_env(TINY_ENV_ID, **TINY_ENV_KWARGS)
    expert = make_expert(env)
    obs, _ = env.reset(seed=episode.attrs["seed"])
    expert.reset()
    for t in range(len(episode)):
        np.testing.assert_allclose(expert.act(obs), episode.actions[t], atol=1e-6)
        obs, *_ = env.step(episode.executed_actions[t])
    env.close()
    assert not np.allclose(episode.actions, episode.executed_actions)

    assert [p.stat().st_mtime_ns for p in DemoDataset(tiny_demos).episode_paths()] == before
    round0 = json.loads((out / "round_0" / "train_log.json").read_text())
    round1 = json.loads((out / "round_1" / "train_log.json").read_text())
    assert [e["epoch"] for e in round0["epochs"]] == [1]
    assert [e["epoch"] for e in round1["epochs"]] == [1, 2]  # round_epochs
    assert round1["train_samples"] > round0["train_samples"]
    assert (out / "best" / "policy.safetensors").is_file()
