"""Image augmentation for behaviour cloning."""

from __future__ import annotations

import torch


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator, rows: torch.Tensor | None = None,
                 total: int = 0) -> torch.Tensor:
    """DrQ's random shift on uint8 (B, H, W, C), or (B, N, H, W, C) frame histories (one shift for all of a
    sample's frames, so they stay aligned): replicate-pad by ``pad`` and crop at a random offset.

    ``rows``/``total``: ``images`` are these rows of a batch of ``total``; the offsets are drawn for the whole batch
    and these rows' kept, so a data-parallel rank shifts its rows as one process shifts them.

    Done as one gather with clamped indices (a replicate-padded pixel is the nearest edge pixel), in uint8: no
    padded float copy of the batch, ~2.4x faster than padding and cropping (benchmarks/profile_train_step.py).
    """
    if pad <= 0:
        return images
    b, h, w = images.shape[0], images.shape[-3], images.shape[-2]
    dy = torch.randint(0, 2 * pad + 1, (total or b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (total or b,), generator=generator)
    if rows is not None:
        dy, dx = dy[rows], dx[rows]
    rows = (dy[:, None] + torch.arange(h)[None] - pad).clamp_(0, h - 1)[:, :, None]
    cols = (dx[:, None] + torch.arange(w)[None] - pad).clamp_(0, w - 1)[:, None, :]
    if images.ndim == 5:  # indices around the frame axis put it after them: (B, H, W, N, C) -> (B, N, H, W, C)
        return images[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2, 4)
    return images[torch.arange(b)[:, None, None], rows, cols]
