"""Closed-loop evaluation of a saved policy (or the expert) on held-out seeds, in parallel worker processes.

Each worker runs whole episodes one at a time with one torch thread, so an episode's result depends only
on its seed, never on the number of workers or on which other episodes ran beside it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from imitlab.envs import make_env
from imitlab.errors import ImitlabError
from imitlab.evaluation.rollout import Agent, EpisodeResult, ExpertAgent, PolicyAgent, run_lockstep
from imitlab.evaluation.stats import wilson_interval

#: First seed of the held-out evaluation range (demos use 0.., training-time validation 500_000..).
HELD_OUT_SEED_START = 1_000_000
EXPERT = "expert"


@dataclass
class AgentSpec:
    """What to evaluate: the expert, or a saved policy folder; with the env it was trained for."""

    kind: str
    path: Path | None
    env_id: str
    env_kwargs: dict[str, Any]
    train_seeds: list[int] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def resolve_agent(agent: str, env_id: str | None = None, env_kwargs: dict[str, Any] | None = None) -> AgentSpec:
    """Turn ``expert`` or a run/policy folder into an :class:`AgentSpec` (validating the folder)."""
    if agent == EXPERT:
        if env_id is None:
            raise ImitlabError("evaluating the expert needs --env")
        return AgentSpec(EXPERT, None, env_id, dict(env_kwargs or {}))
    from imitlab.policies.io import read_policy_metadata

    path = policy_dir(Path(agent))
    meta = read_policy_metadata(path)
    md = meta.get("metadata", {})
    spec_env = md.get("env_id")
    if spec_env is None:
        raise ImitlabError(f"{path / 'policy.json'} does not say which env the policy was trained on")
    if env_id is not None and env_id != spec_env:
        raise ImitlabError(f"policy {path} was trained on {spec_env}, not {env_id}")
    kwargs = dict(md.get("env_kwargs", {}))
    kwargs.update(env_kwargs or {})
    return AgentSpec("policy", path, spec_env, kwargs, list(md.get("train_seeds", [])), md)


def policy_dir(path: Path) -> Path:
    """A policy folder, given it or a training run folder that holds ``best/`` (or ``policy/``)."""
    if not path.exists():
        raise ImitlabError(f"policy not found: {path}")
    for candidate in (path, path / "best", path / "policy"):
        if (candidate / "policy.json").is_file():
            return candidate
    raise ImitlabError(f"no policy.json in {path} (expected a policy folder or a training run folder)")


def build_agent(spec: AgentSpec) -> Agent:
    if spec.kind == EXPERT:
        return ExpertAgent()
    from imitlab.policies.io import load_policy

    policy, _ = load_policy(spec.path)
    return PolicyAgent(policy.predict)


_worker: dict[str, Any] = {}


def _init_worker(spec: AgentSpec) -> None:
    import torch

    torch.set_num_threads(1)
    _worker["agent"] = build_agent(spec)
    _worker["env"] = make_env(spec.env_id, render_mode="rgb_array", **spec.env_kwargs)


def _run_seed(seed: int, video_dir: Path | None, with_video: bool) -> EpisodeResult:
    return run_lockstep([_worker["env"]], _worker["agent"], [seed], video_dir=video_dir,
                        video_seeds=[seed] if with_video else [], record_actions=True)[0]


@dataclass
class EvalSummary:
    """Aggregate closed-loop results over a set of seeds."""

    agent: str
    env_id: str
    env_kwargs: dict[str, Any]
    episodes: list[EpisodeResult]

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    def to_json(self) -> dict[str, Any]:
        n = len(self.episodes)
        low, high = wilson_interval(self.successes, n)
        metric_names = sorted({k for e in self.episodes for k in e.metrics})
        return {
            "agent": self.agent,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "episodes": n,
            "successes": self.successes,
            "success_rate": self.successes / n,
            "success_ci95": [low, high],
            "mean_return": float(np.mean([e.episode_return for e in self.episodes])),
            "mean_length": float(np.mean([e.length for e in self.episodes])),
            "metrics": {m: float(np.mean([e.metrics[m] for e in self.episodes if m in e.metrics])) for m in metric_names},
            "terminated_episodes": sum(e.terminated and not e.success for e in self.episodes),
            "inference_ms_per_step": float(np.mean([e.inference_ms for e in self.episodes])),
            "per_episode": [e.to_json() for e in self.episodes],
        }


def evaluate(agent: str, seeds: Sequence[int], env_id: str | None = None, env_kwargs: dict[str, Any] | None = None,
             workers: int | None = None, video_dir: Path | None = None, videos: int = 0,
             progress: bool = True, allow_train_seeds: bool = False) -> EvalSummary:
    """Evaluate ``agent`` (``expert`` or a policy/run folder) on ``seeds``; mp4s of the first ``videos`` seeds."""
    spec = resolve_agent(agent, env_id, env_kwargs)
    overlap = sorted(set(seeds) & set(spec.train_seeds))
    if overlap and not allow_train_seeds:
        raise ImitlabError(f"evaluation seeds overlap the policy's demonstration seeds (e.g. {overlap[:5]}); "
                           f"use held-out seeds (from {HELD_OUT_SEED_START})")
    workers = max(1, min(workers or os.cpu_count() or 1, len(seeds)))
    video_seeds = set(list(seeds)[:videos])
    results: list[EpisodeResult] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(spec,)) as pool:
        futures = [pool.submit(_run_seed, int(s), video_dir, s in video_seeds) for s in seeds]
        bar = tqdm(as_completed(futures), total=len(futures), desc=f"eval {agent}", unit="ep", disable=not progress)
        for future in bar:
            results.append(future.result())
            bar.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")
    results.sort(key=lambda r: list(seeds).index(r.seed))
    return EvalSummary(agent=str(agent), env_id=spec.env_id, env_kwargs=spec.env_kwargs, episodes=results)


def write_report(summary: EvalSummary, out_dir: Path) -> dict[str, Path]:
    """``report.json`` (everything) and ``report.md`` (summary and per-episode table) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = summary.to_json()
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(data, indent=2))
    md_path = out_dir / "report.md"
    md_path.write_text(markdown_report([data]))
    return {"json": json_path, "markdown": md_path}


