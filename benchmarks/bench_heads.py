"""Policy heads side by side: training samples/s and batch-1 latency per control step (torch and ONNX) for
``mlp``, ``gmm`` and ``chunk`` on the same backbone.

Training step = forward + the head's loss + backward + AdamW step on a batch of random frames (a chunk head's
targets are windows of ``--chunk-size`` actions). Heads are measured in alternating rounds, so a machine busy with
other work slows all of them alike: compare the ratios to ``mlp``, printed last.

Latency per control step = one ``act`` of an episode controller on single observations, state carried: ``mlp``
and ``gmm`` run the model every step; ``chunk ensemble`` too (ACT's temporal ensembling), ``chunk open`` only
every H steps (the mean over steps is printed). torch and onnxruntime get ``--threads`` intra-op threads.

    python benchmarks/bench_heads.py [--backbone lite0] [--size 84] [--batch 64] [--chunk-modes 1] [--rounds 3]
                                     [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from imitlab.core.action_execution import ActOptions, EpisodeExecutor, Execution
from imitlab.deploy.export import export_onnx
from imitlab.deploy.runtime import OnnxPolicy
from imitlab.policies import ImagePolicy, PolicyConfig
from imitlab.policies.heads import action_horizon
from imitlab.training.optim import make_optimizer

HEADS = ("mlp", "gmm", "chunk")
STATE_DIM = 8
ACTION_DIM = 4


def _policy(head: str, args: argparse.Namespace) -> ImagePolicy:
    torch.manual_seed(0)
    return ImagePolicy(PolicyConfig(backbone=args.backbone, pretrained=False, pooling=args.pooling,
                                    image_size=args.size, state_dim=STATE_DIM, action_dim=ACTION_DIM, head=head,
                                    chunk_size=args.chunk_size,
                                    chunk_modes=args.chunk_modes if head == "chunk" else 1))


def train_seconds(policy: ImagePolicy, args: argparse.Namespace, steps: int) -> float:
    """Seconds per training step (the first, warm-up step excluded)."""
    generator = torch.Generator().manual_seed(0)
    state = torch.randn(args.batch, STATE_DIM, generator=generator)
    images = torch.randint(0, 256, (args.batch, args.size, args.size, 3), dtype=torch.uint8, generator=generator)
    horizon = action_horizon(policy.config)
    targets = torch.rand(args.batch, horizon, ACTION_DIM, generator=generator) * 2 - 1
    actions, mask = (targets, torch.ones(args.batch, horizon, dtype=torch.bool)) if horizon > 1 else (targets[:, 0], None)
    optimizer = make_optimizer(policy, 1e-3, 3e-4, 1e-4, train_backbone=True)
    policy.train()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = policy.loss(policy.outputs(state, images), actions, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def step_ms(predict_outputs, execution: Execution, observations: list[dict[str, np.ndarray]], steps: int) -> float:
    """Mean milliseconds per control step of an episode controller (outputs computed only when needed)."""
    executor = EpisodeExecutor(execution)
    for obs in observations[:5]:  # warm-up
        executor.act(predict_outputs(obs))
    executor = EpisodeExecutor(execution)
    start = time.perf_counter()
    for i in range(steps):
        obs = observations[i % len(observations)]
        executor.act(predict_outputs(obs) if executor.needs_outputs() else None)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lite0")
    parser.add_argument("--pooling", default="avg")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--chunk-modes", type=int, default=1, help="chunk proposals (recipes/detour_chunk.toml: 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of every head")
    parser.add_argument("--train-steps", type=int, default=3, help="training steps per head per round")
    parser.add_argument("--latency-steps", type=int, default=200, help="control steps per head per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policies = {head: _policy(head, args) for head in HEADS}
    rng = np.random.default_rng(0)
    observations = [{"state": rng.normal(size=STATE_DIM).astype(np.float32),
                     "image": rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)} for _ in range(32)]
    variants = [("mlp", None), ("gmm", None), ("chunk", "ensemble"), ("chunk", "open")]
    train_s: dict[str, list[float]] = {head: [] for head in HEADS}
    latency: dict[tuple[str, str, str | None], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runtimes = {}
        for head, policy in policies.items():
            path = export_onnx(policy, Path(tmp) / f"{head}.onnx")
            spec = {"image_keys": ["image"], "image_size": args.size, "state_dim": STATE_DIM,
                    "action_dim": ACTION_DIM, "policy_config": policy.config.to_dict()}
            runtimes[head] = OnnxPolicy(path, spec, threads=args.threads)
        for round_index in range(args.rounds):
            for head in HEADS:
                train_s[head].append(train_seconds(policies[head], args, args.train_steps))
            for head, chunk_exec in variants:
                execution = Execution.of(policies[head].config.to_dict(), ActOptions(chunk_exec))
                policies[head].eval()
                for engine, predict in (("torch", policies[head].predict_outputs),
                                        ("onnx", runtimes[head].predict_outputs)):
                    latency.setdefault((engine, head, chunk_exec), []).append(
                        step_ms(predict, execution, observations, args.latency_steps))
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    print(f"\n{args.backbone} ({args.pooling}), {args.size} px, batch {args.batch} for training, chunk size "
          f"{args.chunk_size}, {args.chunk_modes} chunk proposal(s), {args.threads} thread(s); medians over "
          f"{args.rounds} alternating rounds")
    mlp_rate = args.batch / statistics.median(train_s["mlp"])
    print(f"{'head':<16} {'train samples/s':>15} {'vs mlp':>7} {'torch ms/step':>14} {'onnx ms/step':>13} "
          f"{'onnx vs mlp':>12}")
    onnx_mlp = statistics.median(latency[("onnx", "mlp", None)])
    for head, chunk_exec in variants:
        rate = args.batch / statistics.median(train_s[head])
        torch_ms = statistics.median(latency[("torch", head, chunk_exec)])
        onnx_ms = statistics.median(latency[("onnx", head, chunk_exec)])
        name = head + (f" {chunk_exec}" if chunk_exec else "")
        print(f"{name:<16} {rate:>15.1f} {rate / mlp_rate:>7.2f} {torch_ms:>14.2f} {onnx_ms:>13.2f} "
              f"{onnx_ms / onnx_mlp:>12.2f}")


if __name__ == "__main__":
    main()
