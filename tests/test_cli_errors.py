"""Bad input on the command line is one `imitlab: error:` line and exit 1, with nothing written: damaged
dataset headers, bad env arguments (unknown, wrongly typed, out of range, malformed JSON), an output that is
a file; a truncated episode fails the audit and stays out of train/valid masks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from imitlab.demos.dataset import DemoDataset
from imitlab.demos.synthetic import write_synthetic_dataset


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``imitlab ARGS`` in this process through the console entry point: exit code, stdout, stderr."""
    from imitlab.cli import main

    monkeypatch.setattr(sys, "argv", ["imitlab", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("imitlab: error: "), stderr
    return lines[0]


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_synthetic_dataset(tmp_path / "ds", episodes=4, length=12, image_size=16)


@pytest.mark.parametrize("change, message", [
    (lambda h: h.pop("observation_space"), "missing fields ['observation_space']"),
    (lambda h: h.pop("env_id"), "missing fields ['env_id']"),
    (lambda h: h.update(env_kwargs=[1]), "env_kwargs an object"),
    (lambda h: h["action_space"].pop("shape"), "action_space: malformed space description"),
    (lambda h: h["action_space"].update(shape=[10**6, 10**6]), "not a plausible"),
])
def test_a_damaged_dataset_header_is_one_line(dataset, monkeypatch, capsys, change, message):
    header = json.loads((dataset / "dataset.json").read_text())
    change(header)
    (dataset / "dataset.json").write_text(json.dumps(header))
    code, _, err = run_cli(monkeypatch, capsys, "demos", "info", str(dataset))
    assert code == 1 and message in one_error_line(err)


@pytest.mark.parametrize("args, message", [
    (["--env-arg", "bogus=1"], "has no argument 'bogus'; it takes image_size"),
    (["--env-arg", "image_size=abc"], "image_size='abc' must be of type int"),
    (["--image-size", "-5"], "image_size=-5 is not an integer from 16 to 1024"),
    (["--env-arg", "route_length=nan"], "route_length='nan' must be of type float"),
    (["--env-arg", 'route_length=1.2.3'], "not valid JSON"),
    (["--env-arg", 'cameras=["agentview",'], "not valid JSON"),
    (["--env-arg", "noequals"], "expects key=value"),
])
def test_bad_env_arguments_are_one_line_and_nothing_is_written(tmp_path, monkeypatch, capsys, args, message):
    out = tmp_path / "demos"
    code, _, err = run_cli(monkeypatch, capsys, "record", "--env", "imitlab/LaneFollow-v0", "--episodes", "1",
                           "--out", str(out), *args)
    assert code == 1 and message in one_error_line(err)
    assert not out.exists()


def test_env_arguments_that_are_not_json_stay_strings(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "record", "--env", "imitlab/Reach-v0", "--episodes", "1",
                           "--out", str(tmp_path / "d"), "--env-arg", "render_mode=depth")
    assert code == 1 and "render_mode='depth' is not one of" in one_error_line(err)  # checked as the string "depth"


def test_merge_into_a_file_is_refused(dataset, tmp_path, monkeypatch, capsys):
    other = write_synthetic_dataset(tmp_path / "other", episodes=2, length=12, image_size=16)
    target = tmp_path / "merged.txt"
    target.write_text("keep me")
    code, _, err = run_cli(monkeypatch, capsys, "demos", "merge", str(dataset), str(other), "--out", str(target))
    assert code == 1 and "is a file, not a folder" in one_error_line(err)
    assert target.read_text() == "keep me"


def test_a_truncated_episode_fails_the_audit_and_stays_out_of_the_split(dataset, monkeypatch, capsys):
    damaged = DemoDataset(dataset).episode_paths()[1]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    code, out, err = run_cli(monkeypatch, capsys, "demos", "audit", str(dataset))
    assert code == 1 and damaged.stem in one_error_line(err) and "corrupt" in out  # the report is printed first
    code, out, err = run_cli(monkeypatch, capsys, "demos", "split", str(dataset), "--valid-fraction", "0.34")
    assert code == 0, err
    masks = DemoDataset(dataset).masks()
    assert damaged.stem not in masks["train"] + masks["valid"] and len(masks["train"] + masks["valid"]) == 3
    assert f"left out 1 unreadable episode: {damaged.stem}" in out
