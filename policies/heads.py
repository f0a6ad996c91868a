"""Policy heads: what the policy makes of the image features and the normalised state, and the loss that trains it.

- ``mlp``: an MLP regressing one action with MSE (the baseline, built by ``policy.py``, branched per command by
  ``command.py``).
- ``gmm``: a mixture-density head (robomimic's BC-GMM): K modes, each a diagonal Gaussian with a tanh-bounded mean,
  trained by negative log-likelihood. MSE averages the modes of multimodal demonstrations; a mixture keeps them.
- ``chunk``: ACT-style (Zhao et al. 2023): a small transformer reads the encoder's spatial tokens, one pooled token
  per camera and a state token, and a decoder with one learned query per future step predicts the next H actions,
  trained with L1 on the steps inside the episode. Executing chunks counters compounding errors. With
  ``chunk_modes`` K > 1 it proposes K chunks and how likely each is (multiple-choice learning, as MultiPath's
  trajectory modes): L1 alone on two ways round an obstacle learns a chunk between them, which hits it.

Every head's ``outputs`` is a dict of tensors whose first entry is ``action`` (B, A), the action the head would
take now without any episode state; ``imitlab.core.action_execution`` turns the outputs into env actions. Category
observations (a route command) reach the gmm head one-hot beside the state, and the chunk head as one more token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, distributions, nn

from imitlab.core.action_execution import CHUNK_EXECS, HEADS
from imitlab.core.limits import size_problem
from imitlab.policies.encoders import ImageEncoder

#: Largest number of mixture modes, chunk length and history a policy.json may ask for.
MAX_GMM_MODES = 64
MAX_CHUNK_SIZE = 256
MAX_CHUNK_MODES = 16
MAX_HISTORY = 16
#: A mode's standard deviation never goes below this (softplus + floor, as robomimic), so the likelihood stays finite.
#: Not much lower: an expert's action dimension that the state alone predicts (a driving expert's throttle) would
#: shrink towards the floor, its NLL gradient (1 / std^2) would swamp the shared layers, and the image-dependent
#: dimension (steering) would hardly be learnt (Detour-v0 at a floor of 1e-3: steering stds ~0.2, throttle's 0.008).
GMM_MIN_STD = 0.05
#: Width, attention heads and layers of the chunk head's transformer: small, as a CPU must run it every step.
CHUNK_WIDTH = 128
CHUNK_ATTENTION_HEADS = 4
CHUNK_ENCODER_LAYERS = 1
CHUNK_DECODER_LAYERS = 2
#: Share of the chunk loss that every proposal gets, not only the one nearest the demo's chunk (relaxed
#: winner-takes-all, Rupprecht et al. 2017): a proposal that never wins still learns where the demos are.
CHUNK_LOSER_WEIGHT = 0.05


#: Factor on the head's learning rate (``TrainConfig.head_lr``): a transformer diverges at an MLP head's rate (Adam
#: at 1e-3 overshoots in its first steps). At a tenth (ACT's 1e-4) it under-fit Detour in 4 epochs: it steered at
#: most 0.08 where the expert steers 0.4.
LR_SCALES = {"mlp": 1.0, "gmm": 1.0, "chunk": 0.3}


def head_config_problems(config: Any) -> list[str]:
    """What is wrong with a policy config's head fields (one phrase each)."""
    problems = []
    if config.head not in HEADS:
        problems.append(f"head {config.head!r} is not one of {', '.join(HEADS)}")
    elif config.head != "mlp" and config.category_keys and config.command_head != "concat":
        problems.append(f"a {config.head} head takes the categories {list(config.category_keys)} as inputs: "
                        "command_head must be concat (branches are for the mlp head)")
    if config.chunk_exec not in CHUNK_EXECS:
        problems.append(f"chunk_exec {config.chunk_exec!r} is not one of {', '.join(CHUNK_EXECS)}")
    problems.append(size_problem("gmm_modes", config.gmm_modes, MAX_GMM_MODES))
    problems.append(size_problem("chunk_size", config.chunk_size, MAX_CHUNK_SIZE))
    problems.append(size_problem("chunk_modes", config.chunk_modes, MAX_CHUNK_MODES))
    problems.append(size_problem("history", config.history, MAX_HISTORY))
    return [p for p in problems if p]


def action_horizon(config: Any) -> int:
    """Actions per training sample the head learns: the chunk's, else one."""
    return config.chunk_size if config.head == "chunk" else 1


