"""Upper bounds on the sizes read from policy.json, bundle.json and request bodies, checked before allocating.

A file from elsewhere can say ``head_hidden: [1000000, 1000000]`` or ``image_size: 100000``; building that
network or buffer would try to allocate terabytes. Every size a loader reads is checked against these bounds
first, far above any real policy (Lite0 at 1024 px, an 8192-wide head), so only absurd files are refused.
Torch-free: the deployment runtime uses it.
"""

from __future__ import annotations

from typing import Any

#: Largest JSON document (policy.json, bundle.json, dataset.json) read into memory.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
#: Square camera image side in pixels.
MAX_IMAGE_SIZE = 1024
#: Camera image keys of one policy.
MAX_IMAGE_KEYS = 8
#: Length of the proprioceptive state vector.
MAX_STATE_DIM = 4096
#: Length of the action vector.
MAX_ACTION_DIM = 256
#: Hidden layers of the policy head, and the width of each.
MAX_HEAD_LAYERS = 16
MAX_HEAD_WIDTH = 8192
#: Spatial-softmax keypoints.
MAX_KEYPOINTS = 1024
#: Elements of one observation or action box described in a dataset header (a 1024 px camera is 3.1 M).
MAX_SPACE_ELEMENTS = 16 * 1024 * 1024
#: Entries of a small JSON object read as configuration (env kwargs, a bundle's model list).
MAX_OBJECT_KEYS = 64


def size_problem(name: str, value: Any, maximum: int, minimum: int = 1) -> str | None:
    """Why ``value`` is not an int in [minimum, maximum] (one phrase), or None when it is."""
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{name} must be an integer, got {type(value).__name__}"
    if not minimum <= value <= maximum:
        return f"{name} = {value} is outside [{minimum}, {maximum}]"
    return None

#: MiB of decoded demonstrations a loader keeps in memory by default (more streams from disk in chunks).
DEFAULT_BUDGET_MB = 4096.0
