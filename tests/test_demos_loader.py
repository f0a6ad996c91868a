"""The training loader: both modes yield every selected sample exactly once per epoch, as tensors."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
import torch

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.loader import DemoLoader
from imitlab.demos.synthetic import synthetic_episode, synthetic_writer

LENGTHS = [17, 23, 9, 30, 12, 25]


@pytest.fixture
def dataset(tmp_path) -> DemoDataset:
    """Each sample's action encodes (episode, step), so batches can be traced back to their rows."""
    writer = synthetic_writer(tmp_path / "ds", image_size=16)
    for i, n in enumerate(LENGTHS):
        ep = synthetic_episode(i, length=n, image_size=16, success=i != 2)
        ep.actions[:, 0] = i
        ep.actions[:, 1] = np.arange(n)
        writer.append(ep)
    return DemoDataset(tmp_path / "ds")


def _epoch(loader: DemoLoader) -> tuple[list[tuple[int, int]], list[int]]:
    rows, sizes = [], []
    for batch in loader:
        assert batch.state.dtype == torch.float32 and batch.state.shape[1] == 4
        assert batch.images["image"].dtype == torch.uint8 and batch.images["image"].shape[1:] == (16, 16, 3)
        assert batch.actions.dtype == torch.float32 and len(batch.actions) == len(batch.state)
        rows += [(int(a), int(b)) for a, b in batch.actions.tolist()]
        sizes.append(len(batch.actions))
    return rows, sizes


def _expected(episodes) -> list[tuple[int, int]]:
    return sorted((i, t) for i in episodes for t in range(LENGTHS[i]))


@pytest.mark.parametrize("mode,budget_mb,batch_size",
                         [("memory", 64.0, 8), ("chunked", 0.02, 8), ("chunked", 0.02, 50)])
def test_every_sample_once_per_epoch(dataset, mode, budget_mb, batch_size):
    """Chunked with batch 50: chunks hold one episode (9-30 rows), so batches span several chunks."""
    loader = DemoLoader(dataset, batch_size=batch_size, memory_budget_mb=budget_mb, seed=3)
    assert loader.mode == mode
    successful = [i for i in range(len(LENGTHS)) if i != 2]
    assert loader.num_samples == sum(LENGTHS[i] for i in successful) and len(loader.paths) == 5
    first, sizes = _epoch(loader)
    assert sorted(first) == _expected(successful)
    assert sizes[:-1] == [batch_size] * (len(sizes) - 1) and len(sizes) == len(loader)
    second, _ = _epoch(loader)
    assert sorted(second) == sorted(first) and second != first, "each epoch is reshuffled"


def test_chunked_mode_really_streams(dataset, caplog):
    with caplog.at_level(logging.INFO, logger="imitlab.demos.loader"):
        loader = DemoLoader(dataset, batch_size=8, memory_budget_mb=0.02)
    assert "streamed in chunks" in caplog.text and "cached in memory" not in caplog.text
    assert loader.plan in caplog.text and len(loader._chunks()) > 1
    _epoch(loader)
    assert loader._cache is None, "chunked mode must not keep the decoded dataset"


def test_images_and_states_match_the_file(dataset):
    loader = DemoLoader(dataset, batch_size=1000, successful_only=False, shuffle=False, mode="chunked",
                        memory_budget_mb=64)
    batch = next(iter(loader))
    episodes = list(dataset.episodes())
    np.testing.assert_array_equal(batch.images["image"].numpy(), np.concatenate([e.obs["image"] for e in episodes]))
    np.testing.assert_array_equal(batch.state.numpy(), np.concatenate([e.obs["state"] for e in episodes]))
    mean, std = loader.state_mean_std()
    np.testing.assert_allclose(mean, batch.state.numpy().mean(0), rtol=1e-5, atol=1e-6)


