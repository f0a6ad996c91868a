"""Fault injection: an evaluation survives workers that segfault, raise or hang, counts those episodes as errors
(never failures), keeps every other result, writes a partial report when stopped, and never overwrites silently."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imitlab.cli import app
from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.envs import make_env
from imitlab.evaluation.evaluate import EvaluationInterrupted, evaluate_to_folder
from imitlab.evaluation.agent_spec import AgentSpec
from imitlab.evaluation.rollout import ExpertAgent, PolicyAgent, run_lockstep

from conftest import TINY_ENV_ID, TINY_ENV_KWARGS
from fault_agents import FaultyExpertFactory

#: A 2 s time limit (20 control steps) keeps each sound episode to a fraction of a second.
FAST_ENV_KWARGS = {**TINY_ENV_KWARGS, "time_limit_s": 2.0}
SEEDS = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + 6))
CRASH, RAISE, HANG = SEEDS[1], SEEDS[2], SEEDS[4]


def _spec(faults: dict[int, str]) -> AgentSpec:
    return AgentSpec("custom", "faulty expert", FaultyExpertFactory(faults), TINY_ENV_ID, FAST_ENV_KWARGS)


def _outcome(episode: dict) -> dict:
    return {k: v for k, v in episode.items() if k not in ("inference_ms", "video")}


def test_segfault_exception_and_hang_are_three_errors_and_every_other_episode_is_kept(tmp_path: Path):
    faults = {CRASH: "segfault", RAISE: "raise", HANG: "hang"}
    summary, paths = evaluate_to_folder(_spec(faults), SEEDS, tmp_path / "report", workers=2, episode_timeout=5.0,
                                        progress=False)
    data = json.loads(paths["json"].read_text())
    assert (data["episodes"], data["errors"], data["scored_episodes"]) == (6, 3, 3)
    assert data["errors_by_kind"] == {"crash": 1, "exception": 1, "timeout": 1}
    reasons = {e["seed"]: e["reason"] for e in data["error_episodes"]}
    assert "SIGSEGV" in reasons[CRASH]
    assert "RuntimeError: injected fault" in reasons[RAISE]
    assert "5 s timeout" in reasons[HANG]
    # Errors are not failures: the success rate is over the scored episodes only.
    assert data["failures"] + data["successes"] == 3
    assert data["success_rate"] == data["successes"] / 3
    # Every other episode is exactly what a fault-free run of the same seeds gives.
    sound = [s for s in SEEDS if s not in faults]
    env = make_env(TINY_ENV_ID, **FAST_ENV_KWARGS)
    expected = [run_lockstep([env], ExpertAgent(), [s], record_actions=True)[0].to_json() for s in sound]
    env.close()
    kept = [e for e in data["per_episode"] if e["outcome"] != "error"]
    assert [_outcome(e) for e in kept] == [_outcome(e) for e in expected]
    markdown = paths["markdown"].read_text()
    assert "| errors (not scored) | 3 |" in markdown and "injected fault" in markdown
    assert "<h2>Errors</h2>" in paths["html"].read_text()
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.html", "report.json", "report.md"]


def test_sigterm_writes_a_partial_report_of_the_finished_episodes(tmp_path: Path):
    out = tmp_path / "report"
    with pytest.raises(EvaluationInterrupted) as stopped:
        evaluate_to_folder(_spec({SEEDS[2]: "sigterm_parent"}), SEEDS[:4], out, workers=1, progress=False)
    assert [e.seed for e in stopped.value.summary.episodes] == SEEDS[:2]
    data = json.loads((out / "report.json").read_text())
    assert data["interrupted"] and data["seeds_not_run"] == SEEDS[2:4]
    assert [e["seed"] for e in data["per_episode"]] == SEEDS[:2]
    assert "Interrupted" in (out / "report.md").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again


class _NanAgent(PolicyAgent):
    def __init__(self) -> None:
        super().__init__(lambda obs: np.full((len(obs["state"]), 2), np.nan, np.float32))


def test_nan_actions_make_a_sim_unstable_error_not_a_failure():
    env = make_env(TINY_ENV_ID, **FAST_ENV_KWARGS)
    result = run_lockstep([env], _NanAgent(), [SEEDS[0]])[0]
    env.close()
    assert (result.outcome, result.error_kind, result.length) == ("error", "sim_unstable", 1)
    assert "non-finite action" in result.error


def _eval_cli(*args: str):
    return CliRunner().invoke(app, ["eval", "expert", "--env", TINY_ENV_ID, "--episodes", "1", *args])


def test_eval_out_that_is_a_file_fails_before_evaluating(tmp_path: Path):
    target = tmp_path / "report.md"
    target.write_text("keep me")
    result = _eval_cli("--out", str(target))
    assert isinstance(result.exception, ImitlabError) and "is a file" in str(result.exception)
    assert target.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no staging folder left behind


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_non_empty_out_is_refused_without_overwrite(tmp_path: Path, command: str):
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "report.json").write_text("{}")
    args = ["eval", "expert", "--env", TINY_ENV_ID] if command == "eval" else ["compare", "expert", "expert", "--env",
                                                                               TINY_ENV_ID]
    result = CliRunner().invoke(app, [*args, "--episodes", "1", "--out", str(out)])
    assert isinstance(result.exception, ImitlabError) and "--overwrite" in str(result.exception)
    assert (out / "report.json").read_text() == "{}"


def test_deploy_gate_counts_an_error_as_a_failure_and_names_it():
    from imitlab.deploy.bundle import _outcome, _result
    from imitlab.evaluation.evaluate import EvalSummary
    from imitlab.evaluation.rollout import EpisodeResult

    scored = EpisodeResult(seed=1, success=True, episode_return=1.0, length=5, terminated=False, metrics={},
                           inference_ms=1.0)
    summary = EvalSummary("a", TINY_ENV_ID, {}, [scored, EpisodeResult.errored(2, "crash", "killed by SIGSEGV")])
    assert summary.to_json()["success_rate"] == 1.0  # the report: errors are not scored
    gate = _result(summary, "report.html")
    assert (gate["success_rate"], gate["errors"]) == (0.5, 1)  # the gate: an error weighs as a failure
    assert "success 1/2" in _outcome(summary) and "seed 2: crash: killed by SIGSEGV" in _outcome(summary)
