"""Minibatches of (state, images, categories, actions) for training, from a dataset that may not fit in memory.

Two modes, chosen from the decoded size of the selected episodes against a memory budget:

* ``memory``: every episode is decoded once into contiguous arrays; a batch is one fancy-index per array.
  Images in the files are gzip-compressed, so decoding them once instead of every epoch is the whole win.
* ``chunked``: each epoch visits the episodes in a shuffled order, a group ("chunk") at a time; a background
  thread decodes the next chunks (whole-episode reads, one file open per episode per epoch, never per
  sample) while the trainer consumes the current one, whose rows are shuffled. Chunks are groups of
  shuffled episodes rather than ranges of neighbouring ones: with one file per episode, neighbours share
  nothing on disk, and mixing episodes gives better-shuffled minibatches.

The mode is reported in one log line (logger ``imitlab.demos.loader``) and in :attr:`DemoLoader.plan`.
The behaviour-cloning trainer (``training/bc.py``) reads its demonstrations only through this loader.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import h5py
import numpy as np
import torch

from imitlab.core.errors import ImitlabError
from imitlab.core.limits import DEFAULT_BUDGET_MB
from imitlab.core.observation_check import Category
from imitlab.core.observation_keys import category_keys, image_keys
from imitlab.demos.dataset import DemoDataset, env_difference, file_attrs, open_episode_file
from imitlab.demos.edit import VALID_MASK
from imitlab.demos.exclusions import read_exclusions
from imitlab.policies.policy import state_statistics

log = logging.getLogger(__name__)


def _frame_jobs(ds: h5py.Dataset, dest: np.ndarray, path: Path) -> list[Callable[[], None]]:
    """Fill ``dest`` with the frames of ``ds``: now through h5py, or, for our storage (deflate only, chunks of
    whole frames), as one job per chunk that inflates the raw chunk with zlib. zlib releases the GIL while
    h5py holds a global lock, so only the jobs decode frames on several cores at once."""
    plist = ds.id.get_create_plist()
    if not (ds.chunks and ds.chunks[1:] == ds.shape[1:] and plist.get_nfilters() == 1
            and plist.get_filter(0)[0] == h5py.h5z.FILTER_DEFLATE):
        dest[...] = ds[()]
        return []
    chunk_shape, step = ds.chunks, ds.chunks[0]
    raw = [ds.id.read_direct_chunk((start,) + (0,) * (ds.ndim - 1)) for start in range(0, len(dest), step)]

    def inflate(start: int, filter_mask: int, blob: bytes) -> None:
        try:  # a set bit 0 in the filter mask means deflate was skipped for this chunk (stored as is)
            data = blob if filter_mask & 1 else zlib.decompress(blob)
            frames = np.frombuffer(data, np.uint8).reshape(chunk_shape)
        except (zlib.error, ValueError) as exc:
            raise ImitlabError(f"corrupt episode file {path}: frames {start}-{start + step - 1} of "
                               f"{ds.name}: {exc}") from None
        dest[start:start + step] = frames[:len(dest) - start]

    return [partial(inflate, start, mask, blob) for start, (mask, blob) in zip(range(0, len(dest), step), raw)]


class DemoBatch(NamedTuple):
    """One minibatch: ``state`` float32 (B, D), ``images`` uint8 (B, H, W, C) per camera key, ``actions``
    float32 (B, A), ``categories`` int64 (B,) per category key (e.g. Town-v0's route command). With an action
    horizon T > 1, ``actions`` (B, T, A) are each row's next T actions and ``action_mask`` bool (B, T) says which
    of them lie inside the row's episode (the rest repeat its last action); with a frame history N > 1, ``images``
    are (B, N, H, W, C): each row's last N frames, oldest first (the episode's first frame repeated before it)."""

    state: torch.Tensor
    images: dict[str, torch.Tensor]
    actions: torch.Tensor
    categories: dict[str, torch.Tensor]
    action_mask: torch.Tensor | None = None


def action_windows(actions: np.ndarray, ends: np.ndarray, rows: np.ndarray,
                   horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The next ``horizon`` actions from each of ``rows`` (B, horizon, A), cut at the row's episode end
    (``ends``: per row, the index after its episode's last row) and padded with that episode's last action, and
    the (B, horizon) mask of the steps inside the episode. Only actions are gathered; no frame is copied."""
    steps = rows[:, None] + np.arange(horizon)
    end = ends[rows][:, None]
    return actions[np.minimum(steps, end - 1)], steps < end


