"""Shared fixtures: a tiny real dataset and a tiny real trained policy (built once per test run, for every
pytest-xdist worker)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import pytest
import torch
from filelock import FileLock

from imitlab.demos.recorder import record
from imitlab.training.bc import TrainConfig, train

#: Small camera and a short road keep the end-to-end fixtures to a few seconds.
TINY_ENV_KWARGS = {"image_size": 48, "route_length": 40.0}
TINY_ENV_ID = "imitlab/LaneFollow-v0"


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    torch.set_num_threads(2)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """``build(path)`` once per test run: under pytest-xdist the first worker to ask builds while the others wait
    on a file lock, then all read the same folder (so no test may modify it: copy it first)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's pytest-N/, above the workers' own popen-gwK/ folders
    path = root / "built_once" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    done = path.with_name(f"{name}.done")
    with FileLock(path.with_name(f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # what a worker that failed while building left behind
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def tiny_demos(tmp_path_factory) -> Path:
    """Four noisy-expert driving episodes on seeds 0..3."""
    return built_once(tmp_path_factory, "tiny_demos", lambda path: record(
        TINY_ENV_ID, path, episodes=4, noise_std=0.1, env_kwargs=TINY_ENV_KWARGS, progress=False))


@pytest.fixture(scope="session")
def tiny_run(tiny_demos: Path, tmp_path_factory) -> Path:
    """A Nature-CNN policy trained for two epochs on ``tiny_demos`` (a real checkpoint, not a good driver)."""
    return built_once(tmp_path_factory, "tiny_run", lambda path: train(TrainConfig(
        dataset=str(tiny_demos), out=str(path), backbone="nature_cnn", pretrained=False, epochs=2, eval_episodes=2,
        val_fraction=0.25, progress=False)))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path, tmp_path_factory) -> Path:
    """A deployment bundle of ``tiny_run`` with fp32 and int8 models (bar 0: tests of the runtime, server and
    bundle checks, not of the gate). Tests that modify a bundle copy it first."""
    from imitlab.deploy.bundle import deploy

    return built_once(tmp_path_factory, "tiny_bundle", lambda path: deploy(
        tiny_run, 0.0, episodes=2, out=path, int8=True, workers=2, videos=0, progress=False))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance with 2 CPUs for every Ray test (starting one takes seconds)."""
    import ray

    from imitlab.evaluation.ray_workers import LOCAL_SYSTEM_CONFIG

    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config=LOCAL_SYSTEM_CONFIG)
    # ray.init takes over SIGTERM in this process; tests run after it in the same pytest worker (e.g. evaluation's
    # SIGTERM test, which checks that its own handler is removed again) need the previous handler back.
    signal.signal(signal.SIGTERM, sigterm)
    yield ray
    ray.shutdown()


#: The modules with the most pytest time (fixtures included), heaviest first: `make test` hands whole modules to
#: its two xdist workers in collection order (``--dist loadfile --no-loadscope-reorder``), so these start first and
#: the many short modules fill the gaps at the end, instead of one long module running on alone at the end.
#: Measured with ``pytest -n 2 --dist loadfile --durations=0``, summed per module; re-measure when a module grows.
HEAVY_MODULES = (
    "test_heads.py", "test_deploy_gate.py", "test_command_policy.py", "test_pipeline.py", "test_deploy_server.py",
    "test_training.py", "test_distributed_training.py", "test_eval_faults.py", "test_eval_parallel.py",
    "test_ray_backend.py", "test_policies.py", "test_robustness.py", "test_gpu_check.py", "test_deploy_runtime.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(HEAVY_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
