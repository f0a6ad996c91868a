"""``imitlab demos export-lerobot``: a dataset as a LeRobotDataset (v3.0) that LeRobot's own class loads.

Every step becomes a frame row: cameras go to one mp4 per camera (AV1 by default, as LeRobot records), the state,
categories, the action label, the executed action, reward and done go to parquet columns. What LeRobot has no
column for travels along so that ``import-lerobot`` restores the dataset: our header (env id and kwargs, spaces,
masks) under ``info.json``'s ``imitlab`` key, and per episode its attributes, final observation and optional
per-step arrays as JSON in the episode table. Everything is written to a hidden folder beside ``out`` and renamed
into place when complete.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import check_out_dir, publish_dir, staging_dir
from imitlab.core.observation_keys import observation_kind
from imitlab.demos.dataset import DemoDataset, Episode, open_episode_file, read_episode_file
from imitlab.demos.lerobot_format import (
    ACTION_FEATURE, CHUNKS_SIZE, CODEBASE_VERSION, DATA_FILE_MB, DATA_PATH, DONE_FEATURE, EPISODE_EXTRA_COLUMN,
    EPISODES_PATH, EXECUTED_FEATURE, INDEX_FEATURES, INFO_PATH, REWARD_FEATURE, STATS_PATH, TASKS_PATH,
    VIDEO_CODEC_NAMES, VIDEO_FILE_MB, VIDEO_PATH, FileCursor, ImageStats, VideoWriter, array_stats, check_vcodec,
    feature_name, file_path, size_mb, stats_to_json)
from imitlab.envs import action_labels, env_class, state_labels


@dataclass
class ExportSummary:
    path: Path
    episodes: int
    frames: int
    cameras: list[str] = field(default_factory=list)


@dataclass
class _Column:
    """One per-frame feature: where its values come from and how LeRobot describes it."""

    feature: str
    source: str
    """``obs:<key>``, ``actions``, ``executed_actions``, ``rewards`` or ``dones``."""
    dtype: str
    shape: tuple[int, ...]
    names: list[str] | None

    def values(self, episode: Episode) -> np.ndarray:
        kind, _, key = self.source.partition(":")
        array = episode.obs[key] if kind == "obs" else getattr(episode, kind)
        if array.shape[1:] != self.shape and not (self.shape == (1,) and array.ndim == 1):
            raise ImitlabError(f"{self.feature}: an episode has per-step shape {array.shape[1:]}, the dataset "
                               f"header says {self.shape}")
        return array.astype(np.bool_) if self.dtype == "bool" else array

    def arrow(self, values: np.ndarray) -> pa.Array:
        if self.shape == (1,):
            return pa.array(values.reshape(-1), type=pa.from_numpy_dtype(np.dtype(self.dtype)))
        flat = pa.array(values.reshape(-1), type=pa.from_numpy_dtype(np.dtype(self.dtype)))
        return pa.FixedSizeListArray.from_arrays(flat, self.shape[0])

    def info(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "names": self.names}


def _fps(env_id: str) -> int:
    """Control steps per second: one frame per step (every imitlab env declares ``render_fps``)."""
    return int(getattr(env_class(env_id), "metadata", {}).get("render_fps", 10))


def _columns(dataset: DemoDataset) -> tuple[dict[str, str], list[_Column]]:
    """Camera features (feature -> observation key) and the per-frame columns, from the dataset's spaces."""
    cameras: dict[str, str] = {}
    columns: list[_Column] = []
    for key, space in dataset.observation_space.spaces.items():
        kind = observation_kind(space)
        name = feature_name(key, kind)
        if kind == "image":
            if space.shape[2] != 3:
                raise ImitlabError(f"camera {key!r} has {space.shape[2]} channels; LeRobot videos hold RGB frames")
            cameras[name] = key
        elif kind == "category":
            columns.append(_Column(name, f"obs:{key}", "int64", (1,), None))
        else:
            if len(space.shape) != 1:
                raise ImitlabError(f"observation {key!r} has shape {space.shape}; only vectors export to LeRobot")
            labels = state_labels(dataset.env_id, space.shape[0]) if key == "state" else None
            columns.append(_Column(name, f"obs:{key}", str(space.dtype), space.shape, labels))
    action_dim = dataset.action_space.shape[0]
    labels = action_labels(dataset.env_id, action_dim)
    columns += [_Column(ACTION_FEATURE, "actions", "float32", (action_dim,), labels),
                _Column(EXECUTED_FEATURE, "executed_actions", "float32", (action_dim,), labels),
                _Column(REWARD_FEATURE, "rewards", "float32", (1,), None),
                _Column(DONE_FEATURE, "dones", "bool", (1,), None)]
    return cameras, columns


