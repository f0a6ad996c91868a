"""Image augmentation for behaviour cloning."""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator, rows: torch.Tensor | None = None,
                 total: int = 0) -> torch.Tensor:
    """DrQ's random shift on uint8 (B, H, W, C), or (B, N, H, W, C) frame histories (one shift for all of a
    sample's frames, so they stay aligned): replicate-pad by ``pad`` and crop at a random offset.

    ``rows``/``total``: ``images`` are these rows of a batch of ``total``; the offsets are drawn for the whole batch
    and these rows' kept, so a data-parallel rank shifts its rows as one process shifts them.

    Replicate-padded in numpy, then every sample's crop is taken as one window of a strided view of the padded batch:
    whole rows are copied instead of gathering each pixel through clamped indices (3.5x faster at 84 px, 64 samples).
    """
    if pad <= 0:
        return images
    b, h, w = images.shape[0], images.shape[-3], images.shape[-2]
    dy = torch.randint(0, 2 * pad + 1, (total or b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (total or b,), generator=generator)
    if rows is not None:
        dy, dx = dy[rows], dx[rows]
    leading = ((0, 0),) * (images.ndim - 3)
    padded = np.pad(images.numpy(), (*leading, (pad, pad), (pad, pad), (0, 0)), mode="edge")
    windows = sliding_window_view(padded, (h, w), axis=(-3, -2))  # (B, [N,] 2p+1, 2p+1, C, H, W)
    if images.ndim == 5:  # the offsets' axes next to the batch's, so one index picks every frame of a sample
        windows = np.moveaxis(windows, 1, 3)
    crops = windows[np.arange(b), dy.numpy(), dx.numpy()]  # (B, [N,] C, H, W)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(crops, -3, -1)))
