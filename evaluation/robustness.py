"""The robustness suite: success under each perturbation and severity on held-out seeds, for one or two policies.

Every cell (perturbation, severity) runs the same seeds, and a seed's scene is the same in every cell (the
perturbation is layered on top, see ``envs/perturb.py``), so the clean cell, the perturbed cells and a second
policy are all paired seed by seed. One pool of worker processes serves the whole suite; each worker keeps
one env and one copy of each agent, and an episode's result depends only on (agent, cell, seed), never on the
number of workers.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.envs import make_env, time_limit_s
from imitlab.envs.perturb import PERTURBATIONS, SEVERITIES, check_perturbable, parse_names, parse_perturb
from imitlab.evaluation.agent_spec import AgentSpec
from imitlab.evaluation.compare import paired_success
from imitlab.evaluation.evaluate import worker_agent
from imitlab.evaluation.rollout import EpisodeResult, run_lockstep
from imitlab.evaluation.stats import wilson_interval
from imitlab.evaluation.workers import check_backend, open_pool

FORMAT = "imitlab-robustness"
FORMAT_VERSION = 1
#: The unperturbed cell's name (severity 0 in plots).
CLEAN = "none"


@dataclass(frozen=True)
class Cell:
    """One condition of the suite: a perturbation at a severity (``CLEAN`` at 0: none)."""

    perturbation: str
    severity: int

    @property
    def perturb(self) -> dict[str, int]:
        return {} if self.perturbation == CLEAN else {self.perturbation: self.severity}

    @property
    def label(self) -> str:
        return CLEAN if self.perturbation == CLEAN else f"{self.perturbation}@{self.severity}"


def suite_cells(perturbations: Sequence[str], severities: Sequence[int]) -> list[Cell]:
    """The clean cell, then every perturbation at every severity (validated: one clear error for a bad one);
    no perturbations: the clean cell alone."""
    names = parse_names(list(perturbations)) if perturbations else []
    for severity in severities:
        parse_perturb({"noise": severity})
    return [Cell(CLEAN, 0)] + [Cell(name, int(s)) for name in names for s in severities]


@dataclass(frozen=True)
class Job:
    """One episode of the suite, the key of a worker-pool task (``EpisodePool`` tasks are (key, with_video))."""

    label: str
    cell: Cell
    seed: int
    video_name: str = ""
    """Subfolder of the video folder for a filmed re-run."""


class _SuiteRunner:
    """A worker's agents (one per label, each built as ``evaluate`` builds its worker's: one core) and one env for
    every cell: a job sets the cell's perturbation, which every reset applies until the next job."""

    def __init__(self, specs: dict[str, AgentSpec], env_id: str, env_kwargs: dict[str, Any], video_dir: Path | None):
        self.agents = {label: worker_agent(spec) for label, spec in specs.items()}
        self.env = make_env(env_id, render_mode="rgb_array", **env_kwargs)
        self.video_dir = video_dir
        self.time_limit_s = time_limit_s(self.env)

    def run(self, job: Job, with_video: bool) -> tuple[Job, EpisodeResult]:
        self.env.unwrapped.perturber.default = job.cell.perturb
        folder = self.video_dir / job.video_name if with_video and self.video_dir is not None else None
        result = run_lockstep([self.env], self.agents[job.label], [job.seed], video_dir=folder,
                              video_seeds=[job.seed] if folder is not None else [])[0]
        return job, result


def _errored(job: Job, kind: str, reason: str) -> tuple[Job, EpisodeResult]:
    """A job whose worker raised, died or hung: its error result, under its key."""
    return job, EpisodeResult.errored(job.seed, kind, reason)


