"""Other tools' dataset formats: robomimic HDF5 (both ways) and ``imitation`` trajectories.

robomimic keeps a whole dataset in one HDF5 file::

    data/                      attrs: total (number of samples), env_args (JSON: env_name, type, env_kwargs)
      demo_<i>/                attrs: num_samples (+ our per-episode metadata, which robomimic ignores)
        obs/<key>  next_obs/<key>  actions  rewards  dones  (+ executed_actions)
    mask/<name>                demo names (bytes) of each filter key, e.g. mask/train, mask/valid

Our episode file is already robomimic's per-demo layout, so the conversion is a regrouping; the extra
datasets and attributes we add make ``import_robomimic(export_robomimic(d))`` equal to ``d`` array for array.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from imitlab.core.observation_keys import is_image_sequence, observation_kind
from imitlab.demos.dataset import (DemoDataset, DemoWriter, Episode, file_attrs, open_episode_file,
                                   read_episode_file, space_from_json)
from imitlab.core.errors import ImitlabError
from imitlab.demos.edit import new_dataset_folder

#: robomimic's ``EnvType.GYM_TYPE``: tells robomimic to build the env with ``gym.make(env_name, **env_kwargs)``.
ROBOMIMIC_GYM_TYPE = 2
_DEMO_NAME = re.compile(r"^demo_(\d+)$")
#: Group attributes that belong to the robomimic layout (or to this converter), not to the episode.
_LAYOUT_ATTRS = ("num_samples", "model_file", "imitlab_final_obs")


def _write_obs_group(group: h5py.Group, obs: dict[str, np.ndarray]) -> None:
    """Same storage as our episode files: images gzip-compressed in 16-frame chunks, the rest plain."""
    for key, value in obs.items():
        if is_image_sequence(value):
            group.create_dataset(key, data=value, chunks=(min(len(value), 16), *value.shape[1:]),
                                 compression="gzip", compression_opts=4)
        else:
            group.create_dataset(key, data=value)


def _next_obs(episode: Episode) -> dict[str, np.ndarray]:
    """obs shifted by one step; the last entry is the stored final observation, else the last one repeated."""
    final = episode.final_obs or {k: v[-1] for k, v in episode.obs.items()}
    return {k: np.concatenate([v[1:], final[k][None]]) for k, v in episode.obs.items()}


def export_robomimic(dataset: DemoDataset, out: Path, overwrite: bool = False) -> Path:
    """Write ``dataset`` as one robomimic HDF5 file (written to a temp file, renamed when complete)."""
    if out.exists() and not overwrite:
        raise ImitlabError(f"{out} exists; pass --overwrite to replace it")
    paths = dataset.episode_paths()
    if not paths:
        raise ImitlabError(f"dataset {dataset.path} has no episodes to export")
    demo_names = {p.stem: f"demo_{int(p.stem.split('_')[1])}" for p in paths}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        _write_robomimic(dataset, paths, demo_names, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return out


def _write_robomimic(dataset: DemoDataset, paths: list[Path], demo_names: dict[str, str], tmp: Path) -> None:
    total = 0
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for path in paths:
            episode = read_episode_file(path)
            group = data.create_group(demo_names[path.stem])
            _write_obs_group(group.create_group("obs"), episode.obs)
            _write_obs_group(group.create_group("next_obs"), _next_obs(episode))
            group.create_dataset("actions", data=episode.actions)
            group.create_dataset("executed_actions", data=episode.executed_actions)
            group.create_dataset("rewards", data=episode.rewards)
            group.create_dataset("dones", data=episode.dones)
            with open_episode_file(path) as src:  # raw attribute values: copied exactly as stored
                for key, value in src.attrs.items():
                    group.attrs[key] = value
            group.attrs["num_samples"] = len(episode)
            group.attrs["imitlab_final_obs"] = episode.final_obs is not None
            total += len(episode)
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps({"env_name": dataset.env_id, "type": ROBOMIMIC_GYM_TYPE,
                                             "env_kwargs": dataset.env_kwargs})
        data.attrs["imitlab_header"] = json.dumps(dataset.header)
        for name, episodes in dataset.masks().items():
            f.create_dataset(f"mask/{name}", data=np.array([demo_names[e] for e in episodes], dtype="S"))


def _inferred_spaces(group: h5py.Group) -> tuple[spaces.Dict, spaces.Box]:
    """Spaces of a foreign robomimic file, from its first demo: uint8 (T, H, W, C) is a camera, the rest is
    unbounded; actions are assumed normalised to [-1, 1], as robomimic's own datasets are."""
    obs: dict[str, spaces.Space] = {}
    for key, ds in group["obs"].items():
        if is_image_sequence(ds):
            obs[key] = spaces.Box(0, 255, ds.shape[1:], np.uint8)
        else:
            obs[key] = spaces.Box(-np.inf, np.inf, ds.shape[1:], np.float32 if ds.dtype.kind == "f" else ds.dtype)
    return spaces.Dict(obs), spaces.Box(-1.0, 1.0, group["actions"].shape[1:], np.float32)


def _float32(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """robomimic stores low-dimensional data as float64; our envs and policies use float32."""
    return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in arrays.items()}