def uses_tokens(config: Any) -> bool:
    """Whether the head attends to the encoder's spatial map (`ImageEncoder.token_features`), not pooled features."""
    return config.head == "chunk"


def one_hot_categories(categories: Sequence[Tensor], config: Any) -> Tensor:
    """Raw category values (B,) int64, one per ``config.category_keys`` -> their one-hots side by side (B, sum n)
    (an Equal against constants in ONNX)."""
    return torch.cat([((value.reshape(-1, 1) - start) == torch.arange(n, device=value.device)).float()
                      for value, n, start in zip(categories, config.category_sizes, config.category_starts)], dim=1)


def _mlp(width: int, hidden: tuple[int, ...], dropout: float) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    return layers, width


class GMMHead(nn.Module):
    """Features + state -> MLP -> a K-mode Gaussian mixture over actions, trained by negative log-likelihood.

    ``action`` is the mean of the most likely mode (robomimic's low-noise evaluation): a mode, never the average
    of two."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], action_dim: int, modes: int, dropout: float) -> None:
        super().__init__()
        layers, width = _mlp(in_features, hidden, dropout)
        self.modes, self.action_dim = modes, action_dim
        self.net = nn.Sequential(*layers, nn.Linear(width, modes * (1 + 2 * action_dim)))

    def outputs(self, features: Tensor, state: Tensor, command: Tensor | None = None) -> dict[str, Tensor]:
        """Features, normalised state and (with categories) their one-hots -> the mixture and its likeliest mean."""
        k, a = self.modes, self.action_dim
        raw = self.net(torch.cat([features, state, *(() if command is None else (command,))], dim=1))
        logits = raw[:, :k]
        means = torch.tanh(raw[:, k:k + k * a].reshape(-1, k, a))
        stds = F.softplus(raw[:, k + k * a:].reshape(-1, k, a)) + GMM_MIN_STD
        best = torch.argmax(logits, dim=1).reshape(-1, 1, 1).expand(-1, 1, a)
        return {"action": means.gather(1, best).squeeze(1), "gmm_logits": logits, "gmm_means": means,
                "gmm_stds": stds}

    def loss(self, outputs: dict[str, Tensor], actions: Tensor, mask: Tensor | None) -> Tensor:
        mixture = distributions.MixtureSameFamily(
            distributions.Categorical(logits=outputs["gmm_logits"]),
            distributions.Independent(distributions.Normal(outputs["gmm_means"], outputs["gmm_stds"]), 1))
        return -mixture.log_prob(actions).mean()


class ChunkHead(nn.Module):
    """ACT-style action chunking: spatial, pooled, state (and command) tokens -> transformer encoder; H learned queries
    (per proposal, plus the proposal's embedding) -> transformer decoder -> the next H actions, clipped to [-1, 1],
    trained with L1 on the steps before the episode ends. With K proposals, each also gets a logit, trained to name
    the proposal nearest the demo's chunk; ``action_chunk`` is the likeliest proposal."""

    def __init__(self, encoder: ImageEncoder, cameras: int, state_dim: int, command_dim: int, action_dim: int,
                 chunk_size: int, dropout: float, modes: int = 1) -> None:
        super().__init__()
        self.cameras, self.modes, self.chunk_size = cameras, modes, chunk_size
        self.channels, height, width = encoder.map_shape
        self.positions, self.pooled_dim = height * width, encoder.features_dim
        self.map_tokens = nn.Linear(self.channels, CHUNK_WIDTH)
        self.pooled_token = nn.Linear(self.pooled_dim, CHUNK_WIDTH)
        self.state_token = nn.Linear(state_dim, CHUNK_WIDTH) if state_dim else None
        self.command_token = nn.Linear(command_dim, CHUNK_WIDTH) if command_dim else None
        memory = cameras * (self.positions + 1) + (1 if state_dim else 0) + (1 if command_dim else 0)
        self.lengths = (memory, modes * chunk_size)  # tokens and queries: plain ints, so ONNX reshapes are constant
        # Unit-scale position embeddings and queries, as ACT's (DETR's). At 0.02 the positions were drowned by the
        # tokens, so the encoder saw a bag of map cells and lost where the obstacle is; the queries were drowned by the
        # proposal embedding and, after the decoder's post-norms, every step of a chunk came out the same action.
        self.position = nn.Parameter(torch.randn(1, memory, CHUNK_WIDTH))
        self.queries = nn.Parameter(torch.randn(1, chunk_size, CHUNK_WIDTH))
        # One proposal keeps the parameters (and checkpoints) of the head before proposals existed.
        self.mode_embedding = nn.Parameter(torch.randn(1, modes, 1, CHUNK_WIDTH)) if modes > 1 else None
        self.mode_logit = nn.Linear(CHUNK_WIDTH, 1) if modes > 1 else None
        layer = dict(d_model=CHUNK_WIDTH, nhead=CHUNK_ATTENTION_HEADS, dim_feedforward=4 * CHUNK_WIDTH,
                     dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), CHUNK_ENCODER_LAYERS,
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), CHUNK_DECODER_LAYERS)
        self.out = nn.Linear(CHUNK_WIDTH, action_dim)

    def outputs(self, features: Tensor, state: Tensor, command: Tensor | None = None) -> dict[str, Tensor]:
        """``features``: per camera, the flattened last feature map then the pooled features (``token_features``);
        ``command``: the categories' one-hots (one token), when the policy has any."""
        per_camera = features.reshape(-1, self.cameras, self.channels * self.positions + self.pooled_dim)
        maps = per_camera[:, :, :self.channels * self.positions].reshape(-1, self.cameras, self.channels,
                                                                          self.positions)
        tokens = [self.map_tokens(maps.transpose(2, 3).reshape(-1, self.cameras * self.positions, self.channels)),
                  self.pooled_token(per_camera[:, :, self.channels * self.positions:])]
        if self.state_token is not None:
            tokens.append(self.state_token(state).unsqueeze(1))
        if self.command_token is not None and command is not None:
            tokens.append(self.command_token(command).unsqueeze(1))
        tokens = torch.cat(tokens, dim=1) + self.position
        queries = self.queries if self.mode_embedding is None else (
            self.queries.unsqueeze(1) + self.mode_embedding).reshape(1, self.modes * self.chunk_size, CHUNK_WIDTH)
        queries = queries.expand(tokens.shape[0], -1, -1)
        if self.training:  # torch's layers: their dropout, and their fused kernels for the backward pass
            decoded = self.decoder(queries, self.encoder(tokens))
        else:
            decoded = _decode(self.encoder, self.decoder, tokens, queries, self.lengths)
        raw = self.out(decoded)
        # Clipped to the action range, not squashed: a saturated tanh under L1 gets stuck at +-1 (Adam at 1e-3
        # saturates it within a step). Training passes the gradient straight through the clip (as unbounded ACT).
        chunk = raw + (raw.clamp(-1.0, 1.0) - raw).detach() if self.training else raw.clamp(-1.0, 1.0)
        if self.mode_logit is None:
            return {"action": chunk[:, 0], "action_chunk": chunk}
        proposals = chunk.reshape(-1, self.modes, self.chunk_size, chunk.shape[-1])
        # The logits read the decoded chunks without training them: which proposal a straight-ahead demo is nearest
        # is a coin toss, and that unlearnable cross-entropy (~ln 2) drowned the chunks' L1 in the shared layers.
        logits = self.mode_logit(decoded.detach().reshape(-1, self.modes, self.chunk_size, CHUNK_WIDTH).mean(2))
        logits = logits.squeeze(-1)
        best = torch.argmax(logits, dim=1).reshape(-1, 1, 1, 1).expand(-1, 1, *proposals.shape[2:])
        likeliest = proposals.gather(1, best).squeeze(1)
        return {"action": likeliest[:, 0], "action_chunk": likeliest, "chunk_logits": logits,
                "chunk_proposals": proposals}

    def loss(self, outputs: dict[str, Tensor], actions: Tensor, mask: Tensor | None) -> Tensor:
        """Mean L1 over the action entries of the steps that lie inside the episode (``mask``); with proposals, that
        of the nearest (the others weigh ``CHUNK_LOSER_WEIGHT``) plus the cross-entropy of the logits naming it."""
        weight = (torch.ones(actions.shape[:2], device=actions.device) if mask is None else mask).to(actions.dtype)
        if self.mode_logit is None:
            return _masked_error(outputs["action_chunk"], actions, weight)
        proposals, demo, weight = outputs["chunk_proposals"], actions.unsqueeze(1), weight.unsqueeze(1)
        errors = _masked_error(proposals, demo, weight, dims=(2, 3))
        # Nearest in squared error: a chunk's few large steps (a swerve to come) decide which proposal learns it.
        # By L1 the many small steps (noise around straight ahead) decided as much, the winner was a coin toss on
        # either side's demos, and both proposals stayed at L1's compromise between the sides: no swerve at all.
        nearest = _masked_error(proposals.detach(), demo, weight, dims=(2, 3), power=2).argmin(dim=1)
        winner = errors.gather(1, nearest.unsqueeze(1)).mean()
        return ((1.0 - CHUNK_LOSER_WEIGHT) * winner + CHUNK_LOSER_WEIGHT * errors.mean()
                + F.cross_entropy(outputs["chunk_logits"], nearest))


