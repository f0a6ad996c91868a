"""What training tells while it runs: validation rollouts have a progress bar with successes so far, the learning
rate of every parameter group reaches TensorBoard, and a validation split that rounds to nothing is said."""

from __future__ import annotations

import math

import gymnasium as gym
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from imitlab.envs import make_env
from imitlab.evaluation.progress import RolloutBar
from imitlab.evaluation.rollout import ExpertAgent, run_lockstep
from imitlab.training.bc import TrainConfig, train

from conftest import TINY_ENV_ID, TINY_ENV_KWARGS


def test_rollout_bar_counts_the_episodes_successes_and_steps_of_a_lockstep_run(capsys):
    envs: list[gym.Env] = [make_env(TINY_ENV_ID, **TINY_ENV_KWARGS) for _ in range(2)]
    try:
        with RolloutBar(2, "validation rollouts") as bar:
            results = run_lockstep(envs, ExpertAgent(), [500_000, 500_001], progress=bar)
    finally:
        for env in envs:
            env.close()
    assert bar.done == 2 and bar.successes == sum(r.success for r in results)
    assert bar.steps == sum(r.length for r in results)
    assert f"success={bar.successes}/2" in capsys.readouterr().err


def test_learning_rates_reach_tensorboard_per_parameter_group(tiny_run):
    events = EventAccumulator(str(tiny_run / "tb"))
    events.Reload()
    assert {"lr/head", "lr/backbone"} <= set(events.Tags()["scalars"])
    config = TrainConfig(dataset="", out="")
    for tag, peak in (("lr/head", config.head_lr), ("lr/backbone", config.backbone_lr)):
        rates = [e.value for e in events.Scalars(tag)]
        steps = len(rates)
        # The cosine schedule, starting at the configured rate for step 1.
        assert math.isclose(rates[0], peak, rel_tol=1e-6) and rates == sorted(rates, reverse=True)
        assert math.isclose(rates[-1], peak * 0.5 * (1 + math.cos(math.pi * (steps - 1) / steps)), rel_tol=1e-5)


def test_training_shows_validation_rollouts_and_says_when_no_episode_is_held_out(tiny_demos, tmp_path, capsys):
    log = train(TrainConfig(dataset=str(tiny_demos), out=str(tmp_path / "run"), backbone="nature_cnn",
                            pretrained=False, epochs=1, eval_episodes=2, val_fraction=0.1, threads=1))
    printed = capsys.readouterr()
    assert "val_fraction 0.1 of 4 episodes rounds to no validation episode" in printed.out
    assert log["val_samples"] == 0
    assert "validation rollouts" in printed.err and "success=" in printed.err
