"""The data-efficiency study: how many demonstrations does a pretrained backbone save, in and out of distribution?

One sweep records the largest demo set once, trains every (backbone, number of demos, training seed) cell on a
nested subset of it (the first N episodes, so 10 demos contain the 5), and evaluates every cell on the same
held-out seeds, clean and under each perturbation at one severity (``evaluation/robustness.py``). It is
resumable: a cell that finished training is not retrained and a cell with results is not re-evaluated, so an
interrupted sweep continues where it stopped. Results:

- success against demos per backbone (pooled over training seeds, 95 % Wilson interval) with a paired test
  (McNemar over (training seed, evaluation seed) pairs) between the first two backbones at every size;
- the same under perturbations;
- how well offline decision metrics on held-out frames (``evaluation/offline.py``) rank the cells by closed-loop
  success (Spearman).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.demos.dataset import EPISODE_DIR, DemoDataset, DemoWriter
from imitlab.demos.recorder import record
from imitlab.envs.perturb import parse_names, parse_perturb
from imitlab.evaluation.agent_spec import AgentSpec, policy_spec
from imitlab.evaluation.compare import paired_success
from imitlab.evaluation.offline import expert_frames, offline_metrics
from imitlab.evaluation.robustness import CLEAN, run_suite
from imitlab.evaluation.stats import wilson_interval
from imitlab.evaluation.workers import check_backend
from imitlab.policies.encoders import BACKBONES
from imitlab.policies.io import policy_dir
from imitlab.training.bc import TrainConfig, train
from imitlab.training.resume import CHECKPOINT_DIR, STATE_FILE, read_progress

FORMAT = "imitlab-study"
FORMAT_VERSION = 1
#: Config fields that say where the sweep runs, not what it measures: a rerun may change them.
EXECUTION_FIELDS = ("workers", "out", "backend", "address")


@dataclass
class StudyConfig:
    """One data-efficiency sweep (saved as ``study_config.json`` in ``out``; a rerun must match it)."""

    env_id: str
    out: str
    demos: tuple[int, ...] = (5, 10, 20)
    backbones: tuple[str, ...] = ("lite0", "nature_cnn")
    train_seeds: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    noise: float = 0.2
    """DART noise of the recorded demonstrations."""
    episodes: int = 20
    """Held-out evaluation seeds per cell (from HELD_OUT_SEED_START)."""
    perturbations: tuple[str, ...] = ("visual",)
    """Perturbations (names or groups) of the robustness part; empty: in-distribution only."""
    severity: int = 3
    offline_episodes: int = 5
    """Expert rollouts on the first held-out seeds whose frames score the offline decision metrics."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig fields for every run, e.g. {"epochs": 10}."""
    equal_updates: bool = False
    """Scale each cell's ``epochs`` and ``eval_every`` by (largest demos / its demos), so that every cell takes
    about the largest cell's gradient steps and validations: fewer demos then means less data, not less training
    (the epochs given are the largest cell's)."""
    backbone_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per backbone, TrainConfig fields that override ``train`` (e.g. lite0's pooling)."""
    workers: int = 0
    backend: str = "local"
    """Where runs and episodes go: ``local`` (training in this process, episodes in worker processes) or ``ray``
    (training cells as Ray tasks, episodes on Ray actors)."""
    address: str | None = None
    """Ray cluster address (None: a local Ray instance; ``auto``: the running cluster)."""

    def __post_init__(self) -> None:
        check_backend(self.backend)
        self.demos = tuple(sorted({int(n) for n in self.demos}))
        self.backbones = tuple(self.backbones)
        self.perturbations = tuple(parse_names(list(self.perturbations))) if self.perturbations else ()
        parse_perturb({"noise": self.severity})
        problems = []
        if not self.demos or self.demos[0] < 1:
            problems.append("--demos needs positive episode counts")
        unknown = [b for b in self.backbones if b not in BACKBONES]
        if unknown or not self.backbones:
            problems.append(f"unknown backbone(s) {unknown}; choose from {', '.join(BACKBONES)}")
        if self.train_seeds < 1 or self.episodes < 1:
            problems.append("--train-seeds and --episodes must be at least 1")
        known = {f.name for f in dataclass_fields(TrainConfig)} - {"dataset", "out", "backbone", "seed"}
        for fields in (self.train, *self.backbone_train.values()):
            bad = sorted(set(fields) - known)
            if bad:
                problems.append(f"unknown or reserved training option(s) {bad}")
        if problems:
            raise ImitlabError("; ".join(problems))


@dataclass(frozen=True)
class StudyCell:
    backbone: str
    demos: int
    train_seed: int

    @property
    def name(self) -> str:
        return f"{self.backbone}_n{self.demos:04d}_s{self.train_seed}"


def _run_spec(out: Path, name: str) -> AgentSpec:
    """The trained policy of one cell, for evaluation."""
    run = out / "runs" / name
    return policy_spec(policy_dir(run), str(run))


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _check_config(config: StudyConfig, out: Path) -> None:
    """A rerun must describe the same sweep (except workers); anything else would mix incomparable cells."""
    saved_path = out / "study_config.json"
    current = json.loads(json.dumps(asdict(config)))
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        differ = sorted(k for k in current if k not in EXECUTION_FIELDS and saved.get(k) != current[k])
        if differ:
            raise ImitlabError(f"{out} holds a study with different {', '.join(differ)}; use a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(saved_path, current)


def _record_demos(config: StudyConfig, out: Path) -> Path:
    """The largest demo set, recorded once; a partial one (interrupted run) is completed from where it stopped."""
    path = out / "demos"
    have = len(DemoDataset(path)) if (path / "dataset.json").is_file() else 0
    need = config.demos[-1]
    if have < need:
        record(config.env_id, path, need - have, seed_start=have, noise_std=config.noise,
               env_kwargs=config.env_kwargs, backend=config.backend, address=config.address,
               workers=config.workers or (None if config.backend == "ray" else 1))
    return path


def _subset(demos: Path, count: int, out: Path) -> Path:
    """A dataset folder holding the first ``count`` episodes of ``demos`` as hard links (copies where links fail)."""
    path = out / "subsets" / f"n{count:04d}"
    source = DemoDataset(demos)
    if (path / "dataset.json").is_file() and len(DemoDataset(path)) == count:
        return path
    if path.exists():
        shutil.rmtree(path)
    writer = DemoWriter(path, source.env_id, source.env_kwargs, source.observation_space, source.action_space)
    for episode in source.episode_paths()[:count]:
        target = writer.path / EPISODE_DIR / episode.name
        try:
            os.link(episode, target)
        except OSError:
            shutil.copyfile(episode, target)
    return path


def _train_configs(config: StudyConfig, cells: list[StudyCell], demos: Path, out: Path,
                   progress: bool) -> list[TrainConfig]:
    """The runs still to train: a cell trained by an earlier invocation is skipped, one cut short continues from
    its last epoch (or starts again if it had none)."""
    configs = []
    for cell in cells:
        run = out / "runs" / cell.name
        if (run / "last" / "policy.json").is_file():
            continue
        options = {**config.train, **config.backbone_train.get(cell.backbone, {})}
        if config.equal_updates:
            scale = max(1, round(config.demos[-1] / cell.demos))
            for key in ("epochs", "eval_every"):
                options[key] = scale * options.get(key, getattr(TrainConfig, key))
        options.setdefault("pretrained", cell.backbone == "lite0")
        options.setdefault("progress", progress)
        resume = (run / CHECKPOINT_DIR / STATE_FILE).is_file() and not read_progress(run)["finished"]
        configs.append(TrainConfig(dataset=str(_subset(demos, cell.demos, out)), out=str(run), backbone=cell.backbone,
                                   seed=cell.train_seed, resume=resume, overwrite=not resume, **options))
    return configs


def run_study(config: StudyConfig, progress: bool = True) -> dict[str, Any]:
    """Record, train, evaluate (each step resumable) and summarise; writes ``study.json``/``.md``/``.png``.

    On ``backend="ray"`` the training cells are Ray tasks (``training/ray_cells.py``) and the evaluation runs on
    Ray actors; a cell's weights and results are those of the local backend with the same ``threads``."""
    if config.backend == "ray":
        from imitlab.training.ray_cells import ray_session

        with ray_session(config.address):
            return _run_study(config, progress)
    return _run_study(config, progress)


def _run_study(config: StudyConfig, progress: bool) -> dict[str, Any]:
    out = Path(config.out)
    _check_config(config, out)
    demos = _record_demos(config, out)
    cells = [StudyCell(b, n, s) for b in config.backbones for n in config.demos for s in range(config.train_seeds)]
    to_train = _train_configs(config, cells, demos, out, progress)
    if config.backend == "ray":
        from imitlab.training.ray_cells import train_on_ray

        train_on_ray(to_train, progress)
    else:
        for train_config in tqdm(to_train, desc="study: train", unit="run", disable=not progress):
            train(train_config)
    seeds = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + config.episodes))
    results_dir = out / "cells"
    results_dir.mkdir(exist_ok=True)
    todo = [c for c in cells if not (results_dir / f"{c.name}.json").is_file()]
    if todo:
        frames = None
        if config.offline_episodes:
            spec = _run_spec(out, todo[0].name)
            frames = expert_frames(spec.env_id, spec.env_kwargs, seeds[:config.offline_episodes])
        suite = run_suite({c.name: _run_spec(out, c.name) for c in todo}, list(config.perturbations),
                          [config.severity] if config.perturbations else [], seeds,
                          workers=config.workers or None, worst_videos=0, progress=progress,
                          backend=config.backend, address=config.address)
        for cell in todo:
            rows = [r for r in suite["cells"] if r["agent"] == cell.name]
            offline = None
            if frames is not None:
                offline = offline_metrics(_run_spec(out, cell.name),
                                          seeds[:config.offline_episodes], frames=frames)
            _write_json(results_dir / f"{cell.name}.json", {
                **asdict(cell),
                "success": {r["perturbation"]: [e["success"] for e in r["per_episode"]] for r in rows},
                "seeds": seeds, "offline": offline,
                "train_seconds": json.loads((out / "runs" / cell.name / "train_log.json").read_text())["seconds"],
            })
    results = [json.loads((results_dir / f"{c.name}.json").read_text()) for c in cells]
    summary = summarise(config, results)
    _write_json(out / "study.json", summary)
    study_figure(summary).savefig(out / "study.png", dpi=90, bbox_inches="tight")
    (out / "study.md").write_text(study_markdown(summary))
    return summary


