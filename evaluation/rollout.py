"""Closed-loop rollouts: run an agent in several envs in lockstep and collect per-episode results.

Lockstep lets a neural policy act on a batch of observations (fast during training-time validation);
the final evaluator runs one env per worker process so that results do not depend on batching.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import gymnasium as gym
import numpy as np

from imitlab.core.action_execution import BatchExecutor, Execution
from imitlab.core.observation_keys import image_keys_of_frames
from imitlab.envs import CategoryNames, action_labels, make_expert, state_labels
from imitlab.envs.stability import UNSTABLE_KEY, UNSTABLE_REASON_KEY
from imitlab.evaluation.progress import RolloutBar
from imitlab.evaluation.video import annotate_frame, outcome_card, write_mp4


class Agent(Protocol):
    """Acts for a set of env slots; ``act`` gets the stacked observations of the slots still running."""

    def bind(self, envs: Sequence[gym.Env]) -> None: ...

    def reset(self, slot: int, seed: int) -> None:
        """A new episode from ``seed`` starts in ``slot``."""

    def act(self, slots: list[int], obs: dict[str, np.ndarray]) -> np.ndarray: ...


class PolicyAgent:
    """Wraps a batched ``predict(obs_batch) -> actions`` (a torch policy or an ONNX session)."""

    def __init__(self, predict: Callable[[dict[str, np.ndarray]], np.ndarray]):
        self.predict = predict

    def bind(self, envs: Sequence[gym.Env]) -> None:
        pass

    def reset(self, slot: int, seed: int) -> None:
        pass

    def act(self, slots: list[int], obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.predict(obs), dtype=np.float32).reshape(len(slots), -1)


class ExecutingAgent(PolicyAgent):
    """A policy whose action depends on its episode so far (a chunk head's earlier chunks, a gmm head's sampling
    generator, earlier frames): its outputs go through an executor per slot, reset with the slot's episode seed.
    ``predict`` stays the stateless one (offline metrics use it)."""

    def __init__(self, predict: Callable[[dict[str, np.ndarray]], np.ndarray],
                 predict_outputs: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                 execution: Execution) -> None:
        super().__init__(predict)
        self.predict_outputs = predict_outputs
        self.executor = BatchExecutor(execution)

    def reset(self, slot: int, seed: int) -> None:
        self.executor.reset(slot, seed)

    def act(self, slots: list[int], obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.executor.act(slots, obs, self.predict_outputs)


def policy_agent(policy: Any, execution: Execution) -> PolicyAgent:
    """The agent of a torch or ONNX policy (anything with ``predict`` and ``predict_outputs``) executed as told."""
    if execution.stateful:
        return ExecutingAgent(policy.predict, policy.predict_outputs, execution)
    return PolicyAgent(policy.predict)


class ExpertAgent:
    """The task's privileged expert, one instance per env."""

    def bind(self, envs: Sequence[gym.Env]) -> None:
        self.experts = [make_expert(env) for env in envs]

    def reset(self, slot: int, seed: int) -> None:
        self.experts[slot].reset()

    def act(self, slots: list[int], obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([self.experts[s].act({k: v[i] for k, v in obs.items()}) for i, s in enumerate(slots)])


#: Why an episode has no valid outcome (see ``EpisodeResult.error_kind``).
ERROR_KINDS = ("exception", "crash", "timeout", "sim_unstable")


@dataclass
class EpisodeResult:
    """One closed-loop episode: a success, a failure, or an error (it could not be scored, see ``error_kind``)."""

    seed: int
    success: bool
    episode_return: float
    length: int
    terminated: bool
    metrics: dict[str, float]
    inference_ms: float
    """Mean time the agent took to choose one action (for a batch, divided by the batch size)."""
    actions: list[list[float]] = field(default_factory=list)
    video: str | None = None
    time_to_success: int | None = None
    """Steps until ``info["is_success"]`` first held (None if it never did); manipulation ends there."""
    error_kind: str | None = None
    """None for a scored episode; else one of ``ERROR_KINDS``: the agent or env raised, the worker process died,
    the episode ran past its timeout, or the simulation became unstable. Errors are never counted as failures."""
    error: str | None = None
    """What went wrong, in one line (the exception, the signal, the timeout, MuJoCo's warning)."""
    categories: dict[str, list[str]] = field(default_factory=dict)
    """Per category observation (e.g. Town-v0's route ``command``), the values the agent was given, in order,
    repeats merged, by name: ``{"command": ["follow", "left", "follow"]}``."""

    @property
    def outcome(self) -> str:
        """``success``, ``failure`` or ``error``."""
        return "error" if self.error_kind else "success" if self.success else "failure"

    @classmethod
    def errored(cls, seed: int, kind: str, reason: str) -> EpisodeResult:
        """An episode that produced nothing to score (its worker raised, died or hung)."""
        assert kind in ERROR_KINDS, kind
        return cls(seed=int(seed), success=False, episode_return=0.0, length=0, terminated=False, metrics={},
                   inference_ms=0.0, error_kind=kind, error=reason)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"outcome": self.outcome}


def category_columns(episodes: Sequence[dict[str, Any]]) -> list[str]:
    """The category keys of some episodes' JSON (the extra columns of a report's per-episode table)."""
    return sorted({key for e in episodes for key in e.get("categories", {})})


