"""Parallel evaluation: per-seed results independent of the worker count, best/worst videos, time to success,
and the reports `imitlab eval` writes (JSON, Markdown, self-contained HTML)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from typer.testing import CliRunner

from imitlab.cli import app
from imitlab.core.errors import ImitlabError
from imitlab.agents import resolve_agent
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.evaluation.evaluate import evaluate, pick_video_seeds
from imitlab.evaluation.html_report import html_report
from imitlab.evaluation.rollout import EpisodeResult, PolicyAgent, run_lockstep

SEEDS = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + 4))


def _comparable(episode: dict[str, Any]) -> dict[str, Any]:
    """Everything an episode's outcome consists of (timing and the video file are not outcomes)."""
    return {k: v for k, v in episode.items() if k not in ("inference_ms", "video")}


@pytest.fixture(scope="module")
def cli_report(tiny_run: Path, tmp_path_factory) -> Path:
    """`imitlab eval` with 2 workers and 2 videos; returns the report folder."""
    out = tmp_path_factory.mktemp("eval") / "report"
    result = CliRunner().invoke(app, ["eval", str(tiny_run), "--episodes", str(len(SEEDS)), "--workers", "2",
                                      "--videos", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_per_seed_results_do_not_depend_on_worker_count(tiny_run: Path, cli_report: Path):
    two_workers = json.loads((cli_report / "report.json").read_text())["per_episode"]
    one_worker = evaluate(resolve_agent(str(tiny_run)), SEEDS, workers=1, progress=False).to_json()["per_episode"]
    assert [e["seed"] for e in two_workers] == SEEDS
    assert [_comparable(e) for e in two_workers] == [_comparable(e) for e in one_worker]
    assert all(e["actions"] for e in one_worker)  # the comparison covers every action of every episode


def test_eval_writes_json_markdown_and_self_contained_html(cli_report: Path):
    data = json.loads((cli_report / "report.json").read_text())
    filmed = [e for e in data["per_episode"] if e["video"]]
    assert len(filmed) == 2
    for episode in filmed:  # paths relative to the report folder, so the folder can move
        assert not Path(episode["video"]).is_absolute()
        assert (cli_report / episode["video"]).stat().st_size > 0
    assert data["policy"]["kind"] == "policy"
    assert data["policy"]["train_config"]["backbone"] == "nature_cnn"
    assert data["policy"]["dataset"]["episodes"] == 4
    page = (cli_report / "report.html").read_text()
    assert page.count("data:video/mp4;base64,") == 2
    assert page.count("data:image/png;base64,") == 3
    # Offline: nothing is fetched, every src/href is inline data.
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []
    assert "nature_cnn" in page and "Demonstrations" in page
    assert "mp4" in (cli_report / "report.md").read_text()


def _result(seed: int, success: bool, ret: float) -> EpisodeResult:
    return EpisodeResult(seed=seed, success=success, episode_return=ret, length=10, terminated=not success,
                         metrics={}, inference_ms=1.0)


def test_video_seeds_alternate_best_and_worst_so_both_outcomes_are_filmed():
    results = [_result(1, True, 5.0), _result(2, True, 9.0), _result(3, False, -1.0), _result(4, False, 3.0),
               _result(5, True, 7.0)]
    assert pick_video_seeds(results, 2) == [2, 3]  # best success, worst failure
    assert pick_video_seeds(results, 4) == [2, 3, 5, 4]
    assert sorted(pick_video_seeds(results, 10)) == [1, 2, 3, 4, 5]
    assert pick_video_seeds(results, 0) == []
    assert pick_video_seeds([_result(1, True, 1.0)], 2) == [1]


class _LateSuccessEnv(gym.Env):
    """Succeeds from step 3 on but only ends (truncated) at step 5: time to success must be 3, not 5."""

    metadata = {"render_fps": 10}
    observation_space = spaces.Dict({"image": spaces.Box(0, 255, (4, 4, 3), np.uint8),
                                     "state": spaces.Box(-1, 1, (1,), np.float32)})
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 5, {"is_success": self.t >= 3}

    def _obs(self):
        return {"image": np.zeros((4, 4, 3), np.uint8), "state": np.zeros(1, np.float32)}


def test_time_to_success_is_the_first_successful_step():
    agent = PolicyAgent(lambda obs: np.zeros((len(obs["state"]), 1), np.float32))
    result = run_lockstep([_LateSuccessEnv()], agent, [0])[0]
    assert (result.success, result.length, result.time_to_success) == (True, 5, 3)


def test_summary_reports_time_to_success_and_failed_terminations():
    from imitlab.evaluation.evaluate import EvalSummary

    episodes = [_result(1, True, 1.0), _result(2, False, 0.0)]
    episodes[0].time_to_success = 7
    data = EvalSummary("a", "imitlab/LaneFollow-v0", {}, episodes).to_json()
    assert data["mean_time_to_success"] == 7.0
    assert data["terminated_episodes"] == 1
    assert data["success_ci95"][0] < 0.5 < data["success_ci95"][1]


def test_html_report_renders_without_videos_or_provenance():
    from imitlab.evaluation.evaluate import EvalSummary

    episodes = [_result(1, True, 1.0), _result(2, False, 0.0)]
    page = html_report(EvalSummary("expert", "imitlab/LaneFollow-v0", {}, episodes,
                                   policy={"kind": "expert", "path": None}).to_json())
    assert "No videos were recorded" in page and "<script" not in page


def test_evaluate_rejects_repeated_seeds():
    with pytest.raises(ImitlabError, match="distinct"):
        evaluate(resolve_agent("expert", "imitlab/LaneFollow-v0"), [5, 5], progress=False)