def _decode(encoder: nn.TransformerEncoder, decoder: nn.TransformerDecoder, tokens: Tensor, queries: Tensor,
            lengths: tuple[int, int]) -> Tensor:
    """``decoder(queries, encoder(tokens))`` in eval mode, written as the post-norm layers' plain products with the
    token and query ``lengths`` as constants: the same numbers (``test_heads.py``), and an ONNX graph of ~350 nodes
    instead of ~1,000, most of them nn.MultiheadAttention's shape arithmetic (at batch 1 on a small encoder,
    onnxruntime spent a third of the step on it: ``benchmarks/bench_heads.py``)."""
    memory = tokens
    for layer in encoder.layers:
        memory = layer.norm1(memory + _attend(layer.self_attn, memory, memory, lengths[0], lengths[0]))
        memory = layer.norm2(memory + layer.linear2(F.relu(layer.linear1(memory))))
    decoded = queries
    for layer in decoder.layers:
        decoded = layer.norm1(decoded + _attend(layer.self_attn, decoded, decoded, lengths[1], lengths[1]))
        decoded = layer.norm2(decoded + _attend(layer.multihead_attn, decoded, memory, lengths[1], lengths[0]))
        decoded = layer.norm3(decoded + layer.linear2(F.relu(layer.linear1(decoded))))
    return decoded


