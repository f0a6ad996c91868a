"""Which weights a run keeps: closed-loop validation, the best-checkpoint rule, and starting from a saved policy.

Checkpoints are chosen by closed-loop success, not validation loss: robomimic found loss-chosen checkpoints
50-100 % worse, because a small action error compounds over a rollout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imitlab.core.action_execution import Execution
from imitlab.core.errors import ImitlabError
from imitlab.evaluation.progress import RolloutBar
from imitlab.evaluation.rollout import policy_agent, run_lockstep
from imitlab.policies import ImagePolicy, load_policy


def validate(policy: ImagePolicy, envs: list, seeds: list[int], progress: bool) -> dict[str, float]:
    """Roll the policy out on ``seeds`` (one env each, in lockstep); success rate, mean return, env metrics."""
    policy.eval()
    with RolloutBar(len(seeds), "validation rollouts", disable=not progress) as bar:
        results = run_lockstep(envs, policy_agent(policy, Execution.of(policy.config.to_dict())), seeds, progress=bar)
    metrics: dict[str, float] = {
        "success_rate": float(np.mean([r.success for r in results])),
        "mean_return": float(np.mean([r.episode_return for r in results])),
    }
    for name in results[0].metrics:
        metrics[name] = float(np.mean([r.metrics[name] for r in results]))
    return metrics


def rollout_score(rollout: dict[str, Any]) -> tuple[float, float]:
    """How validations compare: success rate first, mean return breaks ties."""
    return rollout["success_rate"], rollout["mean_return"]


class BestCheckpoint:
    """Tracks the best validation so far and how many validations since it (for early stopping)."""

    def __init__(self) -> None:
        self.score: tuple[float, float] | None = None
        self.stale = 0

    def improves(self, rollout: dict[str, Any]) -> bool:
        """Record a validation; True when it beats every earlier one (its weights become the best checkpoint)."""
        score = rollout_score(rollout)
        if self.score is None or score > self.score:
            self.score, self.stale = score, 0
            return True
        self.stale += 1
        return False


def load_initial_weights(policy: ImagePolicy, path: Path) -> None:
    """Copy a saved policy's weights, keeping this run's state normalisation (it may have more data)."""
    initial, _ = load_policy(path)
    if initial.config.backbone != policy.config.backbone or initial.config.image_keys != policy.config.image_keys:
        raise ImitlabError(f"{path}: a {initial.config.backbone} policy on {initial.config.image_keys} cannot "
                           f"initialise a {policy.config.backbone} policy on {policy.config.image_keys}")
    try:  # normalisation statistics are config, not weights, so the new run's own stay in place
        policy.load_state_dict(initial.state_dict())
    except RuntimeError as exc:
        raise ImitlabError(f"{path}: weights do not fit this run's policy ({str(exc).splitlines()[0]})") from None
