"""`imitlab demos audit`: deliberately broken episodes are flagged with their reason, clean ones are not."""

from __future__ import annotations

import json

import h5py
import numpy as np
from typer.testing import CliRunner

from imitlab.cli import app
from imitlab.demos.audit import audit
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.synthetic import synthetic_episode, synthetic_writer


def _broken_dataset(path):
    """Clean episodes 0-3, then one broken episode per check (names in the returned dict)."""
    writer = synthetic_writer(path)
    names = {}
    clean = [writer.append(synthetic_episode(seed)).stem for seed in range(4)]

    nan = synthetic_episode(10)
    nan.actions[5, 1] = np.nan
    names["non_finite"] = writer.append(nan).stem

    names["duplicate"] = writer.append_file(path / "episodes" / f"{clean[1]}.hdf5").stem

    names["failed"] = writer.append(synthetic_episode(11, success=False)).stem

    names["too_short"] = writer.append(synthetic_episode(12, length=8)).stem
    names["too_long"] = writer.append(synthetic_episode(13, length=100)).stem

    saturated = synthetic_episode(14)
    saturated.actions[:] = np.sign(saturated.actions)
    names["saturated"] = writer.append(saturated).stem

    jerky = synthetic_episode(15)
    jerky.actions[::2, 0] = 0.9
    jerky.actions[1::2, 0] = -0.9
    names["jerky"] = writer.append(jerky).stem

    idle = synthetic_episode(16)
    idle.obs["state"][10:35] = idle.obs["state"][10]
    idle.obs["image"][10:35] = idle.obs["image"][10]
    names["idle"] = writer.append(idle).stem

    cruising = synthetic_episode(17)  # constant state (steady speed) but a moving view: not idle
    cruising.obs["state"][5:35] = cruising.obs["state"][5]
    clean.append(writer.append(cruising).stem)
    return clean, names


def test_each_broken_episode_is_flagged_for_its_reason_and_clean_ones_pass(tmp_path):
    clean, names = _broken_dataset(tmp_path / "ds")
    report = audit(DemoDataset(tmp_path / "ds"))
    by_episode: dict[str, set[str]] = {}
    for flag in report.flags:
        by_episode.setdefault(flag.episode, set()).add(flag.check)
        assert flag.reason
    for check, episode in names.items():
        assert check in by_episode.get(episode, set()), (check, episode, by_episode)
    assert not set(clean) & set(by_episode), "clean episodes (incl. the original of the duplicate) must pass"
    dup = next(f for f in report.flags if f.check == "duplicate")
    assert clean[1] in dup.reason and "identical action sequence" in dup.reason and "same seed 1" in dup.reason
    nan = next(f for f in report.flags if f.check == "non_finite")
    assert "actions (1 values)" in nan.reason


def test_a_clean_dataset_has_no_flags(tmp_path):
    writer = synthetic_writer(tmp_path / "ds")
    for seed in range(6):
        writer.append(synthetic_episode(seed, length=30 + seed))
    assert audit(DemoDataset(tmp_path / "ds")).flags == []


def test_unreadable_episodes_are_flags_not_a_crash(tmp_path):
    writer = synthetic_writer(tmp_path / "ds")
    writer.append(synthetic_episode(0))
    truncated = writer.append(synthetic_episode(1))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    damaged = writer.append(synthetic_episode(2))
    with h5py.File(damaged, "r") as f:  # metadata intact, one compressed image chunk overwritten
        chunk = f["obs/image"].id.get_chunk_info(1)
    with open(damaged, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)
    report = audit(DemoDataset(tmp_path / "ds"))
    assert [(f.episode, f.check) for f in report.flags] == [(truncated.stem, "corrupt"), (damaged.stem, "corrupt")]
    assert truncated.name in report.flags[0].reason and damaged.name in report.flags[1].reason


def test_cli_audit_exits_zero_with_table_and_json(tmp_path):
    _, names = _broken_dataset(tmp_path / "ds")
    runner = CliRunner()
    result = runner.invoke(app, ["demos", "audit", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "episodes flagged" in result.output and names["failed"] in result.output
    result = runner.invoke(app, ["demos", "audit", str(tmp_path / "ds"), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["flagged_episodes"] == len(names) and data["counts"]["duplicate"] == 1
