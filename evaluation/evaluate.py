"""Closed-loop evaluation of a saved policy (or the expert) on held-out seeds, in parallel worker processes.

Each worker runs whole episodes one at a time with one torch thread, so an episode's result depends only
on its seed, never on the number of workers or on which other episodes ran beside it. Workers are supervised
(``workers.py``): an episode whose worker raises, dies or hangs, or whose simulation goes unstable, is an
*error* with its reason, counted apart from successes and failures, and the rest of the evaluation goes on.
Ctrl-C or SIGTERM stops it with the finished episodes kept (``EvaluationInterrupted``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import check_out_dir, publish_dir, staging_dir
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.envs import action_labels, env_class, make_env, time_limit_s
from imitlab.envs.kwargs import check_env_kwargs
from imitlab.envs.perturb import check_perturbable
from imitlab.evaluation.agent_spec import POLICY, AgentSpec
from imitlab.evaluation.provenance import policy_provenance
from imitlab.evaluation.rollout import Agent, EpisodeResult, category_cell, category_columns, run_lockstep
from imitlab.evaluation.stats import wilson_interval
from imitlab.evaluation.workers import open_pool


def worker_agent(spec: AgentSpec) -> Agent:
    """Build ``spec``'s agent in a worker process, which gets one core (call it before making the env).

    One worker = one core: Mesa's llvmpipe rasteriser (EGL rendering on CPU) otherwise starts a thread per
    core in every worker, and N workers then fight over the cores (measured: 2 workers ran slower than 1).
    Pixels do not depend on its thread count.
    """
    os.environ.setdefault("LP_NUM_THREADS", "1")
    if spec.kind == POLICY:
        import torch

        torch.set_num_threads(1)
    return spec.build()


class _SpecRunner:
    """A worker's agent and env, built from an ``AgentSpec`` in the worker process and reused for each episode."""

    def __init__(self, spec: AgentSpec, video_dir: Path | None):
        self.agent = worker_agent(spec)
        self.env = make_env(spec.env_id, render_mode="rgb_array", **spec.env_kwargs)
        self.video_dir = video_dir
        self.time_limit_s = time_limit_s(self.env)

    def run(self, seed: int, with_video: bool) -> EpisodeResult:
        return run_lockstep([self.env], self.agent, [seed], video_dir=self.video_dir,
                            video_seeds=[seed] if with_video else [], record_actions=True)[0]


