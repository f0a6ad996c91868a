"""``imitlab demos import-lerobot``: a LeRobotDataset (v3.0) folder as a new imitlab dataset.

An export of ours comes back as it was: the header, masks, episode attributes, final observations and per-step
arrays travel in ``info.json``'s ``imitlab`` key and the episode table (see ``lerobot_export``); states, actions,
rewards and dones are exact, camera frames are what the video decodes to. A dataset recorded with LeRobot maps
``observation.state`` to ``state``, ``observation.images.<name>`` to the camera ``<name>`` and any other
``observation.<name>`` to a vector ``<name>``; its episodes get the source ``imported`` and, unless
``assume_success``, no success flag. The dataset is built in a hidden folder beside ``out`` and renamed into
place when complete.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from gymnasium import spaces
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import check_out_dir, publish_dir, staging_dir
from imitlab.demos.dataset import DemoDataset, DemoWriter, Episode, space_from_json
from imitlab.demos.lerobot_format import (
    ACTION_FEATURE, CODEBASE_VERSION, DONE_FEATURE, EPISODE_EXTRA_COLUMN, EPISODES_DIR, EXECUTED_FEATURE,
    INFO_PATH, OBS_PREFIX, REWARD_FEATURE, VideoReader, file_path, obs_key_of)


class _Source:
    """A LeRobot dataset folder: its info, episode table, and the data and video files read in order."""

    def __init__(self, root: Path):
        if not root.is_dir():
            raise ImitlabError(f"LeRobot dataset not found: {root}")
        info_path = root / INFO_PATH
        if not info_path.is_file():
            raise ImitlabError(f"not a LeRobot dataset (no {INFO_PATH}): {root}")
        try:
            self.info: dict[str, Any] = json.loads(info_path.read_text())
            version = self.info["codebase_version"]
            self.fps = int(self.info["fps"])
            self.features: dict[str, dict[str, Any]] = self.info["features"]
            self.data_path: str = self.info["data_path"]
            self.video_path: str | None = self.info.get("video_path")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ImitlabError(f"corrupt {info_path}: {type(exc).__name__}: {exc}") from None
        if version != CODEBASE_VERSION:
            raise ImitlabError(f"{root} is a LeRobot {version} dataset; this reads {CODEBASE_VERSION} (convert it "
                               "with LeRobot's lerobot.datasets.v30.convert_dataset_v21_to_v30)")
        if ACTION_FEATURE not in self.features:
            raise ImitlabError(f"{info_path} has no {ACTION_FEATURE!r} feature")
        self.root = root
        self.episodes = self._episode_table()
        self._data: tuple[str, pa.Table] | None = None
        self._videos: dict[str, VideoReader] = {}

    def _episode_table(self) -> list[dict[str, Any]]:
        files = sorted((self.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if not files:
            raise ImitlabError(f"not a LeRobot dataset (no {EPISODES_DIR}/chunk-*/file-*.parquet): {self.root}")
        try:
            tables = [pq.read_table(f) for f in files]
            rows = pa.concat_tables(tables, promote_options="default").to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise ImitlabError(f"corrupt episode table in {self.root / EPISODES_DIR}: {exc}") from None
        needed = ("episode_index", "length", "data/chunk_index", "data/file_index")
        for row in rows:
            missing = [k for k in needed if row.get(k) is None]
            if missing:
                raise ImitlabError(f"episode table of {self.root}: episode row without {', '.join(missing)}")
        return sorted(rows, key=lambda r: r["episode_index"])

    def check(self) -> None:
        """Check every data file's columns and every video's frame size against info.json before converting
        anything, so that a mismatch is one error up front rather than after half the episodes."""
        data_files = {file_path(self.data_path, e["data/chunk_index"], e["data/file_index"]) for e in self.episodes}
        for name in sorted(data_files):
            try:
                schema = pq.read_schema(self.root / name)
            except (pa.ArrowException, OSError) as exc:
                raise ImitlabError(f"cannot read {self.root / name}: {exc}") from None
            for feature, spec in self.features.items():
                if spec.get("dtype") == "video":
                    continue
                if feature not in schema.names:
                    raise ImitlabError(f"{name} has no column {feature!r}, which info.json lists")
                kind = schema.field(feature).type
                if pa.types.is_fixed_size_list(kind) and kind.list_size != math.prod(spec["shape"]):
                    raise ImitlabError(f"column {feature!r} does not hold {tuple(spec['shape'])} values per frame "
                                       f"as info.json says (it holds {kind.list_size})")
        for feature, spec in self.features.items():
            if spec.get("dtype") != "video":
                continue
            for episode in self.episodes:
                self.video_reader(feature, episode)

    def frames(self, episode: dict[str, Any]) -> pa.Table:
        """The episode's frame rows, in frame order."""
        name = file_path(self.data_path, episode["data/chunk_index"], episode["data/file_index"])
        if self._data is None or self._data[0] != name:
            try:
                self._data = (name, pq.read_table(self.root / name))
            except (pa.ArrowException, OSError) as exc:
                raise ImitlabError(f"cannot read {self.root / name}: {exc}") from None
        table = self._data[1]
        if "episode_index" not in table.column_names:
            raise ImitlabError(f"{self.root / name} has no episode_index column")
        rows = table.filter(pc.equal(table["episode_index"], episode["episode_index"]))
        if "frame_index" in rows.column_names:
            rows = rows.sort_by("frame_index")
        if rows.num_rows != episode["length"]:
            raise ImitlabError(f"episode {episode['episode_index']}: the episode table says {episode['length']} "
                               f"frames, {name} holds {rows.num_rows}")
        return rows

    def video_reader(self, feature: str, episode: dict[str, Any]) -> VideoReader:
        """The open reader of the video that holds ``feature``'s frames of ``episode``, its size checked."""
        prefix = f"videos/{feature}"
        if self.video_path is None or episode.get(f"{prefix}/chunk_index") is None:
            raise ImitlabError(f"episode {episode['episode_index']} names no video file for {feature}")
        path = self.root / file_path(self.video_path, episode[f"{prefix}/chunk_index"],
                                     episode[f"{prefix}/file_index"], feature)
        reader = self._videos.get(feature)
        if reader is None or reader.path != path:
            if reader is not None:
                reader.close()
            reader = self._videos[feature] = VideoReader(path)
        shape = tuple(self.features[feature]["shape"])
        if (reader.height, reader.width) != shape[:2]:
            raise ImitlabError(f"{path} is {reader.width}x{reader.height}, info.json says {feature} is {shape}")
        return reader

    def video(self, feature: str, episode: dict[str, Any]) -> np.ndarray:
        start = round(episode[f"videos/{feature}/from_timestamp"] * self.fps)
        return self.video_reader(feature, episode).take(start, episode["length"])

    def close(self) -> None:
        for reader in self._videos.values():
            reader.close()


