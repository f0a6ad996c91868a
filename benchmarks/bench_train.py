"""Training throughput and batch-1 inference latency of the policy backbones on CPU.

Training step = forward + backward + Adam step on a batch of random frames (one camera). Variants:
  lite0 fine-tune          the whole EfficientNet-Lite0 trains (channels_last and contiguous NCHW layouts),
  lite0 frozen             encoder in eval mode under no_grad, only the head trains (no feature caching),
  lite0 keypoints          spatial-softmax pooling on the stride-16 map (blocks 11-15 dropped), all of it trains,
  lite0 keypoints, 6 frozen   the same above the stem + blocks 0-4, whose output is cached (as
                           ``imitlab train --freeze-blocks 6`` does: the step starts from the cache),
  nature_cnn               the DQN CNN trained from scratch.

``--vs-imitation`` instead trains on real recorded LaneFollow transitions, alternating rounds of ``imitlab train``
(nature_cnn, with and without its random-shift augmentation) and the ``imitation`` library's BC (1.0.1; sb3's
NatureCNN + MLP policy, as shipped) on the same transitions, batch size and thread count, and prints samples/s
and their ratio per round; ours also with ``precision = "bf16"`` (autocast), which pays on CPUs with native bf16,
and with ``compile = True`` on top (its one-off compilation falls in the untimed first epoch).
Training time only: ours is read from the epochs after the first in the run's log
(setup and validation excluded), theirs is ``BC.train``'s wall time.

Usage: python benchmarks/bench_train.py [--threads 2] [--batch 64] [--steps 8] [--sizes 84 96]
       python benchmarks/bench_train.py --vs-imitation [--threads 2] [--sizes 84] [--episodes 30] [--rounds 3]
Absolute numbers depend on what else runs on the machine; the ratios of alternated rounds much less.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from imitlab.demos.dataset import DemoDataset, read_episode_file
from imitlab.demos.recorder import record
from imitlab.policies import ImagePolicy, Lite0Encoder, PolicyConfig
from imitlab.training.bc import TrainConfig, train

STATE_DIM = 8
ACTION_DIM = 4


#: Blocks the "6 frozen" variant keeps fixed and caches (the stem + blocks 0-4: everything at stride <= 8).
CACHED_BLOCKS = 6


def _policy(backbone: str, size: int, channels_last: bool = True, pooling: str = "avg") -> ImagePolicy:
    policy = ImagePolicy(PolicyConfig(backbone=backbone, image_size=size, pretrained=False, pooling=pooling,
                                      state_dim=STATE_DIM, action_dim=ACTION_DIM))
    if not channels_last:
        policy.encoder = Lite0Encoder(size, pretrained=False, channels_last=False)
    return policy


def _train_step(policy: ImagePolicy, mode: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]:
    """``mode``: "fine-tune", "frozen" (head only) or "cached" (``images`` are the frozen blocks' output)."""
    if mode == "frozen":
        policy.set_backbone_trainable(False)
    if mode == "cached":
        policy.encoder.freeze_blocks(CACHED_BLOCKS)
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad] if mode != "frozen" else list(policy.head_parameters())
    optimiser = torch.optim.Adam(params, lr=1e-4)

    def step(state: torch.Tensor, images: torch.Tensor, target: torch.Tensor) -> None:
        if mode == "frozen":
            with torch.no_grad():
                features = policy.encode([images])
            actions = policy.head_forward(features, state)
        elif mode == "cached":
            actions = policy.head_forward(policy.encode_frozen([images]), state)
        else:
            actions = policy(state, images)
        loss = torch.nn.functional.mse_loss(actions, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def train_throughput(policy: ImagePolicy, mode: str, batch: int, steps: int) -> float:
    """Samples per second over `steps` timed steps after two warm-up steps."""
    size = policy.config.image_size
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    state, target = torch.randn(batch, STATE_DIM), torch.rand(batch, ACTION_DIM) * 2 - 1
    step = _train_step(policy, mode)
    if mode == "cached":  # the cache is computed once per frame before training; not timed
        with torch.no_grad():
            images = policy.eval().frozen_features([images])[0]
    for _ in range(2):
        step(state, images, target)
    start = time.perf_counter()
    for _ in range(steps):
        step(state, images, target)
    return batch * steps / (time.perf_counter() - start)


def inference_latency_ms(policy: ImagePolicy, repeats: int) -> tuple[float, float]:
    """Median and 90th-percentile batch-1 forward latency in milliseconds (eval mode, inference_mode)."""
    size = policy.config.image_size
    images = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8)
    state = torch.randn(1, STATE_DIM)
    policy.eval()
    times = []
    with torch.inference_mode():
        for i in range(repeats + 5):
            start = time.perf_counter()
            policy(state, images)
            if i >= 5:
                times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def ours_samples_per_s(dataset: Path, out: Path, batch: int, epochs: int, threads: int, shift: int,
                       precision: str = "fp32", compile: bool = False) -> float:
    """``imitlab train`` nature_cnn: samples/s over epochs 2.. (validation runs once, after the last epoch)."""
    log = train(TrainConfig(dataset=str(dataset), out=str(out), backbone="nature_cnn", pretrained=False,
                            batch_size=batch, epochs=epochs, eval_every=epochs, eval_episodes=1, val_fraction=0.0,
                            augment_shift=shift, threads=threads, precision=precision, compile=compile,
                            progress=False))
    seconds = [entry["seconds"] for entry in log["epochs"]]
    return log["train_samples"] * (epochs - 1) / (seconds[-1] - seconds[0])


