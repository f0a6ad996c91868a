"""Behaviour cloning with a pretrained (or scratch) CNN backbone and a new task head.

This file is the algorithm, top to bottom (its knobs, ``TrainConfig``, are in ``config.py``): ``train`` reads the
demos through a ``DemoLoader``, split by episode; builds the policy; runs the loop (minibatches of the expert's
actions fitted with the policy head's loss, closed-loop validation on held-out seeds every few epochs, checkpoint = best rollout success). The parts live
beside it, one concern each: ``features.py`` (frozen backbone or blocks: training runs on their output,
computed once), ``optim.py`` (AdamW, cosine schedule, weight EMA), ``checkpoints.py`` (validation rollouts and
the best-checkpoint rule), ``augment.py`` (random shift), ``prefetch.py`` (the next minibatch collated and
augmented during this step). The loader (``demos/loader.py``) keeps the decoded
demos in memory when they fit the memory budget and streams them from disk in chunks when they do not.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import write_json_atomic
from imitlab.core.seeds import VALIDATION_SEED_START
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.loader import DemoBatch, DemoLoader
from imitlab.envs import make_env
from imitlab.policies import ImagePolicy, PolicyConfig, save_policy
from imitlab.policies.device import autocast, resolve_device, transfer
from imitlab.policies.command import category_fields
from imitlab.training.augment import random_shift
from imitlab.training.checkpoints import BestCheckpoint, load_initial_weights, validate
from imitlab.training.config import RUN_CONFIG, TrainConfig, save_run_config
from imitlab.training.distributed import NullWriter, Ranks, init_process_group, launch, under_launcher
from imitlab.training.features import FeatureBatch, FrozenFeatures
from imitlab.training.guard import NonFiniteGuard
from imitlab.training.optim import cosine_schedule, make_optimizer, weight_average
from imitlab.training.prefetch import prepared_ahead
from imitlab.training.resume import TrainingState, claim_run_dir, load_checkpoint, save_checkpoint

#: ``source`` attribute of episodes collected by DAgger (policy in control, expert labels).
DAGGER_SOURCE = "dagger"
#: Minibatch size of passes without gradients (validation loss, frozen-backbone features).
EVAL_BATCH = 256


def _split(n_episodes: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n_episodes)
    n_val = min(int(round(n_episodes * val_fraction)), n_episodes - 1)  # at least one training episode
    return order[n_val:], order[:n_val]


def train(config: TrainConfig) -> dict[str, Any]:
    """Run behaviour cloning; returns the training log (also written to ``<out>/train_log.json``)."""
    if config.freeze_backbone and config.pooling == "spatial_softmax":
        raise ImitlabError("freeze_backbone trains the head alone, and spatial_softmax's keypoint layer is new: "
                           "freeze the pretrained blocks with freeze_blocks instead")
    if config.history > 1 and (config.freeze_backbone or config.freeze_blocks):
        raise ImitlabError("a frame history encodes windows of frames while training; it cannot train on frozen "
                           "features cached once per frame: drop freeze_backbone/freeze_blocks or history")
    if (config.nproc > 1 or under_launcher()) and (config.head != "mlp" or config.history > 1):
        raise ImitlabError("--nproc trains the mlp head on single frames (its loss is summed over ranks as MSE): "
                           "train gmm, chunk or history policies in one process")
    if config.compile and (config.nproc > 1 or under_launcher()):
        raise ImitlabError("--compile compiles the training step in one process: drop --compile or --nproc")
    if config.nproc > 1 and not under_launcher():
        return launch(config, config.nproc)
    device = resolve_device(config.device)
    ranks = init_process_group(device) if under_launcher() else Ranks()
    if ranks.active and (config.freeze_backbone or config.freeze_blocks):
        raise ImitlabError("--nproc trains on decoded frames; frozen-feature caches (freeze_backbone, "
                           "freeze_blocks) run in one process")
    if config.threads or ranks.active:
        torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // ranks.world))
    config = replace(config, progress=config.progress and ranks.is_main)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(config.out)
    dataset = DemoDataset(config.dataset)
    if ranks.is_main:
        claim_run_dir(out, _jsonable(asdict(config)))
        save_run_config(out / RUN_CONFIG, replace(config, resume=False, overwrite=False))  # what to train, not how
    # Every usable episode, in file order. DAgger's episodes are the expert's corrections of the policy's
    # mistakes: kept even when they failed.
    demos = DemoLoader([dataset, *map(DemoDataset, config.extra_datasets)], EVAL_BATCH, shuffle=False,
                       successful_only=config.successful_only, keep_sources=(DAGGER_SOURCE,),
                       memory_budget_mb=config.memory_budget_mb, mode=config.loader_mode, workers=config.threads)
    if ranks.is_main:
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
    # A chunk head learns each frame's next actions; a frame history sees each frame's last ones.
    windows = {"action_horizon": config.chunk_size if config.head == "chunk" else 1, "frame_history": config.history}
    train_data: DemoLoader | FrozenFeatures = demos.subset(train_eps, shuffle=True, batch_size=config.batch_size,
                                                           seed=rng, **windows)
    val_data: DemoLoader | FrozenFeatures | None = (demos.subset(val_eps, **windows) if len(val_eps) and ranks.is_main
                                                    else None)
    state_mean, state_std = train_data.state_mean_std()
    train_data = ranks.shard(train_data)

    image_keys = demos.image_keys
    policy = ImagePolicy(PolicyConfig(
        backbone=config.backbone, pretrained=config.pretrained, pooling=config.pooling, keypoints=config.keypoints,
        image_keys=image_keys,
        image_size=demos.image_shapes[image_keys[0]][0], state_dim=demos.state_dim, action_dim=demos.action_dim,
        head_hidden=tuple(config.head_hidden), state_mean=state_mean, state_std=state_std,
        **category_fields(demos.categories, config.command_head), head=config.head, gmm_modes=config.gmm_modes,
        chunk_size=config.chunk_size, chunk_modes=config.chunk_modes, chunk_exec=config.chunk_exec,
        history=config.history,
    ))
    if config.init_policy:
        load_initial_weights(policy, Path(config.init_policy))
    policy.to(device)
    policy.encoder.freeze_blocks(config.freeze_blocks)
    if config.freeze_batchnorm:
        policy.encoder.freeze_batchnorm()
    policy.set_backbone_trainable(not config.freeze_backbone)
    features: FrozenFeatures | None = None
    if config.freeze_backbone or config.freeze_blocks:  # encode every frame once through what never changes
        if config.augment_shift:
            tqdm.write("frozen features are computed once per frame: no random-shift augmentation")
        policy.eval()
        # Read through a throwaway copy of the loader, so its decoded-image cache goes once the pass ends.
        one_pass = demos.subset(range(len(demos.paths)), shuffle=False, seed=0)
        features = FrozenFeatures(policy, one_pass, whole_backbone=config.freeze_backbone,
                                  action_horizon=windows["action_horizon"])
        train_data = features.subset(train_eps, config.batch_size, rng)
        val_data = features.subset(val_eps, EVAL_BATCH) if len(val_eps) else None
    optimizer = make_optimizer(policy, config.head_lr, config.backbone_lr, config.weight_decay,
                               train_backbone=not config.freeze_backbone)
    scheduler = cosine_schedule(optimizer, total_steps=len(train_data) * config.epochs)

    # What validation rolls out and the checkpoints hold: the raw weights, or their moving average.
    averaged = weight_average(policy, config.ema_decay)
    evaluated = averaged.module if averaged is not None else policy

    def augmented(batch: DemoBatch | FeatureBatch) -> DemoBatch | FeatureBatch:
        """The training batch with its images shifted (on the CPU, in uint8, before the transfer)."""
        if isinstance(batch, FeatureBatch):
            return batch
        return batch._replace(images={**batch.images, **{
            k: random_shift(batch.images[k], config.augment_shift, generator, **ranks.shift_rows(batch))
            for k in image_keys}})

    # The training step's forward (the policy's, not the weight average's), compiled once per batch shape if asked.
    train_outputs = torch.compile(policy.outputs, dynamic=False) if config.compile else policy.outputs

    def batch_loss(model: ImagePolicy, batch: DemoBatch | FeatureBatch,
                   forward: Callable[..., dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
        if isinstance(batch, FeatureBatch):
            assert features is not None
            moved = FeatureBatch(*(transfer(t, device) if isinstance(t, torch.Tensor) else t if t is None
                                   else tuple(transfer(x, device) for x in t) for t in batch))
            with autocast(device, config.precision):
                outputs = model.head_outputs(features.head_input(model, moved), moved.state, moved.categories)
        else:
            inputs = [batch.state, *(batch.images[k] for k in image_keys),
                      *(batch.categories[c.key] for c in demos.categories)]
            with autocast(device, config.precision):
                outputs = (forward or model.outputs)(*(transfer(t, device) for t in inputs))
        actions = transfer(batch.actions, device)
        if config.head == "mlp":  # a data-parallel rank's part of the global MSE (the plain MSE in one process)
            return ranks.mse(outputs["action"].float(), actions, batch)
        mask = None if batch.action_mask is None else transfer(batch.action_mask, device)
        return model.loss({name: value.float() for name, value in outputs.items()}, actions, mask)

    val_envs = [make_env(dataset.env_id, **dataset.env_kwargs)  # ~1 s each on a busy machine: shown
                for _ in tqdm(range(config.eval_episodes if ranks.is_main else 0), desc="validation envs",
                              leave=False, disable=not config.progress)]
    val_seeds = list(range(VALIDATION_SEED_START, VALIDATION_SEED_START + config.eval_episodes))
    writer = SummaryWriter(str(out / "tb")) if ranks.is_main else NullWriter()
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
                           "val_samples": val_data.num_samples if val_data is not None else 0,
                           "skipped_nonfinite_episodes": [p.name for p in demos.skipped_nonfinite]}
    best = BestCheckpoint()
    guard = NonFiniteGuard(config.max_nonfinite_steps, config.grad_clip_norm)
    state = TrainingState(policy, optimizer, scheduler, averaged, rng, generator)
    step, first_epoch = 0, 1
    validation_seconds = 0.0  # closed-loop rollouts: reported against the whole run's wall time
    if config.resume:  # everything above was rebuilt as at the start; now continue where the checkpoint left off
        progress = load_checkpoint(out, state)
        log, step, first_epoch = progress["log"], progress["step"], progress["epoch"] + 1
        best.score = tuple(progress["best_score"]) if progress["best_score"] is not None else None
        best.stale, guard.skipped = progress["stale"], progress["skipped_steps"]
        validation_seconds = progress["validation_seconds"]
        tqdm.write(f"resuming {out} after epoch {progress['epoch']} (step {step})")
    start = time.perf_counter() - (log["epochs"][-1]["seconds"] if log["epochs"] else 0.0)
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            policy.train()
            bar = tqdm(prepared_ahead(train_data, augmented), total=len(train_data),
                       desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not config.progress)
            losses = []
            for batch in bar:
                loss = batch_loss(policy, batch, train_outputs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                ranks.reduce_gradients(policy.parameters())
                loss = ranks.total(loss)
                if not guard.allows_step(loss, policy.parameters(), f"epoch {epoch}, step {step + 1}"):
                    continue
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
            entry: dict[str, Any] = {"epoch": epoch, "step": step, "step_losses": losses,
                                     "train_loss": float(np.mean(losses)) if losses else None,
                                     "skipped_steps": guard.skipped, "seconds": time.perf_counter() - start}
            if val_data is not None:
                evaluated.eval()
                with torch.no_grad():
                    entry["val_loss"] = float(np.mean([
                        batch_loss(evaluated, batch).item()
                        for batch in tqdm(val_data, desc="validation loss", unit="batch", leave=False,
                                          disable=not config.progress)]))
                writer.add_scalar("loss/val", entry["val_loss"], step)
            if ranks.is_main and (epoch % config.eval_every == 0 or epoch == config.epochs):
                rollout_start = time.perf_counter()
                rollout = validate(evaluated, val_envs, val_seeds, config.progress)
                entry["rollout_seconds"] = time.perf_counter() - rollout_start
                validation_seconds += entry["rollout_seconds"]
                entry["rollout"] = rollout
                for name, value in rollout.items():
                    writer.add_scalar(f"rollout/{name}", value, step)
                new_best = best.improves(rollout)
                if new_best:
                    log["best"] = entry
                    save_policy(evaluated, out / "best", {**metadata, "epoch": epoch, "validation": rollout})
                tqdm.write(f"epoch {epoch}: train loss {entry['train_loss'] or float('nan'):.4f}"
                           + (f", val loss {entry['val_loss']:.4f}" if "val_loss" in entry else "")
                           + f", rollout success {100 * rollout['success_rate']:.0f} % on {len(val_seeds)} seeds"
                           + (" (new best)" if new_best else "")
                           + f"; validation {validation_seconds:.0f} s of {time.perf_counter() - start:.0f} s so far")
            log["epochs"].append(entry)
            stop = ranks.main_says(bool(config.patience and best.stale >= config.patience))
            if ranks.is_main:
                write_json_atomic(out / "train_log.json", log)
                save_checkpoint(out, state, {"epoch": epoch, "step": step, "best_score": best.score,
                                             "stale": best.stale, "skipped_steps": guard.skipped,
                                             "finished": stop or epoch == config.epochs,
                                             "validation_seconds": validation_seconds, "config": config_json,
                                             "log": log})
            if stop:
                if ranks.is_main:
                    tqdm.write(f"early stop: no better rollout score in {config.patience} validations")
                break
        if ranks.is_main:
            save_policy(evaluated, out / "last", {**metadata, "epoch": log["epochs"][-1]["epoch"]})
    finally:
        writer.close()
        for env in val_envs:
            env.close()
    log["seconds"] = time.perf_counter() - start
    log["validation_seconds"] = validation_seconds
    log["skipped_steps"] = guard.skipped
    if ranks.is_main:
        tqdm.write(f"validation rollouts took {validation_seconds:.0f} s of the run's {log['seconds']:.0f} s "
                   f"({100 * validation_seconds / log['seconds']:.0f} %)")
        write_json_atomic(out / "train_log.json", log)
    return log


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
