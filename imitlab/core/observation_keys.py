"""Which observation keys are camera images, categories or vectors: decided from the observation space.

One rule for the whole project: a uint8 Box of rank 3 (H, W, C) is an image, a ``Discrete`` space a category,
anything else a vector. Recorded episodes stack frames, so there a uint8 array of rank 4 (T, H, W, C) is an
image sequence. Key names (``image``, ``wrist_image``) carry no meaning.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from gymnasium import spaces

ObservationKind = Literal["image", "category", "vector"]


def _is_image(dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    return np.dtype(dtype) == np.uint8 and len(shape) == 3


def observation_kind(space: spaces.Space) -> ObservationKind:
    """``image`` (uint8 Box of rank 3), ``category`` (Discrete) or ``vector`` (everything else)."""
    if isinstance(space, spaces.Discrete):
        return "category"
    if isinstance(space, spaces.Box) and _is_image(space.dtype, space.shape):
        return "image"
    return "vector"


def image_keys(space: spaces.Dict) -> tuple[str, ...]:
    """The camera keys of a dict observation space, sorted (the order a policy takes its images in)."""
    return tuple(sorted(key for key, sub in space.spaces.items() if observation_kind(sub) == "image"))


def category_keys(space: spaces.Dict) -> tuple[str, ...]:
    """The category keys of a dict observation space, sorted (the order a policy takes them in, after its images)."""
    return tuple(sorted(key for key, sub in space.spaces.items() if observation_kind(sub) == "category"))


def is_image_sequence(array: np.ndarray) -> bool:
    """Whether a stacked per-step array (an episode's ``obs/<key>``, shape (T, ...)) holds camera frames."""
    return len(array.shape) == 4 and _is_image(array.dtype, tuple(array.shape[1:]))


def image_keys_of_frames(obs: dict[str, np.ndarray]) -> list[str]:
    """The camera keys of one observation (arrays of a single step), sorted."""
    return sorted(key for key, value in obs.items() if _is_image(np.asarray(value).dtype, np.shape(value)))
