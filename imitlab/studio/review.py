"""Dataset review API: list datasets and episodes (with audit flags), serve an episode's arrays and frames,
exclude episodes (``exclusions.json``) and edit the train/valid split (``masks.json``). No endpoint rewrites or
deletes an episode file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from imitlab.core.errors import ImitlabError
from imitlab.demos.audit import audit
from imitlab.demos.dataset import DemoDataset, file_attrs, open_episode_file
from imitlab.demos.edit import TRAIN_MASK, VALID_MASK, split
from imitlab.demos.exclusions import read_exclusions, set_excluded
from imitlab.envs import action_labels
from imitlab.studio.paths import find_folders, resolve_inside
from imitlab.studio.session import encode_jpeg

router = APIRouter(prefix="/api")


def _root(request: Request) -> Path:
    return request.app.state.root


def _dataset(request: Request, path: str) -> DemoDataset:
    return DemoDataset(resolve_inside(_root(request), path))


def _episode_path(dataset: DemoDataset, name: str) -> Path:
    for path in dataset.episode_paths():
        if path.stem == name:
            return path
    raise ImitlabError(f"{dataset.path} has no episode {name!r}")


@router.get("/datasets")
def list_datasets(request: Request) -> list[dict[str, Any]]:
    """Every dataset under the studio's folder."""
    root = _root(request)
    out = []
    for folder in find_folders(root, "dataset.json"):
        try:
            dataset = DemoDataset(folder)
            out.append({"path": str(folder.relative_to(root)) or ".", "env_id": dataset.env_id,
                        "episodes": len(dataset)})
        except ImitlabError as exc:
            out.append({"path": str(folder.relative_to(root)), "error": str(exc)})
    return out


@router.get("/dataset")
def dataset_episodes(request: Request, path: str) -> dict[str, Any]:
    """One dataset's episodes: outcome, length, source, audit flags, exclusion and split membership."""
    dataset = _dataset(request, path)
    flags: dict[str, list[dict[str, str]]] = {}
    for flag in audit(dataset).flags:
        flags.setdefault(flag.episode, []).append({"check": flag.check, "reason": flag.reason})
    excluded = read_exclusions(dataset)
    masks = dataset.masks()
    train, valid = set(masks.get(TRAIN_MASK, [])), set(masks.get(VALID_MASK, []))
    episodes = []
    for attrs in dataset.episode_attrs():
        name = Path(attrs["file"]).stem
        episodes.append({
            "name": name, "success": attrs.get("success"), "length": attrs.get("length"), "seed": attrs.get("seed"),
            "source": attrs.get("source", "unknown"), "operator": attrs.get("operator"),
            "flags": flags.get(name, []), "excluded": excluded.get(name),
            "split": "train" if name in train else "valid" if name in valid else None,
        })
    return {"path": path, "env_id": dataset.env_id, "env_kwargs": dataset.env_kwargs, "episodes": episodes,
            "has_split": bool(train or valid)}


@router.get("/episode")
def episode_arrays(request: Request, path: str, name: str) -> dict[str, Any]:
    """The arrays a review plots (actions, state, rewards, who controlled each step) and the camera keys."""
    dataset = _dataset(request, path)
    episode_path = _episode_path(dataset, name)
    with open_episode_file(episode_path) as f:
        actions = f["actions"][()]
        data = {
            "name": name, "attrs": file_attrs(f), "length": int(len(actions)),
            "actions": np.round(actions, 5).tolist(),
            "state": np.round(f["obs"]["state"][()], 5).tolist() if "state" in f["obs"] else [],
            "rewards": np.round(f["rewards"][()], 5).tolist(),
            "intervention": f["intervention"][()].tolist() if "intervention" in f else None,
            "cameras": sorted(k for k in f["obs"] if k.endswith("image")),
        }
    data["action_labels"] = action_labels(dataset.env_id, int(np.shape(data["actions"])[1]))
    return data


@router.get("/frame")
def episode_frame(request: Request, path: str, name: str, camera: str, t: int) -> Response:
    """One stored camera frame as JPEG (read alone: frames are chunked per step)."""
    dataset = _dataset(request, path)
    with open_episode_file(_episode_path(dataset, name)) as f:
        if camera not in f["obs"] or not camera.endswith("image"):
            raise ImitlabError(f"episode {name} has no camera {camera!r}")
        frames = f["obs"][camera]
        if not 0 <= t < len(frames):
            raise ImitlabError(f"step {t} is outside episode {name} (0..{len(frames) - 1})")
        image = frames[t]
    return Response(encode_jpeg(image, quality=92), media_type="image/jpeg")


class Exclusion(BaseModel):
    path: str
    name: str
    reason: str | None = None
    """None brings the episode back."""


@router.post("/exclude")
def exclude(request: Request, body: Exclusion) -> dict[str, str]:
    return set_excluded(_dataset(request, body.path), body.name, body.reason)


class SplitChange(BaseModel):
    path: str
    name: str
    split: str


@router.post("/split")
def set_split(request: Request, body: SplitChange) -> dict[str, list[str]]:
    """Move one episode to the train or valid mask (an episode without a split joins train first)."""
    if body.split not in (TRAIN_MASK, VALID_MASK):
        raise ImitlabError(f"split must be {TRAIN_MASK} or {VALID_MASK}, got {body.split!r}")
    dataset = _dataset(request, body.path)
    _episode_path(dataset, body.name)
    masks = dataset.masks()
    names = [p.stem for p in dataset.episode_paths()]
    listed = set(masks.get(TRAIN_MASK, [])) | set(masks.get(VALID_MASK, []))
    target = {TRAIN_MASK: set(masks.get(TRAIN_MASK, [])) | (set(names) - listed), VALID_MASK: set(masks.get(VALID_MASK, []))}
    other = VALID_MASK if body.split == TRAIN_MASK else TRAIN_MASK
    target[other].discard(body.name)
    target[body.split].add(body.name)
    masks.update({key: [n for n in names if n in members] for key, members in target.items()})
    dataset.write_masks(masks)
    return masks


class AutoSplit(BaseModel):
    path: str
    valid_fraction: float = 0.1
    seed: int = 0


@router.post("/split/auto")
def auto_split(request: Request, body: AutoSplit) -> dict[str, list[str]]:
    """``imitlab demos split``: a seeded train/valid split by episode (replaces the current one)."""
    return split(_dataset(request, body.path), body.valid_fraction, body.seed, overwrite=True)
