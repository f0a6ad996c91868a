"""What the per-epoch training checkpoint costs: writing and reading the full state (weights, AdamW moments,
schedule, weight average, random streams) of a Lite0 and a Nature-CNN run, fsync included.

    python benchmarks/bench_checkpoint.py [--repeats 5]

The write is paid once per epoch; compare it with the epoch's duration (bench_train.py). Numbers depend on
the disk and on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from imitlab.policies import ImagePolicy, PolicyConfig
from imitlab.training.optim import cosine_schedule, make_optimizer, weight_average
from imitlab.training.resume import CHECKPOINT_DIR, TENSORS_FILE, TrainingState, load_checkpoint, save_checkpoint


def _state(backbone: str) -> TrainingState:
    """A run's state after one optimiser step, so the AdamW moments exist."""
    torch.manual_seed(0)
    policy = ImagePolicy(PolicyConfig(backbone=backbone, image_size=96, pretrained=False, state_dim=4, action_dim=2))
    optimizer = make_optimizer(policy, 1e-3, 3e-4, 1e-4, train_backbone=True)
    scheduler = cosine_schedule(optimizer, total_steps=100)
    averaged = weight_average(policy, 0.998)
    images = torch.zeros(2, 96, 96, 3, dtype=torch.uint8)
    policy(torch.zeros(2, 4), images).square().mean().backward()
    optimizer.step()
    scheduler.step()
    averaged.update_parameters(policy)
    return TrainingState(policy, optimizer, scheduler, averaged, np.random.default_rng(0), torch.Generator())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    progress = {"epoch": 1, "step": 1, "log": {"epochs": []}}
    for backbone in ("lite0", "nature_cnn"):
        state = _state(backbone)
        with tempfile.TemporaryDirectory() as tmp:
            writes, reads = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                save_checkpoint(Path(tmp), state, progress)
                writes.append(time.perf_counter() - start)
                start = time.perf_counter()
                load_checkpoint(Path(tmp), state)
                reads.append(time.perf_counter() - start)
            size = (Path(tmp) / CHECKPOINT_DIR / TENSORS_FILE).stat().st_size / 2**20
        print(f"{backbone}: checkpoint {size:.1f} MiB, write {1000 * statistics.median(writes):.0f} ms, "
              f"read {1000 * statistics.median(reads):.0f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