def frame_windows(starts: np.ndarray, rows: np.ndarray, history: int) -> np.ndarray:
    """The indices (B, history) of each row's last ``history`` frames, oldest first, held at its episode's first
    row (``starts``: per row, its episode's first row): indexing the frames with them gathers only the batch."""
    return np.maximum(rows[:, None] - np.arange(history - 1, -1, -1), starts[rows][:, None])


def episode_ends(lengths: Sequence[int]) -> np.ndarray:
    """Per row of episodes concatenated in order, the index after its episode's last row."""
    stops = np.cumsum(lengths)
    return np.repeat(stops, lengths)


def episode_starts(lengths: Sequence[int]) -> np.ndarray:
    """Per row of episodes concatenated in order, the index of its episode's first row."""
    return episode_ends(lengths) - np.repeat(lengths, lengths)


@dataclass
class _Arrays:
    """Rows of several episodes, concatenated: whole episodes (``starts`` and ``ends`` set, for cutting windows)
    or a minibatch's rows (``mask`` set when its actions are windows)."""

    state: np.ndarray
    images: dict[str, np.ndarray]
    actions: np.ndarray
    categories: dict[str, np.ndarray]
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)

    def take(self, rows: np.ndarray, horizon: int = 1, history: int = 1) -> _Arrays:
        """Some rows; from whole episodes with ``horizon`` > 1, each with its window of the next actions, with
        ``history`` > 1 each with its last frames."""
        actions, mask = self.actions[rows], None if self.mask is None else self.mask[rows]
        if horizon > 1 and self.ends is not None:
            actions, mask = action_windows(self.actions, self.ends, rows, horizon)
        frames = rows if history == 1 or self.starts is None else frame_windows(self.starts, rows, history)
        return _Arrays(self.state[rows], {k: v[frames] for k, v in self.images.items()}, actions,
                       {k: v[rows] for k, v in self.categories.items()}, mask=mask)

    @staticmethod
    def concat(parts: list[_Arrays]) -> _Arrays:
        masks = [p.mask for p in parts]
        return _Arrays(np.concatenate([p.state for p in parts]),
                       {k: np.concatenate([p.images[k] for p in parts]) for k in parts[0].images},
                       np.concatenate([p.actions for p in parts]),
                       {k: np.concatenate([p.categories[k] for p in parts]) for k in parts[0].categories},
                       mask=None if masks[0] is None else np.concatenate(masks))