def category_cell(episode: dict[str, Any], key: str) -> str:
    """One episode's values of category ``key`` as a report cell, e.g. ``follow > left > follow``."""
    return " > ".join(episode.get("categories", {}).get(key, [])) or "-"


def aggregate_metrics(env: gym.Env, infos: list[dict[str, Any]]) -> dict[str, float]:
    """Reduce the per-step info metrics of one episode as the env's ``METRICS`` says."""
    spec: dict[str, str] = getattr(env.unwrapped, "METRICS", {})
    out = {}
    for name, how in spec.items():
        values = np.array([float(info[name]) for info in infos if name in info])
        if values.size == 0:
            continue
        out[name] = float(values[-1]) if how == "last" else float(np.mean(np.abs(values)))
    return out


def run_lockstep(envs: Sequence[gym.Env], agent: Agent, seeds: Sequence[int], video_dir: Path | None = None,
                 video_seeds: Sequence[int] = (), record_actions: bool = False,
                 progress: RolloutBar | None = None) -> list[EpisodeResult]:
    """Run one episode per env (``envs[i]`` from ``seeds[i]``) until all end. Videos need render_mode rgb_array;
    ``progress`` is told of every step and finished episode."""
    assert len(envs) == len(seeds)
    agent.bind(envs)
    obs = []
    namers = [CategoryNames(env.spec.id if env.spec else "", env.observation_space) for env in envs]
    categories: list[dict[str, list[str]]] = [{} for _ in envs]
    for slot, (env, seed) in enumerate(zip(envs, seeds)):
        obs.append(env.reset(seed=int(seed))[0])
        agent.reset(slot, int(seed))
    running = list(range(len(envs)))
    returns = np.zeros(len(envs))
    infos: list[list[dict[str, Any]]] = [[] for _ in envs]
    actions: list[list[np.ndarray]] = [[] for _ in envs]
    frames: dict[int, list[np.ndarray]] = {s: [] for s, seed in enumerate(seeds) if seed in set(video_seeds)}
    terminated_flags = [False] * len(envs)
    think_time = 0.0
    think_count = 0
    while running:
        batch = {k: np.stack([obs[s][k] for s in running]) for k in obs[running[0]]}
        start = time.perf_counter()
        acts = agent.act(running, batch)
        think_time += time.perf_counter() - start
        think_count += len(running)
        for i, slot in enumerate(list(running)):
            env = envs[slot]
            action = acts[i]
            namers[slot].visit(categories[slot], obs[slot])
            if slot in frames:
                frames[slot].append(_video_frame(env, obs[slot], action, seeds[slot], len(actions[slot]),
                                                 namers[slot].lines(obs[slot])))
            obs[slot], reward, terminated, truncated, info = env.step(action)
            returns[slot] += reward
            infos[slot].append(info)
            actions[slot].append(action)
            if terminated or truncated:
                terminated_flags[slot] = bool(terminated)
                running.remove(slot)
                if progress is not None:
                    progress.episode_done(bool(info.get("is_success", False)))
        if progress is not None:
            progress.step(len(acts))
    results = []
    for slot, (env, seed) in enumerate(zip(envs, seeds)):
        last = infos[slot][-1]
        unstable = bool(last.get(UNSTABLE_KEY, False))
        video = None
        if slot in frames and video_dir is not None:
            success = bool(last.get("is_success", False))
            name = f"seed_{seed}_{'unstable' if unstable else 'success' if success else 'failure'}.mp4"
            fps = env.metadata.get("render_fps", 10)
            card = outcome_card(frames[slot][-1], success, float(returns[slot]), len(infos[slot]))
            video = str(write_mp4(video_dir / name, frames[slot] + [card] * int(fps), fps))  # the card shows 1 s
        results.append(EpisodeResult(
            seed=int(seed),
            success=bool(infos[slot][-1].get("is_success", False)),
            episode_return=float(returns[slot]),
            length=len(infos[slot]),
            terminated=terminated_flags[slot],
            metrics=aggregate_metrics(env, infos[slot]),
            inference_ms=1000.0 * think_time / max(1, think_count),
            actions=[a.tolist() for a in actions[slot]] if record_actions else [],
            video=video,
            time_to_success=next((i + 1 for i, info in enumerate(infos[slot]) if info.get("is_success")), None),
            error_kind="sim_unstable" if unstable else None,
            error=str(last.get(UNSTABLE_REASON_KEY, "unstable simulation")) if unstable else None,
            categories=categories[slot],
        ))
    return results


def _video_frame(env: gym.Env, obs: dict[str, np.ndarray], action: np.ndarray, seed: int, step: int,
                 categories: list[str]) -> np.ndarray:
    views = [obs[k] for k in image_keys_of_frames(obs)]
    labels = action_labels(env.spec.id, len(action)) if env.spec else [f"a{i}" for i in range(len(action))]
    state = obs.get("state")
    names = state_labels(env.spec.id, len(state)) if env.spec and state is not None else []
    return annotate_frame(env.render(), views, action, labels, f"seed {seed}  step {step}", state=state,
                          state_labels=names, categories=categories)
