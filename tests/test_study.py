"""`imitlab study data-efficiency` end to end on a microscopic sweep, resumed without recomputing anything."""

from __future__ import annotations

import json
import tomllib

import cv2
import pytest
from typer.testing import CliRunner

from imitlab.cli import app
from imitlab.core.errors import ImitlabError
from imitlab.training.study import StudyConfig, offline_correlation

ARGS = ["study", "data-efficiency", "--env", "imitlab/Reach-v0", "--demos", "1,2", "--backbones", "nature_cnn",
        "--episodes", "2", "--perturbations", "noise", "--severity", "3", "--image-size", "48", "--epochs", "1",
        "--train-arg", "eval_episodes=1", "--train-arg", "val_fraction=0", "--offline-episodes", "1",
        "--equal-updates", "--workers", "1", "--noise", "0"]


@pytest.mark.slow
def test_microscopic_study_records_once_trains_every_cell_and_resumes(tmp_path):
    out = tmp_path / "study"
    result = CliRunner().invoke(app, [*ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "study.json").read_text())
    assert [(p["backbone"], p["demos"]) for p in summary["points"]] == [("nature_cnn", 1), ("nature_cnn", 2)]
    for point in summary["points"]:
        assert point["clean"]["episodes"] == 2 and point["shifted"]["episodes"] == 2
    assert len(list((out / "demos" / "episodes").glob("*.hdf5"))) == 2  # recorded once: the largest set
    assert len(list((out / "subsets" / "n0001" / "episodes").glob("*.hdf5"))) == 1
    assert (out / "subsets" / "n0002" / "episodes" / "demo_000000.hdf5").samefile(
        out / "demos" / "episodes" / "demo_000000.hdf5")  # nested subsets share the files
    cell = json.loads((out / "cells" / "nature_cnn_n0002_s0.json").read_text())
    assert set(cell["success"]) == {"none", "noise"} and cell["offline"]["decisions"]["gripper"]["accuracy"] >= 0
    assert cv2.imread(str(out / "study.png")) is not None and "| nature_cnn | 2 |" in (out / "study.md").read_text()
    epochs = {n: tomllib.loads((out / "runs" / f"nature_cnn_n000{n}_s0" / "config.toml").read_text())["epochs"]
              for n in (1, 2)}
    assert epochs == {1: 2, 2: 1}  # --equal-updates: half the demos, twice the epochs
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("runs/*/last/policy.json"), *out.glob("cells/*.json")]}
    again = CliRunner().invoke(app, [*ARGS, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # nothing retrained or re-evaluated
    changed = CliRunner().invoke(app, [*ARGS[:-2], "--noise", "0.1", "--out", str(out)])
    assert isinstance(changed.exception, ImitlabError) and "different noise" in str(changed.exception)


def test_bad_study_options_are_one_clear_error(tmp_path):
    with pytest.raises(ImitlabError, match="unknown backbone"):
        StudyConfig(env_id="imitlab/Reach-v0", out=str(tmp_path), backbones=("resnet",))
    with pytest.raises(ImitlabError, match="unknown perturbation 'fog'"):
        StudyConfig(env_id="imitlab/Reach-v0", out=str(tmp_path), perturbations=("fog",))
    with pytest.raises(ImitlabError, match=r"unknown or reserved training option\(s\) \['epoch'\]"):
        StudyConfig(env_id="imitlab/Reach-v0", out=str(tmp_path), train={"epoch": 1})


def test_offline_correlation_ranks_runs_by_success():
    runs = [{"success": {"none": [True] * k + [False] * (4 - k)},
             "offline": {"action_mse": 0.5 - 0.1 * k, "decisions": {"gripper": {"accuracy": 0.2 * k,
                                                                                "macro_recall": 0.5,
                                                                                "macro_f1": 0.9 - 0.2 * k}}}}
            for k in range(4)]
    corr = offline_correlation(runs)["spearman"]
    assert corr["-action_mse"]["rho"] == pytest.approx(1.0) and corr["gripper accuracy"]["rho"] == pytest.approx(1.0)
    assert corr["gripper macro_f1"]["rho"] == pytest.approx(-1.0) and corr["gripper macro_recall"]["rho"] is None