class DemoLoader:
    """Iterate minibatches over the selected episodes of one or more datasets; each ``iter()`` is one epoch.

    Several datasets (e.g. demos plus DAgger rounds) must share env, env kwargs and spaces. ``mask`` restricts
    each to a ``masks.json`` subset (e.g. ``"train"``); ``successful_only`` drops failed demonstrations except
    those whose source is in ``keep_sources`` (DAgger's corrections are worth learning from either way);
    episodes named in a dataset's ``exclusions.json`` are always skipped (``demos/exclusions.py``);
    ``mode`` is ``"auto"`` (by ``memory_budget_mb``), ``"memory"`` or ``"chunked"``; ``workers`` threads inflate
    image chunks (0: up to 4, one per core); ``seed`` seeds the shuffling, or is a ``np.random.Generator`` used
    as is (to continue a caller's random stream); ``action_horizon`` > 1 serves each sample's next actions (an
    action-chunking head's targets) and ``frame_history`` > 1 its last frames (see :class:`DemoBatch`).
    :meth:`subset` makes train/validation loaders from one scan.
    """

    def __init__(self, datasets: DemoDataset | Sequence[DemoDataset], batch_size: int = 64, *,
                 mask: str | None = None, successful_only: bool = True, keep_sources: Sequence[str] = (),
                 memory_budget_mb: float = DEFAULT_BUDGET_MB, mode: str = "auto", shuffle: bool = True,
                 drop_last: bool = False, prefetch: int = 2, workers: int = 0,
                 seed: int | np.random.Generator = 0, action_horizon: int = 1, frame_history: int = 1):
        if mode not in ("auto", "memory", "chunked"):
            raise ImitlabError(f"loader mode must be auto, memory or chunked, got {mode!r}")
        self.datasets = [datasets] if isinstance(datasets, DemoDataset) else list(datasets)
        first = self.datasets[0]
        for other in self.datasets[1:]:
            key = env_difference(first.header, other.header)
            if key is not None:
                raise ImitlabError(f"dataset {other.path} has a different {key} than {first.path}")
        self.batch_size = batch_size
        self.action_horizon = action_horizon
        self.frame_history = frame_history
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.prefetch = max(1, prefetch)
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.requested_mode = mode
        self.budget_bytes = int(memory_budget_mb * 2**20)
        self._rng = np.random.default_rng(seed)
        obs_space = first.observation_space.spaces
        if "state" not in obs_space:
            raise ImitlabError(f"dataset {first.path} has no 'state' observation to train on")
        self.image_shapes = {k: tuple(obs_space[k].shape) for k in image_keys(first.observation_space)}
        self.image_keys = tuple(self.image_shapes)
        self.categories = tuple(Category(k, int(obs_space[k].n), int(obs_space[k].start))
                                for k in category_keys(first.observation_space))
        """The category (``Discrete``) observations served with every row, e.g. Town-v0's route command."""
        self.state_dim = int(obs_space["state"].shape[0])
        self.action_dim = int(first.action_space.shape[0])
        self._row_bytes = (sum(int(np.prod(shape)) for shape in self.image_shapes.values())
                           + 4 * (self.state_dim + self.action_dim) + 8 * len(self.categories))
        paths, lengths, seeds = [], [], []
        self.excluded = 0
        self.skipped_nonfinite: list[Path] = []
        """Episodes left out because their actions or states hold NaN or infinity (they would poison every batch)."""
        for dataset in self.datasets:
            excluded = read_exclusions(dataset)
            for path in dataset.episode_paths(mask):
                if path.stem in excluded:
                    self.excluded += 1
                    continue
                with open_episode_file(path) as f:
                    attrs = file_attrs(f)
                    length = int(f["actions"].shape[0])
                    finite = bool(np.isfinite(f["actions"][()]).all() and np.isfinite(f["obs"]["state"][()]).all())
                if successful_only and not attrs.get("success", False) and attrs.get("source") not in keep_sources:
                    continue
                if not finite:
                    self.skipped_nonfinite.append(path)
                    continue
                paths.append(path)
                lengths.append(length)
                seeds.append(int(attrs.get("seed", -1)))
        if not paths:
            raise ImitlabError(f"dataset {first.path} has no {'successful ' if successful_only else ''}episodes"
                               + (f" in mask {mask!r}" if mask else "")
                               + (f" ({len(self.skipped_nonfinite)} skipped for non-finite actions or states)"
                                  if self.skipped_nonfinite else ""))
        self._select(paths, lengths, seeds)
        if self.skipped_nonfinite:
            names = ", ".join(p.name for p in self.skipped_nonfinite[:3])
            more = ", ..." if len(self.skipped_nonfinite) > 3 else ""
            self.plan += (f"; skipped {len(self.skipped_nonfinite)} episodes with non-finite actions or states "
                          f"({names}{more})")
            log.warning(self.plan)

    def _select(self, paths: list[Path], lengths: list[int], seeds: list[int]) -> None:
        """Set the episodes this loader serves, and decide (and log) how it holds them."""
        self.paths, self.lengths, self.seeds = paths, lengths, seeds
        self.num_samples = int(sum(lengths))
        self.decoded_bytes = self.num_samples * self._row_bytes
        self.mode = self.requested_mode
        if self.mode == "auto":
            self.mode = "memory" if self.decoded_bytes <= self.budget_bytes else "chunked"
        # Chunked: the chunk being consumed, the prefetched ones and the one being decoded fit in the budget.
        self.chunk_bytes = max(self._row_bytes, self.budget_bytes // (self.prefetch + 2))
        self._cache: _Arrays | None = None
        how = ("cached in memory" if self.mode == "memory"
               else f"streamed in chunks of ~{self.chunk_bytes / 2**20:.0f} MiB")
        self.plan = (f"demo loader: {len(paths)} episodes"
                     + (f" ({self.excluded} excluded by exclusions.json)" if self.excluded else "")
                     + f", {self.num_samples} samples, "
                     f"{self.decoded_bytes / 2**20:.0f} MiB decoded; {how} "
                     f"(budget {self.budget_bytes / 2**20:.0f} MiB)")
        log.info(self.plan)

    def mask_split(self) -> tuple[list[int], list[int]] | None:
        """The served episodes (indices into :attr:`paths`) in the datasets' ``train`` and ``valid`` masks, when the
        first dataset has them (``imitlab demos split``, or the studio's review page); None otherwise. Episodes of
        a dataset without those masks (e.g. DAgger's rounds) train."""
        if VALID_MASK not in self.datasets[0].masks():
            return None
        valid: set[Path] = set()
        for dataset in self.datasets:
            if VALID_MASK in dataset.masks():
                valid.update(dataset.episode_paths(VALID_MASK))
        return ([i for i, path in enumerate(self.paths) if path not in valid],
                [i for i, path in enumerate(self.paths) if path in valid])

    def subset(self, episodes: Sequence[int], shuffle: bool | None = None, batch_size: int | None = None,
               seed: int | np.random.Generator | None = None, action_horizon: int | None = None,
               frame_history: int | None = None) -> DemoLoader:
        """A loader over some of this one's episodes (indices into :attr:`paths`, served in the order given), with
        the same settings unless overridden; e.g. a training and a validation split without scanning the files
        again. A subset keeps this loader's mode: the budget was judged on all the episodes, which the splits of
        one run hold together. ``seed`` as in the constructor (default: drawn from this loader's generator)."""
        if not len(episodes):
            raise ImitlabError("a loader subset needs at least one episode")
        other = copy.copy(self)
        other.shuffle = self.shuffle if shuffle is None else shuffle
        other.batch_size = batch_size or self.batch_size
        other.action_horizon = action_horizon or self.action_horizon
        other.frame_history = frame_history or self.frame_history
        other.requested_mode = self.mode
        other._rng = np.random.default_rng(seed if seed is not None else int(self._rng.integers(2**63)))
        idx = [int(i) for i in episodes]
        other._select([self.paths[i] for i in idx], [self.lengths[i] for i in idx], [self.seeds[i] for i in idx])
        return other

    def __len__(self) -> int:
        """Minibatches per epoch."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def state_mean_std(self) -> tuple[list[float], list[float]]:
        """The policy's state normalisation (``state_statistics``) over the selected episodes (state arrays only)."""
        states = []
        for path in self.paths:
            with open_episode_file(path) as f:
                states.append(f["obs"]["state"][()])
        return state_statistics(np.concatenate(states))

    def _read(self, indices: list[int]) -> _Arrays:
        """Decode whole episodes into one preallocated block; image chunks are inflated by a thread pool."""
        lengths = [self.lengths[i] for i in indices]
        rows = sum(lengths)
        out = _Arrays(np.empty((rows, self.state_dim), np.float32),
                      {k: np.empty((rows, *shape), np.uint8) for k, shape in self.image_shapes.items()},
                      np.empty((rows, self.action_dim), np.float32),
                      {c.key: np.empty(rows, np.int64) for c in self.categories},
                      starts=episode_starts(lengths), ends=episode_ends(lengths))
        jobs: list[Callable[[], None]] = []
        offset = 0
        for i in indices:
            path, end = self.paths[i], offset + self.lengths[i]
            with open_episode_file(path) as f:
                out.state[offset:end] = f["obs"]["state"][()]
                out.actions[offset:end] = f["actions"][()]
                for category in self.categories:
                    out.categories[category.key][offset:end] = f["obs"][category.key][()]
                for key in self.image_keys:
                    jobs += _frame_jobs(f["obs"][key], out.images[key][offset:end], path)
            offset = end
        if jobs:
            with ThreadPoolExecutor(self.workers) as pool:
                for future in [pool.submit(job) for job in jobs]:
                    future.result()
        return out

    def _to_batch(self, arrays: _Arrays) -> DemoBatch:
        return DemoBatch(torch.from_numpy(arrays.state), {k: torch.from_numpy(v) for k, v in arrays.images.items()},
                         torch.from_numpy(arrays.actions),
                         {k: torch.from_numpy(v) for k, v in arrays.categories.items()},
                         None if arrays.mask is None else torch.from_numpy(arrays.mask))

    @property
    def _windows(self) -> tuple[int, int]:
        """What ``_Arrays.take`` cuts around each row: the action horizon and the frame history."""
        return self.action_horizon, self.frame_history

    def _order(self, n: int) -> np.ndarray:
        return self._rng.permutation(n) if self.shuffle else np.arange(n)

    def __iter__(self) -> Iterator[DemoBatch]:
        if self.mode == "memory":
            return self._iter_memory()
        return self._iter_chunked()

    def decoded(self) -> _Arrays:
        """Every selected episode decoded into memory, once (memory mode's cache; a data-parallel rank's shard)."""
        if self._cache is None:
            self._cache = self._read(list(range(len(self.paths))))
        return self._cache

    def epoch_order(self) -> np.ndarray:
        """One epoch's order of the rows (a fresh shuffle from this loader's stream when it shuffles)."""
        return self._order(self.num_samples)

    def batch_of(self, arrays: _Arrays, rows: np.ndarray) -> DemoBatch:
        """A minibatch of ``rows`` of decoded ``arrays``."""
        return self._to_batch(arrays.take(rows, *self._windows))

    def _iter_memory(self) -> Iterator[DemoBatch]:
        cache = self.decoded()
        rows = self.epoch_order()
        stop = len(self) * self.batch_size
        for start in range(0, stop, self.batch_size):
            yield self.batch_of(cache, rows[start:start + self.batch_size])

    def _chunks(self) -> list[list[int]]:
        chunks: list[list[int]] = [[]]
        size = 0
        for i in self._order(len(self.paths)):
            episode_bytes = self.lengths[i] * self._row_bytes
            if chunks[-1] and size + episode_bytes > self.chunk_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(int(i))
            size += episode_bytes
        return chunks

    def _iter_chunked(self) -> Iterator[DemoBatch]:
        chunks = self._chunks()
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            for chunk in chunks:
                try:
                    item: _Arrays | BaseException = self._read(chunk)
                except BaseException as exc:  # handed to the consumer, which re-raises it
                    item = exc
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set() or isinstance(item, BaseException):
                    return

        reader = threading.Thread(target=produce, name="demo-loader", daemon=True)
        reader.start()
        size = self.batch_size
        carry: _Arrays | None = None  # a chunk's last rows, completed into a batch by the next chunk's first
        try:
            for _ in chunks:
                arrays = ready.get()
                if isinstance(arrays, BaseException):
                    raise arrays
                rows = self._order(len(arrays))
                start = 0
                if carry is not None:
                    start = min(size - len(carry), len(rows))
                    carry = _Arrays.concat([carry, arrays.take(rows[:start], *self._windows)])
                    if len(carry) < size:
                        continue
                    yield self._to_batch(carry)
                full = start + (len(rows) - start) // size * size
                for begin in range(start, full, size):
                    yield self._to_batch(arrays.take(rows[begin:begin + size], *self._windows))
                carry = arrays.take(rows[full:], *self._windows) if full < len(rows) else None
            if carry is not None and not self.drop_last:
                yield self._to_batch(carry)
        finally:
            stop.set()
            reader.join(timeout=5)
