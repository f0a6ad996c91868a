"""Conditioning a policy on category observations (``Discrete`` keys, e.g. Town-v0's route command).

A camera cannot tell whether the route turns left or right at the next junction; the command can. Conditional
imitation learning (Codevilla et al. 2018) found that feeding the command as one more input lets the network
ignore it, while a **branched** head (one MLP per command, the command choosing whose output counts) makes each
branch learn one manoeuvre. Both are here:

* ``branched``: one head per value of the categories (their product, when there are several keys). Every branch
  runs and the selected output is gathered, so the graph is static (exports to ONNX) and only the selected branch
  gets a gradient.
* ``concat``: each category one-hot, concatenated to the image features and the state, into one shared head.

Category inputs are the raw values the env gives (``start`` .. ``start + n - 1``), int64 of shape (B,).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from imitlab.core.observation_check import Category

#: How a policy conditions on its category keys (``PolicyConfig.command_head``).
COMMAND_HEADS = ("branched", "concat")
#: Most branches a branched head may have (the product of its category sizes).
MAX_BRANCHES = 64


def category_fields(categories: Sequence[Category], command_head: str) -> dict[str, Any]:
    """The ``PolicyConfig`` fields of a policy conditioned on ``categories`` (a dataset's Discrete observations)."""
    return {"category_keys": tuple(c.key for c in categories), "category_sizes": tuple(c.n for c in categories),
            "category_starts": tuple(c.start for c in categories), "command_head": command_head}


class CommandHead(nn.Module):
    """The head of a policy with category inputs: (fused features (B, W), categories [(B,) int64]) -> actions.

    ``make_mlp(width)`` builds the plain head for an input of ``width`` (the same MLP a policy without categories
    has), so a branch is exactly that head.
    """

    def __init__(self, mode: str, width: int, sizes: Sequence[int], starts: Sequence[int],
                 make_mlp: Callable[[int], nn.Module]) -> None:
        super().__init__()
        if mode not in COMMAND_HEADS:
            raise ValueError(f"command head {mode!r} is not one of {', '.join(COMMAND_HEADS)}")
        self.mode = mode
        self.sizes = tuple(int(n) for n in sizes)
        self.register_buffer("starts", torch.tensor(list(starts), dtype=torch.int64), persistent=False)
        # One (n,) row of values per key, compared against to one-hot (an Equal op in ONNX, no OneHot needed).
        self.register_buffer("values", torch.arange(max(self.sizes), dtype=torch.int64), persistent=False)
        if mode == "branched":
            self.branches = nn.ModuleList(make_mlp(width) for _ in range(math.prod(self.sizes)))
        else:
            self.mlp = make_mlp(width + sum(self.sizes))

    def indices(self, categories: Sequence[Tensor]) -> list[Tensor]:
        """Raw category values -> 0-based indices (B,), one tensor per key."""
        if len(categories) != len(self.sizes):
            raise ValueError(f"expected {len(self.sizes)} category inputs, got {len(categories)}")
        return [c.reshape(-1).to(torch.int64) - self.starts[i] for i, c in enumerate(categories)]

    def branch(self, categories: Sequence[Tensor]) -> Tensor:
        """The branch each row uses (B,): the categories' indices read as one mixed-radix number."""
        indices = self.indices(categories)
        index = torch.zeros_like(indices[0])
        for size, value in zip(self.sizes, indices):
            index = index * size + value
        return index

    def forward(self, x: Tensor, categories: Sequence[Tensor]) -> Tensor:
        if self.mode == "concat":
            one_hot = [(i.unsqueeze(1) == self.values[:n]).to(x.dtype) for i, n in zip(self.indices(categories),
                                                                                     self.sizes)]
            return self.mlp(torch.cat([x, *one_hot], dim=1))
        outputs = torch.stack([branch(x) for branch in self.branches], dim=1)  # (B, branches, A)
        index = self.branch(categories).view(-1, 1, 1).expand(-1, 1, outputs.shape[2])
        return outputs.gather(1, index).squeeze(1)
