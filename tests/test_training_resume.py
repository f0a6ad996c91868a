"""Training you can kill: kill -9 mid-run and --resume gives the uninterrupted run's weights bit for bit;
non-finite data and losses are skipped or stop the run with one line; run folders are never silently replaced."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset
from imitlab.policies.io import WEIGHTS_FILE
from imitlab.training.bc import TrainConfig, train
from imitlab.training.resume import CHECKPOINT_DIR, read_progress

#: Tiny, CPU, one thread; EMA and augmentation on, so their state must survive the kill too.
SETTINGS = dict(backbone="nature_cnn", pretrained=False, epochs=6, batch_size=32, eval_every=6, eval_episodes=1,
                val_fraction=0.25, threads=1, ema_decay=0.9, augment_shift=2, progress=False)


def _train_in_process(config: TrainConfig) -> dict:
    threads = torch.get_num_threads()
    try:
        return train(config)
    finally:
        torch.set_num_threads(threads)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / WEIGHTS_FILE))


def test_kill_9_then_resume_gives_the_uninterrupted_weights_bit_for_bit(tiny_demos: Path, tmp_path: Path):
    killed = tmp_path / "killed"
    config = TrainConfig(dataset=str(tiny_demos), out=str(killed), **SETTINGS)
    code = "import json, sys; from imitlab.training.bc import TrainConfig, train; train(TrainConfig(**json.loads(sys.argv[1])))"
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(asdict(config))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (killed / CHECKPOINT_DIR / "state.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    stopped_after = read_progress(killed)["epoch"]
    assert 1 <= stopped_after < SETTINGS["epochs"], "the kill came too late to test anything"

    with pytest.raises(ImitlabError, match="settings it was started with.*epochs"):
        _train_in_process(TrainConfig(**{**asdict(config), "epochs": 7, "resume": True}))
    with pytest.raises(ImitlabError, match="--overwrite"):  # a new run may not silently replace it
        _train_in_process(config)

    resumed = _train_in_process(TrainConfig(**{**asdict(config), "resume": True}))
    reference = _train_in_process(TrainConfig(**{**asdict(config), "out": str(tmp_path / "reference")}))
    a, b = _weights(killed), _weights(tmp_path / "reference")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in reference["epochs"]]
    with pytest.raises(ImitlabError, match="nothing to resume"):
        _train_in_process(TrainConfig(**{**asdict(config), "resume": True}))


def _copy_with_actions(source: Path, target: Path, change) -> Path:
    shutil.copytree(source, target)
    for index, path in enumerate(DemoDataset(target).episode_paths()):
        with h5py.File(path, "r+") as f:
            f["actions"][...] = change(index, f["actions"][()])
    return target


def test_nan_actions_in_one_episode_are_skipped_with_a_count(tiny_demos: Path, tmp_path: Path):
    def poison_second(index: int, actions: np.ndarray) -> np.ndarray:
        if index == 1:
            actions[3, 0] = np.nan
        return actions

    demos = _copy_with_actions(tiny_demos, tmp_path / "demos", poison_second)
    log = _train_in_process(TrainConfig(dataset=str(demos), out=str(tmp_path / "run"),
                                        **{**SETTINGS, "epochs": 1, "eval_every": 1}))
    assert log["skipped_nonfinite_episodes"] == ["demo_000001.hdf5"]
    assert log["skipped_steps"] == 0 and np.isfinite(log["epochs"][0]["train_loss"])
    assert all(torch.isfinite(t).all() for t in _weights(tmp_path / "run").values() if t.is_floating_point())


def test_non_finite_losses_are_skipped_then_stop_the_run_with_one_line(tiny_demos: Path, tmp_path: Path):
    demos = _copy_with_actions(tiny_demos, tmp_path / "demos", lambda i, a: a * np.float32(1e30))  # squares overflow
    config = TrainConfig(dataset=str(demos), out=str(tmp_path / "run"), max_nonfinite_steps=3, **SETTINGS)
    with pytest.raises(ImitlabError) as stopped:
        _train_in_process(config)
    message = str(stopped.value)
    assert "\n" not in message
    assert "epoch 1, step 1: 3 steps in a row had a non-finite loss" in message
    assert not (tmp_path / "run" / "best").exists()  # nothing non-finite was saved


def test_train_refuses_a_non_empty_out_unless_overwrite(tiny_demos: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    config = TrainConfig(dataset=str(tiny_demos), out=str(out), **{**SETTINGS, "epochs": 1})
    with pytest.raises(ImitlabError, match="already exists and is not empty; pass --overwrite"):
        _train_in_process(config)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ImitlabError, match="choose one"):
        _train_in_process(TrainConfig(**{**asdict(config), "resume": True, "overwrite": True}))
    _train_in_process(TrainConfig(**{**asdict(config), "overwrite": True}))
    assert sorted(p.name for p in out.iterdir()) == ["best", "checkpoint", "config.toml", "last", "tb",
                                                     "train_log.json"]


def test_a_replacement_cut_between_its_renames_is_recovered(tmp_path: Path):
    from imitlab.core.fsio import publish_dir, recover_dir, staging_dir

    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "state.json").write_text("old")
    staging = staging_dir(target)
    (staging / "state.json").write_text("new")
    aside = tmp_path / ".checkpoint.old-x"  # what a kill between publish_dir's two renames leaves behind
    aside.mkdir()
    os.replace(target, aside / "checkpoint")
    recover_dir(target)
    assert (target / "state.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # abandoned staging removed too
    staging = staging_dir(target)
    (staging / "state.json").write_text("new")
    publish_dir(staging, target)
    assert (target / "state.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_cli_refuses_a_non_empty_out_with_one_line(tiny_run: Path, tiny_demos: Path):
    proc = subprocess.run([sys.executable, "-m", "imitlab.cli", "train", str(tiny_demos), "--out", str(tiny_run)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"imitlab: error: {tiny_run} already exists and is not empty; "
                                                "pass --overwrite to replace it or choose another --out"]