def imitation_samples_per_s(dataset: Path, batch: int, epochs: int, threads: int) -> float:
    """``imitation``'s BC on the same transitions: sb3 MultiInputPolicy (NatureCNN on the image, MLP on state)."""
    from imitation.algorithms import bc
    from imitation.data.types import DictObs, Transitions
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy
    from gymnasium import spaces

    episodes = [read_episode_file(path) for path in DemoDataset(dataset).episode_paths()]
    episodes = [e for e in episodes if e.attrs["success"]]  # as imitlab train's default keeps
    images = np.concatenate([e.obs["image"] for e in episodes]).transpose(0, 3, 1, 2)  # sb3's CNN wants CHW
    state = np.concatenate([e.obs["state"] for e in episodes])
    actions = np.concatenate([e.actions for e in episodes])
    header = DemoDataset(dataset)
    obs_space = spaces.Dict({"image": spaces.Box(0, 255, images.shape[1:], np.uint8),
                             "state": header.observation_space["state"]})
    obs = DictObs({"image": images, "state": state})  # BC reads obs and acts; next_obs only has to be there
    transitions = Transitions(obs=obs, acts=actions, infos=np.array([{}] * len(actions)), next_obs=obs,
                              dones=np.zeros(len(actions), bool))
    torch.set_num_threads(threads)
    policy = MultiInputActorCriticPolicy(obs_space, header.action_space, lambda _: 1e-3, net_arch=[256, 256])
    trainer = bc.BC(observation_space=obs_space, action_space=header.action_space, rng=np.random.default_rng(0),
                    policy=policy, demonstrations=transitions, batch_size=batch, device="cpu")
    trainer.train(n_epochs=1, progress_bar=False)  # warm-up epoch, as ours skips its first
    start = time.perf_counter()
    trainer.train(n_epochs=epochs - 1, progress_bar=False)
    return len(actions) * (epochs - 1) / (time.perf_counter() - start)


def vs_imitation(size: int, episodes: int, epochs: int, batch: int, threads: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "demos"
        record("imitlab/LaneFollow-v0", dataset, episodes, noise_std=0.2, env_kwargs={"image_size": size},
               progress=False)
        print(f"LaneFollow transitions of {episodes} episodes at {size} px, batch {batch}, {threads} threads, {epochs - 1} timed epochs")
        print(f"{'round':>5s} {'imitation BC':>13s} {'ours, shift 4':>14s} {'ours, no aug':>13s} {'bf16, shift 4':>14s}"
              f" {'+ compile':>10s}  ratios (ours / imitation)")
        for r in range(rounds):
            theirs = imitation_samples_per_s(dataset, batch, epochs, threads)
            shifted = ours_samples_per_s(dataset, Path(tmp) / f"run{r}a", batch, epochs, threads, 4)
            plain = ours_samples_per_s(dataset, Path(tmp) / f"run{r}b", batch, epochs, threads, 0)
            bf16 = ours_samples_per_s(dataset, Path(tmp) / f"run{r}c", batch, epochs, threads, 4, "bf16")
            compiled = ours_samples_per_s(dataset, Path(tmp) / f"run{r}d", batch, epochs, threads, 4, "bf16", True)
            print(f"{r:5d} {theirs:13.0f} {shifted:14.0f} {plain:13.0f} {bf16:14.0f} {compiled:10.0f}  "
                  f"{shifted / theirs:.2f}x, {plain / theirs:.2f}x, {bf16 / theirs:.2f}x, {compiled / theirs:.2f}x",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=50, help="batch-1 inference calls per model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[84, 96])
    parser.add_argument("--vs-imitation", action="store_true", help="imitlab train vs imitation's BC, alternated")
    parser.add_argument("--episodes", type=int, default=30, help="--vs-imitation: recorded episodes (~5,600 "
                        "transitions: per-epoch costs amortised as in a recipe)")
    parser.add_argument("--epochs", type=int, default=4, help="--vs-imitation: epochs per run (the first untimed)")
    parser.add_argument("--rounds", type=int, default=3, help="--vs-imitation: alternated rounds")
    args = parser.parse_args()
    if args.vs_imitation:
        for size in args.sizes:
            vs_imitation(size, args.episodes, args.epochs, args.batch, args.threads, args.rounds)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.steps} timed steps")

    variants = [
        ("lite0 fine-tune (channels_last)", "lite0", True, "avg", "fine-tune"),
        ("lite0 fine-tune (contiguous)", "lite0", False, "avg", "fine-tune"),
        ("lite0 frozen (features, no grad)", "lite0", True, "avg", "frozen"),
        ("lite0 keypoints fine-tune", "lite0", True, "spatial_softmax", "fine-tune"),
        (f"lite0 keypoints, {CACHED_BLOCKS} frozen (cached)", "lite0", True, "spatial_softmax", "cached"),
        ("nature_cnn", "nature_cnn", True, "avg", "fine-tune"),
    ]
    print(f"\n{'training':34s}" + "".join(f"{f'{s} px':>12s}" for s in args.sizes) + "   (samples/s)")
    for label, backbone, channels_last, pooling, mode in variants:
        row = [train_throughput(_policy(backbone, s, channels_last, pooling), mode, args.batch, args.steps)
               for s in args.sizes]
        print(f"{label:34s}" + "".join(f"{v:12.0f}" for v in row), flush=True)

    print(f"\n{'batch-1 inference':34s}" + "".join(f"{f'{s} px':>16s}" for s in args.sizes) + "   (ms, median/p90)")
    for backbone in ("lite0", "nature_cnn"):
        cells = [inference_latency_ms(_policy(backbone, s), args.repeats) for s in args.sizes]
        print(f"{backbone:34s}" + "".join(f"{f'{m:.1f}/{p:.1f}':>16s}" for m, p in cells), flush=True)


if __name__ == "__main__":
    main()
