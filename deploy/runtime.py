"""The deployment runtime: a bundle's ONNX policy run with onnxruntime and numpy only.

This module must never import torch (a robot's computer need not have it); tests check that in a fresh
interpreter. Normalisation (state mean/std, pixel scaling) is inside the ONNX graph, so callers pass raw
observations exactly as the env returns them: ``state`` float32 (D,), uint8 (H, W, 3) images and, for a policy
conditioned on categories (e.g. a route command), each category's integer value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from imitlab.core.errors import ImitlabError
from imitlab.core.observation_check import check_observation
from imitlab.deploy.spec import read_model, read_spec, spec_categories


class OnnxPolicy:
    """``predict(obs)`` like ``ImagePolicy.predict``: a single observation -> (A,), a batch -> (B, A)."""

    def __init__(self, model: Path, spec: dict[str, Any], threads: int = 1, content: bytes | None = None) -> None:
        """``threads``: onnxruntime intra-op threads; 1 is fastest at batch 1 for these small nets.

        ``content``: the model file's bytes when the caller has already read (and verified) them; what runs is then
        exactly what was checked, whatever happens to the file afterwards.
        """
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            source = content if content is not None else str(model)
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise ImitlabError(f"{model}: cannot load ONNX model ({str(error).splitlines()[0]})") from error
        self.spec = spec
        self.model_file = Path(model)
        self.image_keys: tuple[str, ...] = tuple(spec["image_keys"])
        self.image_size = int(spec["image_size"])
        self.state_dim = int(spec["state_dim"])
        self.action_dim = int(spec["action_dim"])
        self.categories = spec_categories(spec)
        expected = ["state", *self.image_keys, *(c.key for c in self.categories)]
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != expected:
            raise ImitlabError(f"{model}: inputs {inputs} do not match the spec's {expected}")

    def predict(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Numpy observation dict (single or batched) -> float32 actions in [-1, 1] (NaN stays NaN)."""
        feeds, single = self.feeds(obs)
        # onnxruntime's float32 tanh can overshoot 1 by one ulp (1.0000001); the contract is [-1, 1].
        actions = np.clip(self.session.run(None, feeds)[0], -1.0, 1.0)
        return actions[0] if single else actions

    def feeds(self, obs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        """Check ``obs`` and turn it into batched session inputs; also says whether it was a single observation."""
        checked = check_observation(obs, self.image_keys, self.image_size, self.state_dim, self.categories)
        return {"state": checked.state, **checked.images, **checked.categories}, checked.single


def load_bundle(bundle: Path, model: str = "fp32", threads: int = 1) -> OnnxPolicy:
    """The policy of a deployment bundle folder; ``model`` picks the fp32 or the int8 ONNX file, whose sha256 must
    match the spec's."""
    spec = read_spec(Path(bundle))
    path, content = read_model(Path(bundle), spec, model)
    return OnnxPolicy(path, spec, threads, content)
