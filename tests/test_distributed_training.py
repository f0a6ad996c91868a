"""Data-parallel training (``imitlab train --nproc 2``, gloo on CPU): repeating ``tiny_run`` from its saved config
in two processes (same seed, same global batch) gives its per-step loss curve to float tolerance, and rank 0
alone writes the run (validation, checkpoints, log)."""

from __future__ import annotations

import json

import numpy as np

from test_cli_errors import run_cli


def _step_losses(run) -> np.ndarray:
    log = json.loads((run / "train_log.json").read_text())
    return np.concatenate([epoch["step_losses"] for epoch in log["epochs"]])


def test_two_processes_reproduce_the_single_process_loss_curve(tiny_run, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--config", str(tiny_run / "config.toml"),
                             "--out", str(tmp_path / "two"), "--nproc", "2")
    assert code == 0, err
    one, two = _step_losses(tiny_run), _step_losses(tmp_path / "two")
    assert len(one) == len(two) >= 6
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=0)
    log = json.loads((tmp_path / "two" / "train_log.json").read_text())
    assert log["config"]["nproc"] == 2 and "rollout" in log["epochs"][-1] and log["epochs"][-1]["val_loss"] > 0
    assert (tmp_path / "two" / "best" / "policy.safetensors").is_file()
    assert out.count("best policy:") == 1
