"""Optimiser, learning-rate schedule and weight averaging of a behaviour-cloning run."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.swa_utils import AveragedModel

from imitlab.policies import ImagePolicy
from imitlab.policies.heads import LR_SCALES


def make_optimizer(policy: ImagePolicy, head_lr: float, backbone_lr: float, weight_decay: float,
                   train_backbone: bool) -> torch.optim.AdamW:
    """AdamW with one learning rate for the head (scaled by ``heads.LR_SCALES``: a chunk head's transformer trains
    slower) and (when it trains) a lower one for the backbone.

    Fused: one kernel over all parameters; on CPU its step costs a third of the default per-parameter loop's
    (benchmarks/profile_train_step.py), which for nature_cnn is as much as the forward pass."""
    groups = [{"name": "head", "params": list(policy.head_parameters()), "lr": head_lr * LR_SCALES[policy.config.head]}]
    if train_backbone:
        groups.append({"name": "backbone", "params": list(policy.backbone_parameters()), "lr": backbone_lr})
    return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay from each group's learning rate to 0 over ``total_steps`` optimiser steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))


def weight_average(policy: ImagePolicy, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights (and buffers), or None when ``decay`` is 0."""
    return AveragedModel(policy, avg_fn=_ema(decay), use_buffers=True) if decay else None


def _ema(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """AveragedModel's update: an exponential moving average whose decay ramps up as (1 + n) / (10 + n)."""
    def update(average: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        step_decay = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return average + (1.0 - step_decay) * (current - average)
    return update