def _array_json(array: np.ndarray) -> dict[str, Any]:
    """An array as JSON: camera frames as lossless PNG (base64), anything else as its values."""
    if array.dtype == np.uint8 and array.ndim == 3:
        ok, png = cv2.imencode(".png", np.ascontiguousarray(array[..., ::-1]))
        if not ok:
            raise ImitlabError("cannot encode a final camera frame as PNG")
        return {"png": base64.b64encode(png.tobytes()).decode()}
    return {"dtype": str(array.dtype), "shape": list(array.shape), "values": array.ravel().tolist()}


def _episode_extra(episode: Episode, source: str) -> str:
    return json.dumps({
        "source_file": source,
        "attrs": episode.attrs,
        "final_obs": None if episode.final_obs is None else {k: _array_json(np.asarray(v))
                                                             for k, v in episode.final_obs.items()},
        "step_data": {k: _array_json(v) for k, v in episode.step_data.items()},
    })


class _DataFiles:
    """Frame rows appended to ``data/chunk-*/file-*.parquet``, a new file once one reaches DATA_FILE_MB."""

    def __init__(self, root: Path, schema: pa.Schema):
        self.root, self.schema = root, schema
        self.cursor = FileCursor()
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None

    def write(self, table: pa.Table) -> tuple[int, int]:
        if self._path is not None and size_mb(self._path) >= DATA_FILE_MB:
            self.close()
            self.cursor.advance()
        if self._writer is None:
            self._path = self.root / file_path(DATA_PATH, self.cursor.chunk_index, self.cursor.file_index)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._path, self.schema, compression="snappy")
        self._writer.write_table(table)
        return self.cursor.chunk_index, self.cursor.file_index

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _CameraFiles:
    """One camera's episodes appended to ``videos/<feature>/chunk-*/file-*.mp4``, a new file at VIDEO_FILE_MB."""

    def __init__(self, root: Path, feature: str, fps: int, vcodec: str, crf: int):
        self.root, self.feature, self.fps, self.vcodec, self.crf = root, feature, fps, vcodec, crf
        self.cursor = FileCursor()
        self._writer: VideoWriter | None = None
        self.stats = ImageStats()

    def write(self, frames: np.ndarray) -> dict[str, Any]:
        if self._writer is not None and size_mb(self._writer.path) >= VIDEO_FILE_MB:
            self.close()
            self.cursor.advance()
        if self._writer is None:
            path = self.root / file_path(VIDEO_PATH, self.cursor.chunk_index, self.cursor.file_index, self.feature)
            self._writer = VideoWriter(path, frames.shape[2], frames.shape[1], self.fps, self.vcodec, self.crf)
        start = self._writer.frames
        self._writer.add(frames)
        episode_stats = ImageStats()
        episode_stats.add(frames)
        self.stats.merge(episode_stats)
        prefix = f"videos/{self.feature}"
        return {f"{prefix}/chunk_index": self.cursor.chunk_index, f"{prefix}/file_index": self.cursor.file_index,
                f"{prefix}/from_timestamp": start / self.fps,
                f"{prefix}/to_timestamp": (start + len(frames)) / self.fps,
                "stats": episode_stats.stats()}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def export_lerobot(dataset: DemoDataset, out: Path, overwrite: bool = False, vcodec: str = "libsvtav1",
                   crf: int = 30, progress: bool = True) -> ExportSummary:
    """Write ``dataset`` as a LeRobotDataset v3.0 folder ``out`` (all episodes, in index order, one task: the
    env id). ``crf`` trades video size for fidelity (LeRobot records at 30)."""
    check_out_dir(out, overwrite)
    check_vcodec(vcodec)
    paths = dataset.episode_paths()
    if not paths:
        raise ImitlabError(f"dataset {dataset.path} has no episodes to export")
    cameras, columns = _columns(dataset)
    for path in paths:  # every file opens before anything is written: a broken one is one error up front
        with open_episode_file(path) as f:
            if "actions" not in f:
                raise ImitlabError(f"corrupt episode file {path}: no actions")
    staging = staging_dir(out)
    try:
        frames = _write(dataset, paths, cameras, columns, staging, vcodec, crf, progress)
        publish_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportSummary(out, len(paths), frames, list(cameras))


