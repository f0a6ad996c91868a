"""Behaviour cloning with a pretrained (or scratch) CNN backbone and a new task head, in one file.

Reading order: ``TrainConfig`` (every knob), ``load_demos`` (dataset -> tensors in memory),
``random_shift`` (augmentation), ``train`` (the loop: minibatch regression of the expert's actions,
closed-loop validation on held-out seeds every few epochs, checkpoint = best rollout success).

Checkpoints are chosen by closed-loop success, not validation loss: robomimic found loss-chosen
checkpoints 50-100 % worse, because a small action error compounds over a rollout.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from imitlab.demos.dataset import DemoDataset
from imitlab.envs import make_env
from imitlab.errors import ImitlabError
from imitlab.evaluation.rollout import PolicyAgent, run_lockstep
from imitlab.policies import ImagePolicy, PolicyConfig, load_policy, save_policy, state_statistics

#: First seed of the training-time validation range (demos use 0.., held-out evaluation 1_000_000..).
VALIDATION_SEED_START = 500_000
#: ``source`` attribute of episodes collected by DAgger (policy in control, expert labels).
DAGGER_SOURCE = "dagger"


@dataclass
class TrainConfig:
    """Every knob of a behaviour-cloning run (saved next to the checkpoints)."""

    dataset: str
    """Dataset folder written by ``imitlab record``."""
    out: str
    """Run folder: ``best/`` and ``last/`` policies, ``train_log.json``, TensorBoard events in ``tb/``."""
    extra_datasets: tuple[str, ...] = ()
    """More dataset folders of the same env and kwargs trained on together (e.g. DAgger's episodes)."""
    init_policy: str | None = None
    """Start from this saved policy's weights (same backbone) instead of a fresh head, e.g. DAgger's last round."""
    backbone: str = "lite0"
    """``lite0`` (EfficientNet-Lite0, ImageNet weights) or ``nature_cnn`` (small CNN from scratch)."""
    pretrained: bool = True
    """Start the backbone from ImageNet weights (lite0 only)."""
    freeze_backbone: bool = False
    """Train only the head; backbone features are computed once, so epochs cost almost nothing."""
    backbone_lr: float = 3e-4
    """Learning rate of the backbone when fine-tuning (lower than the head's keeps pretrained features)."""
    head_lr: float = 1e-3
    """Learning rate of the fusion head."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    batch_size: int = 64
    """Minibatch size."""
    epochs: int = 10
    """Passes over the training split."""
    augment_shift: int = 4
    """Random-shift augmentation (DrQ): pad by this many pixels and crop back; 0 turns it off."""
    val_fraction: float = 0.1
    """Fraction of episodes held out to report validation loss."""
    eval_every: int = 1
    """Closed-loop validation every this many epochs (and after the last)."""
    eval_episodes: int = 8
    """Validation rollouts per check, on seeds from VALIDATION_SEED_START (never demo or test seeds)."""
    patience: int = 0
    """Stop after this many validations without a better rollout score (0: never stop early)."""
    successful_only: bool = True
    """Train only on episodes the demonstrator completed."""
    head_hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the fusion head."""
    seed: int = 0
    """Seed for the split, initialisation and minibatch order."""
    threads: int = 0
    """torch CPU threads (0: all cores)."""
    progress: bool = True
    """Show progress bars."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the run."""


@dataclass
class DemoTensors:
    """A dataset in memory: observations as uint8/float32 arrays, one row per step."""

    images: dict[str, np.ndarray]
    state: np.ndarray
    actions: np.ndarray
    episode_index: np.ndarray
    seeds: list[int]


def load_demos(datasets: list[DemoDataset], successful_only: bool) -> DemoTensors:
    """Read every usable episode into contiguous arrays; decoded once, so training never touches disk.

    ``successful_only`` drops failed demonstrations, but never DAgger episodes: their labels are the expert's
    corrections of the policy's own mistakes, which is the point of collecting them.
    """
    images: dict[str, list[np.ndarray]] = {}
    states, actions, index, seeds = [], [], [], []
    for dataset in datasets:
        if dataset.env_id != datasets[0].env_id or dataset.env_kwargs != datasets[0].env_kwargs:
            raise ImitlabError(f"dataset {dataset.path} was recorded on another env or env kwargs than {datasets[0].path}")
        paths = dataset.episode_paths()
        if not paths:
            raise ImitlabError(f"dataset {dataset.path} has no episodes")
        for episode in tqdm(dataset.episodes(), total=len(paths), desc="load demos", unit="ep", leave=False):
            keep = episode.attrs.get("success", False) or episode.attrs.get("source") == DAGGER_SOURCE
            if successful_only and not keep:
                continue
            for key, value in episode.obs.items():
                if key.endswith("image"):
                    images.setdefault(key, []).append(value)
            states.append(episode.obs["state"].astype(np.float32))
            actions.append(episode.actions.astype(np.float32))
            index.append(np.full(len(episode), len(seeds)))
            seeds.append(int(episode.attrs["seed"]))
    if not seeds:
        raise ImitlabError(f"dataset {datasets[0].path} has no successful episodes to learn from")
    return DemoTensors(
        images={k: np.concatenate(v) for k, v in images.items()},
        state=np.concatenate(states),
        actions=np.concatenate(actions),
        episode_index=np.concatenate(index),
        seeds=seeds,
    )


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ's random shift on uint8 (B, H, W, C): replicate-pad by ``pad`` and crop at a random offset."""
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None]
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :]
    batch = torch.arange(b)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].to(torch.uint8)


