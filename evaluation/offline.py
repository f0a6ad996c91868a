"""Offline decision metrics: how often the policy makes the expert's discrete decision on held-out frames.

A continuous action hides decisions (steer left / straight / right, brake or not, open or close the gripper);
each env names its own in ``DECISIONS``. On frames the policy never trained on (the expert's own rollouts on
held-out seeds, or a held-out dataset) both the expert's label and the policy's action are discretised, and
accuracy, per-class recall and F1 are computed. They cost no closed-loop rollout of the policy; how well they
predict closed-loop success is what ``imitlab study`` measures across runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imitlab.core.errors import ImitlabError
from imitlab.envs import env_class, make_env, make_expert
from imitlab.evaluation.agent_spec import EXPERT, AgentSpec
from imitlab.evaluation.rollout import ExecutingAgent, PolicyAgent

#: Frames per policy call.
BATCH = 256


def decisions_of(env_id: str) -> dict[str, tuple[int, tuple[float, ...], tuple[str, ...]]]:
    """The env's ``DECISIONS`` (name -> action index, thresholds, classes); empty when it names none."""
    return dict(getattr(env_class(env_id), "DECISIONS", {}) or {})


def discretise(values: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Class index of each value: class i holds values in (thresholds[i-1], thresholds[i]]."""
    return np.digitize(values, np.asarray(thresholds, dtype=float), right=True)


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro recall (balanced accuracy) and macro F1, per-class recall/precision/F1, confusion matrix.

    Macro averages run over the classes that occur in the labels or the predictions (as scikit-learn's do).
    """
    k = len(classes)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    support, predicted_count, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    recall = np.divide(hits, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(hits, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    seen = (support + predicted_count) > 0
    return {
        "accuracy": float(hits.sum() / max(1, confusion.sum())),
        "macro_recall": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "classes": {name: {"support": int(support[i]), "recall": float(recall[i]), "precision": float(precision[i]),
                           "f1": float(f1[i])} for i, name in enumerate(classes)},
        "confusion": confusion.tolist(),
    }


def expert_frames(env_id: str, env_kwargs: dict[str, Any], seeds: Sequence[int]) -> tuple[dict[str, np.ndarray],
                                                                                          np.ndarray]:
    """Observations and clean expert labels along the expert's own rollouts on ``seeds``."""
    from imitlab.demos.recorder import collect_episode

    env = make_env(env_id, **{k: v for k, v in env_kwargs.items() if k != "render_mode"})
    try:
        expert = make_expert(env)
        episodes = [collect_episode(env, expert.act, int(seed), on_reset=expert.reset) for seed in seeds]
    finally:
        env.close()
    obs = {key: np.concatenate([e.obs[key] for e in episodes]) for key in episodes[0].obs}
    return obs, np.concatenate([e.actions for e in episodes])


def dataset_frames(path: Path, exclude_seeds: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray, list[int]]:
    """Every frame and label of a held-out dataset; refuses one that shares seeds with the policy's demos."""
    from imitlab.demos.dataset import DemoDataset

    dataset = DemoDataset(path)
    episodes = list(dataset.episodes())
    if not episodes:
        raise ImitlabError(f"dataset {path} has no episodes")
    seeds = [int(e.attrs.get("seed", -1)) for e in episodes]
    overlap = sorted(set(seeds) & set(exclude_seeds))
    if overlap:
        raise ImitlabError(f"{path} shares seeds with the policy's demonstrations (e.g. {overlap[:5]}): "
                           "offline metrics need held-out frames")
    obs = {key: np.concatenate([e.obs[key] for e in episodes]) for key in episodes[0].obs}
    return obs, np.concatenate([e.actions for e in episodes]), seeds


def offline_metrics(spec: AgentSpec, seeds: Sequence[int] = (), dataset: Path | None = None,
                    frames: tuple[dict[str, np.ndarray], np.ndarray] | None = None) -> dict[str, Any] | None:
    """Decision metrics and action MSE of a policy or bundle on held-out frames: the expert's rollouts on
    ``seeds`` (``frames``: those rollouts' ``expert_frames``, when already computed), or ``dataset``. None for the
    expert itself (it would be scored against itself)."""
    if spec.kind == EXPERT:
        return None
    if dataset is not None:
        obs, labels, used_seeds = dataset_frames(dataset, spec.train_seeds)
        source = str(dataset)
    else:
        overlap = sorted(set(seeds) & set(spec.train_seeds))
        if not seeds or overlap:
            raise ImitlabError("offline metrics need held-out seeds" + (f" (these overlap the demonstrations: "
                                                                       f"{overlap[:5]})" if overlap else ""))
        obs, labels = frames if frames is not None else expert_frames(spec.env_id, spec.env_kwargs, seeds)
        used_seeds, source = [int(s) for s in seeds], "expert rollouts on held-out seeds"
    agent = spec.build()
    assert isinstance(agent, PolicyAgent)
    if isinstance(agent, ExecutingAgent) and agent.executor.execution.history > 1:
        return None  # a frame history needs whole episodes in order, which these pooled frames are not
    actions = np.concatenate([np.asarray(agent.predict({k: v[i:i + BATCH] for k, v in obs.items()}), np.float32)
                              for i in range(0, len(labels), BATCH)])
    decisions = {}
    for name, (index, thresholds, classes) in decisions_of(spec.env_id).items():
        decisions[name] = classification_metrics(discretise(labels[:, index], thresholds),
                                                 discretise(actions[:, index], thresholds), classes)
    return {"source": source, "seeds": used_seeds, "frames": int(len(labels)),
            "action_mse": float(np.mean((actions - labels) ** 2)), "decisions": decisions}


def offline_rows(reports: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Table rows of the offline decision metrics (row name -> one cell per report; "-" where not computed)."""
    names = [n for r in reports if r.get("offline") for n in r["offline"]["decisions"]]
    rows: dict[str, list[str]] = {}
    if any(r.get("offline") for r in reports):
        rows["offline action MSE (held-out frames)"] = [
            f"{r['offline']['action_mse']:.4f} ({r['offline']['frames']} frames)" if r.get("offline") else "-"
            for r in reports]
    for name in dict.fromkeys(names):
        rows[f"offline {name}: accuracy / macro recall / macro F1"] = [
            "-" if not r.get("offline") or name not in r["offline"]["decisions"] else
            "{accuracy:.2f} / {macro_recall:.2f} / {macro_f1:.2f}".format(**r["offline"]["decisions"][name])
            for r in reports]
    return rows
