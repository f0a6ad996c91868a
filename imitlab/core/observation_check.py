"""Checking an observation against what a policy takes; shared by the torch policy and the torch-free runtime.

A policy takes a float ``state`` vector (D,), uint8 (S, S, 3) images under its image keys ((N, S, S, 3) with a
history of N frames) and, if it has any,
one integer per category key (a ``Discrete`` observation such as Town-v0's route command, a scalar); a batch adds
a leading dimension to every entry. Callers get batched, contiguous numpy arrays or one clear error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from imitlab.core.errors import ImitlabError


class ObservationError(ImitlabError):
    """An observation whose keys, shapes or dtypes do not match the policy's inputs."""


class CheckedObservation(NamedTuple):
    """A valid observation as batched arrays; ``single`` says whether the caller passed one observation."""

    state: np.ndarray
    images: dict[str, np.ndarray]
    single: bool
    categories: dict[str, np.ndarray] = {}
    """int64 (B,) per category key, in the policy's order."""


class Category(NamedTuple):
    """A category input: its key and the values it may take, ``start`` .. ``start + n - 1`` (a ``Discrete``)."""

    key: str
    n: int
    start: int = 0


def check_observation(obs: Mapping[str, Any], image_keys: Sequence[str], image_size: int,
                      state_dim: int, categories: Sequence[Category] = (), frames: int = 1) -> CheckedObservation:
    """``obs`` (single or batched) -> batched float32 state (B, D), uint8 images (B, S, S, 3) (or (B, N, S, S, 3)
    for a policy that sees ``frames`` N > 1, oldest first) and int64 categories (B,), or ObservationError."""
    missing = [k for k in ("state", *image_keys, *(c.key for c in categories)) if k not in obs]
    if missing:
        raise ObservationError(f"observation lacks keys {missing} the policy needs (has {sorted(obs)})")
    frame = (image_size, image_size, 3) if frames == 1 else (frames, image_size, image_size, 3)
    first = np.asarray(obs[image_keys[0]])
    single = first.ndim == len(frame)
    batch = 1 if single else (first.shape[0] if first.ndim == len(frame) + 1 else -1)
    images: dict[str, np.ndarray] = {}
    for key in image_keys:
        image = np.asarray(obs[key])
        expected = frame if single else (batch, *frame)
        if image.dtype != np.uint8 or image.shape != expected:
            raise ObservationError(f"observation {key!r} is {image.dtype} {image.shape}, "
                                   f"the policy expects uint8 {expected}")
        images[key] = np.ascontiguousarray(image[None] if single else image)
    try:
        state = np.asarray(obs["state"], dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ObservationError(f"observation 'state' is not numeric ({error})") from error
    expected_state = (state_dim,) if single else (batch, state_dim)
    if state.shape != expected_state:
        raise ObservationError(f"observation 'state' has shape {state.shape}, the policy expects {expected_state}")
    checked = {category.key: _category(obs[category.key], category, single, batch) for category in categories}
    return CheckedObservation(np.ascontiguousarray(state[None] if single else state), images, single, checked)


def _category(value: Any, category: Category, single: bool, batch: int) -> np.ndarray:
    """One category input as int64 (B,): integers (or integral floats) within the space's values."""
    array = np.asarray(value)
    expected = () if single else (batch,)
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.shape != expected or not numeric:
        raise ObservationError(f"observation {category.key!r} is {array.dtype} {array.shape}, the policy expects "
                               f"integers of shape {expected}")
    values = array.astype(np.int64)
    inside = (values >= category.start) & (values < category.start + category.n)
    if not np.array_equal(values, array) or not inside.all():
        raise ObservationError(f"observation {category.key!r} must be an integer in {category.start}.."
                               f"{category.start + category.n - 1}, got {array.ravel()[:4].tolist()}")
    return np.ascontiguousarray(values.reshape(-1))
