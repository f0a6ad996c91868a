"""GPU check: what a machine with CUDA runs once, in under 5 minutes, to show training and evaluation use the GPU.

    python benchmarks/gpu_check.py            # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run  # the same steps on the CPU at toy sizes (`make test` runs this)

1. The device: what torch sees (name, memory, bf16 support).
2. `imitlab train --device cuda` end to end on a small synthetic dataset (Lite0 fine-tuning, bf16 autocast, pinned
   non-blocking transfers, channels-last): the checkpoint is safetensors written from CPU copies, loads on the CPU,
   and its actions on the CPU and on the GPU agree (fp32 inference on both).
3. Lite0 fine-tuning samples/s on the GPU (bf16 autocast, channels-last) against the CPU, same batch and steps.
4. With 2 or more GPUs, `--nproc 2` over NCCL: the loss curve against one process (bf16: 1e-2 relative).
Prints one line per check and exits 1 when one fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imitlab.demos.dataset import DemoWriter
from imitlab.demos.synthetic import ENV_ID, action_space, observation_space, synthetic_episode
from imitlab.policies import ImagePolicy, PolicyConfig
from imitlab.policies.device import autocast, resolve_device, transfer
from imitlab.policies.io import load_policy
from imitlab.training.bc import TrainConfig, train


def lite0_samples_per_s(device: torch.device, size: int, batch: int, steps: int) -> float:
    """Fine-tuning steps of the whole Lite0 on random frames (as `imitlab train` runs them on ``device``)."""
    torch.manual_seed(0)
    policy = ImagePolicy(PolicyConfig(backbone="lite0", pretrained=False, image_keys=("image",), image_size=size,
                                      state_dim=4, action_dim=2)).to(device).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, fused=True)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    state, actions = torch.randn(batch, 4), torch.randn(batch, 2)

    def step() -> None:
        with autocast(device):
            pred = policy(transfer(state, device), transfer(images, device))
        loss = F.mse_loss(pred.float(), transfer(actions, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: kernels chosen, memory allocated
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def step_losses(run: Path) -> np.ndarray:
    log = json.loads((run / "train_log.json").read_text())
    return np.concatenate([epoch["step_losses"] for epoch in log["epochs"]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the CPU at toy sizes: checks the script, not a GPU")
    args = parser.parse_args()
    device = resolve_device("cpu" if args.dry_run else "cuda")
    size, episodes, length, batch, steps = (48, 2, 12, 8, 2) if args.dry_run else (96, 8, 100, 64, 20)
    failures = []

    def check(name: str, ok: bool, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if not ok:
            failures.append(name)

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        check("device", torch.cuda.is_bf16_supported(), f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
              f"{torch.cuda.device_count()} visible, torch {torch.__version__} CUDA {torch.version.cuda}")
    else:
        check("device", True, f"dry run on the CPU, torch {torch.__version__}")

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        root = Path(scratch)
        # Validation rollouts are not what is checked: 1 s episodes on short roads keep them to seconds.
        data = root / "demos"
        writer = DemoWriter(data, ENV_ID, {"image_size": size, "time_limit_s": 1.0, "route_length": 40.0},
                            observation_space(size), action_space())
        for seed in range(episodes):
            writer.append(synthetic_episode(seed, length, size))
        common = dict(dataset=str(data), backbone="lite0", pretrained=False, epochs=1, batch_size=batch,
                      eval_episodes=1, val_fraction=0.25, device=device.type, progress=False)
        start = time.perf_counter()
        train(TrainConfig(out=str(root / "run"), **common))
        policy, _ = load_policy(root / "run" / "best")  # safetensors, loaded on the CPU
        weights_on_cpu = all(t.device.type == "cpu" for t in policy.state_dict().values())
        obs = {k: v[:4] for k, v in synthetic_episode(7, 4, size).obs.items()}
        on_cpu = policy.predict(obs)
        on_device = policy.to(device).predict(obs)
        gap = float(np.abs(on_cpu - on_device).max())
        check("train --device", weights_on_cpu and gap < 1e-3,
              f"{time.perf_counter() - start:.0f} s; checkpoint loads on the CPU; CPU vs {device.type} actions "
              f"differ by {gap:.1e} at most")

        cpu_rate = lite0_samples_per_s(torch.device("cpu"), size, batch, max(1, steps // 10))
        rate = lite0_samples_per_s(device, size, batch, steps) if device.type == "cuda" else cpu_rate
        check("Lite0 fine-tuning", rate > 0, f"{rate:.0f} samples/s on {device.type} vs {cpu_rate:.0f} on the CPU "
              f"({torch.get_num_threads()} threads) = {rate / cpu_rate:.1f}x, batch {batch}, {size} px")

        if device.type == "cuda" and torch.cuda.device_count() >= 2:
            train(TrainConfig(out=str(root / "ddp"), nproc=2, **common))
            one, two = step_losses(root / "run"), step_losses(root / "ddp")
            worst = float(np.max(np.abs(two - one) / np.abs(one)))
            check("--nproc 2 (NCCL)", len(one) == len(two) and worst < 1e-2, f"worst relative loss gap {worst:.1e}")
        else:
            print("skip --nproc 2 (NCCL): needs 2 GPUs", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
