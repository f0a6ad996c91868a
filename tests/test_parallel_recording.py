"""Parallel recording (``record --workers N``): every episode is the one a single process records from its seed,
files stay in seed order, and a worker killed mid-recording costs no episode."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from imitlab.demos.dataset import DemoDataset, Episode
from imitlab.demos.recorder import RecordSummary, record

from conftest import TINY_ENV_ID, TINY_ENV_KWARGS
from test_cli_errors import one_error_line, run_cli

#: ``tiny_demos`` was recorded by one process with this noise on seeds 0..3.
TINY_NOISE = 0.1


def assert_same_episodes(path: Path, reference: Path) -> None:
    """The two datasets hold the same episodes, in the same (seed) order, equal array by array."""
    ours, theirs = list(DemoDataset(path).episodes()), list(DemoDataset(reference).episodes())
    assert [e.attrs["seed"] for e in ours] == [e.attrs["seed"] for e in theirs]
    for a, b in zip(ours, theirs):
        assert_same_episode(a, b)


def assert_same_episode(a: Episode, b: Episode) -> None:
    assert a.attrs == b.attrs
    assert a.obs.keys() == b.obs.keys() and a.final_obs.keys() == b.final_obs.keys()
    for key in a.obs:
        np.testing.assert_array_equal(a.obs[key], b.obs[key])
        np.testing.assert_array_equal(a.final_obs[key], b.final_obs[key])
    for name in ("actions", "executed_actions", "rewards", "dones"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def record_killing_one_worker(out: Path, kill, after_first_episode: bool = True, **options) -> RecordSummary:
    """Record ``tiny_demos``' seeds in a thread and ``kill()`` one busy worker (it returns whether it found one):
    once the first episode is on disk, or with ``after_first_episode`` off as soon as a worker is busy."""
    result: dict[str, RecordSummary | BaseException] = {}

    def run() -> None:
        try:
            result["summary"] = record(TINY_ENV_ID, out, episodes=4, seed_start=0, noise_std=TINY_NOISE,
                                       env_kwargs=TINY_ENV_KWARGS, progress=False, **options)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 240
    killed = False
    while not killed and thread.is_alive() and time.monotonic() < deadline:
        if not after_first_episode or list((out / "episodes").glob("demo_*.hdf5")):
            killed = kill()
        time.sleep(0.02)
    thread.join(timeout=240)
    assert "error" not in result, result.get("error")
    assert killed, "no busy worker to kill: the recording ended first"
    return result["summary"]  # type: ignore[return-value]


def test_two_workers_record_the_single_process_episodes_even_when_workers_are_killed(tiny_demos, tmp_path):
    def kill_the_workers() -> bool:
        workers = multiprocessing.active_children()
        for worker in workers:
            os.kill(worker.pid, signal.SIGKILL)
        return bool(workers)

    # A kill lands mid-episode only if a worker still has one: the worker whose episode just landed can be
    # waiting for its next, and the other can have finished too (episodes are ~0.1 s). Every try must give the
    # single-process dataset; at least one of three must have had an episode to retry.
    for attempt in range(3):
        out = tmp_path / f"ds{attempt}"
        summary = record_killing_one_worker(out, kill_the_workers, workers=2)
        assert summary.episodes == 4
        assert_same_episodes(out, tiny_demos)
        assert not list((out / "episodes").glob(".*"))  # no temp file left behind
        if summary.retried:
            break
    else:
        pytest.fail("no killed worker was mid-episode in three recordings")


def test_an_unknown_backend_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "record", "--env", TINY_ENV_ID, "--out", str(tmp_path / "ds"),
                           "--episodes", "1", "--backend", "slurm")
    assert code == 1
    assert one_error_line(err) == "imitlab: error: unknown backend 'slurm'; choose one of: local, ray"
    assert not (tmp_path / "ds").exists()
