"""Non-finite losses and gradients: skip the step instead of writing NaN into the weights, count it, and stop the
run with one clear line when it keeps happening; optional gradient-norm clipping on the way."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from imitlab.core.errors import ImitlabError


class NonFiniteGuard:
    """Decides, after ``backward``, whether the optimiser may step.

    A step whose loss or gradient norm is NaN or infinite is skipped (counted in ``skipped``); ``max_in_a_row``
    skips in a row end the run, since the weights cannot recover by themselves. ``clip_norm`` > 0 scales the
    gradients down to that total norm when they exceed it.
    """

    def __init__(self, max_in_a_row: int, clip_norm: float = 0.0):
        if max_in_a_row < 1:
            raise ImitlabError(f"max_nonfinite_steps must be at least 1, got {max_in_a_row}")
        if clip_norm < 0 or not math.isfinite(clip_norm):
            raise ImitlabError(f"grad_clip_norm must be a finite number >= 0 (0: off), got {clip_norm}")
        self.max_in_a_row = max_in_a_row
        self.clip_norm = clip_norm
        self.skipped = 0
        self.in_a_row = 0

    def allows_step(self, loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter], where: str) -> bool:
        """True when the step may be taken (gradients clipped if asked); False to skip it. ``where`` names the
        step in the error that stops the run."""
        with_grad = [p for p in parameters if p.grad is not None]
        norm = get_total_norm([p.grad for p in with_grad]) if with_grad else torch.tensor(0.0)
        if bool(torch.isfinite(loss)) and bool(torch.isfinite(norm)):
            self.in_a_row = 0
            if self.clip_norm:
                clip_grads_with_norm_(with_grad, self.clip_norm, norm)
            return True
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            what = "loss" if not bool(torch.isfinite(loss)) else "gradient norm"
            raise ImitlabError(f"training stopped at {where}: {self.in_a_row} steps in a row had a non-finite "
                               f"{what} ({self.skipped} skipped in all); lower the learning rates, set "
                               "--grad-clip-norm, or check the demos for huge values")
        return False
