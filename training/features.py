"""The frozen-feature cache: what the frozen part of the backbone makes of every frame, computed once.

With ``freeze_backbone`` the whole encoder is frozen and the head trains on its output; with ``freeze_blocks``
the stem and first blocks are, and the rest of the encoder fine-tunes on their output. Either way no gradient
reaches the frozen part, so encoding each frame once (no augmentation) gives the same training for far less work.
"""

from __future__ import annotations

import copy
import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from tqdm import tqdm

from imitlab.demos.loader import DemoLoader, action_windows, episode_ends
from imitlab.policies import ImagePolicy
from imitlab.policies.device import transfer


class FeatureBatch(NamedTuple):
    """A minibatch of frozen features in place of the images: the whole backbone's (one (B, F) tensor) or the
    frozen blocks' output per camera; ``categories`` (B,) per category key of the policy, in its order."""

    state: torch.Tensor
    features: tuple[torch.Tensor, ...]
    actions: torch.Tensor
    categories: tuple[torch.Tensor, ...]
    action_mask: torch.Tensor | None = None
    """With an action horizon > 1, which steps of each row's action window lie inside its episode."""


class FrozenFeatures:
    """What the frozen part of ``policy``'s backbone makes of every frame of an unshuffled loader, computed once
    (no augmentation, no gradient) and held in memory. Used like a ``DemoLoader``: :meth:`subset` of episodes,
    and each ``iter()`` is one epoch of minibatches, shuffled by ``rng`` when there is one."""

    def __init__(self, policy: ImagePolicy, loader: DemoLoader, whole_backbone: bool, action_horizon: int = 1):
        """``whole_backbone``: cache the encoder's output (the head trains alone); else its frozen blocks' output.
        ``action_horizon`` > 1 serves each row's next actions, as ``DemoLoader`` does (``loader`` serves one)."""
        self.whole_backbone = whole_backbone
        self.action_horizon = action_horizon
        image_keys, category_keys = policy.config.image_keys, policy.config.category_keys
        device = next(policy.parameters()).device  # the cache stays where it was computed (on a GPU: its memory)
        parts = []
        with torch.no_grad():
            for batch in tqdm(loader, desc="frozen features", unit="batch", leave=False):
                images = [transfer(batch.images[k], device) for k in image_keys]
                features = (policy.encode(images),) if whole_backbone else tuple(policy.frozen_features(images))
                parts.append((batch.state, features, batch.actions, tuple(batch.categories[k] for k in category_keys)))
        state, features, actions, categories = zip(*parts)
        self.data = FeatureBatch(torch.cat(state), tuple(torch.cat(f) for f in zip(*features)), torch.cat(actions),
                                 tuple(torch.cat(c) for c in zip(*categories)))
        mib = sum(f.nbytes for f in self.data.features) / 2**20
        tqdm.write(f"frozen features: {mib:.0f} MiB for {len(self.data.actions)} frames")
        self.lengths = list(loader.lengths)
        self.batch_size = loader.batch_size
        self.rng: np.random.Generator | None = None

    def head_input(self, model: ImagePolicy, batch: FeatureBatch) -> torch.Tensor:
        """The image features the head takes, finished from a cached minibatch by ``model``'s trainable blocks."""
        return batch.features[0] if self.whole_backbone else model.encode_frozen(list(batch.features))

    @property
    def num_samples(self) -> int:
        return len(self.data.actions)

    def subset(self, episodes: Sequence[int], batch_size: int,
               rng: np.random.Generator | None = None) -> FrozenFeatures:
        """The rows of some episodes (indices into the loader's episodes, served in the order given)."""
        starts = np.cumsum([0, *self.lengths])
        rows = torch.from_numpy(np.concatenate([np.arange(starts[e], starts[e + 1]) for e in episodes]))
        other = copy.copy(self)
        other.data = _take(self.data, rows)
        other.lengths = [self.lengths[e] for e in episodes]
        other.batch_size, other.rng = batch_size, rng
        return other

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[FeatureBatch]:
        rows = np.arange(self.num_samples) if self.rng is None else self.rng.permutation(self.num_samples)
        ends = episode_ends(self.lengths) if self.action_horizon > 1 else None
        for start in range(0, self.num_samples, self.batch_size):
            batch = _take(self.data, torch.from_numpy(rows[start:start + self.batch_size]))
            if ends is not None:
                actions, mask = action_windows(self.data.actions.numpy(), ends, rows[start:start + self.batch_size],
                                               self.action_horizon)
                batch = batch._replace(actions=torch.from_numpy(actions), action_mask=torch.from_numpy(mask))
            yield batch


def _take(batch: FeatureBatch, rows: torch.Tensor) -> FeatureBatch:
    return FeatureBatch(batch.state[rows], tuple(f[rows] for f in batch.features), batch.actions[rows],
                        tuple(c[rows] for c in batch.categories))