def _column(rows: pa.Table, feature: str, spec: dict[str, Any]) -> np.ndarray:
    """A feature's values for the episode's frames, shape (T, *shape) ((T,) for shape (1,)), checked against
    the shape ``info.json`` declares."""
    if feature not in rows.column_names:
        raise ImitlabError(f"data files have no column {feature!r}, which info.json lists")
    shape = tuple(spec["shape"])
    column = rows[feature].combine_chunks()
    if column.null_count:
        raise ImitlabError(f"column {feature!r} has missing values")
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) \
            or pa.types.is_large_list(column.type):
        values = column.flatten().to_numpy(zero_copy_only=False)
    else:
        values = column.to_numpy(zero_copy_only=False)
    if values.size != len(column) * math.prod(shape):
        raise ImitlabError(f"column {feature!r} does not hold {shape} values per frame as info.json says")
    values = values.astype(np.dtype(spec["dtype"]))
    return values.reshape(len(column)) if shape == (1,) else values.reshape(len(column), *shape)


def _image_column(rows: pa.Table, feature: str, shape: tuple[int, ...]) -> np.ndarray:
    """An ``image`` feature: PNG/JPEG bytes stored in the parquet rows (``{"bytes": ..., "path": ...}``)."""
    frames = np.empty((rows.num_rows, *shape), np.uint8)
    for i, cell in enumerate(rows[feature].to_pylist()):
        data = (cell or {}).get("bytes")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None or image.shape != shape:
            raise ImitlabError(f"frame {i} of {feature} is not a {shape} image")
        frames[i] = image[..., ::-1]
    return frames


