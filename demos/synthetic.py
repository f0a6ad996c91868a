"""Synthetic demonstrations with the driving task's layout, written without a simulator.

Tests and ``benchmarks/bench_loader.py`` use them: they are fast to make, and their camera frames (a
gradient with a moving block) compress about as well as rendered ones, so decoding costs are realistic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gymnasium import spaces

from imitlab.demos.dataset import DemoWriter, Episode

ENV_ID = "imitlab/LaneFollow-v0"
STATE_DIM, ACTION_DIM = 4, 2


def observation_space(image_size: int) -> spaces.Dict:
    return spaces.Dict({
        "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
        "state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
    })


def action_space() -> spaces.Box:
    return spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def synthetic_episode(seed: int, length: int = 40, image_size: int = 16, success: bool = True,
                      source: str = "expert") -> Episode:
    """A smooth, non-idle episode: state drifts, actions are slow sines, frames show a moving block."""
    rng = np.random.default_rng(seed)
    t = np.arange(length + 1)
    state = np.cumsum(rng.normal(0.0, 0.1, (length + 1, STATE_DIM)), axis=0).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, ACTION_DIM)
    actions = (0.6 * np.sin(0.1 * t[:length, None] + phase)).astype(np.float32)
    ramp = np.linspace(40, 200, image_size, dtype=np.float32)
    frames = np.empty((length + 1, image_size, image_size, 3), np.uint8)
    frames[..., 0] = ramp[:, None]
    frames[..., 1] = ramp[None, :]
    frames[..., 2] = (seed * 37) % 256  # a per-seed tint: seeds 0-255 never share a first frame
    size = max(2, image_size // 6)
    for i, x in enumerate((t * 2 + seed * 7) % (image_size - size)):
        frames[i, image_size // 3: image_size // 3 + size, x: x + size] = (250, 250, 60)
    rewards = rng.uniform(0.0, 0.2, length).astype(np.float32)
    return Episode(
        obs={"image": frames[:length], "state": state[:length]},
        actions=actions,
        executed_actions=actions.copy(),
        rewards=rewards,
        dones=np.eye(length, dtype=np.uint8)[-1],
        attrs={"seed": seed, "success": success, "return": float(rewards.sum()), "length": length,
               "terminated": not success, "truncated": success, "noise_std": 0.0, "source": source,
               "env_id": ENV_ID, "env_kwargs": {"image_size": image_size}, "final_metrics": {}},
        final_obs={"image": frames[length], "state": state[length]},
    )


def synthetic_writer(path: Path, image_size: int = 16) -> DemoWriter:
    """A writer for a dataset with the synthetic episodes' header."""
    return DemoWriter(path, ENV_ID, {"image_size": image_size}, observation_space(image_size), action_space())


def write_synthetic_dataset(path: Path, episodes: int, length: int = 40, image_size: int = 16) -> Path:
    """``episodes`` successful expert-like episodes on seeds 0, 1, ... in a new dataset at ``path``."""
    writer = synthetic_writer(path, image_size)
    for seed in range(episodes):
        writer.append(synthetic_episode(seed, length, image_size))
    return path