def _split(n_episodes: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n_episodes)
    n_val = int(round(n_episodes * val_fraction)) if n_episodes > 1 else 0
    return order[n_val:], order[:n_val]


def _validate(policy: ImagePolicy, envs: list, seeds: list[int]) -> dict[str, float]:
    policy.eval()
    results = run_lockstep(envs, PolicyAgent(policy.predict), seeds)
    metrics: dict[str, float] = {
        "success_rate": float(np.mean([r.success for r in results])),
        "mean_return": float(np.mean([r.episode_return for r in results])),
    }
    for name in results[0].metrics:
        metrics[name] = float(np.mean([r.metrics[name] for r in results]))
    return metrics


def train(config: TrainConfig) -> dict[str, Any]:
    """Run behaviour cloning; returns the training log (also written to ``<out>/train_log.json``)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(config.out)
    dataset = DemoDataset(config.dataset)
    demos = load_demos([dataset, *map(DemoDataset, config.extra_datasets)], config.successful_only)
    image_keys = tuple(sorted(demos.images))
    image_size = demos.images[image_keys[0]].shape[1]

    train_eps, val_eps = _split(len(demos.seeds), config.val_fraction, rng)
    train_rows = np.flatnonzero(np.isin(demos.episode_index, train_eps))
    val_rows = np.flatnonzero(np.isin(demos.episode_index, val_eps))
    state_mean, state_std = state_statistics(demos.state[train_rows])

    policy = ImagePolicy(PolicyConfig(
        backbone=config.backbone, pretrained=config.pretrained, image_keys=image_keys, image_size=image_size,
        state_dim=demos.state.shape[1], action_dim=demos.actions.shape[1], head_hidden=tuple(config.head_hidden),
        state_mean=state_mean, state_std=state_std,
    ))
    if config.init_policy:
        _load_initial_weights(policy, Path(config.init_policy))
    policy.set_backbone_trainable(not config.freeze_backbone)
    groups = [{"params": list(policy.head_parameters()), "lr": config.head_lr}]
    if not config.freeze_backbone:
        groups.append({"params": list(policy.backbone_parameters()), "lr": config.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_rows) / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))

    state_t = torch.from_numpy(demos.state)
    actions_t = torch.from_numpy(demos.actions)
    images_t = {k: torch.from_numpy(v) for k, v in demos.images.items()}
    features = _precompute_features(policy, images_t, image_keys) if config.freeze_backbone else None

    def batch_loss(rows: np.ndarray, augment: bool) -> torch.Tensor:
        idx = torch.from_numpy(rows)
        if features is not None:
            pred = policy.head_forward(features[idx], state_t[idx])
        else:
            imgs = [images_t[k][idx] for k in image_keys]
            if augment:
                imgs = [random_shift(im, config.augment_shift, generator) for im in imgs]
            pred = policy(state_t[idx], *imgs)
        return F.mse_loss(pred, actions_t[idx])

    val_envs = [make_env(dataset.env_id, **dataset.env_kwargs) for _ in range(config.eval_episodes)]
    val_seeds = list(range(VALIDATION_SEED_START, VALIDATION_SEED_START + config.eval_episodes))
    writer = SummaryWriter(str(out / "tb"))
    config_json = _jsonable(asdict(config))
    metadata = {
        "env_id": dataset.env_id,
        "env_kwargs": dataset.env_kwargs,
        "observation_space": dataset.header["observation_space"],
        "action_space": dataset.header["action_space"],
        "train_seeds": demos.seeds,
        "dataset": str(Path(config.dataset).resolve()),
        "train_config": config_json,
    }
    log: dict[str, Any] = {"config": config_json, "epochs": [], "best": None,
                           "train_samples": int(len(train_rows)), "val_samples": int(len(val_rows))}
    best_score: tuple[float, float] | None = None
    stale = 0
    step = 0
    start = time.perf_counter()
    try:
        for epoch in range(1, config.epochs + 1):
            policy.train()
            order = rng.permutation(train_rows)
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                       disable=not config.progress)
            losses = []
            for b in bar:
                loss = batch_loss(order[b * config.batch_size:(b + 1) * config.batch_size], augment=True)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                losses.append(loss.item())
                writer.add_scalar("loss/train", losses[-1], step)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}",
                                samples_s=f"{bar.format_dict['rate'] * config.batch_size:.0f}" if bar.format_dict.get("rate") else "-")
            entry: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                                     "seconds": time.perf_counter() - start}
            if len(val_rows):
                policy.eval()
                with torch.no_grad():
                    entry["val_loss"] = float(np.mean([batch_loss(val_rows[i:i + 256], augment=False).item()
                                                       for i in range(0, len(val_rows), 256)]))
                writer.add_scalar("loss/val", entry["val_loss"], step)
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                rollout = _validate(policy, val_envs, val_seeds)
                entry["rollout"] = rollout
                for name, value in rollout.items():
                    writer.add_scalar(f"rollout/{name}", value, step)
                score = (rollout["success_rate"], rollout["mean_return"])
                if best_score is None or score > best_score:
                    best_score, stale = score, 0
                    log["best"] = entry
                    save_policy(policy, out / "best", {**metadata, "epoch": epoch, "validation": rollout})
                else:
                    stale += 1
                tqdm.write(f"epoch {epoch}: train loss {entry['train_loss']:.4f}"
                           + (f", val loss {entry['val_loss']:.4f}" if "val_loss" in entry else "")
                           + f", rollout success {100 * rollout['success_rate']:.0f} % on {len(val_seeds)} seeds"
                           + (" (new best)" if stale == 0 else ""))
            log["epochs"].append(entry)
            (out / "train_log.json").write_text(json.dumps(log, indent=2))
            if config.patience and stale >= config.patience:
                tqdm.write(f"early stop: no better rollout score in {config.patience} validations")
                break
        save_policy(policy, out / "last", {**metadata, "epoch": log["epochs"][-1]["epoch"]})
    finally:
        writer.close()
        for env in val_envs:
            env.close()
    log["seconds"] = time.perf_counter() - start
    (out / "train_log.json").write_text(json.dumps(log, indent=2))
    return log


def _load_initial_weights(policy: ImagePolicy, path: Path) -> None:
    """Copy a saved policy's weights, keeping this run's state normalisation (it may have more data)."""
    initial, _ = load_policy(path)
    if initial.config.backbone != policy.config.backbone or initial.config.image_keys != policy.config.image_keys:
        raise ImitlabError(f"{path}: a {initial.config.backbone} policy on {initial.config.image_keys} cannot "
                           f"initialise a {policy.config.backbone} policy on {policy.config.image_keys}")
    try:  # normalisation statistics are config, not weights, so the new run's own stay in place
        policy.load_state_dict(initial.state_dict())
    except RuntimeError as exc:
        raise ImitlabError(f"{path}: weights do not fit this run's policy ({str(exc).splitlines()[0]})") from None


def _precompute_features(policy: ImagePolicy, images: dict[str, torch.Tensor], keys: tuple[str, ...]) -> torch.Tensor:
    """Backbone features of every frame, once (frozen backbone: no augmentation, no gradient)."""
    policy.eval()
    n = len(next(iter(images.values())))
    chunks = []
    with torch.no_grad():
        for i in tqdm(range(0, n, 256), desc="backbone features", unit="batch", leave=False):
            chunks.append(policy.encode([images[k][i:i + 256] for k in keys]))
    return torch.cat(chunks)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
