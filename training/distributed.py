"""Data-parallel training over ``torch.distributed``: ``imitlab train --nproc N`` (or ``torchrun``) runs N ranks,
gloo on CPU, NCCL on CUDA.

Each rank decodes only its shard of the training episodes (episode i belongs to rank i mod N) and serves its
part of every global minibatch: all ranks draw the same global shuffle from the same seed, each keeps the rows
of its episodes. Its loss is its rows' squared-error sum over the global batch's element count, and the
gradients are summed over the ranks (one all-reduce per step, as DDP does; DDP's wrapper itself is not used
because frozen-feature training calls the head directly, outside ``forward``), so each step's gradient is the
single-process one up to float summation order. The random shift draws its offsets for the whole global batch
too. With the same global batch the loss curve is the single-process one to float tolerance
(``tests/test_distributed_training.py``). BatchNorm layers (Lite0 without ``--freeze-batchnorm``) normalise
with their rank's rows, as under DDP: close to, not equal to, one process. Rank 0 alone validates, checkpoints,
logs and shows progress; a rank's decision to stop early comes from rank 0.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from imitlab.core.errors import ImitlabError
from imitlab.demos.loader import DemoBatch, DemoLoader


class ShardBatch(NamedTuple):
    """A rank's rows of one global minibatch: ``rows`` are their positions in it, ``size`` its length."""

    state: torch.Tensor
    images: dict[str, torch.Tensor]
    actions: torch.Tensor
    categories: dict[str, torch.Tensor]
    action_mask: torch.Tensor | None
    rows: torch.Tensor
    size: int


class ShardedLoader:
    """One rank's view of a shuffled training loader: its episodes decoded once, its rows of every global batch."""

    def __init__(self, loader: DemoLoader, rank: int, world: int):
        if loader.mode != "memory":
            raise ImitlabError("--nproc holds each rank's shard of the episodes in memory: use --loader-mode memory "
                               "or a larger --memory-budget-mb")
        self.loader = loader
        self.num_samples = loader.num_samples
        self.shard = [i for i in range(len(loader.paths)) if i % world == rank]
        offsets = np.concatenate([[0], np.cumsum(loader.lengths)])
        self._local_row = np.full(loader.num_samples, -1, dtype=np.int64)  # global row -> row of the shard
        filled = 0
        for i in self.shard:
            self._local_row[offsets[i]:offsets[i + 1]] = np.arange(filled, filled + loader.lengths[i])
            filled += loader.lengths[i]
        self._shard_loader = loader.subset(self.shard, shuffle=False, seed=0) if self.shard else None

    def __len__(self) -> int:
        return len(self.loader)

    def state_mean_std(self) -> tuple[list[float], list[float]]:
        return self.loader.state_mean_std()  # the state arrays of every episode: small, and equal on every rank

    def __iter__(self) -> Iterator[ShardBatch]:
        shard = self._shard_loader.decoded() if self._shard_loader is not None else None
        order = self.loader.epoch_order()  # the same global shuffle, from the same stream, on every rank
        size = self.loader.batch_size
        for start in range(0, len(self) * size, size):
            local = self._local_row[order[start:start + size]]
            mine = np.flatnonzero(local >= 0)
            batch = self.loader.batch_of(shard, local[mine]) if shard is not None else _empty_batch(self.loader)
            yield ShardBatch(*batch, rows=torch.from_numpy(mine), size=len(local))


def _empty_batch(loader: DemoLoader) -> DemoBatch:
    return DemoBatch(torch.zeros(0, loader.state_dim),
                     {k: torch.zeros((0, *s), dtype=torch.uint8) for k, s in loader.image_shapes.items()},
                     torch.zeros(0, loader.action_dim),
                     {c.key: torch.zeros(0, dtype=torch.int64) for c in loader.categories})


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (``rank`` 0 of 1 without ``torch.distributed``)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, loader: DemoLoader) -> DemoLoader | ShardedLoader:
        return ShardedLoader(loader, self.rank, self.world) if self.active else loader

    def mse(self, pred: torch.Tensor, actions: torch.Tensor, batch: DemoBatch | ShardBatch | Any) -> torch.Tensor:
        """The minibatch's mean squared error; a shard's part of the global one (summed over ranks it is that)."""
        if isinstance(batch, ShardBatch):
            return F.mse_loss(pred, actions, reduction="sum") / (batch.size * actions.shape[1])
        return F.mse_loss(pred, actions)

    def shift_rows(self, batch: DemoBatch | ShardBatch | Any) -> dict[str, Any]:
        """``random_shift``'s arguments that draw a shard's offsets from the global batch's draw."""
        return {"rows": batch.rows, "total": batch.size} if isinstance(batch, ShardBatch) else {}

    def reduce_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum the ranks' gradients (one flat all-reduce). Which parameters have one is the model's structure, the
        same on every rank (a rank with no rows in the batch still runs the graph and gets zeros); those without
        one are left alone, as AdamW skips them in one process."""
        if not self.active:
            return
        params = [p for p in parameters if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))  # in place: keeps channels-last strides
            offset += p.numel()

    def total(self, loss: torch.Tensor) -> torch.Tensor:
        """The global minibatch's loss from the ranks' parts."""
        if not self.active:
            return loss
        summed = loss.detach().clone()
        dist.all_reduce(summed)
        return summed

    def main_says(self, flag: bool) -> bool:
        """Rank 0's decision (e.g. stop early), the same on every rank."""
        if not self.active:
            return flag
        value = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.broadcast(value, src=0)
        return bool(value.item())


class NullWriter:
    """TensorBoard's ``SummaryWriter`` on ranks other than 0, which log nothing."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def current_ranks() -> Ranks:
    """The ranks of this process: from ``torch.distributed`` once it is set up, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def under_launcher() -> bool:
    """Whether ``torchrun`` (or ``train --nproc``) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group(device: torch.device) -> Ranks:
    """Join the ranks that ``torchrun`` or :func:`launch` started (their environment names the rendezvous)."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current_ranks()


def launch(config: Any, nproc: int) -> dict[str, Any]:
    """Run ``train(config)`` in ``nproc`` processes on this machine and return rank 0's training log."""
    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.start_processes(_rank_main, args=(nproc, port, config), nprocs=nproc, join=False,
                                 start_method="spawn")
    try:
        while not context.join():
            pass
    except mp.ProcessRaisedException as exc:  # a rank's ImitlabError is one line, like a single process's
        last = str(exc).strip().splitlines()[-1]
        raise ImitlabError(last.removeprefix("imitlab.core.errors.ImitlabError: ")) from None
    except mp.ProcessExitedException as exc:
        raise ImitlabError(f"a training process died: {exc}") from None
    return json.loads((Path(config.out) / "train_log.json").read_text())


def _rank_main(rank: int, world: int, port: int, config: Any) -> None:
    from imitlab.training.bc import train

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        train(config)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