def _array_from_json(value: dict[str, Any]) -> np.ndarray:
    if "png" in value:
        return cv2.imdecode(np.frombuffer(base64.b64decode(value["png"]), np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()
    return np.asarray(value["values"], dtype=value["dtype"]).reshape(value["shape"])


def _inferred_spaces(source: _Source) -> tuple[dict[str, str], spaces.Dict, spaces.Box]:
    """Observation keys and spaces of a dataset LeRobot recorded: cameras uint8, every vector unbounded."""
    keys, obs = {}, {}
    for feature, spec in source.features.items():
        if not feature.startswith(OBS_PREFIX):
            continue
        key = obs_key_of(feature)
        keys[feature] = key
        if spec["dtype"] in ("video", "image"):
            obs[key] = spaces.Box(0, 255, tuple(spec["shape"]), np.uint8)
        else:
            obs[key] = spaces.Box(-np.inf, np.inf, tuple(spec["shape"]), np.float32)
    action_shape = tuple(source.features[ACTION_FEATURE]["shape"])
    return keys, spaces.Dict(obs), spaces.Box(-np.inf, np.inf, action_shape, np.float32)


def import_lerobot(src: Path, out: Path, env_id: str | None = None, assume_success: bool = False,
                   overwrite: bool = False, progress: bool = True) -> DemoDataset:
    """Convert the LeRobotDataset folder ``src`` into a new imitlab dataset ``out``; ``env_id`` overrides the
    env the episodes belong to (a LeRobot recording names only its ``robot_type``)."""
    source = _Source(src)
    ours = source.info.get("imitlab")
    if ours is not None:
        try:
            header, keys = ours["header"], dict(ours["observation_keys"])
            obs_space = space_from_json(header["observation_space"])
            act_space = space_from_json(header["action_space"])
            env_kwargs, env_name = header.get("env_kwargs", {}), env_id or header["env_id"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ImitlabError(f"corrupt imitlab section of {src / INFO_PATH}: {type(exc).__name__}: {exc}") from None
    else:
        keys, obs_space, act_space = _inferred_spaces(source)
        env_kwargs = {}
        env_name = env_id or source.info.get("robot_type")
    if not env_name:
        raise ImitlabError(f"{src} does not name an env (no robot_type in {INFO_PATH}); pass --env-id")
    check_out_dir(out, overwrite)
    try:
        source.check()
    except (KeyError, TypeError, ValueError) as exc:
        source.close()
        raise ImitlabError(f"malformed LeRobot metadata in {src}: {type(exc).__name__}: {exc}") from None
    except BaseException:
        source.close()
        raise
    staging = staging_dir(out)
    try:
        writer = DemoWriter(staging, env_name, env_kwargs, obs_space, act_space)
        names = []
        for episode in tqdm(source.episodes, desc="import-lerobot", unit="ep", disable=not progress):
            try:
                converted = _episode(source, episode, keys, obs_space, ours is not None, assume_success)
            except (KeyError, TypeError, ValueError) as exc:
                raise ImitlabError(f"malformed LeRobot metadata in {src} (episode {episode['episode_index']}): "
                                   f"{type(exc).__name__}: {exc}") from None
            names.append(writer.append(converted).stem)
        if ours is not None and ours.get("masks"):
            DemoDataset(staging).write_masks({k: [names[i] for i in v] for k, v in ours["masks"].items()})
        source.close()
        publish_dir(staging, out)
    except BaseException:
        source.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DemoDataset(out)


def _episode(source: _Source, row: dict[str, Any], keys: dict[str, str], obs_space: spaces.Dict, ours: bool,
             assume_success: bool) -> Episode:
    rows = source.frames(row)
    features = source.features
    obs = {}
    for feature, key in keys.items():
        spec = features.get(feature)
        if spec is None:
            raise ImitlabError(f"info.json lists no feature {feature!r} for observation {key!r}")
        expected = obs_space[key].shape
        if spec["dtype"] == "video":
            value = source.video(feature, row)
        elif spec["dtype"] == "image":
            value = _image_column(rows, feature, tuple(spec["shape"]))
        else:
            value = _column(rows, feature, spec)
            if not ours:
                value = value.astype(np.float32).reshape(len(value), *expected)
        if value.shape[1:] != expected:
            raise ImitlabError(f"episode {row['episode_index']}: {feature} has per-frame shape {value.shape[1:]}, "
                               f"not {expected}")
        obs[key] = value
    actions = _column(rows, ACTION_FEATURE, features[ACTION_FEATURE]).astype(np.float32)
    n = len(actions)
    executed = (_column(rows, EXECUTED_FEATURE, features[EXECUTED_FEATURE]).astype(np.float32)
                if EXECUTED_FEATURE in features else actions.copy())
    rewards = (_column(rows, REWARD_FEATURE, features[REWARD_FEATURE]).astype(np.float32)
               if REWARD_FEATURE in features else np.zeros(n, np.float32))
    dones = (_column(rows, DONE_FEATURE, features[DONE_FEATURE]).astype(np.uint8)
             if DONE_FEATURE in features else np.eye(n, dtype=np.uint8)[-1])
    extra = json.loads(row[EPISODE_EXTRA_COLUMN]) if ours and row.get(EPISODE_EXTRA_COLUMN) else None
    if extra is not None:
        attrs = extra["attrs"]
        final_obs = None if extra["final_obs"] is None else {k: _array_from_json(v)
                                                             for k, v in extra["final_obs"].items()}
        step_data = {k: _array_from_json(v) for k, v in extra["step_data"].items()}
    else:
        attrs = {"source": "imported", "length": n, "return": float(rewards.sum()),
                 "lerobot_episode_index": int(row["episode_index"]), "task": "; ".join(row.get("tasks") or [])}
        if assume_success:
            attrs["success"] = True
        final_obs, step_data = None, {}
    return Episode(obs=obs, actions=actions, executed_actions=executed, rewards=rewards, dones=dones, attrs=attrs,
                   final_obs=final_obs, step_data=step_data)
