"""Recording into an existing dataset: seeds continue instead of repeating, an explicit overlap is refused, and
writers sharing a folder never claim the same episode file."""

from __future__ import annotations

import multiprocessing

import pytest

from imitlab.core.errors import ImitlabError
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.recorder import record
from imitlab.demos.synthetic import synthetic_episode, synthetic_writer

ENV_ID = "imitlab/LaneFollow-v0"
#: A small camera and a 1.5 s time limit: an episode takes a fraction of a second.
FAST_KWARGS = {"image_size": 32, "time_limit_s": 1.5}


def _seeds(path) -> list[int]:
    return [a["seed"] for a in DemoDataset(path).episode_attrs()]


def test_recording_twice_into_one_folder_continues_after_the_last_seed(tmp_path, capsys):
    out = tmp_path / "ds"
    record(ENV_ID, out, episodes=2, env_kwargs=FAST_KWARGS, progress=False)
    record(ENV_ID, out, episodes=2, env_kwargs=FAST_KWARGS, progress=False)
    assert _seeds(out) == [0, 1, 2, 3]
    assert "recording continues at seed 2" in capsys.readouterr().out


def test_an_explicit_seed_start_that_overlaps_is_refused_naming_the_option(tmp_path):
    writer = synthetic_writer(tmp_path / "ds", image_size=32)
    for seed in (0, 1, 2):
        writer.append(synthetic_episode(seed, length=5, image_size=32))
    with pytest.raises(ImitlabError, match=r"holds 2 of seeds 1\.\.4 \(first: 1\): pass --seed-start 3"):
        record(ENV_ID, tmp_path / "ds", episodes=4, seed_start=1, progress=False)
    assert _seeds(tmp_path / "ds") == [0, 1, 2]  # nothing written


def _write_after_barrier(path, seeds: list[int], barrier) -> None:
    writer = synthetic_writer(path, image_size=16)  # both writers look at the folder before either writes
    barrier.wait()
    for seed in seeds:
        writer.append(synthetic_episode(seed, length=4, image_size=16))


def test_two_writer_processes_on_one_folder_never_claim_the_same_episode(tmp_path):
    """Both writers see an empty folder and would pick demo_000000 next; the exclusive claim makes one move on."""
    synthetic_writer(tmp_path / "ds", image_size=16)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_write_after_barrier, args=(tmp_path / "ds", seeds, barrier))
               for seeds in (list(range(0, 12)), list(range(100, 112)))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    dataset = DemoDataset(tmp_path / "ds")
    assert len(dataset) == 24
    assert sorted(_seeds(tmp_path / "ds")) == [*range(0, 12), *range(100, 112)]
    assert all(len(episode) == 4 for episode in dataset.episodes())
    assert not list((tmp_path / "ds" / "episodes").glob(".*.tmp"))