def markdown_report(reports: list[dict[str, Any]], title: str = "Closed-loop evaluation") -> str:
    """A Markdown summary table with one column per evaluated agent, then per-episode tables."""
    metric_names = sorted({m for r in reports for m in r["metrics"]})
    head = "| | " + " | ".join(f"`{r['agent']}`" for r in reports) + " |"
    lines = [f"# {title}", "", f"Env: `{reports[0]['env_id']}`, seeds {reports[0]['per_episode'][0]['seed']}.."
             f"{reports[0]['per_episode'][-1]['seed']} ({reports[0]['episodes']} episodes, held out from training).",
             "", head, "|---" * (len(reports) + 1) + "|"]
    rows = [
        ("success rate", lambda r: f"{100 * r['success_rate']:.0f} % ({r['successes']}/{r['episodes']})"),
        ("95 % Wilson CI", lambda r: f"{100 * r['success_ci95'][0]:.0f}-{100 * r['success_ci95'][1]:.0f} %"),
        ("mean return", lambda r: f"{r['mean_return']:.1f}"),
        ("mean length", lambda r: f"{r['mean_length']:.0f}"),
        ("ended early (failure)", lambda r: str(r["terminated_episodes"])),
        ("inference ms/step", lambda r: f"{r['inference_ms_per_step']:.2f}"),
    ] + [(m, lambda r, m=m: f"{r['metrics'].get(m, float('nan')):.3f}") for m in metric_names]
    for name, fmt in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(r) for r in reports) + " |")
    for r in reports:
        lines += ["", f"## `{r['agent']}` per episode", "", "| seed | success | return | length | "
                  + " | ".join(metric_names) + " | video |", "|---" * (5 + len(metric_names)) + "|"]
        for e in r["per_episode"]:
            video = f"[mp4]({Path(e['video']).name})" if e.get("video") else ""
            lines.append(f"| {e['seed']} | {'yes' if e['success'] else 'no'} | {e['episode_return']:.1f} | {e['length']} | "
                         + " | ".join(f"{e['metrics'].get(m, float('nan')):.3f}" for m in metric_names) + f" | {video} |")
    return "\n".join(lines) + "\n"
