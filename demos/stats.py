"""What a dataset holds (``imitlab demos info``) and how its actions and states are distributed (``stats``).

Both read metadata and low-dimensional arrays only; images are never decoded, so they stay fast on
datasets of many gigabytes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imitlab.demos.dataset import DemoDataset, file_attrs, open_episode_file
from imitlab.demos.exclusions import read_exclusions
from imitlab.envs import action_labels, state_labels

#: Percentiles reported per dimension.
PERCENTILES = (1, 50, 99)


@dataclass
class DatasetSummary:
    """The numbers ``imitlab demos info`` shows."""

    path: str
    env_id: str
    env_kwargs: dict[str, Any]
    episodes: int
    steps: int
    successes: int
    success_unknown: int
    """Episodes whose metadata does not say whether they succeeded (e.g. imported ones)."""
    sources: dict[str, int]
    noise_levels: dict[str, int]
    length_min: int
    length_median: float
    length_max: int
    mean_return: float
    observation: dict[str, str]
    action_dim: int
    disk_bytes: int
    masks: dict[str, int]
    excluded: dict[str, str]
    """Episodes excluded from training (``exclusions.json``) -> reason."""

    @property
    def success_rate(self) -> float:
        """Among the episodes whose outcome is recorded."""
        known = self.episodes - self.success_unknown
        return self.successes / known if known else float("nan")


def summarize(dataset: DemoDataset) -> DatasetSummary:
    """Count episodes, steps, successes and sources from each file's metadata (no arrays are read)."""
    lengths, returns, successes, unknown = [], [], 0, 0
    sources: Counter[str] = Counter()
    noise: Counter[str] = Counter()
    for path in dataset.episode_paths():
        with open_episode_file(path) as f:
            attrs = file_attrs(f)
            lengths.append(int(f["actions"].shape[0]))
        returns.append(float(attrs.get("return", np.nan)))
        successes += bool(attrs.get("success", False))
        unknown += "success" not in attrs
        sources[str(attrs.get("source", "unknown"))] += 1
        noise[f"{float(attrs.get('noise_std', 0.0)):g}"] += 1
    obs_space = dataset.observation_space
    return DatasetSummary(
        path=str(dataset.path),
        env_id=dataset.env_id,
        env_kwargs=dataset.env_kwargs,
        episodes=len(lengths),
        steps=int(sum(lengths)),
        successes=successes,
        success_unknown=unknown,
        sources=dict(sources.most_common()),
        noise_levels=dict(sorted(noise.items())),
        length_min=min(lengths, default=0),
        length_median=float(np.median(lengths)) if lengths else 0.0,
        length_max=max(lengths, default=0),
        mean_return=float(np.nanmean(returns)) if returns and not np.isnan(returns).all() else float("nan"),
        observation={k: f"{s.dtype} {tuple(s.shape)}" for k, s in obs_space.spaces.items()},
        action_dim=int(dataset.action_space.shape[0]),
        disk_bytes=sum(p.stat().st_size for p in dataset.path.rglob("*") if p.is_file()),
        masks={name: len(names) for name, names in dataset.masks().items()},
        excluded=read_exclusions(dataset),
    )


def describe(values: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension mean, std, min, percentiles and max of a (N, D) array, ignoring non-finite values."""
    values = np.where(np.isfinite(values), values, np.nan).astype(np.float64)
    out = {"mean": np.nanmean(values, 0), "std": np.nanstd(values, 0), "min": np.nanmin(values, 0)}
    for p in PERCENTILES:
        out[f"p{p}"] = np.nanpercentile(values, p, axis=0)
    out["max"] = np.nanmax(values, 0)
    return {k: [float(x) for x in v] for k, v in out.items()}


@dataclass
class ArrayStats:
    """Every step's action and state, concatenated, with per-dimension statistics."""

    actions: np.ndarray
    state: np.ndarray | None
    action_labels: list[str]
    state_labels: list[str]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "samples": int(len(self.actions)),
            "action_labels": self.action_labels,
            "actions": describe(self.actions),
            "action_saturation": [float(x) for x in np.mean(np.abs(self.actions) >= 0.999, axis=0)],
        }
        if self.state is not None:
            out["state_labels"] = self.state_labels
            out["state"] = describe(self.state)
        return out


def array_stats(dataset: DemoDataset, mask: str | None = None) -> ArrayStats:
    """Read every episode's actions and ``obs/state`` (no images)."""
    actions, states = [], []
    for path in dataset.episode_paths(mask):
        with open_episode_file(path) as f:
            actions.append(f["actions"][()])
            if "state" in f["obs"]:
                states.append(f["obs"]["state"][()])
    dim = int(dataset.action_space.shape[0])
    state = np.concatenate(states) if states else None
    return ArrayStats(
        actions=np.concatenate(actions) if actions else np.zeros((0, dim), np.float32),
        state=state,
        action_labels=action_labels(dataset.env_id, dim),
        state_labels=state_labels(dataset.env_id, state.shape[1]) if state is not None else [],
    )


def plot_stats(stats: ArrayStats, path: Path, title: str) -> Path:
    """One histogram per action and state dimension, in a grid, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"action {label}", stats.actions[:, i]) for i, label in enumerate(stats.action_labels)]
    if stats.state is not None:
        panels += [(f"state {label}", stats.state[:, i]) for i, label in enumerate(stats.state_labels)]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (name, values) in zip(axes.flat, panels):
        finite = values[np.isfinite(values)]
        ax.hist(finite, bins=50, color="tab:blue" if name.startswith("action") else "tab:orange")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{title} ({len(stats.actions)} steps)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
