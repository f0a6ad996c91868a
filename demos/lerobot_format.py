"""The LeRobotDataset layout (codebase version v3.0) that ``demos export-lerobot`` writes and ``import-lerobot`` reads.

LeRobot (huggingface/lerobot, ``lerobot.datasets.lerobot_dataset``) keeps a dataset as::

    meta/info.json                                  codebase_version, fps, features (dtype, shape, names), totals,
                                                    path templates, chunk and file size limits
    meta/stats.json                                 per feature: min, max, mean, std, count, q01/q10/q50/q90/q99
                                                    (images: per channel, shape (3, 1, 1), in [0, 1])
    meta/tasks.parquet                              task strings (the pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode: length, tasks, which data and video files
                                                    hold it (from/to frame index, from/to timestamp), stats/...
    data/chunk-000/file-000.parquet                 one row per frame: every non-video feature plus timestamp,
                                                    frame_index, episode_index, index, task_index
    videos/<camera feature>/chunk-000/file-000.mp4  one video per camera and file, episodes back to back

Episodes are appended to a data (video) file until it reaches ``data_files_size_in_mb`` (``video_files_size_in_mb``);
then the next file is started, ``chunks_size`` files per chunk folder. This module holds what export and import
share: the paths, how our observation keys map to LeRobot feature names, the statistics, and the mp4 streams
(through the ffmpeg binary that imageio-ffmpeg ships, as ``evaluation/video.py`` does).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import imageio_ffmpeg
import numpy as np

from imitlab.core.errors import ImitlabError

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = f"{EPISODES_DIR}/{_CHUNK_FILE}.parquet"
DATA_PATH = f"data/{_CHUNK_FILE}.parquet"
VIDEO_PATH = "videos/{video_key}/" + _CHUNK_FILE + ".mp4"
#: LeRobot's defaults: files per chunk folder, and the size at which a data / video file is closed.
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200

#: Per-frame bookkeeping columns every LeRobot dataset has.
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                  "task_index": "int64"}
IMAGE_PREFIX, OBS_PREFIX = "observation.images.", "observation."
STATE_FEATURE, ACTION_FEATURE = "observation.state", "action"
REWARD_FEATURE, DONE_FEATURE = "next.reward", "next.done"
#: What the env executed (the label plus DART noise); a name outside LeRobot's ``observation.``/``action``
#: prefixes, so LeRobot policies do not take it for an input or a target.
EXECUTED_FEATURE = "imitlab.executed_action"
#: Episode-table column with what LeRobot has no place for: the episode's attributes (seed, success, ...), its
#: final observation and optional per-step arrays, as JSON.
EPISODE_EXTRA_COLUMN = "imitlab/episode"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
#: Encoder settings: LeRobot's own (``encode_video_frames``: GOP 2 so any frame decodes after at most one
#: other, yuv420p); ``crf`` is the quality knob.
CODEC_ARGS = {"libsvtav1": ["-preset", "12"], "libx264": ["-preset", "veryfast"]}
VIDEO_CODEC_NAMES = {"libsvtav1": "av1", "libx264": "h264"}


def feature_name(obs_key: str, kind: str) -> str:
    """The LeRobot feature of one of our observation keys: cameras under ``observation.images.``, our ``state``
    as LeRobot's ``observation.state``, anything else ``observation.<key>``."""
    if kind == "image":
        return IMAGE_PREFIX + obs_key
    return STATE_FEATURE if obs_key == "state" else OBS_PREFIX + obs_key


def obs_key_of(feature: str) -> str:
    """Our observation key for a LeRobot ``observation.*`` feature of a dataset we did not write
    (``observation.images.laptop`` -> ``laptop``, ``observation.environment_state`` -> ``environment_state``)."""
    if feature.startswith(IMAGE_PREFIX):
        return feature[len(IMAGE_PREFIX):].replace(".", "_")
    return feature[len(OBS_PREFIX):].replace(".", "_")


def file_path(template: str, chunk_index: int, file_index: int, video_key: str = "") -> str:
    return template.format(chunk_index=chunk_index, file_index=file_index, video_key=video_key)


def size_mb(path: Path) -> float:
    """Bytes written to ``path`` so far, in MiB (0 before a streaming writer has created it)."""
    return path.stat().st_size / 2**20 if path.exists() else 0.0


class FileCursor:
    """Which chunk and file episodes go to next; ``advance`` moves to the next file (and chunk folder)."""

    def __init__(self) -> None:
        self.chunk_index = self.file_index = 0

    def advance(self) -> None:
        self.file_index += 1
        if self.file_index == CHUNKS_SIZE:
            self.chunk_index, self.file_index = self.chunk_index + 1, 0


# ---------------------------------------------------------------------------------------------------- statistics

