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

from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.envs import action_labels, make_env
from imitlab.envs.perturb import parse_perturb
from imitlab.evaluation.agent_spec import POLICY, AgentSpec
from imitlab.evaluation.provenance import policy_provenance
from imitlab.evaluation.rollout import EpisodeResult, run_lockstep
from imitlab.evaluation.stats import wilson_interval

_worker: dict[str, Any] = {}


def _init_worker(spec: AgentSpec) -> None:
    """One worker = one core: Mesa's llvmpipe rasteriser (EGL rendering on CPU) otherwise starts a thread per
    core in every worker, and N workers then fight over the cores (measured: 2 workers ran slower than 1).
    Pixels do not depend on its thread count."""
    os.environ.setdefault("LP_NUM_THREADS", "1")
    if spec.kind == POLICY:
        import torch

        torch.set_num_threads(1)
    _worker["agent"] = spec.build()
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
    policy: dict[str, Any] = field(default_factory=dict)
    """Provenance: kind, path, training config and dataset summary (see ``evaluation/provenance.py``)."""
    action_labels: list[str] = field(default_factory=list)
    offline: dict[str, Any] | None = None
    """Offline decision metrics on held-out frames (see ``evaluation/offline.py``), when computed."""

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    def to_json(self) -> dict[str, Any]:
        n = len(self.episodes)
        low, high = wilson_interval(self.successes, n)
        metric_names = sorted({k for e in self.episodes for k in e.metrics})
        returns = [e.episode_return for e in self.episodes]
        times = [e.time_to_success for e in self.episodes if e.time_to_success is not None]
        return {
            "agent": self.agent,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "episodes": n,
            "successes": self.successes,
            "success_rate": self.successes / n,
            "success_ci95": [low, high],
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "mean_length": float(np.mean([e.length for e in self.episodes])),
            "mean_time_to_success": float(np.mean(times)) if times else None,
            "metrics": {m: float(np.mean([e.metrics[m] for e in self.episodes if m in e.metrics])) for m in metric_names},
            "terminated_episodes": sum(e.terminated and not e.success for e in self.episodes),
            "inference_ms_per_step": float(np.mean([e.inference_ms for e in self.episodes])),
            "action_labels": self.action_labels,
            "policy": self.policy,
            "offline": self.offline,
            "per_episode": [e.to_json() for e in self.episodes],
        }


def evaluate(spec: AgentSpec, seeds: Sequence[int], workers: int | None = None, video_dir: Path | None = None,
             videos: int = 0, progress: bool = True, allow_train_seeds: bool = False) -> EvalSummary:
    """Evaluate the agent ``spec`` describes (see ``imitlab.agents.resolve_agent``) on ``seeds``.

    ``videos`` mp4s go to ``video_dir``: of the best and worst episodes, alternately (so a success and a failure
    are both filmed when both occurred). They are chosen after the sweep and re-run with the camera on, which
    reproduces the episode exactly because a result depends only on its seed.
    """
    parse_perturb(spec.env_kwargs.get("perturb"))  # a bad one fails here, in one line, not in every worker
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ImitlabError("evaluation needs at least one seed, and distinct seeds")
    overlap = sorted(set(seeds) & set(spec.train_seeds))
    if overlap and not allow_train_seeds:
        raise ImitlabError(f"evaluation seeds overlap the policy's demonstration seeds (e.g. {overlap[:5]}); "
                           f"use held-out seeds (from {HELD_OUT_SEED_START})")
    workers = max(1, min(workers or os.cpu_count() or 1, len(seeds)))
    results: dict[int, EpisodeResult] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(spec,)) as pool:
        futures = [pool.submit(_run_seed, s, None, False) for s in seeds]
        bar = tqdm(as_completed(futures), total=len(futures), desc=f"eval {spec.label}", unit="ep", disable=not progress)
        for future in bar:
            result = future.result()
            results[result.seed] = result
            bar.set_postfix(success=f"{sum(r.success for r in results.values())}/{len(results)}")
        if video_dir is not None and videos > 0:
            replays = [pool.submit(_run_seed, s, video_dir, True) for s in pick_video_seeds(list(results.values()), videos)]
            for future in tqdm(replays, desc=f"videos {spec.label}", unit="ep", disable=not progress):
                _attach_video(results, future.result())
    episodes = [results[s] for s in seeds]
    action_dim = len(episodes[0].actions[0]) if episodes[0].actions else 0
    return EvalSummary(agent=spec.label, env_id=spec.env_id, env_kwargs=spec.env_kwargs, episodes=episodes,
                       policy=policy_provenance(spec.kind, spec.path, spec.metadata),
                       action_labels=action_labels(spec.env_id, action_dim))


