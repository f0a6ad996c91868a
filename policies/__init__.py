"""imitlab.policies: image encoders, the behaviour-cloning policy and its safetensors + JSON checkpoints."""

from imitlab.policies.encoders import (
    BACKBONES,
    POOLINGS,
    ImageEncoder,
    Lite0Encoder,
    NatureCNNEncoder,
    SpatialSoftmax,
    make_encoder,
)
from imitlab.policies.io import load_policy, read_policy_metadata, save_policy
from imitlab.policies.policy import ImagePolicy, PolicyConfig, state_statistics

__all__ = [
    "BACKBONES",
    "POOLINGS",
    "ImageEncoder",
    "ImagePolicy",
    "Lite0Encoder",
    "NatureCNNEncoder",
    "PolicyConfig",
    "SpatialSoftmax",
    "load_policy",
    "make_encoder",
    "read_policy_metadata",
    "save_policy",
    "state_statistics",
]
