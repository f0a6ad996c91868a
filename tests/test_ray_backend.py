"""The Ray backend (``--backend ray``) on a local 2-CPU Ray instance: a Ray worker killed mid-recording costs no
episode and every episode is the single-process one of its seed; evaluation gives the local per-seed results."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.envs import make_env
from imitlab.evaluation.rollout import ExpertAgent, run_lockstep

from conftest import TINY_ENV_ID, TINY_ENV_KWARGS
from test_cli_errors import run_cli
from test_parallel_recording import TINY_NOISE, assert_same_episodes, record_killing_one_worker

SEEDS = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + 3))


def busy_ray_workers() -> list[int]:
    """Processes of Ray actors running an episode (Ray titles them ``ray::<class>.<method>``)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::_RunnerActor.run"):
            found.append(int(pid))
    return found


def test_a_ray_worker_killed_mid_recording_loses_no_episode(ray_local, tiny_demos, tmp_path):
    def kill_a_worker() -> bool:
        busy = busy_ray_workers()
        if busy:
            os.kill(busy[0], signal.SIGKILL)
        return bool(busy)

    # Ray hands results back in its own order, so the first file may appear only when every episode is done:
    # the kill comes as soon as an actor is running an episode.
    summary = record_killing_one_worker(tmp_path / "ds", kill_a_worker, after_first_episode=False, workers=2,
                                        backend="ray")
    assert summary.episodes == 4 and summary.retried >= 1
    assert_same_episodes(tmp_path / "ds", tiny_demos)


def test_eval_on_ray_gives_the_local_per_seed_results(ray_local, tmp_path, monkeypatch, capsys):
    kwargs = {**TINY_ENV_KWARGS, "time_limit_s": 2.0}
    code, _, err = run_cli(monkeypatch, capsys, "eval", "expert", "--env", TINY_ENV_ID, "--episodes", str(len(SEEDS)),
                           "--backend", "ray", "--workers", "2", "--videos", "0", "--offline-episodes", "0",
                           "--out", str(tmp_path / "ray"), *(f"--env-arg={k}={v}" for k, v in kwargs.items()))
    assert code == 0, err
    on_ray = json.loads((tmp_path / "ray" / "report.json").read_text())["per_episode"]
    env = make_env(TINY_ENV_ID, **kwargs)  # what a local worker runs for each seed
    local = [run_lockstep([env], ExpertAgent(), [seed], record_actions=True)[0].to_json() for seed in SEEDS]
    env.close()
    assert [e["seed"] for e in on_ray] == SEEDS
    assert [{k: v for k, v in e.items() if k != "inference_ms"} for e in on_ray] == \
        [{k: v for k, v in e.items() if k != "inference_ms"} for e in local]
