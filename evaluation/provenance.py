"""Where an evaluated policy came from: its training configuration and a summary of its demonstrations.

Reports and deployment bundles carry this so a number can be traced back to the run and data behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imitlab.core.errors import ImitlabError


def dataset_summary(path: str | Path | None) -> dict[str, Any] | None:
    """Episodes, steps, successes and seeds of a dataset folder, or None when it is not there (moved, other host)."""
    from imitlab.demos.dataset import HEADER, DemoDataset

    if not path or not (Path(path) / HEADER).is_file():
        return None
    try:
        dataset = DemoDataset(path)
        attrs = dataset.episode_attrs()
    except ImitlabError:
        return None
    seeds = sorted(int(a["seed"]) for a in attrs if "seed" in a)
    return {
        "path": str(Path(path).resolve()),
        "env_id": dataset.env_id,
        "env_kwargs": dataset.env_kwargs,
        "episodes": len(attrs),
        "steps": int(sum(int(a.get("length", 0)) for a in attrs)),
        "successful_episodes": sum(bool(a.get("success", False)) for a in attrs),
        "seeds": _seed_ranges(seeds),
        "noise_std": sorted({float(a["noise_std"]) for a in attrs if "noise_std" in a}),
    }


def policy_provenance(kind: str, path: Path | None, metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``policy`` block of a report: what was evaluated, its training config and dataset summary.

    A bundle's metadata already holds both (copied at deploy time); a policy folder's points to its dataset.
    """
    info: dict[str, Any] = {"kind": kind, "path": str(path) if path else None}
    if kind == "expert":
        return info
    info["train_config"] = metadata.get("train_config")
    info["epoch"] = metadata.get("epoch")
    if "dataset_summary" in metadata:
        info["dataset"] = metadata["dataset_summary"]
    else:
        info["dataset"] = dataset_summary(metadata.get("dataset"))
    if kind == "bundle":
        info["model"] = metadata.get("model_file")
        info["source_policy"] = metadata.get("source_policy")
    return info


def _seed_ranges(seeds: list[int]) -> str:
    """Sorted seeds as compact ranges, e.g. "0-39, 45"."""
    parts: list[str] = []
    start = prev = None
    for seed in seeds + [None]:  # type: ignore[list-item]
        if start is not None and (seed is None or seed != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if seed is not None and start is None:
            start = seed
        prev = seed
    return ", ".join(parts)