def run_suite(specs: dict[str, AgentSpec], perturbations: Sequence[str], severities: Sequence[int],
              seeds: Sequence[int], workers: int | None = None, video_dir: Path | None = None, worst_videos: int = 3,
              progress: bool = True, backend: str = "local", address: str | None = None) -> dict[str, Any]:
    """Evaluate ``specs`` (label -> agent, in one env: ``imitlab.agents.resolve_agents``) in every cell on ``seeds``.

    The first agent's env (id and kwargs) is everyone's. ``worst_videos`` failing episodes of the cells with the
    lowest success are filmed into ``video_dir``, re-run after the sweep (an episode depends only on its seed).
    ``backend``: ``local`` worker processes or ``ray`` actors (``address``: see ``open_pool``); an episode's
    result is the same on either and for any ``workers``. An episode whose worker raised, died or hung is listed
    with its reason and counts as not successful, so the cells stay paired seed by seed.
    """
    check_backend(backend)
    if not specs:
        raise ImitlabError("the robustness suite needs at least one agent")
    cells = suite_cells(perturbations, severities)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ImitlabError("the robustness suite needs at least one seed, and distinct seeds")
    for spec in specs.values():
        overlap = sorted(set(seeds) & set(spec.train_seeds))
        if overlap:
            raise ImitlabError(f"suite seeds overlap the demonstration seeds of {spec.label} (e.g. {overlap[:5]}); "
                               f"use held-out seeds (from {HELD_OUT_SEED_START})")
    first = next(iter(specs.values()))
    if len(cells) > 1:
        check_perturbable(first.env_id, cells[1].perturb)
    base_kwargs = {k: v for k, v in first.env_kwargs.items() if k != "perturb"}
    jobs = [Job(label, cell, seed) for cell in cells for label in specs for seed in seeds]
    if workers or backend == "local":  # Ray: one actor per CPU of the cluster unless told
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results: dict[tuple[str, Cell, int], EpisodeResult] = {}
    runner = functools.partial(_SuiteRunner, specs, first.env_id, base_kwargs, video_dir)
    with open_pool(backend, runner, workers, address, errored=_errored) as pool:
        bar = tqdm(pool.run((job, False) for job in jobs), total=len(jobs), desc="robustness", unit="ep",
                   disable=not progress)
        for job, result in bar:
            results[(job.label, job.cell, job.seed)] = result
            bar.set_postfix(cell=job.cell.label)
        report = _report(specs, first, base_kwargs, cells, seeds, results)
        if video_dir is not None and worst_videos > 0:
            chosen = _worst_episodes(report, worst_videos)
            replays = [Job(v["agent"], Cell(v["perturbation"], v["severity"]), v["seed"], f"worst_{i}")
                       for i, v in enumerate(chosen)]
            filmed = {job: replay for job, replay in pool.run((job, True) for job in replays)}
            for entry, job in zip(chosen, replays):
                replay, original = filmed[job], results[(job.label, job.cell, job.seed)]
                if (replay.success, replay.episode_return) != (original.success, original.episode_return):
                    raise ImitlabError(f"{job.label} on seed {job.seed} in {job.cell.label} did not reproduce when "
                                       "re-run for its video; the agent or env is not deterministic per seed")
                entry["video"] = replay.video
            report["videos"] = chosen
    return report


def _report(specs: dict[str, AgentSpec], first: AgentSpec, env_kwargs: dict[str, Any],
            cells: list[Cell], seeds: list[int], results: dict[tuple[str, Cell, int], EpisodeResult]) -> dict[str, Any]:
    rows = []
    for label in specs:
        for cell in cells:
            episodes = [results[(label, cell, s)] for s in seeds]
            successes = sum(e.success for e in episodes)
            rows.append({
                "agent": label, "perturbation": cell.perturbation, "severity": cell.severity,
                "successes": successes, "episodes": len(seeds), "success_rate": successes / len(seeds),
                "success_ci95": list(wilson_interval(successes, len(seeds))),
                "mean_return": float(np.mean([e.episode_return for e in episodes])),
                "errors": sum(e.error_kind is not None for e in episodes),
                "per_episode": [{"seed": e.seed, "success": e.success, "return": e.episode_return, "length": e.length,
                                 **({"error": e.error} if e.error_kind else {})} for e in episodes],
            })
    report: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "env_id": first.env_id, "env_kwargs": env_kwargs,
        "agents": {label: spec.label for label, spec in specs.items()}, "seeds": seeds, "perturbations": sorted({c.perturbation for c in cells} - {CLEAN},
                                                                      key=list(PERTURBATIONS).index),
        "severities": sorted({c.severity for c in cells} - {0}), "cells": rows, "videos": [],
    }
    labels = list(specs)
    if len(labels) == 2:
        by_key = {(r["agent"], r["perturbation"], r["severity"]): r for r in rows}
        report["paired"] = []
        for cell in cells:
            a, b = (by_key[(label, cell.perturbation, cell.severity)] for label in labels)
            stats = paired_success([e["success"] for e in a["per_episode"]], [e["success"] for e in b["per_episode"]])
            report["paired"].append({"perturbation": cell.perturbation, "severity": cell.severity, **stats})
    return report


