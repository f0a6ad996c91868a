"""`imitlab demos ...` end to end on synthetic datasets, including the one-line error for a damaged file."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest
from typer.testing import CliRunner

from imitlab.cli import app
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.synthetic import write_synthetic_dataset

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path):
    return write_synthetic_dataset(tmp_path / "ds", episodes=4, length=12, image_size=16)


def _ok(*args: str) -> str:
    result = runner.invoke(app, ["demos", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_info_and_stats(dataset, tmp_path):
    info = json.loads(_ok("info", str(dataset), "--json"))
    assert (info["episodes"], info["steps"], info["success_rate"]) == (4, 48, 1.0)
    assert info["sources"] == {"expert": 4} and info["observation"]["image"] == "uint8 (16, 16, 3)"
    assert "success rate" in _ok("info", str(dataset))
    png = tmp_path / "stats.png"
    out = json.loads(_ok("stats", str(dataset), "--plot", str(png), "--json"))
    assert out["samples"] == 48 and len(out["actions"]["mean"]) == 2 and len(out["state"]["std"]) == 4
    assert out["state_labels"] == ["speed", "yaw_rate", "steer_angle", "prev_throttle"]  # named by the env
    assert "yaw_rate" in _ok("stats", str(dataset), "--plot", str(png))
    assert cv2.imread(str(png)) is not None


def test_play_writes_one_video_per_episode_with_every_step(dataset, tmp_path):
    output = _ok("play", str(dataset), "--episode", "2", "--episode", "demo_000003", "--out", str(tmp_path / "v"))
    assert "demo_000002" in output
    for name in ("demo_000002", "demo_000003"):
        video = cv2.VideoCapture(str(tmp_path / "v" / f"{name}.mp4"))
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 + 10  # every step, then 1 s of the outcome card
    result = runner.invoke(app, ["demos", "play", str(dataset), "--episode", "9", "--out", str(tmp_path / "v")])
    assert result.exit_code != 0 and "no episode '9'" in str(result.exception)


def test_split_filter_merge_and_robomimic_commands(dataset, tmp_path):
    assert "valid 1 episodes" in _ok("split", str(dataset), "--valid-fraction", "0.25")
    _ok("filter", str(dataset), "--out", str(tmp_path / "f"), "--success-only")
    _ok("merge", str(dataset), str(tmp_path / "f"), "--out", str(tmp_path / "m"))
    assert len(DemoDataset(tmp_path / "m")) == 8
    _ok("export-robomimic", str(dataset), "--out", str(tmp_path / "rm.hdf5"))
    _ok("import-robomimic", str(tmp_path / "rm.hdf5"), "--out", str(tmp_path / "back"))
    assert DemoDataset(tmp_path / "back").masks() == DemoDataset(dataset).masks()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from imitlab.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_damaged_episode_is_one_error_line_naming_the_file(dataset, tmp_path):
    broken = dataset / "episodes" / "demo_000001.hdf5"
    broken.write_bytes(broken.read_bytes()[:2048])
    for args in (["demos", "info", str(dataset)],
                 ["demos", "export-robomimic", str(dataset), "--out", str(tmp_path / "x.hdf5")]):
        proc = _cli(*args)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith("imitlab: error: corrupt episode file") and "demo_000001.hdf5" in lines[0]
    assert not (tmp_path / "x.hdf5").exists() and not (tmp_path / ".x.hdf5.tmp").exists()
