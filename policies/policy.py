"""The behaviour-cloning policy: a shared image encoder per camera + a head that fuses image features and state
-> actions in [-1, 1]: an MLP (conditioned on category observations, such as a route command, by ``command.py``'s
head when it has any), a mixture density or an action-chunking head (``heads.py``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imitlab.core.errors import ImitlabError
from imitlab.core.limits import (MAX_ACTION_DIM, MAX_HEAD_LAYERS, MAX_HEAD_WIDTH, MAX_IMAGE_KEYS, MAX_IMAGE_SIZE,
                                 MAX_KEYPOINTS, MAX_STATE_DIM, size_problem)
from imitlab.core.observation_check import Category, check_observation
from imitlab.policies.command import COMMAND_HEADS, MAX_BRANCHES, CommandHead
from imitlab.policies.encoders import BACKBONES, POOLINGS, make_encoder
from imitlab.policies.heads import head_config_problems, make_head, one_hot_categories, uses_tokens


@dataclass(kw_only=True)
class PolicyConfig:
    """Everything needed to rebuild an `ImagePolicy`; stored as JSON next to the weights."""

    backbone: str = "lite0"
    """Image encoder: "lite0" (EfficientNet-Lite0) or "nature_cnn" (DQN CNN from scratch)."""
    pretrained: bool = True
    """Initialise lite0 from ImageNet weights (ignored by nature_cnn, which has none)."""
    pooling: str = "avg"
    """lite0 feature pooling: "avg" (global average, 1280-d) or "spatial_softmax" (keypoints; for tasks that
    depend on where objects are, e.g. manipulation)."""
    keypoints: int = 32
    """Number of keypoints with spatial_softmax pooling (2 features each)."""
    image_keys: tuple[str, ...] = ("image",)
    """Observation keys of the camera images, in the order `ImagePolicy.forward` takes them."""
    image_size: int = 96
    """Square image side in pixels; the encoder is built for exactly this size."""
    state_dim: int
    """Length of the proprioceptive `"state"` vector (may be 0)."""
    action_dim: int
    """Length of the action vector; actions lie in [-1, 1]."""
    head_hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the MLP head that fuses image features and state."""
    state_mean: list[float] = field(default_factory=list)
    """Per-dimension state mean from the demonstrations (empty -> zeros, i.e. no shift)."""
    state_std: list[float] = field(default_factory=list)
    """Per-dimension state std from the demonstrations (empty -> ones, i.e. no scaling); must be > 0."""
    dropout: float = 0.0
    """Dropout probability after each hidden layer of the head."""
    category_keys: tuple[str, ...] = ()
    """Category observation keys (``Discrete`` spaces, e.g. Town-v0's route ``command``) the actions are conditioned
    on, in the order ``forward`` takes them after the images; empty for a policy without any."""
    category_sizes: tuple[int, ...] = ()
    """Number of values of each category key (its space's ``n``)."""
    category_starts: tuple[int, ...] = ()
    """First value of each category key (its space's ``start``; empty -> zeros)."""
    command_head: str = "branched"
    """How the category keys condition the actions: ``branched`` (one head per value, selected by it: conditional
    imitation learning's branches) or ``concat`` (the values one-hot, fed to one shared head). Unused without them."""
    head: str = "mlp"
    """``mlp`` (one action, MSE), ``gmm`` (mixture density, NLL) or ``chunk`` (ACT-style action chunks, L1); see
    `imitlab.policies.heads`. Configs written before heads existed have none: ``mlp``."""
    gmm_modes: int = 5
    """Mixture modes of the ``gmm`` head."""
    chunk_size: int = 10
    """Actions the ``chunk`` head predicts at once (the next H steps)."""
    chunk_modes: int = 1
    """Chunks the ``chunk`` head proposes, each with a logit (1: one chunk, as before proposals existed)."""
    chunk_exec: str = "ensemble"
    """How the ``chunk`` head's chunks are executed unless told otherwise: ``open`` (a whole chunk, then infer
    again) or ``ensemble`` (infer every step, ACT's temporal ensembling)."""
    history: int = 1
    """Frames per camera the policy sees: the current one and the N-1 before it, each encoded by the shared encoder,
    their features stacked for the head. Images then come as (B, N, H, W, 3), oldest first."""

    def __post_init__(self) -> None:
        for name in ("image_keys", "category_keys"):
            if isinstance(getattr(self, name), str):
                raise ImitlabError(f"invalid policy config: {name} must be a list of keys, got {getattr(self, name)!r}")
        self.image_keys = tuple(self.image_keys)
        self.head_hidden = tuple(self.head_hidden)
        self.category_keys = tuple(self.category_keys)
        self.category_sizes = tuple(self.category_sizes)
        self.category_starts = tuple(self.category_starts) or (0,) * len(self.category_keys)
        self._check_sizes()
        if not self.state_mean:
            self.state_mean = [0.0] * self.state_dim
        if not self.state_std:
            self.state_std = [1.0] * self.state_dim
        self.state_mean = [float(v) for v in self.state_mean]
        self.state_std = [float(v) for v in self.state_std]
        self._validate()

    def _check_sizes(self) -> None:
        """Refuse absurd sizes (a hostile or corrupt policy.json) before anything is allocated from them."""
        problems = [size_problem(name, value, maximum, minimum) for name, value, maximum, minimum in (
            ("image_size", self.image_size, MAX_IMAGE_SIZE, 1), ("state_dim", self.state_dim, MAX_STATE_DIM, 0),
            ("action_dim", self.action_dim, MAX_ACTION_DIM, 1), ("keypoints", self.keypoints, MAX_KEYPOINTS, 1),
            ("number of image_keys", len(self.image_keys), MAX_IMAGE_KEYS, 1),
            ("number of head_hidden layers", len(self.head_hidden), MAX_HEAD_LAYERS, 0),
        )]
        problems += [size_problem("head_hidden width", w, MAX_HEAD_WIDTH) for w in self.head_hidden]
        problems += [size_problem("category size", n, MAX_BRANCHES) for n in self.category_sizes]
        if len(self.category_sizes) == len(self.category_keys) and not any(problems) and (
                self.command_head == "branched" and math.prod(self.category_sizes) > MAX_BRANCHES):
            problems.append(f"a branched head over categories of sizes {list(self.category_sizes)} has more than "
                            f"{MAX_BRANCHES} branches")
        problems = [p for p in problems if p]
        if problems:
            raise ImitlabError("invalid policy config: " + "; ".join(problems[:3]))

    def _validate(self) -> None:
        problems = []
        if self.backbone not in BACKBONES:
            problems.append(f"backbone {self.backbone!r} is not one of {', '.join(BACKBONES)}")
        if not isinstance(self.pretrained, bool):
            problems.append("pretrained must be true or false")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if len(set(self.image_keys)) != len(self.image_keys):
            problems.append(f"image_keys {list(self.image_keys)} must be unique")
        if not all(isinstance(k, str) for k in self.image_keys):
            problems.append("image_keys must be strings")
        if len(self.state_mean) != self.state_dim or len(self.state_std) != self.state_dim:
            problems.append(f"state_mean and state_std must have state_dim={self.state_dim} entries")
        if not all(math.isfinite(v) for v in self.state_mean):
            problems.append("state_mean must be finite")
        if not all(math.isfinite(v) and v > 0 for v in self.state_std):
            problems.append("state_std must be finite and > 0 (floor constant dimensions, see state_statistics)")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if not len(self.category_sizes) == len(self.category_starts) == len(self.category_keys):
            problems.append("category_sizes and category_starts must have one entry per category key")
        if not all(isinstance(k, str) and k for k in self.category_keys) or len(set(self.category_keys)) != len(
                self.category_keys) or set(self.category_keys) & {"state", *self.image_keys}:
            problems.append("category_keys must be unique names other than 'state' and the image keys")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in self.category_starts):
            problems.append("category_starts must be integers")
        if self.command_head not in COMMAND_HEADS:
            problems.append(f"command_head {self.command_head!r} is not one of {', '.join(COMMAND_HEADS)}")
        problems += head_config_problems(self)
        if problems:
            raise ImitlabError("invalid policy config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def categories(self) -> tuple[Category, ...]:
        """The category inputs with the values each takes (what an observation is checked against)."""
        return tuple(Category(k, n, start) for k, n, start in zip(self.category_keys, self.category_sizes,
                                                                   self.category_starts))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """Inverse of `to_dict`; unknown or missing fields and bad values raise ImitlabError."""
        if not isinstance(data, Mapping):
            raise ImitlabError(f"invalid policy config: expected an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ImitlabError(f"invalid policy config: unknown fields {unknown}")
        missing = sorted(name for name in ("state_dim", "action_dim") if name not in data)
        if missing:
            raise ImitlabError(f"invalid policy config: missing fields {missing}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise ImitlabError(f"invalid policy config: {error}") from error


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def state_statistics(states: np.ndarray, min_std: float = 1e-3) -> tuple[list[float], list[float]]:
    """Mean and std of demonstration states (N, D) for `PolicyConfig`; std floored so constant dims stay finite."""
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[0] == 0:
        raise ImitlabError(f"state statistics need a non-empty (N, D) array, got shape {states.shape}")
    std = np.maximum(states.std(axis=0), min_std)
    return states.mean(axis=0).tolist(), std.tolist()


class ImagePolicy(nn.Module):
    """Maps (state, camera images[, categories]) to actions in [-1, 1].

    One encoder is shared by all cameras (fewer weights, every camera trains it); the head sees the
    concatenated per-camera features and the normalised state, and, with category keys, is a ``CommandHead``.
    `forward` takes positional tensors so `torch.onnx.export(policy, (state, *images, *categories), ...)` works
    as is.
    """

    def __init__(self, config: PolicyConfig, *, load_pretrained: bool = True) -> None:
        """`load_pretrained=False` skips reading ImageNet weights (when a checkpoint overwrites them anyway)."""
        super().__init__()
        self.config = config
        self.encoder = make_encoder(config.backbone, config.image_size, config.pretrained and load_pretrained,
                                    config.pooling, config.keypoints)
        # Non-persistent: the statistics live in the config, so checkpoints hold only learned weights.
        self.register_buffer("state_mean", torch.tensor(config.state_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("state_std", torch.tensor(config.state_std, dtype=torch.float32), persistent=False)
        width = self.encoder.features_dim * len(config.image_keys) * config.history + config.state_dim
        self.head: nn.Module
        if config.head != "mlp":
            self.head = make_head(config, self.encoder)
        elif config.category_keys:
            self.head = CommandHead(config.command_head, width, config.category_sizes, config.category_starts,
                                    self._mlp)
        else:
            self.head = self._mlp(width)
        self._backbone_trainable = True

    def _mlp(self, width: int) -> nn.Sequential:
        """The MLP head for an input of ``width`` (also each branch of a branched command head)."""
        config = self.config
        layers: list[nn.Module] = []
        for hidden in config.head_hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers += [nn.Linear(width, config.action_dim), nn.Tanh()]
        return nn.Sequential(*layers)

    def encode(self, images: list[Tensor]) -> Tensor:
        """uint8 images (B, H, W, 3), or (B, N, H, W, 3) with a history of N frames, one per `config.image_keys` ->
        concatenated features (B, K * N * per-frame features), camera by camera, oldest frame first."""
        return self.encode_frozen(self.frozen_features(images))

    def frozen_features(self, images: list[Tensor]) -> list[Tensor]:
        """Per camera, the output of the encoder's frozen blocks (one row per frame): a trainer may compute these
        once per frame."""
        if len(images) != len(self.config.image_keys):
            raise ValueError(f"expected {len(self.config.image_keys)} images ({self.config.image_keys}), got {len(images)}")
        return [self.encoder.frozen_features(image.reshape(-1, *image.shape[-3:])) for image in images]

    def encode_frozen(self, frozen: list[Tensor]) -> Tensor:
        """`frozen_features` output -> concatenated features (B, K * N * per-frame features): pooled, or for a head
        that attends to positions, the map and the pooled features (`ImageEncoder.token_features`)."""
        per_frame = self.encoder.token_features if uses_tokens(self.config) else self.encoder.trainable_features
        features = [per_frame(x) for x in frozen]
        return torch.cat([f.reshape(-1, self.config.history * f.shape[1]) for f in features], dim=1)

    def head_outputs(self, features: Tensor, state: Tensor, categories: Sequence[Tensor] = ()) -> dict[str, Tensor]:
        """Image features (`encode`) + raw state (B, D) [+ raw category values (B,) int64 in `config.category_keys`
        order] -> the head's outputs (`imitlab.core.action_execution.HEAD_OUTPUTS`), ``action`` (B, A) first."""
        config = self.config
        state = (state - self.state_mean) / self.state_std
        if config.head != "mlp":  # the categories reach a gmm or chunk head one-hot
            command = one_hot_categories(categories, config) if config.category_keys else None
            return self.head.outputs(features, state, command)
        fused = torch.cat([features, state], dim=1)
        return {"action": self.head(fused, categories) if config.category_keys else self.head(fused)}

    def head_forward(self, features: Tensor, state: Tensor, categories: Sequence[Tensor] = ()) -> Tensor:
        """Image features (`encode`) + raw state (B, D) [+ raw category values] -> actions (B, A) in [-1, 1]."""
        return self.head_outputs(features, state, categories)["action"]

    def outputs(self, state: Tensor, *inputs: Tensor) -> dict[str, Tensor]:
        """Every output of the head for `forward`'s inputs (what the ONNX model returns)."""
        cameras = len(self.config.image_keys)
        if len(inputs) != cameras + len(self.config.category_keys):
            raise ValueError(f"expected {cameras} images and {len(self.config.category_keys)} category inputs "
                             f"({self.config.image_keys} + {self.config.category_keys}), got {len(inputs)} inputs")
        return self.head_outputs(self.encode(list(inputs[:cameras])), state, inputs[cameras:])

    def forward(self, state: Tensor, *inputs: Tensor) -> Tensor:
        """state float32 (B, D), images uint8 (B, H, W, 3) in `config.image_keys` order, then category values
        int64 (B,) in `config.category_keys` order -> actions (B, A)."""
        return self.outputs(state, *inputs)["action"]

    def loss(self, outputs: dict[str, Tensor], actions: Tensor, mask: Tensor | None = None) -> Tensor:
        """The head's training loss against the expert's actions: (B, A) (MSE for ``mlp``), or (B, H, A) windows
        with their (B, H) mask of steps inside the episode for a chunk head."""
        if self.config.head == "mlp":
            return F.mse_loss(outputs["action"], actions)
        return self.head.loss(outputs, actions, mask)

    def observation_tensors(self, obs: Mapping[str, np.ndarray]) -> tuple[bool, list[Tensor]]:
        """A numpy observation (single or batched), checked -> whether it was single, and the positional inputs
        of `forward` (state, images, categories) on the policy's device."""
        config = self.config
        checked = check_observation(obs, config.image_keys, config.image_size, config.state_dim, config.categories,
                                    config.history)
        device = self.state_mean.device
        arrays = [checked.state, *(checked.images[k] for k in config.image_keys),
                  *(checked.categories[k] for k in config.category_keys)]
        return checked.single, [torch.from_numpy(a).to(device) for a in arrays]

    def predict(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Numpy observation dict (single or batched) -> float32 actions, (A,) or (B, A); runs in eval mode."""
        return self.predict_outputs(obs)["action"]

    @torch.no_grad()
    def predict_outputs(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Like `predict`, every output of the head (no batch axis for a single observation)."""
        single, inputs = self.observation_tensors(obs)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():  # no autograd records: rollouts, DAgger and validation only read actions
                outputs = self.outputs(*inputs)
        finally:
            self.train(was_training)
        return {name: value.cpu().numpy()[0] if single else value.cpu().numpy() for name, value in outputs.items()}

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Encoder parameters (for a lower fine-tuning learning rate)."""
        return self.encoder.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Head parameters (everything that is not the encoder)."""
        return self.head.parameters()

    @property
    def backbone_trainable(self) -> bool:
        return self._backbone_trainable

    def set_backbone_trainable(self, flag: bool) -> None:
        """Freeze or unfreeze the encoder; a frozen encoder stays in eval mode so BatchNorm statistics stay fixed."""
        self._backbone_trainable = flag
        self.encoder.requires_grad_(flag)
        if flag:  # blocks frozen on purpose stay frozen
            self.encoder.freeze_blocks(self.encoder.frozen_blocks)
        self.encoder.train(self.training and flag)

    def train(self, mode: bool = True) -> ImagePolicy:
        super().train(mode)
        if not self._backbone_trainable:
            self.encoder.eval()
        return self
