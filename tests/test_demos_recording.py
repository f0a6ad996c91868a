"""Real recordings of the driving task: a SIGKILLed recorder keeps every finished episode, and an episode
re-simulated from its seed and executed actions reproduces the recorded observations."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np

from imitlab.demos.dataset import DemoDataset, DemoWriter
from imitlab.demos.play import play
from imitlab.demos.recorder import record

ENV_ID = "imitlab/LaneFollow-v0"


def _completed(folder) -> list:
    return sorted((folder / "episodes").glob("demo_*.hdf5")) if (folder / "episodes").is_dir() else []


def test_sigkill_mid_episode_keeps_every_completed_episode(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from imitlab.cli import main; main()", "record", "--env", ENV_ID,
         "--out", str(out), "--episodes", "100", "--image-size", "48"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(_completed(out)) < 2:
            assert proc.poll() is None, "the recorder exited early"
            assert time.monotonic() < deadline, "no two episodes recorded within 120 s"
            time.sleep(0.02)
        second_done = time.monotonic()
        time.sleep(0.3)  # an episode takes ~1 s here: the third is in progress
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - second_done < 5

    dataset = DemoDataset(out)
    episodes = list(dataset.episodes())  # every visible file reads completely
    assert len(episodes) >= 2 and len(episodes) == len(_completed(out))
    assert [e.attrs["seed"] for e in episodes] == list(range(len(episodes)))
    for episode in episodes:
        assert len(episode) == episode.attrs["length"] > 10
        assert episode.dones[-1] == 1 and episode.dones[:-1].sum() == 0
        assert episode.obs["image"].shape == (len(episode), 48, 48, 3)
        assert episode.final_obs is not None and episode.attrs["source"] == "expert"
        assert np.isfinite(episode.actions).all()
    # The dataset stays appendable: a resumed recording continues after the last complete episode.
    resumed = DemoWriter(out, ENV_ID, dataset.env_kwargs, dataset.observation_space, dataset.action_space)
    assert resumed.append(episodes[0]).name == f"demo_{len(episodes):06d}.hdf5"


def test_resimulation_reproduces_the_recording_and_detects_tampering(tmp_path):
    kwargs = {"image_size": 32, "time_limit_s": 1.5}
    record(ENV_ID, tmp_path / "ds", episodes=1, seed_start=7, noise_std=0.2, env_kwargs=kwargs, progress=False)
    dataset = DemoDataset(tmp_path / "ds")
    (result,) = play(dataset, ["0"], tmp_path / "v", resimulate=True)
    assert result.diverged_at is None and result.frames == len(next(dataset.episodes()))

    episode = next(dataset.episodes())
    episode.executed_actions[5, 0] = -episode.executed_actions[5, 0] - 0.5
    writer = DemoWriter(tmp_path / "ds", ENV_ID, kwargs, dataset.observation_space, dataset.action_space)
    writer.append(episode)
    (tampered,) = play(dataset, ["1"], tmp_path / "v", resimulate=True)
    assert tampered.diverged_at == 6