@dataclass
class EvalSummary:
    """Aggregate closed-loop results over a set of seeds.

    Errors (episodes that could not be scored: see ``EpisodeResult.error_kind``) are counted apart: the success
    rate, its interval and the means are over the scored episodes. A gate that must not pass on errors uses
    ``successes`` out of ``len(episodes)`` instead (an error then weighs as a failure).
    """

    agent: str
    env_id: str
    env_kwargs: dict[str, Any]
    episodes: list[EpisodeResult]
    policy: dict[str, Any] = field(default_factory=dict)
    """Provenance: kind, path, training config and dataset summary (see ``evaluation/provenance.py``)."""
    action_labels: list[str] = field(default_factory=list)
    offline: dict[str, Any] | None = None
    """Offline decision metrics on held-out frames (see ``evaluation/offline.py``), when computed."""
    seeds_not_run: list[int] = field(default_factory=list)
    """Seeds the evaluation did not get to because it was interrupted (Ctrl-C, SIGTERM)."""

    @property
    def successes(self) -> int:
        return sum(e.outcome == "success" for e in self.episodes)

    @property
    def failures(self) -> int:
        return sum(e.outcome == "failure" for e in self.episodes)

    @property
    def errors(self) -> list[EpisodeResult]:
        return [e for e in self.episodes if e.outcome == "error"]

    @property
    def scored(self) -> list[EpisodeResult]:
        return [e for e in self.episodes if e.outcome != "error"]

    @property
    def interrupted(self) -> bool:
        return bool(self.seeds_not_run)

    def error_lines(self) -> list[str]:
        """One line per error episode: seed, kind and reason."""
        return [f"seed {e.seed}: {e.error_kind}: {e.error}" for e in self.errors]

    def to_json(self) -> dict[str, Any]:
        scored = self.scored
        n = len(scored)
        low, high = wilson_interval(self.successes, n) if n else (0.0, 1.0)
        metric_names = sorted({k for e in scored for k in e.metrics})
        returns = [e.episode_return for e in scored]
        times = [e.time_to_success for e in scored if e.time_to_success is not None]
        errors = self.errors
        return {
            "agent": self.agent,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "episodes": len(self.episodes),
            "scored_episodes": n,
            "successes": self.successes,
            "failures": self.failures,
            "errors": len(errors),
            "errors_by_kind": dict(Counter(e.error_kind for e in errors)),
            "error_episodes": [{"seed": e.seed, "kind": e.error_kind, "reason": e.error} for e in errors],
            "interrupted": self.interrupted,
            "seeds_not_run": self.seeds_not_run,
            "success_rate": self.successes / n if n else None,
            "success_ci95": [low, high],
            "mean_return": float(np.mean(returns)) if n else None,
            "std_return": float(np.std(returns)) if n else None,
            "mean_length": float(np.mean([e.length for e in scored])) if n else None,
            "mean_time_to_success": float(np.mean(times)) if times else None,
            "metrics": {m: float(np.mean([e.metrics[m] for e in scored if m in e.metrics])) for m in metric_names},
            "terminated_episodes": sum(e.terminated and e.outcome == "failure" for e in self.episodes),
            "inference_ms_per_step": float(np.mean([e.inference_ms for e in scored])) if n else None,
            "action_labels": self.action_labels,
            "policy": self.policy,
            "offline": self.offline,
            "per_episode": [e.to_json() for e in self.episodes],
        }


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped an evaluation; ``summary`` holds the episodes that finished."""

    def __init__(self, summary: EvalSummary):
        super().__init__(f"evaluation interrupted after {len(summary.episodes)} episodes")
        self.summary = summary


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM (a scheduler's stop, ``kill``) stop an evaluation like Ctrl-C, so finished episodes are kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def evaluate(spec: AgentSpec, seeds: Sequence[int], workers: int | None = None, video_dir: Path | None = None,
             videos: int = 0, progress: bool = True, allow_train_seeds: bool = False,
             episode_timeout: float | None = None, backend: str = "local", address: str | None = None) -> EvalSummary:
    """Evaluate the agent ``spec`` describes (see ``imitlab.agents.resolve_agent``) on ``seeds``.

    ``videos`` mp4s go to ``video_dir``: of the best and worst scored episodes, alternately (so a success and a
    failure are both filmed when both occurred). They are chosen after the sweep and re-run with the camera on,
    which reproduces the episode exactly because a result depends only on its seed. ``episode_timeout``: wall
    seconds per episode (None: a generous multiple of the env's time limit, see ``EpisodePool``). ``backend``:
    ``local`` worker processes or ``ray`` actors (``address``: see ``open_pool``); per-seed results are the same.
    Raises ``EvaluationInterrupted`` (a KeyboardInterrupt) with the finished episodes on Ctrl-C or SIGTERM.
    """
    # Bad env kwargs fail here, in one line, not in every worker.
    check_env_kwargs(spec.env_id, env_class(spec.env_id), spec.env_kwargs)
    check_perturbable(spec.env_id, spec.env_kwargs.get("perturb"))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ImitlabError("evaluation needs at least one seed, and distinct seeds")
    overlap = sorted(set(seeds) & set(spec.train_seeds))
    if overlap and not allow_train_seeds:
        raise ImitlabError(f"evaluation seeds overlap the policy's demonstration seeds (e.g. {overlap[:5]}); "
                           f"use held-out seeds (from {HELD_OUT_SEED_START})")
    if episode_timeout is not None and episode_timeout <= 0:
        raise ImitlabError(f"the episode timeout must be positive, got {episode_timeout}")
    if workers or backend == "local":  # Ray: one actor per CPU of the cluster unless told
        workers = max(1, min(workers or os.cpu_count() or 1, len(seeds)))
    results: dict[int, EpisodeResult] = {}

    def summary() -> EvalSummary:
        episodes = [results[s] for s in seeds if s in results]
        action_dim = next((len(e.actions[0]) for e in episodes if e.actions), 0)
        return EvalSummary(agent=spec.label, env_id=spec.env_id, env_kwargs=spec.env_kwargs, episodes=episodes,
                           policy=policy_provenance(spec.kind, spec.path, spec.metadata),
                           action_labels=action_labels(spec.env_id, action_dim),
                           seeds_not_run=[s for s in seeds if s not in results])

    bar = tqdm(total=len(seeds), desc=f"eval {spec.label}", unit="ep", disable=not progress)
    try:
        with _sigterm_as_interrupt(), open_pool(backend, functools.partial(_SpecRunner, spec, video_dir), workers,
                                                address, episode_timeout_s=episode_timeout) as pool:
            for result in pool.run((s, False) for s in seeds):
                results[result.seed] = result
                bar.update()
                counts = Counter(r.outcome for r in results.values())
                bar.set_postfix(success=f"{counts['success']}/{len(results)}", errors=counts["error"])
            if video_dir is not None and videos > 0:
                picks = pick_video_seeds(list(results.values()), videos)
                for replay in tqdm(pool.run((s, True) for s in picks), total=len(picks), desc=f"videos {spec.label}",
                                   unit="ep", disable=not progress):
                    _attach_video(results, replay)
    except KeyboardInterrupt as interrupt:
        raise EvaluationInterrupted(summary()) from interrupt
    finally:
        bar.close()
    return summary()


def pick_video_seeds(results: Sequence[EpisodeResult], count: int) -> list[int]:
    """Seeds of the best and worst scored episodes, alternately, ``count`` in all (best = success, then higher
    return). Errors are not filmed: a crash or a hang would only repeat."""
    ranked = sorted((r for r in results if r.outcome != "error"), key=lambda r: (not r.success, -r.episode_return,
                                                                                 r.seed))
    picks: list[int] = []
    for best, worst in zip(ranked, reversed(ranked)):
        for seed in (best.seed, worst.seed):
            if len(picks) < count and seed not in picks:
                picks.append(seed)
    return picks


def _attach_video(results: dict[int, EpisodeResult], replay: EpisodeResult) -> None:
    """Give the sweep's episode the replay's video, after checking the replay reproduced it."""
    original = results[replay.seed]
    if replay.outcome == "error":  # the episode ran once; only its film failed
        return
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


def evaluate_to_folder(spec: AgentSpec, seeds: Sequence[int], out: Path, overwrite: bool = False,
                       videos: int = 0, offline: dict[str, Any] | None = None,
                       **kwargs: Any) -> tuple[EvalSummary, dict[str, Path]]:
    """``evaluate`` and ``write_report`` into ``out`` as one folder that appears complete or not at all
    (``offline``: decision metrics computed beforehand, reported with it).

    ``out`` is refused before anything runs when it is a file, or holds something and ``overwrite`` is off.
    Videos and report are staged beside it and renamed into place. On Ctrl-C or SIGTERM the finished episodes
    are published as a partial report (marked interrupted) before ``EvaluationInterrupted`` propagates.
    """
    check_out_dir(out, overwrite)
    staging = staging_dir(out)
    try:
        try:
            summary = evaluate(spec, seeds, video_dir=staging / "videos", videos=videos, **kwargs)
        except EvaluationInterrupted as interrupted:
            if interrupted.summary.episodes:
                interrupted.summary.offline = offline
                write_report(interrupted.summary, staging)
                publish_dir(staging, out)
            raise
        summary.offline = offline
        paths = write_report(summary, staging)
        publish_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary, {name: out / path.name for name, path in paths.items()}


def summary_line(data: dict[str, Any]) -> str:
    """One line for the terminal: success over the scored episodes with its interval, then errors and gaps."""
    n = data["scored_episodes"]
    line = f"success {data['successes']}/{n}"
    if n:
        low, high = data["success_ci95"]
        line += f" = {100 * data['success_rate']:.0f} % (95 % CI {100 * low:.0f}-{100 * high:.0f} %)"
    if data["errors"]:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(data["errors_by_kind"].items()))
        line += f"; {data['errors']} errors, not scored ({kinds})"
    if data["interrupted"]:
        line += f"; interrupted, {len(data['seeds_not_run'])} seeds not run"
    return line


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(scale * value, spec)


def markdown_report(reports: list[dict[str, Any]], base: Path, title: str = "Closed-loop evaluation") -> str:
    """A Markdown summary table with one column per evaluated agent, then per-episode tables.

    Video links are relative to ``base``, the folder the report is written to. Errors are counted in their own
    row and listed with their reasons; the success rate is over the scored episodes.
    """
    metric_names = sorted({m for r in reports for m in r["metrics"]})
    category_names = category_columns([e for r in reports for e in r["per_episode"]])
    head = "| | " + " | ".join(f"`{r['agent']}`" for r in reports) + " |"
    lines = [f"# {title}", "", f"Env: `{reports[0]['env_id']}`, seeds {reports[0]['per_episode'][0]['seed']}.."
             f"{reports[0]['per_episode'][-1]['seed']} ({reports[0]['episodes']} episodes, held out from training).",
             "", head, "|---" * (len(reports) + 1) + "|"]
    rows = [
        ("success rate", lambda r: f"{_fmt(r['success_rate'], '.0f', 100)} % ({r['successes']}/{r['scored_episodes']})"),
        ("95 % Wilson CI", lambda r: f"{100 * r['success_ci95'][0]:.0f}-{100 * r['success_ci95'][1]:.0f} %"),
        ("errors (not scored)", lambda r: str(r["errors"])),
        ("mean return", lambda r: _fmt(r["mean_return"], ".1f")),
        ("mean length", lambda r: _fmt(r["mean_length"], ".0f")),
        ("ended early (failure)", lambda r: str(r["terminated_episodes"])),
        ("steps to success", lambda r: _fmt(r.get("mean_time_to_success"), ".0f")),
        ("inference ms/step", lambda r: _fmt(r["inference_ms_per_step"], ".2f")),
    ] + [(m, lambda r, m=m: f"{r['metrics'].get(m, float('nan')):.3f}") for m in metric_names]
    for name, fmt in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(r) for r in reports) + " |")
    from imitlab.evaluation.offline import offline_rows  # it imports this module

    for name, cells in offline_rows(reports).items():
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for r in reports:
        if r.get("interrupted"):
            lines += ["", f"**Interrupted**: `{r['agent']}` ran {r['episodes']} episodes; "
                      f"{len(r['seeds_not_run'])} seeds were not run."]
        columns = [*category_names, *metric_names]
        lines += ["", f"## `{r['agent']}` per episode", "", "| seed | outcome | return | length | "
                  + "".join(f"{c} | " for c in columns) + "video |", "|---" * (5 + len(columns)) + "|"]
        for e in r["per_episode"]:
            video = f"[mp4]({os.path.relpath(e['video'], base)})" if e.get("video") else ""
            outcome = {"success": "yes", "failure": "no"}.get(e["outcome"], f"error: {e['error_kind']}")
            cells = [category_cell(e, c) for c in category_names]
            cells += [f"{e['metrics'].get(m, float('nan')):.3f}" for m in metric_names]
            lines.append(f"| {e['seed']} | {outcome} | {e['episode_return']:.1f} | {e['length']} | "
                         + "".join(f"{c} | " for c in cells) + f"{video} |")
        if r["errors"]:
            lines += ["", f"Errors of `{r['agent']}` (not counted as failures):", ""]
            lines += [f"- seed {e['seed']}: {e['kind']}: {e['reason']}" for e in r["error_episodes"]]
    return "\n".join(lines) + "\n"