def _pooled(outcomes: list[list[bool]]) -> dict[str, Any]:
    flat = [o for seed in outcomes for o in seed]
    k = sum(flat)
    return {"successes": k, "episodes": len(flat), "success_rate": k / len(flat),
            "success_ci95": list(wilson_interval(k, len(flat))),
            "per_train_seed": [sum(seed) / len(seed) for seed in outcomes]}


def _shifted(result: dict[str, Any]) -> list[bool]:
    """Every episode under every perturbation, in a fixed order (perturbation, then seed)."""
    return [o for name in sorted(result["success"]) if name != CLEAN for o in result["success"][name]]


def summarise(config: StudyConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Points of the curves, paired tests between the first two backbones, offline-vs-closed-loop correlation."""
    points = []
    for backbone in config.backbones:
        for n in config.demos:
            cell = sorted((r for r in results if r["backbone"] == backbone and r["demos"] == n),
                          key=lambda r: r["train_seed"])
            point = {"backbone": backbone, "demos": n, "clean": _pooled([r["success"][CLEAN] for r in cell])}
            if config.perturbations:
                point["shifted"] = _pooled([_shifted(r) for r in cell])
                point["per_perturbation"] = {name: _pooled([r["success"][name] for r in cell])["success_rate"]
                                             for name in config.perturbations}
            points.append(point)
    paired = []
    if len(config.backbones) >= 2:
        a, b = config.backbones[:2]
        for n in config.demos:
            by = {(r["backbone"], r["train_seed"]): r for r in results if r["demos"] == n}
            entry: dict[str, Any] = {"demos": n, "a": a, "b": b}
            for part, outcomes in (("clean", lambda r: r["success"][CLEAN]), ("shifted", _shifted)):
                if part == "shifted" and not config.perturbations:
                    continue
                xa = [o for s in range(config.train_seeds) for o in outcomes(by[(a, s)])]
                xb = [o for s in range(config.train_seeds) for o in outcomes(by[(b, s)])]
                entry[part] = paired_success(xa, xb)
            paired.append(entry)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.loads(json.dumps(asdict(config))),
            "points": points, "paired": paired, "offline_vs_closed_loop": offline_correlation(results),
            "cells": results}


def offline_correlation(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman correlation, across trained runs, of each offline metric with clean closed-loop success."""
    scored = [r for r in results if r.get("offline")]
    if len(scored) < 3:
        return {"runs": len(scored), "note": "needs at least 3 runs with offline metrics"}
    success = [float(np.mean(r["success"][CLEAN])) for r in scored]
    metrics: dict[str, list[float]] = {"-action_mse": [-r["offline"]["action_mse"] for r in scored]}
    for name in scored[0]["offline"]["decisions"]:
        for stat in ("accuracy", "macro_recall", "macro_f1"):
            metrics[f"{name} {stat}"] = [r["offline"]["decisions"][name][stat] for r in scored]
    out: dict[str, Any] = {"runs": len(scored), "spearman": {}}
    for name, values in metrics.items():
        if np.ptp(values) == 0 or np.ptp(success) == 0:
            out["spearman"][name] = {"rho": None, "p": None}
            continue
        test = spearmanr(values, success)
        out["spearman"][name] = {"rho": float(test.statistic), "p": float(test.pvalue)}
    return out


def study_figure(summary: dict[str, Any]) -> Figure:
    """Success against demos per backbone (95 % Wilson interval), clean and under perturbations side by side."""
    parts = ["clean"] + (["shifted"] if summary["points"] and "shifted" in summary["points"][0] else [])
    config = summary["config"]
    fig = Figure(figsize=(5.2 * len(parts), 3.6))
    for i, part in enumerate(parts):
        ax = fig.add_subplot(1, len(parts), i + 1)
        for j, backbone in enumerate(config["backbones"]):
            pts = [p for p in summary["points"] if p["backbone"] == backbone]
            nudge = 1 + 0.03 * (j - (len(config["backbones"]) - 1) / 2)  # side by side, not on top of each other
            x = np.array([p["demos"] for p in pts]) * nudge
            y = np.array([100 * p[part]["success_rate"] for p in pts])
            err = np.array([[y_ - 100 * p[part]["success_ci95"][0], 100 * p[part]["success_ci95"][1] - y_]
                            for y_, p in zip(y, pts)]).T
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=backbone)
        for entry in summary["paired"]:
            if part in entry:
                ax.annotate(f"p={entry[part]['mcnemar_p']:.2g}", (entry["demos"], 2), fontsize=7, ha="center",
                            va="bottom", rotation=90 if len(config["demos"]) > 4 else 0)
        ax.set_xscale("log")
        ax.set_xticks(config["demos"], [str(n) for n in config["demos"]])
        ax.set_xticks([], minor=True)  # a log axis labels its minor ticks (6x10^0, 3x10^1): only the sizes run
        ax.set_ylim(-5, 105)
        ax.set_xlabel("demonstrations")
        ax.set_ylabel("success %")
        ax.set_title("in distribution" if part == "clean" else
                     f"under {', '.join(config['perturbations'])} (severity {config['severity']})", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def study_markdown(summary: dict[str, Any]) -> str:
    """Tables of the curves, the paired tests and the offline-metric correlations."""
    config = summary["config"]
    lines = [f"# Data efficiency on `{config['env_id']}`", "",
             f"{config['train_seeds']} training seed(s) per cell, {config['episodes']} held-out seeds "
             f"({HELD_OUT_SEED_START}..) per run; success pooled over training seeds with 95 % Wilson intervals.", "",
             "| backbone | demos | clean | shifted |", "|---|---|---|---|"]

    def text(p: dict[str, Any] | None) -> str:
        if p is None:
            return "-"
        return (f"{100 * p['success_rate']:.0f} % ({p['successes']}/{p['episodes']}, "
                f"{100 * p['success_ci95'][0]:.0f}-{100 * p['success_ci95'][1]:.0f} %)")

    for p in summary["points"]:
        lines.append(f"| {p['backbone']} | {p['demos']} | {text(p['clean'])} | {text(p.get('shifted'))} |")
    if config["perturbations"]:
        names = config["perturbations"]
        lines += ["", f"Success per perturbation at severity {config['severity']}:", "",
                  "| backbone | demos | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        lines += [f"| {p['backbone']} | {p['demos']} | " + " | ".join(
            f"{100 * p['per_perturbation'][n]:.0f} %" for n in names) + " |" for p in summary["points"]]
    if summary["paired"]:
        lines += ["", f"Paired ({summary['paired'][0]['a']} - {summary['paired'][0]['b']}, same training and "
                  "evaluation seeds):", "", "| demos | part | difference (points) | 95 % CI | McNemar p |",
                  "|---|---|---|---|---|"]
        for entry in summary["paired"]:
            for part in ("clean", "shifted"):
                if part in entry:
                    s = entry[part]
                    lines.append(f"| {entry['demos']} | {part} | {100 * s['success_diff']:+.0f} | "
                                 f"{100 * s['success_diff_ci95'][0]:+.0f} to {100 * s['success_diff_ci95'][1]:+.0f}"
                                 f" | {s['mcnemar_p']:.3g} |")
    corr = summary["offline_vs_closed_loop"]
    lines += ["", f"Offline metrics against clean closed-loop success across {corr['runs']} runs (Spearman):", ""]
    if "spearman" in corr:
        lines += ["| offline metric | rho | p |", "|---|---|---|"]
        for name, v in corr["spearman"].items():
            rho = "-" if v["rho"] is None else f"{v['rho']:+.2f}"
            lines.append(f"| {name} | {rho} | {'-' if v['p'] is None else format(v['p'], '.3g')} |")
    else:
        lines.append(corr["note"])
    return "\n".join(lines) + "\n"