def _read_demo(group: h5py.Group, foreign: bool, assume_success: bool) -> Episode:
    """One demo group as an Episode. A foreign demo gets float32 arrays and the metadata we can derive
    (source "imported", length, return); its success is unknown unless ``assume_success``."""
    obs = {k: v[()] for k, v in group["obs"].items()}
    actions = group["actions"][()]
    n = len(actions)
    rewards = group["rewards"][()] if "rewards" in group else np.zeros(n, np.float32)
    final_obs = None
    if "next_obs" in group and bool(group.attrs.get("imitlab_final_obs", True)):
        final_obs = {k: v[-1] for k, v in group["next_obs"].items()}
    attrs = {k: v for k, v in file_attrs(group).items() if k not in _LAYOUT_ATTRS}
    if foreign:
        attrs.setdefault("source", "imported")
        attrs.setdefault("length", n)
        attrs.setdefault("return", float(np.sum(rewards)))
        if assume_success:
            attrs.setdefault("success", True)
        obs = _float32(obs)
        final_obs = _float32(final_obs) if final_obs is not None else None
        actions = actions.astype(np.float32)
    return Episode(
        obs=obs,
        actions=actions,
        executed_actions=group["executed_actions"][()] if "executed_actions" in group else actions.copy(),
        rewards=rewards,
        dones=group["dones"][()] if "dones" in group else np.eye(n, dtype=np.uint8)[-1],
        attrs=attrs,
        final_obs=final_obs,
    )


def import_robomimic(path: Path, out: Path, env_id: str | None = None, assume_success: bool = False) -> DemoDataset:
    """Convert a robomimic HDF5 file (ours or anyone's) into a new dataset folder ``out``.

    Demos are written in numeric order (``demo_0, demo_1, ...``); masks are kept, renamed to our episode names.
    ``env_id`` overrides ``env_args["env_name"]``. Foreign files do not say whether a demo succeeded;
    ``assume_success`` marks them all successful (robomimic's human datasets hold successful demos only), which
    training's ``successful_only`` filter needs.
    """
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ImitlabError(f"cannot read robomimic file {path}: {exc}") from None
    with f, new_dataset_folder(out):
        if "data" not in f:
            raise ImitlabError(f"{path} is not a robomimic dataset (no 'data' group)")
        data = f["data"]
        demos = sorted((int(m.group(1)), name) for name in data if (m := _DEMO_NAME.match(name)))
        if not demos:
            raise ImitlabError(f"robomimic file {path} has no demo_<i> groups")
        header: dict[str, Any] | None = None
        if "imitlab_header" in data.attrs:  # a file we exported: restore our header exactly
            header = json.loads(data.attrs["imitlab_header"])
        env_args = json.loads(data.attrs.get("env_args", "{}"))
        if header is not None:
            obs_space, act_space = space_from_json(header["observation_space"]), space_from_json(header["action_space"])
            env_kwargs = header["env_kwargs"]
        else:
            obs_space, act_space = _inferred_spaces(data[demos[0][1]])
            env_kwargs = env_args.get("env_kwargs", {})
        env_name = env_id or (header or {}).get("env_id") or env_args.get("env_name")
        if not env_name:
            raise ImitlabError(f"{path} does not name its environment (data.attrs['env_args']); pass --env-id")
        writer = DemoWriter(out, env_name, env_kwargs, obs_space, act_space)
        renamed = {}
        for _, name in demos:
            try:
                episode = _read_demo(data[name], foreign=header is None, assume_success=assume_success)
            except (OSError, KeyError, ValueError) as exc:
                raise ImitlabError(f"corrupt demo {name} in {path}: {exc}") from None
            renamed[name] = writer.append(episode).stem
        masks = {}
        for key in f.get("mask", {}):
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][key][()]]
            unknown = [n for n in names if n not in renamed]
            if unknown:
                raise ImitlabError(f"mask/{key} in {path} names demos that are not in data/: {', '.join(unknown[:5])}")
            masks[key] = [renamed[n] for n in names]
        dataset = DemoDataset(out)
        if masks:
            dataset.write_masks(masks)
    return dataset


def imitation_observation_space(dataset: DemoDataset, channels_first: bool = True) -> spaces.Dict:
    """The observation space of :func:`to_imitation_trajectories`' observations (images moved to (C, H, W))."""
    out = {}
    for key, space in dataset.observation_space.spaces.items():
        if channels_first and observation_kind(space) == "image":
            h, w, c = space.shape
            space = spaces.Box(0, 255, (c, h, w), np.uint8)
        out[key] = space
    return spaces.Dict(out)


def to_imitation_trajectories(dataset: DemoDataset, mask: str | None = None, successful_only: bool = False,
                              channels_first: bool = True) -> list:
    """Episodes as ``imitation.data.types.TrajectoryWithRew`` with ``DictObs`` observations (T + 1 of them).

    ``channels_first`` moves images to (C, H, W), the layout Stable-Baselines3's CNN extractors expect (SB3
    transposes env images with ``VecTransposeImage``; offline data has to be transposed here). Pair the
    trajectories with :func:`imitation_observation_space`. Episodes recorded before final observations were
    stored repeat their last observation as the final one.
    """
    try:
        from imitation.data import types
    except ImportError as exc:
        raise ImitlabError(f"the imitation package is needed for this conversion ({exc}); "
                           "pip install imitation") from None
    trajectories = []
    for path in dataset.episode_paths(mask):
        episode = read_episode_file(path)
        if successful_only and not episode.attrs.get("success", False):
            continue
        final = episode.final_obs or {k: v[-1] for k, v in episode.obs.items()}
        obs = {}
        for key, value in episode.obs.items():
            full = np.concatenate([value, final[key][None]])
            obs[key] = np.ascontiguousarray(full.transpose(0, 3, 1, 2)) if channels_first and is_image_sequence(full) else full
        trajectories.append(types.TrajectoryWithRew(
            obs=types.DictObs(obs),
            acts=episode.actions,
            infos=None,
            terminal=True,
            rews=episode.rewards.astype(np.float32),
        ))
    return trajectories
