"""Behaviour cloning with a pretrained (or scratch) CNN backbone and a new task head, in one file.

Reading order: ``TrainConfig`` (every knob), ``random_shift`` (augmentation), ``train`` (the demos through
a ``DemoLoader``, split by episode; the loop: minibatch regression of the expert's actions, closed-loop
validation on held-out seeds every few epochs, checkpoint = best rollout success), ``FrozenFeatures``
(frozen backbone or blocks: training runs on their output, computed once). The loader (``demos/loader.py``)
keeps the decoded demos in memory when they fit the memory budget and streams them from disk in chunks when
they do not.

Checkpoints are chosen by closed-loop success, not validation loss: robomimic found loss-chosen
checkpoints 50-100 % worse, because a small action error compounds over a rollout.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from imitlab.demos.dataset import DemoDataset
from imitlab.demos.loader import DEFAULT_BUDGET_MB, DemoBatch, DemoLoader
from imitlab.envs import make_env
from imitlab.errors import ImitlabError
from imitlab.evaluation.progress import RolloutBar
from imitlab.evaluation.rollout import PolicyAgent, run_lockstep
from imitlab.policies import ImagePolicy, PolicyConfig, load_policy, save_policy

#: First seed of the training-time validation range (demos use 0.., held-out evaluation 1_000_000..).
VALIDATION_SEED_START = 500_000
#: ``source`` attribute of episodes collected by DAgger (policy in control, expert labels).
DAGGER_SOURCE = "dagger"
#: Minibatch size of passes without gradients (validation loss, frozen-backbone features).
EVAL_BATCH = 256


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
    pooling: str = "avg"
    """lite0 pooling: ``avg`` (global average of the last map) or ``spatial_softmax`` (keypoints from the
    stride-16 map: keeps where objects are; the choice for manipulation)."""
    keypoints: int = 32
    """Keypoints of ``spatial_softmax`` pooling."""
    freeze_backbone: bool = False
    """Train only the head; backbone features are computed once, so epochs cost almost nothing."""
    freeze_blocks: int = 0
    """lite0: keep the stem and the first N-1 MBConv blocks at their ImageNet weights and compute their output
    once per frame, then fine-tune the rest on that cache (6 = everything at stride <= 8: ~3x faster
    epochs). Frames are encoded once, so no random-shift augmentation."""
    freeze_batchnorm: bool = False
    """lite0: normalise with the ImageNet BatchNorm statistics while fine-tuning too. Otherwise training uses batch
    statistics and rollouts the running ones, which can compute a different function (on Push the training
    frames' loss was far higher in eval mode)."""
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
    """Fraction of episodes held out to report validation loss (the dataset's train/valid masks, when it has them,
    decide instead)."""
    eval_every: int = 1
    """Closed-loop validation every this many epochs (and after the last)."""
    eval_episodes: int = 8
    """Validation rollouts per check, on seeds from VALIDATION_SEED_START (never demo or test seeds)."""
    patience: int = 0
    """Stop after this many validations without a better rollout score (0: never stop early)."""
    successful_only: bool = True
    """Train only on episodes the demonstrator completed."""
    loader_mode: str = "auto"
    """``memory`` (decode the demos once), ``chunked`` (stream them from disk every epoch) or ``auto`` (memory
    when the decoded demos fit ``memory_budget_mb``)."""
    memory_budget_mb: float = DEFAULT_BUDGET_MB
    """MiB of decoded demos allowed in memory; ``chunked`` streams in chunks that stay within it."""
    head_hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the fusion head."""
    ema_decay: float = 0.0
    """Validate and save an exponential moving average of the weights, with this decay per step (0: the raw
    weights). The average is steadier than the last step's weights, whose rollout success can swing by tens of
    points from one epoch to the next. Its decay ramps up from 0 over the first steps, so the random initial
    weights fade out quickly."""
    seed: int = 0
    """Seed for the split, initialisation and minibatch order."""
    threads: int = 0
    """torch CPU threads, and the loader's image-decoding threads (0: all cores)."""
    progress: bool = True
    """Show progress bars."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the run."""


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
    n_val = min(int(round(n_episodes * val_fraction)), n_episodes - 1)  # at least one training episode
    return order[n_val:], order[:n_val]


def _validate(policy: ImagePolicy, envs: list, seeds: list[int], progress: bool) -> dict[str, float]:
    policy.eval()
    with RolloutBar(len(seeds), "validation rollouts", disable=not progress) as bar:
        results = run_lockstep(envs, PolicyAgent(policy.predict), seeds, progress=bar)
    metrics: dict[str, float] = {
        "success_rate": float(np.mean([r.success for r in results])),
        "mean_return": float(np.mean([r.episode_return for r in results])),
    }
    for name in results[0].metrics:
        metrics[name] = float(np.mean([r.metrics[name] for r in results]))
    return metrics


def train(config: TrainConfig) -> dict[str, Any]:
    """Run behaviour cloning; returns the training log (also written to ``<out>/train_log.json``)."""
    if config.freeze_backbone and config.pooling == "spatial_softmax":
        raise ImitlabError("freeze_backbone trains the head alone, and spatial_softmax's keypoint layer is new: "
                           "freeze the pretrained blocks with freeze_blocks instead")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(config.out)
    dataset = DemoDataset(config.dataset)
    # Every usable episode, in file order. DAgger's episodes are the expert's corrections of the policy's
    # mistakes: kept even when they failed.
    demos = DemoLoader([dataset, *map(DemoDataset, config.extra_datasets)], EVAL_BATCH, shuffle=False,
                       successful_only=config.successful_only, keep_sources=(DAGGER_SOURCE,),
                       memory_budget_mb=config.memory_budget_mb, mode=config.loader_mode, workers=config.threads)
    tqdm.write(demos.plan)

    # The splits keep file order and the split's rng goes on to shuffle the minibatches: one seed, one run.
    split = demos.mask_split()  # the dataset's own train/valid masks win over val_fraction
    if split is not None:
        tqdm.write(f"split from {dataset.path / 'masks.json'}: {len(split[0])} train, {len(split[1])} valid episodes")
        train_eps, val_eps = (np.asarray(eps, int) for eps in split)
    else:
        train_eps, val_eps = (np.sort(eps) for eps in _split(len(demos.paths), config.val_fraction, rng))
        if config.val_fraction > 0 and not len(val_eps):
            tqdm.write(f"val_fraction {config.val_fraction} of {len(demos.paths)} episodes rounds to no validation "
                       "episode: no validation loss (rollouts still choose the checkpoint)")
    train_data = demos.subset(train_eps, shuffle=True, batch_size=config.batch_size, seed=rng)
    val_data = demos.subset(val_eps) if len(val_eps) else None
    state_mean, state_std = train_data.state_mean_std()

    image_keys = demos.image_keys
    policy = ImagePolicy(PolicyConfig(
        backbone=config.backbone, pretrained=config.pretrained, pooling=config.pooling, keypoints=config.keypoints,
        image_keys=image_keys,
        image_size=demos.image_shapes[image_keys[0]][0], state_dim=demos.state_dim, action_dim=demos.action_dim,
        head_hidden=tuple(config.head_hidden), state_mean=state_mean, state_std=state_std,
    ))
    if config.init_policy:
        _load_initial_weights(policy, Path(config.init_policy))
    policy.encoder.freeze_blocks(config.freeze_blocks)
    if config.freeze_batchnorm:
        policy.encoder.freeze_batchnorm()
    policy.set_backbone_trainable(not config.freeze_backbone)
    if config.freeze_backbone or config.freeze_blocks:  # encode every frame once through what never changes
        if config.augment_shift:
            tqdm.write("frozen features are computed once per frame: no random-shift augmentation")
        # What is computed once per frame, and how a minibatch of it reaches the head.
        if config.freeze_backbone:
            encode, finish_encoding = (lambda images: [policy.encode(images)]), (lambda model, features: features[0])
        else:
            encode, finish_encoding = policy.frozen_features, (lambda model, features: model.encode_frozen(features))
        policy.eval()
        # Read through a throwaway copy of the loader, so its decoded-image cache goes once the pass ends.
        one_pass = demos.subset(range(len(demos.paths)), shuffle=False, seed=0)
        features = FrozenFeatures(encode, policy.config.image_keys, one_pass)
        train_data = features.subset(train_eps, config.batch_size, rng)
        val_data = features.subset(val_eps, EVAL_BATCH) if len(val_eps) else None
    groups = [{"name": "head", "params": list(policy.head_parameters()), "lr": config.head_lr}]
    if not config.freeze_backbone:
        groups.append({"name": "backbone", "params": list(policy.backbone_parameters()), "lr": config.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    total_steps = len(train_data) * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))

    # What validation rolls out and the checkpoints hold: the raw weights, or their moving average.
    averaged = AveragedModel(policy, avg_fn=_ema(config.ema_decay), use_buffers=True) if config.ema_decay else None
    evaluated = averaged.module if averaged is not None else policy

    def batch_loss(model: ImagePolicy, batch: DemoBatch | FeatureBatch, augment: bool) -> torch.Tensor:
        if isinstance(batch, FeatureBatch):
            pred = model.head_forward(finish_encoding(model, list(batch.features)), batch.state)
        else:
            imgs = [batch.images[k] for k in image_keys]
            if augment:
                imgs = [random_shift(im, config.augment_shift, generator) for im in imgs]
            pred = model(batch.state, *imgs)
        return F.mse_loss(pred, batch.actions)

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
    log: dict[str, Any] = {"config": config_json, "epochs": [], "best": None, "train_samples": train_data.num_samples,
                           "val_samples": val_data.num_samples if val_data is not None else 0}
    best_score: tuple[float, float] | None = None
    stale = 0
    step = 0
    start = time.perf_counter()
    try:
        for epoch in range(1, config.epochs + 1):
            policy.train()
            bar = tqdm(train_data, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not config.progress)
            losses = []
            for batch in bar:
                loss = batch_loss(policy, batch, augment=True)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for group in optimizer.param_groups:  # the rate this step used, at this step's number
                    writer.add_scalar(f"lr/{group['name']}", group["lr"], step + 1)
                scheduler.step()
                if averaged is not None:
                    averaged.update_parameters(policy)
                step += 1
                losses.append(loss.item())
                writer.add_scalar("loss/train", losses[-1], step)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}",
                                samples_s=f"{bar.format_dict['rate'] * config.batch_size:.0f}" if bar.format_dict.get("rate") else "-")
            entry: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                                     "seconds": time.perf_counter() - start}
            if val_data is not None:
                evaluated.eval()
                with torch.no_grad():
                    entry["val_loss"] = float(np.mean([
                        batch_loss(evaluated, batch, augment=False).item()
                        for batch in tqdm(val_data, desc="validation loss", unit="batch", leave=False,
                                          disable=not config.progress)]))
                writer.add_scalar("loss/val", entry["val_loss"], step)
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                rollout = _validate(evaluated, val_envs, val_seeds, config.progress)
                entry["rollout"] = rollout
                for name, value in rollout.items():
                    writer.add_scalar(f"rollout/{name}", value, step)
                score = (rollout["success_rate"], rollout["mean_return"])
                if best_score is None or score > best_score:
                    best_score, stale = score, 0
                    log["best"] = entry
                    save_policy(evaluated, out / "best", {**metadata, "epoch": epoch, "validation": rollout})
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
        save_policy(evaluated, out / "last", {**metadata, "epoch": log["epochs"][-1]["epoch"]})
    finally:
        writer.close()
        for env in val_envs:
            env.close()
    log["seconds"] = time.perf_counter() - start
    (out / "train_log.json").write_text(json.dumps(log, indent=2))
    return log


