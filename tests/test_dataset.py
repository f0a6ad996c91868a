"""The demonstration format: round trip, crash leftovers, header checks and corrupt files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gymnasium import spaces

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset, DemoWriter, Episode, space_from_json, space_to_json

OBS_SPACE = spaces.Dict({
    "image": spaces.Box(0, 255, (8, 8, 3), np.uint8),
    "state": spaces.Box(-np.inf, np.inf, (3,), np.float32),
})
ACT_SPACE = spaces.Box(-1, 1, (2,), np.float32)


def make_episode(seed: int, length: int = 5) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        obs={"image": rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8),
             "state": rng.normal(size=(length, 3)).astype(np.float32)},
        actions=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        executed_actions=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        rewards=rng.normal(size=length).astype(np.float32),
        dones=np.eye(length, dtype=np.uint8)[-1],
        attrs={"seed": seed, "success": True, "source": "expert", "final_metrics": {"x": 1.5}},
    )


def writer(path) -> DemoWriter:
    return DemoWriter(path, "imitlab/LaneFollow-v0", {"image_size": 8}, OBS_SPACE, ACT_SPACE)


def test_round_trip_is_exact(tmp_path):
    w = writer(tmp_path / "ds")
    originals = [make_episode(s, length=4 + s) for s in range(3)]
    for ep in originals:
        w.append(ep)
    ds = DemoDataset(tmp_path / "ds")
    assert len(ds) == 3
    assert ds.env_id == "imitlab/LaneFollow-v0" and ds.env_kwargs == {"image_size": 8}
    for original, loaded in zip(originals, ds.episodes()):
        for key in original.obs:
            np.testing.assert_array_equal(original.obs[key], loaded.obs[key])
        np.testing.assert_array_equal(original.actions, loaded.actions)
        np.testing.assert_array_equal(original.executed_actions, loaded.executed_actions)
        np.testing.assert_array_equal(original.rewards, loaded.rewards)
        np.testing.assert_array_equal(original.dones, loaded.dones)
        assert loaded.attrs == original.attrs


def test_spaces_survive_json(tmp_path):
    assert space_from_json(space_to_json(OBS_SPACE)) == OBS_SPACE
    assert DemoDataset(writer(tmp_path / "ds").path).observation_space == OBS_SPACE


def test_appending_continues_numbering_and_skips_unfinished_files(tmp_path):
    w = writer(tmp_path / "ds")
    w.append(make_episode(0))
    # A crash mid-write leaves only a hidden temp file behind; it must be invisible to readers. It is also the
    # claim of index 1 (a live writer's claim looks the same), so the next episode takes index 2.
    (tmp_path / "ds" / "episodes" / ".demo_000001.hdf5.tmp").write_bytes(b"half an episode")
    w2 = writer(tmp_path / "ds")
    path = w2.append(make_episode(1))
    assert path.name == "demo_000002.hdf5"
    assert [e.attrs["seed"] for e in DemoDataset(tmp_path / "ds").episodes()] == [0, 1]


def test_appending_a_different_env_is_refused(tmp_path):
    writer(tmp_path / "ds").append(make_episode(0))
    with pytest.raises(ImitlabError, match="different env_id"):
        DemoWriter(tmp_path / "ds", "imitlab/Reach-v0", {"image_size": 8}, OBS_SPACE, ACT_SPACE)


def test_missing_and_foreign_folders(tmp_path):
    with pytest.raises(ImitlabError, match="dataset not found"):
        DemoDataset(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(ImitlabError, match="not an imitlab dataset"):
        DemoDataset(tmp_path / "other")
    with pytest.raises(ImitlabError, match="not an imitlab dataset"):
        writer(tmp_path / "other")


def test_corrupt_header_and_episode_name_the_file(tmp_path):
    w = writer(tmp_path / "ds")
    path = w.append(make_episode(0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImitlabError, match="demo_000000.hdf5"):
        list(DemoDataset(tmp_path / "ds").episodes())
    (tmp_path / "ds" / "dataset.json").write_text("{not json")
    with pytest.raises(ImitlabError, match="dataset.json: not valid JSON"):
        DemoDataset(tmp_path / "ds")
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ImitlabError, match="not an imitlab-demos document"):
        DemoDataset(tmp_path / "ds")