def _worst_episodes(report: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The first failing seed (else the lowest return) of each of the ``count`` lowest-success perturbed cells."""
    perturbed = [r for r in report["cells"] if r["perturbation"] != CLEAN]
    ranked = sorted(perturbed, key=lambda r: (r["success_rate"], r["mean_return"], -r["severity"]))
    chosen = []
    for row in ranked[:count]:
        worst = min(row["per_episode"], key=lambda e: (e["success"], e["return"]))
        chosen.append({"agent": row["agent"], "perturbation": row["perturbation"], "severity": row["severity"],
                       "seed": worst["seed"], "success": worst["success"]})
    return chosen


def degradation_figure(report: dict[str, Any]) -> Figure:
    """Success (95 % Wilson interval) against severity, one panel per perturbation, one line per agent."""
    names = report["perturbations"]
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    by_key = {(r["agent"], r["perturbation"], r["severity"]): r for r in report["cells"]}
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, label in enumerate(report["agents"]):
            points = [by_key[(label, CLEAN, 0)]] + [by_key[(label, name, s)] for s in report["severities"]]
            x = np.array([p["severity"] for p in points]) + (j - (len(report["agents"]) - 1) / 2) * 0.08
            y = np.array([100 * p["success_rate"] for p in points])
            err = np.array([[y_ - 100 * p["success_ci95"][0], 100 * p["success_ci95"][1] - y_]
                            for y_, p in zip(y, points)]).T
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([0, *report["severities"]])
        ax.set_ylim(-5, 105)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("success %")
        if i >= len(names) - cols:
            ax.set_xlabel("severity (0: clean)")
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_suite_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``robustness.json``, ``degradation.png`` and a self-contained ``robustness.html`` (plot, tables, videos)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "degradation.png"
    degradation_figure(report).savefig(png, dpi=90, bbox_inches="tight")
    html_path = out_dir / "robustness.html"
    html_path.write_text(_html(report, png), encoding="utf-8")
    saved = json.loads(json.dumps(report))
    for video in saved["videos"]:
        if video.get("video"):
            video["video"] = os.path.relpath(video["video"], out_dir)
    json_path = out_dir / "robustness.json"
    json_path.write_text(json.dumps(saved, indent=2))
    return {"json": json_path, "plot": png, "html": html_path}


def _cell_text(row: dict[str, Any]) -> str:
    low, high = row["success_ci95"]
    return f"{row['successes']}/{row['episodes']} ({100 * low:.0f}-{100 * high:.0f} %)"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per (agent, perturbation): agent, perturbation, clean success, then success at each severity."""
    by_key = {(r["agent"], r["perturbation"], r["severity"]): r for r in report["cells"]}
    return [[label, name, _cell_text(by_key[(label, CLEAN, 0)]),
             *(_cell_text(by_key[(label, name, s)]) for s in report["severities"])]
            for label in report["agents"] for name in report["perturbations"]]


#: Columns of ``paired_rows``.
PAIRED_HEADER = ("cell", "difference (points)", "95 % paired CI", "McNemar p")


def paired_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per cell of a two-policy report (none without ``--compare``): the cell, the first policy's success
    minus the second's in points, its paired 95 % interval and the exact McNemar p."""
    return [[Cell(p["perturbation"], p["severity"]).label, f"{100 * p['success_diff']:+.0f}",
             f"{100 * p['success_diff_ci95'][0]:+.0f} to {100 * p['success_diff_ci95'][1]:+.0f}",
             f"{p['mcnemar_p']:.3g}"] for p in report.get("paired", [])]


def _base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _html(report: dict[str, Any], png: Path) -> str:
    esc = html.escape
    head = ["agent", "perturbation", "clean", *(f"severity {s}" for s in report["severities"])]
    table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in summary_rows(report)) + "</table>"
    parts = [f"<h1>Robustness of {esc(', '.join(report['agents'].values()))}</h1>",
             f"<p>Env <code>{esc(report['env_id'])}</code> with <code>{esc(json.dumps(report['env_kwargs']))}</code>; "
             f"{len(report['seeds'])} held-out seeds {report['seeds'][0]}..{report['seeds'][-1]} in every cell; "
             "success with 95 % Wilson intervals.</p>",
             f'<img alt="degradation curves" src="data:image/png;base64,{_base64(png)}">',
             "<h2>Success per cell</h2>", table]
    if report.get("paired"):
        a, b = report["agents"]
        parts += [f"<h2>Paired: {esc(a)} - {esc(b)} on the same seeds</h2>", "<table><tr>" + "".join(
                      f"<th>{esc(h)}</th>" for h in PAIRED_HEADER) + "</tr>" + "".join(
                      "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in paired_rows(report))
                  + "</table>"]
    videos = []
    for v in report["videos"]:
        path = Path(v.get("video") or "")
        if path.is_file():
            videos.append(f'<figure><video controls loop muted width="400" src="data:video/mp4;base64,{_base64(path)}">'
                          f"</video><figcaption>{esc(v['agent'])}, {esc(Cell(v['perturbation'], v['severity']).label)}"
                          f", seed {v['seed']}: {'success' if v['success'] else 'failure'}</figcaption></figure>")
    parts += ["<h2>Worst cells</h2>", "".join(videos) or "<p>No videos recorded.</p>"]
    style = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px}table{border-collapse:collapse}" \
            "th,td{border:1px solid #ccc;padding:0.2em 0.5em}img{max-width:100%}figure{display:inline-block}"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>imitlab robustness</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


__all__ = ["CLEAN", "Cell", "SEVERITIES", "degradation_figure", "run_suite", "suite_cells", "summary_rows",
           "write_suite_report"]