def array_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's statistics of a per-frame feature (frames on axis 0): per dimension, so a (T, D) array gives
    (D,) and a (T,) array (1,); ``count`` is the number of frames. Quantiles are exact here (LeRobot estimates
    them from histograms)."""
    flat = values.reshape(len(values), -1).astype(np.float64)
    stats = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0),
             "count": np.array([len(values)])}
    stats.update(zip(QUANTILES, np.quantile(flat, list(QUANTILES.values()), axis=0)))
    return stats


class ImageStats:
    """Per-channel statistics of uint8 camera frames, kept as 256-bin histograms so that episodes add up and the
    quantiles stay exact; reported in [0, 1] with shape (3, 1, 1), as LeRobot's ``compute_episode_stats``."""

    def __init__(self) -> None:
        self.histogram = np.zeros((3, 256), np.int64)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        for channel in range(3):
            self.histogram[channel] += np.bincount(frames[..., channel].ravel(), minlength=256)
        self.frames += len(frames)

    def merge(self, other: ImageStats) -> None:
        self.histogram += other.histogram
        self.frames += other.frames

    def stats(self) -> dict[str, np.ndarray]:
        levels = np.arange(256) / 255.0
        total = self.histogram.sum(1)
        mean = self.histogram @ levels / total
        std = np.sqrt(np.maximum(self.histogram @ levels**2 / total - mean**2, 0.0))
        seen = self.histogram > 0
        cumulative = np.cumsum(self.histogram, axis=1)
        out = {"min": levels[seen.argmax(1)], "max": levels[255 - seen[:, ::-1].argmax(1)], "mean": mean, "std": std}
        for name, q in QUANTILES.items():
            out[name] = levels[(cumulative >= q * total[:, None]).argmax(1)]
        out = {k: v.reshape(3, 1, 1) for k, v in out.items()}
        out["count"] = np.array([self.frames])
        return out


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    return {feature: {name: np.asarray(v).tolist() for name, v in values.items()} for feature, values in stats.items()}


# ---------------------------------------------------------------------------------------------------------- video

@contextmanager
def _quiet_svt() -> Iterator[None]:
    """SVT-AV1 prints its configuration to stderr whatever ffmpeg's log level; SVT_LOG=1 keeps errors only."""
    previous = os.environ.get("SVT_LOG")
    os.environ["SVT_LOG"] = previous or "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SVT_LOG"]


def check_vcodec(vcodec: str) -> None:
    if vcodec not in CODEC_ARGS:
        raise ImitlabError(f"unsupported video codec {vcodec!r}; choose one of {', '.join(CODEC_ARGS)}")


class VideoWriter:
    """Frames appended to one mp4 at a constant ``fps`` (frame i at i / fps s), yuv420p; ``vcodec`` is one of
    ``CODEC_ARGS`` (``check_vcodec``)."""

    def __init__(self, path: Path, width: int, height: int, fps: int, vcodec: str, crf: int):
        if width % 2 or height % 2:
            raise ImitlabError(f"camera frames of {width}x{height} pixels: yuv420p video needs even sizes")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames = path, 0
        with _quiet_svt():
            self._writer = imageio_ffmpeg.write_frames(
                str(path), (width, height), fps=fps, codec=vcodec, pix_fmt_out="yuv420p", macro_block_size=1,
                output_params=["-g", "2", "-crf", str(crf), *CODEC_ARGS[vcodec]], ffmpeg_log_level="error")
            self._writer.send(None)

    def add(self, frames: np.ndarray) -> None:
        for frame in frames:
            self._writer.send(np.ascontiguousarray(frame))
        self.frames += len(frames)

    def close(self) -> None:
        self._writer.close()


class VideoReader:
    """The frames of one mp4 in order; ``take(start, n)`` returns frames ``start .. start + n - 1`` (episodes
    are read in file order, so the file is decoded once; going back reopens it)."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise ImitlabError(f"video file missing: {path}")
        self.path = path
        self._open()

    def _open(self) -> None:
        self._frames = imageio_ffmpeg.read_frames(str(self.path))
        try:
            meta = next(self._frames)
        except (RuntimeError, OSError, StopIteration) as exc:
            raise ImitlabError(f"cannot read video {self.path}: {exc}") from None
        self.width, self.height = meta["size"]
        self.position = 0

    def take(self, start: int, count: int) -> np.ndarray:
        if start < self.position:
            self.close()
            self._open()
        out = np.empty((count, self.height, self.width, 3), np.uint8)
        try:
            while self.position < start:
                next(self._frames)
                self.position += 1
            for i in range(count):
                out[i] = np.frombuffer(next(self._frames), np.uint8).reshape(self.height, self.width, 3)
                self.position += 1
        except StopIteration:
            raise ImitlabError(f"video {self.path} ends at frame {self.position}, before frame {start + count - 1} "
                               "that its episode table points to") from None
        except RuntimeError as exc:
            raise ImitlabError(f"cannot decode video {self.path}: {exc}") from None
        return out

    def close(self) -> None:
        self._frames.close()
