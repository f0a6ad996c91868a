"""Where a behaviour-cloning step's time goes: collation, augmentation, uint8->float, forward, backward, optimizer.

Records a few LaneFollow episodes, then runs ``imitlab train``'s pieces one minibatch at a time and times each phase
(CPU seconds of this process, so the split stays meaningful on a shared machine): the loader's minibatch
(collation), the random shift (augmentation), the encoder's uint8 -> normalised float, forward, backward, and the
AdamW step in its three torch implementations (for-loop, foreach, fused). Also the per-step bookkeeping the trainer
does besides the model (TensorBoard scalar, ``loss.item()``).

    python benchmarks/profile_train_step.py [--backbone nature_cnn] [--size 84] [--episodes 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from imitlab.demos.dataset import DemoDataset
from imitlab.demos.loader import DemoLoader
from imitlab.demos.recorder import record
from imitlab.policies import ImagePolicy, PolicyConfig
from imitlab.training.augment import random_shift


def timed(totals: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    start = time.process_time()
    out = fn()
    totals[name] = totals.get(name, 0.0) + time.process_time() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="nature_cnn")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        record("imitlab/LaneFollow-v0", Path(tmp) / "demos", args.episodes, noise_std=0.2,
               env_kwargs={"image_size": args.size}, progress=False)
        loader = DemoLoader(DemoDataset(Path(tmp) / "demos"), args.batch, shuffle=True, seed=0)
        writer = SummaryWriter(str(Path(tmp) / "tb"))
        policy = ImagePolicy(PolicyConfig(backbone=args.backbone, image_size=args.size, pretrained=False,
                                          state_dim=loader.state_dim, action_dim=loader.action_dim)).train()
        generator = torch.Generator().manual_seed(0)
        start = time.process_time()
        batches = list(loader)  # one epoch of shuffled minibatches, as the trainer iterates them
        print(f"collation: {1e3 * (time.process_time() - start) / len(batches):.2f} ms per minibatch of {args.batch}")
        for variant in ("for-loop", "foreach", "fused"):
            optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3, foreach=variant == "foreach",
                                          fused=True if variant == "fused" else None)
            totals: dict[str, float] = {}
            for step in range(args.steps + 2):
                if step == 2:  # two warm-up steps per optimizer
                    totals.clear()
                batch = batches[step % len(batches)]
                images = timed(totals, "random shift", lambda: random_shift(batch.images["image"], 4, generator))
                timed(totals, "uint8 -> float input", lambda: policy.encoder.prepare(images))
                pred = timed(totals, "forward (input included)", lambda: policy(batch.state, images))
                loss = F.mse_loss(pred, batch.actions)
                optimizer.zero_grad(set_to_none=True)
                timed(totals, "backward", loss.backward)
                timed(totals, "AdamW step", optimizer.step)
                value = timed(totals, "loss.item()", loss.item)
                timed(totals, "TensorBoard scalar", lambda: writer.add_scalar("loss", value, step))
            print(f"AdamW {variant}: " + ", ".join(f"{name} {1e3 * t / args.steps:.2f}" for name, t in totals.items())
                  + " (ms per step)", flush=True)
        writer.close()


if __name__ == "__main__":
    main()
