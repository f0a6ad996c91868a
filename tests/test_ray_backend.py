"""The Ray backend (``--backend ray``) on a local 2-CPU Ray instance: a Ray worker killed mid-recording costs no
episode and every episode is the single-process one of its seed; evaluation and the robustness suite give the local
per-seed results; the data-efficiency study trains and evaluates each cell as the local backend does."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

from imitlab.agents import resolve_agents
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.envs import make_env
from imitlab.evaluation.robustness import run_suite
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


def test_robustness_on_ray_gives_the_local_per_episode_results(ray_local, tiny_run, tmp_path, monkeypatch, capsys):
    specs = resolve_agents({str(tiny_run): str(tiny_run)}, env_kwargs={"time_limit_s": 2.0})
    local = run_suite(specs, ["noise"], [5], SEEDS[:2], workers=1, progress=False)
    code, _, err = run_cli(monkeypatch, capsys, "robustness", str(tiny_run), "--perturbations", "noise",
                           "--severities", "5", "--episodes", "2", "--env-arg", "time_limit_s=2.0", "--videos", "0",
                           "--backend", "ray", "--workers", "2", "--out", str(tmp_path / "ray"))
    assert code == 0, err
    on_ray = json.loads((tmp_path / "ray" / "robustness.json").read_text())
    assert [(c["perturbation"], c["per_episode"]) for c in on_ray["cells"]] == \
        [(c["perturbation"], c["per_episode"]) for c in local["cells"]]
    assert {c["perturbation"] for c in on_ray["cells"]} == {"none", "noise"}


STUDY = ["study", "data-efficiency", "--env", "imitlab/Reach-v0", "--demos", "1", "--backbones", "nature_cnn",
         "--episodes", "1", "--perturbations", "noise", "--severity", "3", "--image-size", "48", "--epochs", "1",
         "--env-arg", "max_steps=20",
         "--train-arg", "eval_episodes=1", "--train-arg", "val_fraction=0", "--train-arg", "threads=1",
         "--offline-episodes", "0", "--noise", "0"]


def test_study_on_ray_trains_and_evaluates_each_cell_as_the_local_backend(ray_local, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, *STUDY, "--workers", "1", "--out", str(tmp_path / "local"))
    assert code == 0, err
    shutil.copytree(tmp_path / "local" / "demos", tmp_path / "ray" / "demos")  # the same demos, recorded once
    code, _, err = run_cli(monkeypatch, capsys, *STUDY, "--backend", "ray", "--workers", "1",
                           "--out", str(tmp_path / "ray"))
    assert code == 0, err
    assert "study: train (ray)" in err  # the training cell ran as a Ray task
    cell = "nature_cnn_n0001_s0"
    local, on_ray = ({part: json.loads((tmp_path / where / part).read_text())
                      for part in (f"cells/{cell}.json", f"runs/{cell}/train_log.json")} for where in ("local", "ray"))
    assert on_ray[f"cells/{cell}.json"]["success"] == local[f"cells/{cell}.json"]["success"]
    assert set(on_ray[f"cells/{cell}.json"]["success"]) == {"none", "noise"}
    losses = [[e["step_losses"] for e in log[f"runs/{cell}/train_log.json"]["epochs"]] for log in (local, on_ray)]
    assert losses[0] == losses[1] and losses[0][0]
    assert (tmp_path / "local" / "runs" / cell / "last" / "policy.safetensors").read_bytes() == \
        (tmp_path / "ray" / "runs" / cell / "last" / "policy.safetensors").read_bytes()