def _write(dataset: DemoDataset, paths: list[Path], cameras: dict[str, str], columns: list[_Column], root: Path,
           vcodec: str, crf: int, progress: bool) -> int:
    fps = _fps(dataset.env_id)
    task = dataset.env_id
    schema = pa.schema([(c.feature, c.arrow(np.zeros((1, *c.shape), c.dtype)).type) for c in columns]
                       + [(name, pa.from_numpy_dtype(np.dtype(dtype))) for name, dtype in INDEX_FEATURES.items()])
    data = _DataFiles(root, schema)
    videos = {feature: _CameraFiles(root, feature, fps, vcodec, crf) for feature in cameras}
    values: dict[str, list[np.ndarray]] = {c.feature: [] for c in columns}
    values.update({name: [] for name in INDEX_FEATURES})
    rows: list[dict[str, Any]] = []
    total = 0
    try:
        for index, path in enumerate(tqdm(paths, desc="export-lerobot", unit="ep", disable=not progress)):
            episode = read_episode_file(path)
            n = len(episode)
            frame_values = {c.feature: c.values(episode) for c in columns}
            frame_values.update({
                "timestamp": (np.arange(n) / fps).astype(np.float32), "frame_index": np.arange(n, dtype=np.int64),
                "episode_index": np.full(n, index, np.int64), "index": np.arange(total, total + n, dtype=np.int64),
                "task_index": np.zeros(n, np.int64)})
            table = pa.table([c.arrow(frame_values[c.feature]) for c in columns]
                             + [pa.array(frame_values[name]) for name in INDEX_FEATURES], schema=schema)
            chunk_index, file_index = data.write(table)
            row: dict[str, Any] = {
                "episode_index": index, "tasks": [task], "length": n,
                "data/chunk_index": chunk_index, "data/file_index": file_index,
                "dataset_from_index": total, "dataset_to_index": total + n}
            episode_stats = {}
            for feature, key in cameras.items():
                frames = episode.obs[key]
                if frames.shape[1:] != dataset.observation_space[key].shape:
                    raise ImitlabError(f"{path}: camera {key!r} frames are {frames.shape[1:]}, the dataset header "
                                       f"says {dataset.observation_space[key].shape}")
                placed = videos[feature].write(frames)
                episode_stats[feature] = placed.pop("stats")
                row.update(placed)
            for name, array in frame_values.items():
                values[name].append(array)
                episode_stats[name] = array_stats(array)
            row["meta/episodes/chunk_index"] = row["meta/episodes/file_index"] = 0
            row.update({f"stats/{feature}/{name}": np.asarray(v).tolist()
                        for feature, stats in episode_stats.items() for name, v in stats.items()})
            row[EPISODE_EXTRA_COLUMN] = _episode_extra(episode, path.stem)
            rows.append(row)
            total += n
    finally:
        data.close()
        for camera in videos.values():
            camera.close()
    stats = {feature: camera.stats.stats() for feature, camera in videos.items()}
    stats.update({name: array_stats(np.concatenate(arrays)) for name, arrays in values.items()})
    episodes_path = root / file_path(EPISODES_PATH, 0, 0)
    episodes_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), episodes_path, compression="snappy")
    pd.DataFrame({"task_index": [0]}, index=pd.Index([task], name=None)).to_parquet(root / TASKS_PATH)
    (root / STATS_PATH).write_text(json.dumps(stats_to_json(stats), indent=2))
    (root / INFO_PATH).write_text(json.dumps(_info(dataset, cameras, columns, fps, len(paths), total, vcodec),
                                             indent=2))
    return total


def _info(dataset: DemoDataset, cameras: dict[str, str], columns: list[_Column], fps: int, episodes: int,
          frames: int, vcodec: str) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for feature, key in cameras.items():
        h, w, c = dataset.observation_space[key].shape
        features[feature] = {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
                             "info": {"video.height": h, "video.width": w, "video.codec": VIDEO_CODEC_NAMES[vcodec],
                                      "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                                      "video.channels": c, "has_audio": False}}
    features.update({c.feature: c.info() for c in columns})
    features.update({name: {"dtype": dtype, "shape": [1], "names": None} for name, dtype in INDEX_FEATURES.items()})
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": dataset.env_id,
        "total_episodes": episodes,
        "total_frames": frames,
        "total_tasks": 1,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB,
        "video_files_size_in_mb": VIDEO_FILE_MB,
        "fps": fps,
        "splits": {"train": f"0:{episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cameras else None,
        "features": features,
        "imitlab": {
            "header": dataset.header,
            "observation_keys": {**cameras, **{c.feature: c.source.removeprefix("obs:") for c in columns
                                               if c.source.startswith("obs:")}},
            "masks": {name: _episode_indices(dataset, stems) for name, stems in dataset.masks().items()},
        },
    }


def _episode_indices(dataset: DemoDataset, stems: list[str]) -> list[int]:
    """Mask members as LeRobot episode indices (positions among the exported episodes)."""
    position = {p.stem: i for i, p in enumerate(dataset.episode_paths())}
    return [position[s] for s in stems]
