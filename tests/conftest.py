"""Shared fixtures: a tiny real dataset and a tiny real trained policy (session-scoped, built once)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from imitlab.demos.recorder import record
from imitlab.training.bc import TrainConfig, train

#: Small camera and a short road keep the end-to-end fixtures to a few seconds.
TINY_ENV_KWARGS = {"image_size": 48, "route_length": 40.0}
TINY_ENV_ID = "imitlab/LaneFollow-v0"


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_demos(tmp_path_factory) -> Path:
    """Four noisy-expert driving episodes on seeds 0..3."""
    path = tmp_path_factory.mktemp("tiny") / "demos"
    record(TINY_ENV_ID, path, episodes=4, noise_std=0.1, env_kwargs=TINY_ENV_KWARGS, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_demos: Path) -> Path:
    """A Nature-CNN policy trained for two epochs on ``tiny_demos`` (a real checkpoint, not a good driver)."""
    out = tiny_demos.parent / "run"
    train(TrainConfig(dataset=str(tiny_demos), out=str(out), backbone="nature_cnn", pretrained=False, epochs=2,
                      eval_episodes=2, val_fraction=0.25, progress=False))
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path) -> Path:
    """A deployment bundle of ``tiny_run`` with fp32 and int8 models (bar 0: tests of the runtime, server and
    bundle checks, not of the gate). Tests that modify a bundle copy it first."""
    from imitlab.deploy.bundle import deploy

    out = tiny_run.parent / "bundle"
    deploy(tiny_run, 0.0, episodes=2, out=out, int8=True, workers=2, videos=0, progress=False)
    return out


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance with 2 CPUs for every Ray test (starting one takes seconds)."""
    import ray

    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # ray.init takes over SIGTERM in this process; tests run after it in the same pytest worker (e.g. evaluation's
    # SIGTERM test, which checks that its own handler is removed again) need the previous handler back.
    signal.signal(signal.SIGTERM, sigterm)
    yield ray
    ray.shutdown()
