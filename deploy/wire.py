"""The JSON wire format of one observation, and its strict validation (the server trusts nothing it receives).

Request body::

    {"obs": {"state": [float, ...],                 # exactly state_dim finite numbers within the state bounds
             "image": "<base64>" | [[[r, g, b], ...], ...],
             "command": 1}}                          # one integer per category key (the bundle's "categories")

Each camera key in the bundle's ``image_keys`` takes either base64 of the raw uint8 bytes of the (H, W, 3)
RGB array in row-major order (compact: ``base64.b64encode(img.tobytes())``) or a nested H x W x 3 list of
integers 0..255 (readable). Each category key (a ``Discrete`` observation the policy is conditioned on, such as
Town-v0's route command) takes an integer in ``start .. start + n - 1``. Every key must be present and no others.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import numpy as np

from imitlab.deploy.spec import spec_categories

#: Largest magnitude accepted for a state entry: finite in float32 (3.4028e38), with margin.
STATE_LIMIT = 3.0e38


class WireError(ValueError):
    """A request that does not describe a valid observation; the message says what is wrong."""


def encode_observation(obs: dict[str, np.ndarray], image_keys: list[str], base64_images: bool = True,
                       category_keys: Sequence[str] = ()) -> dict[str, Any]:
    """A request body for ``obs`` (the client side of ``parse_observation``)."""
    body: dict[str, Any] = {"state": [float(v) for v in np.asarray(obs["state"], dtype=np.float32)]}
    for key in image_keys:
        image = np.ascontiguousarray(obs[key], dtype=np.uint8)
        body[key] = base64.b64encode(image.tobytes()).decode("ascii") if base64_images else image.tolist()
    body.update({key: int(obs[key]) for key in category_keys})
    return {"obs": body}


def parse_observation(payload: Any, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Validate a decoded JSON body against the bundle spec and return the observation as numpy arrays."""
    if not isinstance(payload, dict):
        raise WireError("body must be a JSON object with an \"obs\" field")
    extra = sorted(set(payload) - {"obs"})
    if extra or "obs" not in payload:
        raise WireError(f"body must have exactly one field \"obs\" (got {sorted(payload)[:5]})")
    obs = payload["obs"]
    if not isinstance(obs, dict):
        raise WireError("\"obs\" must be an object")
    categories = spec_categories(spec)
    keys = ["state", *spec["image_keys"], *(c.key for c in categories)]
    if sorted(obs) != sorted(keys):
        raise WireError(f"\"obs\" must have exactly the keys {keys} (got {sorted(obs)[:8]})")
    out = {"state": _state(obs["state"], spec)}
    size = int(spec["image_size"])
    for key in spec["image_keys"]:
        out[key] = _image(key, obs[key], size)
    for category in categories:
        value = obs[category.key]
        last = category.start + category.n - 1
        # JSON Schema counts 1.0 as an integer; so does this check, to accept what the OpenAPI schema does.
        integral = type(value) is int or (type(value) is float and value.is_integer())
        if not integral or not category.start <= value <= last:
            raise WireError(f"{category.key!r} must be an integer {category.start}..{last}")
        out[category.key] = np.asarray(int(value), dtype=np.int64)
    return out


def _state(value: Any, spec: dict[str, Any]) -> np.ndarray:
    dim = int(spec["state_dim"])
    if not isinstance(value, list) or len(value) != dim:
        raise WireError(f"\"state\" must be a list of {dim} numbers")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise WireError("\"state\" entries must be numbers")
        if not -STATE_LIMIT <= v <= STATE_LIMIT:  # also false for NaN; compares huge ints without converting them
            raise WireError("\"state\" entries must be finite float32 values")
    # Bounds are checked on the values as sent, before float32 rounds 5.0000001 to 5.0.
    state = np.asarray(value, dtype=np.float64)
    low, high = state_bounds(spec)
    outside = np.flatnonzero((state < low) | (state > high))
    if outside.size:
        i = int(outside[0])
        raise WireError(f"\"state\"[{i}] = {value[i]!r} is outside the observation space [{low[i]:g}, {high[i]:g}]")
    return state.astype(np.float32)


def state_bounds(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The state Box bounds from the spec's observation space (infinite where it gives none)."""
    dim = int(spec["state_dim"])
    box = ((spec.get("observation_space") or {}).get("spaces") or {}).get("state") or {}

    def bound(raw: Any, default: float) -> np.ndarray:
        if raw is None:
            return np.full(dim, default)
        return np.broadcast_to(np.asarray(raw, dtype=np.float64), (dim,))

    return bound(box.get("low"), -np.inf), bound(box.get("high"), np.inf)


def _image(key: str, value: Any, size: int) -> np.ndarray:
    shape = (size, size, 3)
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            raise WireError(f"{key!r}: not valid base64 ({error})") from None
        if len(raw) != size * size * 3:
            raise WireError(f"{key!r}: base64 decodes to {len(raw)} bytes, expected {size * size * 3} "
                            f"(uint8 {size}x{size}x3)")
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()
    if not isinstance(value, list):
        raise WireError(f"{key!r} must be a base64 string or a nested {size}x{size}x3 list of integers 0..255")
    if len(value) != size or not all(isinstance(row, list) and len(row) == size for row in value):
        raise WireError(f"{key!r}: nested list must have shape {size}x{size}x3")
    for row in value:
        for pixel in row:
            if not isinstance(pixel, list) or len(pixel) != 3:
                raise WireError(f"{key!r}: nested list must have shape {size}x{size}x3")
            for channel in pixel:
                # JSON Schema counts 7.0 as an integer; so does this check, to accept what the OpenAPI schema does.
                integral = type(channel) is int or (type(channel) is float and channel.is_integer())
                if not integral or not 0 <= channel <= 255:
                    raise WireError(f"{key!r}: pixel values must be integers 0..255")
    return np.asarray(value, dtype=np.uint8)
