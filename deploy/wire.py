"""The JSON wire format of one ``/act`` request, and its strict validation (the server trusts nothing it receives).

Request body::

    {"obs": {"state": [float, ...],                 # exactly state_dim finite numbers within the state bounds
             "image": "<base64>" | [[[r, g, b], ...], ...],
             "command": 1},                          # one integer per category key (the bundle's "categories")
     "session": "episode-17",                       # optional: the server carries this episode's head state
     "seed": 17}                                    # optional, with "session": seeds a new session's sampling

Each camera key in the bundle's ``image_keys`` takes either base64 of the raw uint8 bytes of the (H, W, 3)
RGB array in row-major order (compact: ``base64.b64encode(img.tobytes())``) or a nested H x W x 3 list of
integers 0..255 (readable). Each category key (a ``Discrete`` observation the policy is conditioned on, such as
Town-v0's route command) takes an integer in ``start .. start + n - 1``. Every key must be present and no others.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from imitlab.deploy.spec import spec_categories

#: Largest magnitude accepted for a state entry: finite in float32 (3.4028e38), with margin.
STATE_LIMIT = 3.0e38
#: What a session id may look like (a client's name for one episode).
SESSION_PATTERN = "^[A-Za-z0-9_.-]{1,64}$"
#: Largest session seed (numpy's generators take any non-negative integer; this keeps it an int64).
MAX_SEED = 2**63 - 1


class WireError(ValueError):
    """A request that does not describe a valid observation; the message says what is wrong."""


class ActRequest(NamedTuple):
    """A validated ``/act`` request: the observation, and the session it is a step of (None: stateless)."""

    obs: dict[str, np.ndarray]
    session: str | None = None
    seed: int = 0


def encode_observation(obs: dict[str, np.ndarray], image_keys: list[str], base64_images: bool = True,
                       category_keys: Sequence[str] = (), session: str | None = None,
                       seed: int | None = None) -> dict[str, Any]:
    """A request body for ``obs`` (the client side of ``parse_request``), as a step of ``session`` if given."""
    body: dict[str, Any] = {"state": [float(v) for v in np.asarray(obs["state"], dtype=np.float32)]}
    for key in image_keys:
        image = np.ascontiguousarray(obs[key], dtype=np.uint8)
        body[key] = base64.b64encode(image.tobytes()).decode("ascii") if base64_images else image.tolist()
    body.update({key: int(obs[key]) for key in category_keys})
    request: dict[str, Any] = {"obs": body}
    if session is not None:
        request["session"] = session
    if seed is not None:
        request["seed"] = seed
    return request


def parse_request(payload: Any, spec: dict[str, Any]) -> ActRequest:
    """Validate a decoded JSON body against the bundle spec: the observation as numpy arrays and its session."""
    if not isinstance(payload, dict):
        raise WireError("body must be a JSON object with an \"obs\" field")
    extra = sorted(set(payload) - {"obs", "session", "seed"})
    if extra or "obs" not in payload:
        raise WireError(f"body must have the field \"obs\", optionally with \"session\" and \"seed\" "
                        f"(got {sorted(payload)[:5]})")
    session = payload.get("session")
    if session is not None and (not isinstance(session, str) or not re.fullmatch(SESSION_PATTERN, session)):
        raise WireError("\"session\" must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'")
    seed = payload.get("seed", 0)
    if "seed" in payload and session is None:
        raise WireError("\"seed\" seeds a session: give \"session\" too")
    if type(seed) is float and seed.is_integer():  # JSON Schema counts 7.0 as an integer, so does this check
        seed = int(seed)
    if type(seed) is not int or not 0 <= seed <= MAX_SEED:
        raise WireError(f"\"seed\" must be an integer in [0, {MAX_SEED}]")
    return ActRequest(_observation(payload["obs"], spec), session, seed)


def _observation(obs: Any, spec: dict[str, Any]) -> dict[str, np.ndarray]:
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
