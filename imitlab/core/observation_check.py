"""Checking an observation against what a policy takes; shared by the torch policy and the torch-free runtime.

A policy takes a float ``state`` vector (D,) and uint8 (S, S, 3) images under its image keys; a batch adds a
leading dimension to every entry. Callers get batched, contiguous numpy arrays or one clear error.
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


def check_observation(obs: Mapping[str, Any], image_keys: Sequence[str], image_size: int,
                      state_dim: int) -> CheckedObservation:
    """``obs`` (single or batched) -> batched float32 state (B, D) and uint8 images (B, S, S, 3), or ObservationError."""
    missing = [k for k in ("state", *image_keys) if k not in obs]
    if missing:
        raise ObservationError(f"observation lacks keys {missing} the policy needs (has {sorted(obs)})")
    first = np.asarray(obs[image_keys[0]])
    single = first.ndim == 3
    batch = 1 if single else (first.shape[0] if first.ndim == 4 else -1)
    images: dict[str, np.ndarray] = {}
    for key in image_keys:
        image = np.asarray(obs[key])
        expected = (image_size, image_size, 3) if single else (batch, image_size, image_size, 3)
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
    return CheckedObservation(np.ascontiguousarray(state[None] if single else state), images, single)