def test_mask_drop_last_and_early_stop(dataset):
    dataset.write_masks({"train": ["demo_000000", "demo_000003"]})
    loader = DemoLoader(dataset, batch_size=10, mask="train", drop_last=True, memory_budget_mb=0.02)
    rows, sizes = _epoch(loader)
    assert set(sizes) == {10} and len(sizes) == (LENGTHS[0] + LENGTHS[3]) // 10 == len(loader)
    assert {i for i, _ in rows} <= {0, 3}
    for _ in zip(range(1), loader):  # leaving an epoch early must not hang the reader thread
        pass


def test_corrupt_episode_names_the_file_in_both_modes(dataset):
    broken = dataset.episode_paths()[3]
    with h5py.File(broken, "r") as f:  # damage one compressed image chunk; the metadata stays readable
        chunk = f["obs/image"].id.get_chunk_info(1)
    with open(broken, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)
    for budget in (64.0, 0.02):
        loader = DemoLoader(dataset, batch_size=8, memory_budget_mb=budget, shuffle=False)
        with pytest.raises(ImitlabError, match=broken.name):
            _epoch(loader)


def test_empty_selection_is_a_clear_error(dataset):
    with pytest.raises(ImitlabError, match="no successful episodes in mask 'valid'"):
        dataset.write_masks({"valid": ["demo_000002"]})
        DemoLoader(dataset, mask="valid")


def test_several_datasets_keep_sources_and_subsets(dataset, tmp_path):
    writer = synthetic_writer(tmp_path / "dagger", image_size=16)
    correction = synthetic_episode(100, length=7, image_size=16, success=False, source="dagger")
    correction.actions[:, 0] = 100
    correction.actions[:, 1] = np.arange(7)
    writer.append(correction)
    dagger = DemoDataset(tmp_path / "dagger")
    assert len(DemoLoader([dataset, dagger]).paths) == 5, "a failed episode is dropped ..."
    loader = DemoLoader([dataset, dagger], batch_size=8, keep_sources=["dagger"])
    assert len(loader.paths) == 6, "... unless its source is kept"
    train, valid = loader.subset([0, 2, 5]), loader.subset([1, 3], shuffle=False)
    rows, _ = _epoch(train)
    assert {i for i, _ in rows} == {0, 3, 100} and train.num_samples == LENGTHS[0] + LENGTHS[3] + 7
    assert [i for i, _ in _epoch(valid)[0]] == [1] * LENGTHS[1] + [4] * LENGTHS[4]
    other = synthetic_writer(tmp_path / "big", image_size=24)
    other.append(synthetic_episode(0, image_size=24))
    with pytest.raises(ImitlabError, match="different env_kwargs"):
        DemoLoader([dataset, DemoDataset(tmp_path / "big")])


def test_subset_keeps_mode_and_order_and_can_continue_a_generator(dataset):
    """What the trainer relies on: its splits inherit the mode judged on all episodes, serve episodes in the
    order given, and shuffle with the trainer's own seeded generator (so a seed fixes the whole run)."""
    loader = DemoLoader(dataset, batch_size=8, memory_budget_mb=0.02, shuffle=False)
    assert loader.mode == "chunked"
    small = loader.subset([3], batch_size=1000)
    assert small.decoded_bytes <= small.budget_bytes and small.mode == "chunked" and len(small) == 1
    assert [i for i, _ in _epoch(loader.subset([3, 0]))[0]] == [4] * LENGTHS[4] + [0] * LENGTHS[0]

    rng, twin = np.random.default_rng(7), np.random.default_rng(7)
    memory = DemoLoader(dataset, memory_budget_mb=64).subset([0, 1], shuffle=True, batch_size=1000, seed=rng)
    expected = [(i, t) for i in (0, 1) for t in range(LENGTHS[i])]
    assert _epoch(memory)[0] == [expected[j] for j in twin.permutation(len(expected))]
    assert rng.random() == twin.random(), "the subset shuffled with the caller's generator"