def _attend(attention: nn.MultiheadAttention, query: Tensor, keys: Tensor, query_len: int, keys_len: int) -> Tensor:
    """``attention(query, keys, keys)`` (batch first, no mask, eval mode) as scaled dot products per head."""
    heads, width = attention.num_heads, attention.embed_dim
    weights, biases = attention.in_proj_weight.chunk(3), attention.in_proj_bias.chunk(3)
    q, k, v = (F.linear(x, w, b).reshape(-1, n, heads, width // heads).transpose(1, 2)
               for x, n, w, b in zip((query, keys, keys), (query_len, keys_len, keys_len), weights, biases))
    scores = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(width // heads), dim=-1)
    return attention.out_proj((scores @ v).transpose(1, 2).reshape(-1, query_len, width))


def _masked_error(chunks: Tensor, actions: Tensor, weight: Tensor, dims: tuple[int, ...] | None = None,
               power: int = 1) -> Tensor:
    """Mean |chunks - actions| (to ``power``: 1 is L1) over the action entries of the steps ``weight`` (..., H) keeps: over
    everything, or per row over ``dims`` (the step and action axes)."""
    error = (chunks - actions).abs().pow(power) * weight.unsqueeze(-1)
    if dims is None:
        return error.sum() / (weight.sum() * error.shape[-1]).clamp(min=1.0)
    return error.sum(dim=dims) / (weight.sum(dim=-1) * error.shape[-1]).clamp(min=1.0)


def make_head(config: Any, encoder: ImageEncoder) -> GMMHead | ChunkHead:
    """The gmm or chunk head ``config`` (a ``PolicyConfig``) names, sized for ``encoder``'s features: every frame of
    every camera's history is one more view (the chunk head's position embeddings tell them apart)."""
    cameras = len(config.image_keys) * config.history
    command = sum(config.category_sizes)
    if config.head == "gmm":
        return GMMHead(encoder.features_dim * cameras + config.state_dim + command, config.head_hidden,
                       config.action_dim, config.gmm_modes, config.dropout)
    if config.head == "chunk":
        return ChunkHead(encoder, cameras, config.state_dim, command, config.action_dim, config.chunk_size,
                         config.dropout, config.chunk_modes)
    raise ValueError(f"the {config.head} head is built by the policy itself")