def pick_video_seeds(results: Sequence[EpisodeResult], count: int) -> list[int]:
    """Seeds of the best and worst episodes, alternately, ``count`` in all (best = success, then higher return)."""
    ranked = sorted(results, key=lambda r: (not r.success, -r.episode_return, r.seed))
    picks: list[int] = []
    for best, worst in zip(ranked, reversed(ranked)):
        for seed in (best.seed, worst.seed):
            if len(picks) < count and seed not in picks:
                picks.append(seed)
    return picks


def _attach_video(results: dict[int, EpisodeResult], replay: EpisodeResult) -> None:
    """Give the sweep's episode the replay's video, after checking the replay reproduced it."""
    original = results[replay.seed]
    if (replay.success, replay.episode_return, replay.length) != (original.success, original.episode_return, original.length):
        raise ImitlabError(f"seed {replay.seed} did not reproduce when re-run for its video (success "
                           f"{original.success}->{replay.success}, return {original.episode_return}->"
                           f"{replay.episode_return}); the agent or env is not deterministic per seed")
    original.video = replay.video


def write_report(summary: EvalSummary, out_dir: Path) -> dict[str, Path]:
    """``report.json`` (everything), ``report.md`` (summary and per-episode table) and ``report.html`` (one
    self-contained page: plots, embedded videos, training config) in ``out_dir``.

    Video paths in report.json are relative to ``out_dir``, so the folder can be moved or shipped as a whole.
    """
    from imitlab.evaluation.html_report import write_html_report

    out_dir.mkdir(parents=True, exist_ok=True)
    data = summary.to_json()
    md_path = out_dir / "report.md"
    md_path.write_text(markdown_report([data], base=out_dir))
    html_path = write_html_report(data, out_dir / "report.html")
    for episode in data["per_episode"]:
        if episode.get("video"):
            episode["video"] = os.path.relpath(episode["video"], out_dir)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(data, indent=2))
    return {"json": json_path, "markdown": md_path, "html": html_path}


def markdown_report(reports: list[dict[str, Any]], base: Path, title: str = "Closed-loop evaluation") -> str:
    """A Markdown summary table with one column per evaluated agent, then per-episode tables.

    Video links are relative to ``base``, the folder the report is written to.
    """
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
        ("steps to success", lambda r: "-" if r.get("mean_time_to_success") is None else f"{r['mean_time_to_success']:.0f}"),
        ("inference ms/step", lambda r: f"{r['inference_ms_per_step']:.2f}"),
    ] + [(m, lambda r, m=m: f"{r['metrics'].get(m, float('nan')):.3f}") for m in metric_names]
    for name, fmt in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(r) for r in reports) + " |")
    from imitlab.evaluation.offline import offline_rows  # it imports this module

    for name, cells in offline_rows(reports).items():
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for r in reports:
        lines += ["", f"## `{r['agent']}` per episode", "", "| seed | success | return | length | "
                  + " | ".join(metric_names) + " | video |", "|---" * (5 + len(metric_names)) + "|"]
        for e in r["per_episode"]:
            video = f"[mp4]({os.path.relpath(e['video'], base)})" if e.get("video") else ""
            lines.append(f"| {e['seed']} | {'yes' if e['success'] else 'no'} | {e['episode_return']:.1f} | {e['length']} | "
                         + " | ".join(f"{e['metrics'].get(m, float('nan')):.3f}" for m in metric_names) + f" | {video} |")
    return "\n".join(lines) + "\n"
