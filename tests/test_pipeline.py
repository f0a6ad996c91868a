"""record -> train -> eval on real (tiny) runs, and the CLI's one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset
from imitlab.envs import make_env, make_expert
from imitlab.agents import resolve_agent
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.evaluation.evaluate import evaluate
from imitlab.policies import load_policy
from imitlab.quickstart import QuickstartConfig, run_quickstart

from conftest import TINY_ENV_ID, TINY_ENV_KWARGS
from test_cli_errors import one_error_line, run_cli


def test_recorded_episodes_carry_metadata_and_noise(tiny_demos):
    ds = DemoDataset(tiny_demos)
    assert ds.env_id == TINY_ENV_ID and ds.env_kwargs == TINY_ENV_KWARGS
    attrs = ds.episode_attrs()
    assert [a["seed"] for a in attrs] == [0, 1, 2, 3]
    assert all(a["source"] == "noisy_expert" and a["noise_std"] == 0.1 for a in attrs)
    episode = next(ds.episodes())
    assert episode.dones[-1] == 1 and episode.dones[:-1].sum() == 0
    assert not np.allclose(episode.actions, episode.executed_actions)


def test_episode_resimulates_from_its_seed_with_clean_expert_labels(tiny_demos):
    """Replaying the executed actions from the seed reproduces every frame, and each label is the expert's
    action in that state (DART: noise on execution only)."""
    episode = next(DemoDataset(tiny_demos).episodes())
    env = make_env(TINY_ENV_ID, **TINY_ENV_KWARGS)
    expert = make_expert(env)
    obs, _ = env.reset(seed=episode.attrs["seed"])
    expert.reset()
    for t in range(len(episode)):
        np.testing.assert_array_equal(obs["image"], episode.obs["image"][t])
        np.testing.assert_allclose(expert.act(obs), episode.actions[t], atol=1e-6)
        obs, *_ = env.step(episode.executed_actions[t])
    env.close()


def test_training_keeps_best_by_rollout_and_records_provenance(tiny_run):
    log = json.loads((tiny_run / "train_log.json").read_text())
    assert len(log["epochs"]) == 2 and "val_loss" in log["epochs"][0]
    assert "success_rate" in log["best"]["rollout"]
    policy, metadata = load_policy(tiny_run / "best")
    assert metadata["train_seeds"] == [0, 1, 2, 3]
    assert metadata["env_id"] == TINY_ENV_ID and metadata["env_kwargs"] == TINY_ENV_KWARGS
    assert (tiny_run / "last" / "policy.safetensors").is_file()


def test_evaluation_refuses_demonstration_seeds(tiny_run):
    with pytest.raises(ImitlabError, match="overlap"):
        evaluate(resolve_agent(str(tiny_run)), [2, 3], progress=False)


def test_expert_evaluation_writes_videos(tmp_path):
    summary = evaluate(resolve_agent("expert", TINY_ENV_ID, TINY_ENV_KWARGS), [HELD_OUT_SEED_START], workers=1,
                       video_dir=tmp_path, videos=1, progress=False)
    assert summary.episodes[0].success
    video = Path(summary.episodes[0].video)
    assert video.parent == tmp_path and video.stat().st_size > 1000


def assert_one_line_error(monkeypatch, capsys, needle: str, *args: str) -> None:
    """``imitlab ARGS`` (in this process, through the console entry point) fails with exit 1 and one error line
    naming ``needle``; tests/test_deploy_gate.py runs ``python -m imitlab.cli`` itself."""
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 1 and needle in one_error_line(err)


def test_cli_missing_dataset(tmp_path, monkeypatch, capsys):
    assert_one_line_error(monkeypatch, capsys, "dataset not found",
                          "train", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))


def test_cli_unknown_env_id(tmp_path, monkeypatch, capsys):
    assert_one_line_error(monkeypatch, capsys, "unknown env id",
                          "record", "--env", "imitlab/Flying-v9", "--out", str(tmp_path / "d"))


def test_cli_truncated_checkpoint(tiny_run, tmp_path, monkeypatch, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run / "best", broken)
    weights = broken / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert_one_line_error(monkeypatch, capsys, "policy.safetensors", "eval", str(broken), "--episodes", "1")


def test_quickstart_runs_end_to_end_at_tiny_scale(tmp_path):
    report = run_quickstart(QuickstartConfig(
        out=tmp_path / "qs", env_kwargs=TINY_ENV_KWARGS, demo_episodes=2,
        eval_episodes=2, videos=1, train_overrides={"epochs": 1, "eval_episodes": 1, "progress": False}))
    text = report.read_text()
    assert "`" + str(tmp_path / "qs" / "lite0") + "`" in text and "nature_cnn" in text
    assert "Paired comparison" in text
    paired = json.loads((tmp_path / "qs" / "report.json").read_text())
    assert [r["agent"] for r in paired["reports"]] == [str(tmp_path / "qs" / n) for n in ("lite0", "nature_cnn")]
    assert (tmp_path / "qs" / "lite0" / "eval" / "report.html").is_file()


def test_init_policy_of_another_backbone_is_refused(tiny_demos, tiny_run, tmp_path):
    from imitlab.training.bc import TrainConfig, train

    with pytest.raises(ImitlabError, match="cannot initialise a lite0 policy"):
        train(TrainConfig(dataset=str(tiny_demos), out=str(tmp_path / "r"), backbone="lite0", epochs=1,
                          eval_episodes=1, init_policy=str(tiny_run / "best"), progress=False))


def test_cli_unknown_loader_mode(tiny_demos, tmp_path, monkeypatch, capsys):
    assert_one_line_error(monkeypatch, capsys, "loader mode must be auto, memory or chunked",
                          "train", str(tiny_demos), "--out", str(tmp_path / "run"), "--loader-mode", "disk")
