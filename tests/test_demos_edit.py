"""merge / split / filter: new datasets hold exactly the chosen episodes, and inputs are never modified."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset, DemoWriter
from imitlab.demos.edit import filter_dataset, merge, split
from imitlab.demos.synthetic import action_space, observation_space, synthetic_episode, synthetic_writer


def _fingerprint(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _dataset(path, seeds, **kw):
    writer = synthetic_writer(path)
    for seed in seeds:
        writer.append(synthetic_episode(seed, **kw))
    return DemoDataset(path)


def test_merge_concatenates_in_order_and_leaves_inputs_alone(tmp_path):
    a = _dataset(tmp_path / "a", [0, 1])
    b = _dataset(tmp_path / "b", [5, 6, 7], source="human")
    before = _fingerprint(tmp_path / "a"), _fingerprint(tmp_path / "b")
    result = merge([a.path, b.path], tmp_path / "m")
    merged = DemoDataset(tmp_path / "m")
    assert result.kept == 5 and [e.attrs["seed"] for e in merged.episodes()] == [0, 1, 5, 6, 7]
    originals = list(a.episodes()) + list(b.episodes())
    for original, copy in zip(originals, merged.episodes()):
        np.testing.assert_array_equal(original.obs["image"], copy.obs["image"])
        assert original.attrs == copy.attrs
    assert (_fingerprint(tmp_path / "a"), _fingerprint(tmp_path / "b")) == before


def test_merge_refuses_different_envs_and_existing_outputs(tmp_path):
    a = _dataset(tmp_path / "a", [0])
    other = DemoWriter(tmp_path / "c", "imitlab/Reach-v0", {"image_size": 16}, observation_space(16), action_space())
    other.append(synthetic_episode(0))
    with pytest.raises(ImitlabError, match="different env_id"):
        merge([a.path, tmp_path / "c"], tmp_path / "m")
    b = _dataset(tmp_path / "b", [1, 2])
    with pytest.raises(ImitlabError, match="not empty"):
        merge([a.path, b.path], b.path)
    broken = b.episode_paths()[1]
    broken.write_bytes(broken.read_bytes()[:500])
    with pytest.raises(ImitlabError, match=broken.name):
        merge([a.path, b.path], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    ds = _dataset(tmp_path / "ds", range(10))
    masks = split(ds, 0.3, seed=1)
    assert len(masks["valid"]) == 3 and len(masks["train"]) == 7
    assert set(masks["train"]) | set(masks["valid"]) == {p.stem for p in ds.episode_paths()}
    assert not set(masks["train"]) & set(masks["valid"])
    assert DemoDataset(tmp_path / "ds").masks() == masks
    assert [p.stem for p in ds.episode_paths("valid")] == masks["valid"]
    with pytest.raises(ImitlabError, match="--overwrite"):
        split(ds, 0.3, seed=1)
    assert split(ds, 0.3, seed=1, overwrite=True) == masks
    assert split(ds, 0.3, seed=2, overwrite=True) != masks
    with pytest.raises(ImitlabError, match="no mask 'test'"):
        ds.episode_paths("test")


def test_filter_by_success_source_and_audit_flags_keeps_masks(tmp_path):
    writer = synthetic_writer(tmp_path / "ds")
    writer.append(synthetic_episode(0))
    writer.append(synthetic_episode(1, success=False))
    writer.append(synthetic_episode(2, source="human"))
    nan = synthetic_episode(3)
    nan.obs["state"][2] = np.inf
    writer.append(nan)
    ds = DemoDataset(tmp_path / "ds")
    ds.write_masks({"train": ["demo_000000", "demo_000002"], "valid": ["demo_000001", "demo_000003"]})
    before = _fingerprint(tmp_path / "ds")

    kept = filter_dataset(ds, tmp_path / "ok", success_only=True)
    assert (kept.kept, kept.dropped) == (3, 1)
    out = DemoDataset(tmp_path / "ok")
    assert [e.attrs["seed"] for e in out.episodes()] == [0, 2, 3]
    assert out.masks() == {"train": ["demo_000000", "demo_000001"], "valid": ["demo_000002"]}

    filter_dataset(ds, tmp_path / "human", sources=["human"])
    assert [e.attrs["seed"] for e in DemoDataset(tmp_path / "human").episodes()] == [2]

    filter_dataset(ds, tmp_path / "clean", drop_checks=["all"])
    assert [e.attrs["seed"] for e in DemoDataset(tmp_path / "clean").episodes()] == [0, 2]

    filter_dataset(ds, tmp_path / "finite", drop_checks=["non_finite"])
    assert [e.attrs["seed"] for e in DemoDataset(tmp_path / "finite").episodes()] == [0, 1, 2]

    with pytest.raises(ImitlabError, match="unknown audit check"):
        filter_dataset(ds, tmp_path / "x", drop_checks=["nope"])
    with pytest.raises(ImitlabError, match="no episode"):
        filter_dataset(ds, tmp_path / "none", sources=["policy"])
    assert _fingerprint(tmp_path / "ds") == before
