"""``imitlab train``: behaviour cloning (and DAgger) from a dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder written by `imitlab record`."),
    out: Path = typer.Option(..., help="Run folder for checkpoints, logs and TensorBoard events."),
    backbone: str = typer.Option("lite0", help="lite0 (ImageNet-pretrained EfficientNet-Lite0) or nature_cnn."),
    pretrained: bool = typer.Option(True, help="Start lite0 from ImageNet weights."),
    pooling: str = typer.Option("avg", help="lite0 pooling: avg, or spatial_softmax (keypoints; for manipulation)."),
    keypoints: int = typer.Option(32, min=1, help="Keypoints of spatial_softmax pooling."),
    freeze_backbone: bool = typer.Option(False, help="Train only the head on cached backbone features."),
    freeze_blocks: int = typer.Option(0, min=0, help="lite0: keep the stem + first N-1 blocks at ImageNet weights and "
                                      "cache their output (6: ~3x faster epochs, no augmentation)."),
    freeze_batchnorm: bool = typer.Option(False, help="lite0: normalise with the ImageNet BatchNorm statistics "
                                          "while fine-tuning too (training and rollouts then agree)."),
    backbone_lr: float = typer.Option(3e-4, help="Backbone learning rate."),
    head_lr: float = typer.Option(1e-3, help="Head learning rate."),
    ema_decay: float = typer.Option(0.0, min=0.0, max=0.99999, help="Validate and save a moving average of the "
                                    "weights with this decay per step (e.g. 0.998; 0: the raw weights)."),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(64, min=1),
    augment_shift: int = typer.Option(4, min=0, help="Random-shift augmentation padding in pixels (0: off)."),
    eval_every: int = typer.Option(1, min=1, help="Closed-loop validation every N epochs."),
    eval_episodes: int = typer.Option(8, min=1, help="Validation rollouts per check."),
    patience: int = typer.Option(0, min=0, help="Early stop after N validations without improvement (0: off)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, min=0, help="torch CPU threads and image-decoding threads (0: all cores)."),
    val_fraction: float = typer.Option(0.1, min=0.0, max=0.9, help="Fraction of episodes held out for validation loss."),
    init_policy: Optional[Path] = typer.Option(None, help="Start from this saved policy's weights (same backbone)."),
    loader_mode: str = typer.Option("auto", help="memory (decode the demos once), chunked (stream them from disk "
                                    "every epoch) or auto (memory when they fit --memory-budget-mb)."),
    memory_budget_mb: float = typer.Option(4096.0, min=0.0, help="MiB of decoded demos allowed in memory."),
    grad_clip_norm: float = typer.Option(0.0, min=0.0, help="Clip the gradients' total norm to this (0: off)."),
    max_nonfinite_steps: int = typer.Option(10, min=1, help="Stop after this many steps in a row with a NaN or "
                                            "infinite loss or gradient (each one is skipped and counted)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last epoch's checkpoint (same "
                                "settings; bit for bit on CPU with the same --threads)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it already holds something."),
    dagger_rounds: int = typer.Option(0, min=0, help="DAgger: rounds of policy rollouts labelled by the expert."),
    dagger_episodes: int = typer.Option(10, min=1, help="DAgger: episodes collected per round."),
    dagger_beta: float = typer.Option(0.5, min=0.0, max=1.0, help="DAgger: expert-control probability in round 1."),
    dagger_epochs: int = typer.Option(0, min=0, help="DAgger: fine-tuning epochs per round (0: --epochs)."),
) -> None:
    """Behaviour cloning: fit a policy to a dataset; the checkpoint kept is the best in closed loop."""
    from imitlab.training.bc import TrainConfig, train as run_train
    from imitlab.training.dagger import DaggerConfig, run_dagger

    config = TrainConfig(
        dataset=str(dataset), out=str(out), backbone=backbone, pretrained=pretrained, pooling=pooling,
        keypoints=keypoints, freeze_backbone=freeze_backbone, freeze_blocks=freeze_blocks,
        freeze_batchnorm=freeze_batchnorm, backbone_lr=backbone_lr, head_lr=head_lr, ema_decay=ema_decay, epochs=epochs,
        batch_size=batch_size, augment_shift=augment_shift, eval_every=eval_every, eval_episodes=eval_episodes,
        patience=patience, seed=seed, threads=threads, val_fraction=val_fraction,
        init_policy=str(init_policy) if init_policy else None, loader_mode=loader_mode,
        memory_budget_mb=memory_budget_mb, grad_clip_norm=grad_clip_norm, max_nonfinite_steps=max_nonfinite_steps,
        resume=resume, overwrite=overwrite,
    )
    if dagger_rounds:
        log = run_dagger(DaggerConfig(config, rounds=dagger_rounds, episodes_per_round=dagger_episodes,
                                      beta=dagger_beta, round_epochs=dagger_epochs or None))
        best = log["rounds"][log["chosen_round"]]["bc"]
    else:
        best = run_train(config)["best"]
    typer.echo(f"best policy: {out / 'best'} (epoch {best['epoch']}, validation success "
               f"{100 * best['rollout']['success_rate']:.0f} % on {eval_episodes} seeds)")
