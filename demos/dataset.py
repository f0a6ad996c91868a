"""The on-disk demonstration format: a folder of one-episode HDF5 files plus a JSON header.

The layout is :data:`LAYOUT` (format ``imitlab-demos``, version 1), which README's "Dataset format" section
shows verbatim; ``tests/test_dataset_layout.py`` checks both against what :class:`DemoWriter` writes. Files
written before ``final_obs`` was added lack it.

An optional ``masks.json`` names subsets of episodes by file stem (``{"train": ["demo_000000", ...],
"valid": [...]}``), robomimic's ``mask/`` filter keys; it is written atomically by ``imitlab demos split``.

Why one file per episode: an episode is written to ``.demo_N.hdf5.tmp`` and renamed into place once
complete, so a crash (even SIGKILL) loses at most the episode in progress and never corrupts the ones
already written. Readers skip ``.tmp`` files. A writer claims index N by creating that ``.tmp`` file
exclusively (``O_CREAT | O_EXCL``), so writers sharing a folder never pick the same index.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
from gymnasium import spaces

from imitlab.core.documents import read_format_document
from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import fsync_dir, write_json_atomic
from imitlab.core.limits import MAX_OBJECT_KEYS, MAX_SPACE_ELEMENTS
from imitlab.core.observation_keys import is_image_sequence

#: A dataset folder, as README's "Dataset format" shows it.
LAYOUT = """\
<dataset>/
  dataset.json                 env id, env constructor kwargs, observation/action spaces, format version
  episodes/demo_000000.hdf5    one episode per file, in robomimic's per-demo layout:
      obs/<key>                (T, ...) per observation key: camera images (T, H, W, 3) uint8, gzip
                               (lossless), chunked by frames; the state (T, D) float32; a category
                               (a Discrete space, e.g. Town-v0's command) (T,) int64
      actions                  (T, A) float32: the label (the clean expert action)
      executed_actions         (T, A) float32: what the env received (differs under DART noise)
      rewards                  (T,) float32
      dones                    (T,) uint8, 1 on the last step
      intervention             (T,) uint8, human episodes only: 1 where the human controlled the step, 0 the expert
      final_obs/<key>          the observation after the last step, so every transition's next observation
                               is known (imitation's trajectories and robomimic's next_obs need it)
      attrs                    seed, source, noise_std, success, return, length, terminated, truncated,
                               env_id, env_kwargs (JSON), final_metrics (JSON); human episodes: operator, assisted
  masks.json                   optional train/valid episode lists (`imitlab demos split`, the studio's review page)
  exclusions.json              optional episodes excluded from training, each with its reason (the studio)
"""
FORMAT = "imitlab-demos"
FORMAT_VERSION = 1
HEADER = "dataset.json"
MASKS = "masks.json"
EPISODE_DIR = "episodes"
#: Top-level entries of every episode file; any other top-level array is optional per-step data.
_STANDARD_ARRAYS = frozenset({"obs", "actions", "executed_actions", "rewards", "dones", "final_obs"})
_EPISODE_NAME = re.compile(r"^demo_(\d{6,})\.hdf5$")
#: Header fields that make episodes "of the same env", so they can be appended, merged or trained on together.
ENV_FIELDS = ("env_id", "env_kwargs", "observation_space", "action_space")


def env_difference(header: dict[str, Any], other: dict[str, Any]) -> str | None:
    """The first of :data:`ENV_FIELDS` on which two dataset headers differ (None: the same env)."""
    return next((key for key in ENV_FIELDS if header.get(key) != other.get(key)), None)


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a Box, Discrete or Dict space (what a dataset, a policy and a bundle record)."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Discrete):  # a category, e.g. Town-v0's route command
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _bound_to_json(space.low),
            "high": _bound_to_json(space.high),
        }
    raise ImitlabError(f"unsupported space for a dataset: {space}")


def _bound_to_json(bound: np.ndarray) -> float | str | list:
    """One number when the bound is uniform; infinities as the strings "inf"/"-inf" (strict JSON has none)."""
    values = np.unique(bound)
    as_json = [v if np.isfinite(v) else str(v) for v in bound.astype(float).ravel().tolist()]
    if values.size == 1:
        return as_json[0]
    return np.array(as_json, dtype=object).reshape(bound.shape).tolist()


def space_from_json(desc: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_json`; a malformed or absurdly large description is one ImitlabError."""
    try:
        return _space_from_json(desc)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ImitlabError(f"malformed space description ({type(error).__name__}: {error})") from None


def _space_from_json(desc: dict[str, Any]) -> spaces.Space:
    if desc["type"] == "Dict":
        if len(desc["spaces"]) > MAX_OBJECT_KEYS:
            raise ValueError(f"{len(desc['spaces'])} sub-spaces, more than {MAX_OBJECT_KEYS}")
        return spaces.Dict({k: _space_from_json(v) for k, v in desc["spaces"].items()})
    if desc["type"] == "Discrete":
        return spaces.Discrete(int(desc["n"]), start=int(desc.get("start", 0)))
    dtype = np.dtype(desc["dtype"])
    shape = tuple(int(n) for n in desc["shape"])
    if len(shape) > 4 or any(n < 0 for n in shape) or math.prod(shape) > MAX_SPACE_ELEMENTS:
        raise ValueError(f"shape {shape} is not a plausible observation or action shape")
    low = np.broadcast_to(np.asarray(desc["low"], dtype=np.float64), shape).astype(dtype)
    high = np.broadcast_to(np.asarray(desc["high"], dtype=np.float64), shape).astype(dtype)
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


@dataclass
class Episode:
    """One demonstration, fully in memory."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    executed_actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    final_obs: dict[str, np.ndarray] | None = None
    """The observation after the last action (None for files recorded before it was stored)."""
    step_data: dict[str, np.ndarray] = field(default_factory=dict)
    """Optional per-step arrays beyond the standard ones (e.g. ``intervention``), stored at the file's top level."""

    def __len__(self) -> int:
        return len(self.actions)


def _create_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``path`` only if it does not exist yet (a private, fsynced temp file hard-linked into place, then
    the folder fsynced), so writers racing to create one dataset leave the first header alone."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(payload, indent=2))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def read_sidecar_json(path: Path, kind: str) -> Any:
    """An optional JSON file beside the episodes (``masks.json``, ``exclusions.json``): ``{}`` when absent,
    one line naming the file when it does not parse; the caller checks the shape."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ImitlabError(f"corrupt {kind} file {path}: {exc}") from None


def write_episode_file(path: Path, episode: Episode) -> None:
    """Write one episode HDF5 file atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        _fill_episode_file(f, episode)
        f.flush()
        os.fsync(f.id.get_vfd_handle())
    os.replace(tmp, path)


def encode_episode(episode: Episode) -> bytes:
    """The bytes of ``episode``'s HDF5 file, built in memory: a recording worker compresses its own frames and
    hands the writer one buffer, so the single writer only copies bytes to disk."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        _fill_episode_file(f, episode)
    return buffer.getvalue()


def _fill_episode_file(f: h5py.File, episode: Episode) -> None:
    obs = f.create_group("obs")
    for key, value in episode.obs.items():
        if is_image_sequence(value):
            chunk = (min(len(value), 16), *value.shape[1:])
            obs.create_dataset(key, data=value, chunks=chunk, compression="gzip", compression_opts=4)
        else:
            obs.create_dataset(key, data=value)
    f.create_dataset("actions", data=episode.actions.astype(np.float32))
    f.create_dataset("executed_actions", data=episode.executed_actions.astype(np.float32))
    f.create_dataset("rewards", data=episode.rewards.astype(np.float32))
    f.create_dataset("dones", data=episode.dones.astype(np.uint8))
    for key, value in episode.step_data.items():
        f.create_dataset(key, data=value)
    if episode.final_obs is not None:
        final = f.create_group("final_obs")
        for key, value in episode.final_obs.items():
            final.create_dataset(key, data=value)
    for key, value in episode.attrs.items():
        f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def read_episode_file(path: Path) -> Episode:
    """Read one episode file; any HDF5 or layout problem becomes an ImitlabError naming the file."""
    try:
        with h5py.File(path, "r") as f:
            obs = {key: f["obs"][key][()] for key in f["obs"]}
            attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
            episode = Episode(
                obs=obs,
                actions=f["actions"][()],
                executed_actions=f["executed_actions"][()],
                rewards=f["rewards"][()],
                dones=f["dones"][()],
                attrs=attrs,
                final_obs={key: f["final_obs"][key][()] for key in f["final_obs"]} if "final_obs" in f else None,
                step_data={key: f[key][()] for key in f if key not in _STANDARD_ARRAYS},
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ImitlabError(f"corrupt episode file {path}: {exc}") from None
    lengths = ({len(v) for v in episode.obs.values()} | {len(v) for v in episode.step_data.values()}
               | {len(episode.actions), len(episode.rewards)})
    if len(lengths) != 1:
        raise ImitlabError(f"corrupt episode file {path}: arrays have different lengths {sorted(lengths)}")
    return episode


@contextmanager
def open_episode_file(path: Path) -> Iterator[h5py.File]:
    """Open an episode for partial reads (a few arrays, a slice); HDF5 or layout errors raised inside the
    block become an ImitlabError naming the file, as in :func:`read_episode_file`."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, KeyError, ValueError) as exc:
        raise ImitlabError(f"corrupt episode file {path}: {exc}") from None


def file_attrs(f: h5py.Group) -> dict[str, Any]:
    """An open episode file's (or group's) metadata, JSON values decoded."""
    return {k: _decode_attr(v) for k, v in f.attrs.items()}


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "{[":
        return json.loads(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


class DemoDataset:
    """A dataset folder: the header plus the episode files that were completely written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header_path = self.path / HEADER
        if not self.path.exists():
            raise ImitlabError(f"dataset not found: {self.path}")
        if not header_path.is_file():
            raise ImitlabError(f"not an imitlab dataset (no {HEADER}): {self.path}")
        self.header: dict[str, Any] = read_format_document(header_path, FORMAT, FORMAT_VERSION)
        missing = [k for k in ("env_id", "observation_space", "action_space") if k not in self.header]
        if missing:
            raise ImitlabError(f"{header_path}: missing fields {missing}")
        if not isinstance(self.header["env_id"], str) or not isinstance(self.header.get("env_kwargs", {}), dict):
            raise ImitlabError(f"{header_path}: env_id must be a string and env_kwargs an object")
        for key in ("observation_space", "action_space"):  # parsed now: one line here, not a traceback later
            try:
                space_from_json(self.header[key])
            except ImitlabError as error:
                raise ImitlabError(f"{header_path}: {key}: {error}") from None

    @property
    def env_id(self) -> str:
        return self.header["env_id"]

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.header.get("env_kwargs", {}))

    @property
    def observation_space(self) -> spaces.Dict:
        return space_from_json(self.header["observation_space"])  # type: ignore[return-value]

    @property
    def action_space(self) -> spaces.Box:
        return space_from_json(self.header["action_space"])  # type: ignore[return-value]

    def episode_paths(self, mask: str | None = None) -> list[Path]:
        """Completed episode files in index order (only those listed in ``masks.json[mask]`` if given)."""
        folder = self.path / EPISODE_DIR
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _EPISODE_NAME.match(p.name))]
        paths = [p for _, p in sorted(found)]
        if mask is None:
            return paths
        masks = self.masks()
        if mask not in masks:
            raise ImitlabError(f"{self.path} has no mask {mask!r} (has: {sorted(masks) or 'none'}); "
                               "create train/valid masks with `imitlab demos split`")
        names = set(masks[mask])
        missing = names - {p.stem for p in paths}
        if missing:
            raise ImitlabError(f"mask {mask!r} in {self.path / MASKS} lists episodes that are not in the dataset: "
                               f"{', '.join(sorted(missing)[:5])}")
        return [p for p in paths if p.stem in names]

    def masks(self) -> dict[str, list[str]]:
        """Named episode subsets (mask name -> episode file stems); empty when there is no ``masks.json``."""
        path = self.path / MASKS
        masks = read_sidecar_json(path, "mask")
        if not isinstance(masks, dict) or not all(isinstance(v, list) for v in masks.values()):
            raise ImitlabError(f"corrupt mask file {path}: expected {{name: [episode, ...]}}")
        return masks

    def write_masks(self, masks: dict[str, list[str]]) -> None:
        """Replace ``masks.json`` atomically; every name must be an episode of this dataset."""
        known = {p.stem for p in self.episode_paths()}
        for name, episodes in masks.items():
            unknown = set(episodes) - known
            if unknown:
                raise ImitlabError(f"mask {name!r} names episodes not in {self.path}: {', '.join(sorted(unknown)[:5])}")
        write_json_atomic(self.path / MASKS, {k: list(v) for k, v in masks.items()})

    def __len__(self) -> int:
        return len(self.episode_paths())

    def episodes(self) -> Iterator[Episode]:
        for path in self.episode_paths():
            yield read_episode_file(path)

    def episode_attrs(self) -> list[dict[str, Any]]:
        """Per-episode metadata without reading the arrays."""
        out = []
        for path in self.episode_paths():
            try:
                with h5py.File(path, "r") as f:
                    out.append({"file": path.name, **{k: _decode_attr(v) for k, v in f.attrs.items()}})
            except OSError as exc:
                raise ImitlabError(f"corrupt episode file {path}: {exc}") from None
        return out


class DemoWriter:
    """Appends episodes to a dataset folder (creating it, or extending one recorded for the same env)."""

    def __init__(self, path: str | Path, env_id: str, env_kwargs: dict[str, Any],
                 observation_space: spaces.Dict, action_space: spaces.Box):
        self.path = Path(path)
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "observation_space": space_to_json(observation_space),
            "action_space": space_to_json(action_space),
        }
        if not (self.path / HEADER).exists():
            if self.path.exists() and any(not p.name.startswith(".") for p in self.path.iterdir()):
                raise ImitlabError(f"{self.path} exists and is not an imitlab dataset; choose an empty or new folder")
            self.path.mkdir(parents=True, exist_ok=True)
            _create_json(self.path / HEADER, header)
        key = env_difference(DemoDataset(self.path).header, header)
        if key is not None:
            raise ImitlabError(f"{self.path} holds demos with a different {key}; record into a new folder instead")
        (self.path / EPISODE_DIR).mkdir(exist_ok=True)
        paths = DemoDataset(self.path).episode_paths()
        self._next_index = int(_EPISODE_NAME.match(paths[-1].name).group(1)) + 1 if paths else 0

    def _claim(self) -> Path:
        """The next free episode path, claimed by creating its ``.tmp`` file exclusively. Another writer may hold
        a claim or have finished an index since this one looked, so taken indices are skipped."""
        while True:
            path = self.path / EPISODE_DIR / f"demo_{self._next_index:06d}.hdf5"
            self._next_index += 1
            try:
                os.close(os.open(path.with_name(f".{path.name}.tmp"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:
                continue
            # A claim succeeds once the previous holder has renamed its file into place, so look for that too.
            if not path.exists():
                return path
            os.unlink(path.with_name(f".{path.name}.tmp"))

    def append(self, episode: Episode) -> Path:
        """Write ``episode`` as the next demo file; returns its path."""
        path = self._claim()
        write_episode_file(path, episode)
        return path

    def append_encoded(self, data: bytes) -> Path:
        """Write an episode file's bytes (``encode_episode``) as the next demo, atomically; returns its path."""
        path = self._claim()
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def append_file(self, source: Path) -> Path:
        """Copy an existing episode file as the next demo (byte for byte, atomically); returns its path."""
        path = self._claim()
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
        return path
