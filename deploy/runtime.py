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

from imitlab.core.action_execution import ActOptions, EpisodeExecutor, Execution, head_outputs
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
        self.policy_config: dict[str, Any] = dict(spec.get("policy_config") or {})
        self.execution = Execution.of(self.policy_config)  # the head, its default execution, the frame history
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.output_names != list(head_outputs(self.policy_config)):
            raise ImitlabError(f"{model}: outputs {self.output_names} do not match a {self.execution.head} head's "
                               f"{list(head_outputs(self.policy_config))}")

    def predict(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Numpy observation dict (single or batched) -> float32 actions in [-1, 1] (NaN stays NaN)."""
        return self.predict_outputs(obs)["action"]

    def predict_outputs(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Every output of the model by name (``action`` first), for a single observation or a batch."""
        feeds, single = self.feeds(obs)
        outputs = dict(zip(self.output_names, self.session.run(None, feeds)))
        for name in ("action", "action_chunk", "chunk_proposals", "gmm_means"):  # bounded by the graph (tanh or clip)
            if name in outputs:  # onnxruntime's float32 tanh can overshoot 1 by one ulp; the contract is [-1, 1]
                outputs[name] = np.clip(outputs[name], -1.0, 1.0)
        return {name: value[0] if single else value for name, value in outputs.items()}

    def feeds(self, obs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        """Check ``obs`` and turn it into batched session inputs; also says whether it was a single observation."""
        checked = check_observation(obs, self.image_keys, self.image_size, self.state_dim, self.categories,
                                    self.execution.history)
        return {"state": checked.state, **checked.images, **checked.categories}, checked.single

    def episode(self, seed: int = 0, options: ActOptions = ActOptions()) -> PolicyEpisode:
        """A controller for one episode: keeps what the head carries from step to step (a chunk head's chunks, a
        gmm head's sampling generator seeded by ``seed``, a frame history)."""
        return PolicyEpisode(self, EpisodeExecutor(Execution.of(self.policy_config, options), seed))


class PolicyEpisode:
    """One episode of a bundle's policy: ``act(obs)`` once per control step, in order, one observation at a time."""

    def __init__(self, policy: OnnxPolicy, executor: EpisodeExecutor) -> None:
        self.policy = policy
        self.executor = executor

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        """This step's action (A,) for this step's observation (one frame per camera, as the env gives it); runs the
        model only when the head needs it (open-loop chunks run from memory)."""
        obs = self.executor.observe(obs)
        outputs = self.policy.predict_outputs(obs) if self.executor.needs_outputs() else None
        if outputs is not None and np.ndim(outputs["action"]) != 1:
            raise ImitlabError("an episode acts on one observation at a time, not a batch")
        return self.executor.act(outputs)


def load_bundle(bundle: Path, model: str = "fp32", threads: int = 1) -> OnnxPolicy:
    """The policy of a deployment bundle folder; ``model`` picks the fp32 or the int8 ONNX file, whose sha256 must
    match the spec's."""
    spec = read_spec(Path(bundle))
    path, content = read_model(Path(bundle), spec, model)
    return OnnxPolicy(path, spec, threads, content)