def _ema(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """AveragedModel's update: an exponential moving average whose decay ramps up as (1 + n) / (10 + n)."""
    def update(average: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        step_decay = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return average + (1.0 - step_decay) * (current - average)
    return update


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


class FeatureBatch(NamedTuple):
    """A minibatch of frozen features in place of the images: the whole backbone's (one (B, F) tensor) or the
    frozen blocks' output per camera."""

    state: torch.Tensor
    features: tuple[torch.Tensor, ...]
    actions: torch.Tensor


class FrozenFeatures:
    """What the frozen part of the backbone makes of every frame of an unshuffled loader, computed once (no
    augmentation, no gradient) and held in memory. Used like a ``DemoLoader``: :meth:`subset` of episodes,
    and each ``iter()`` is one epoch of minibatches, shuffled by ``rng`` when there is one."""

    def __init__(self, encode: Callable[[list[torch.Tensor]], list[torch.Tensor]], image_keys: Sequence[str],
                 loader: DemoLoader):
        parts = []
        with torch.no_grad():
            for batch in tqdm(loader, desc="frozen features", unit="batch", leave=False):
                features = tuple(encode([batch.images[k] for k in image_keys]))
                parts.append((batch.state, features, batch.actions))
        state, features, actions = zip(*parts)
        self.data = FeatureBatch(torch.cat(state), tuple(torch.cat(f) for f in zip(*features)), torch.cat(actions))
        mib = sum(f.nbytes for f in self.data.features) / 2**20
        tqdm.write(f"frozen features: {mib:.0f} MiB for {len(self.data.actions)} frames")
        self.lengths = list(loader.lengths)
        self.batch_size = loader.batch_size
        self.rng: np.random.Generator | None = None

    @property
    def num_samples(self) -> int:
        return len(self.data.actions)

    def subset(self, episodes: Sequence[int], batch_size: int,
               rng: np.random.Generator | None = None) -> FrozenFeatures:
        """The rows of some episodes (indices into the loader's episodes, served in the order given)."""
        starts = np.cumsum([0, *self.lengths])
        rows = torch.from_numpy(np.concatenate([np.arange(starts[e], starts[e + 1]) for e in episodes]))
        other = copy.copy(self)
        other.data = _take(self.data, rows)
        other.lengths = [self.lengths[e] for e in episodes]
        other.batch_size, other.rng = batch_size, rng
        return other

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[FeatureBatch]:
        rows = np.arange(self.num_samples) if self.rng is None else self.rng.permutation(self.num_samples)
        for start in range(0, self.num_samples, self.batch_size):
            yield _take(self.data, torch.from_numpy(rows[start:start + self.batch_size]))


def _take(batch: FeatureBatch, rows: torch.Tensor) -> FeatureBatch:
    return FeatureBatch(batch.state[rows], tuple(f[rows] for f in batch.features), batch.actions[rows])


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
