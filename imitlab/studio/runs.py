"""Runs API: training runs with their best validation and held-out success, their reports, and the paired
comparison of two runs evaluated on the same seeds (``evaluation/compare.py``, from the stored reports)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from imitlab.core.errors import ImitlabError
from imitlab.studio.paths import find_folders, resolve_inside

router = APIRouter()

TRAIN_LOG = "train_log.json"
REPORT = Path("eval") / "report.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ImitlabError(f"{path} not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ImitlabError(f"{path} is not readable JSON: {exc}") from None


def _run_row(root: Path, folder: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"path": str(folder.relative_to(root))}
    try:
        best = _read_json(folder / TRAIN_LOG).get("best") or {}
        row["best_epoch"] = best.get("epoch")
        row["best_validation"] = (best.get("rollout") or {}).get("success_rate")
        report_path = folder / REPORT
        if report_path.is_file():
            report = _read_json(report_path)
            row["heldout"] = {k: report.get(k) for k in ("successes", "episodes", "success_rate", "success_ci95")}
            row["env_id"] = report.get("env_id")
            if (folder / "eval" / "report.html").is_file():
                row["report"] = f"/files/{row['path']}/eval/report.html"
    except ImitlabError as exc:
        row["error"] = str(exc)
    return row


@router.get("/api/runs")
def list_runs(request: Request) -> list[dict[str, Any]]:
    """Every training run (a folder with ``train_log.json``) under the studio's folder."""
    root: Path = request.app.state.root
    return [_run_row(root, folder) for folder in find_folders(root, TRAIN_LOG)]


def _summary(root: Path, run: str):
    from imitlab.evaluation.evaluate import EvalSummary
    from imitlab.evaluation.rollout import EpisodeResult

    folder = resolve_inside(root, run)
    report = _read_json(folder / REPORT)
    try:
        episodes = [EpisodeResult(**episode) for episode in report["per_episode"]]
        return EvalSummary(agent=run, env_id=report["env_id"], env_kwargs=report.get("env_kwargs", {}),
                           episodes=episodes)
    except (KeyError, TypeError) as exc:
        raise ImitlabError(f"{folder / REPORT} is not an evaluation report ({exc})") from None


@router.get("/api/compare")
def compare_runs(request: Request, a: str, b: str) -> dict[str, Any]:
    """Paired comparison of two runs' held-out evaluations, on the seeds both were evaluated on."""
    from imitlab.evaluation.compare import comparison, comparison_markdown

    root: Path = request.app.state.root
    first, second = _summary(root, a), _summary(root, b)
    if first.env_id != second.env_id:
        raise ImitlabError(f"{a} was evaluated on {first.env_id} and {b} on {second.env_id}: nothing to pair")
    common = {e.seed for e in first.episodes} & {e.seed for e in second.episodes}
    if not common:
        raise ImitlabError(f"{a} and {b} share no evaluation seeds; evaluate both on the same seeds")
    first.episodes = [e for e in first.episodes if e.seed in common]
    by_seed = {e.seed: e for e in second.episodes}
    second.episodes = [by_seed[e.seed] for e in first.episodes]
    result = comparison(first, second)
    result.pop("reports")
    return {**result, "markdown": comparison_markdown({**result, "reports": []})}


@router.get("/files/{path:path}")
def run_file(request: Request, path: str) -> FileResponse:
    """A file of a run (its ``report.html`` and the videos that page embeds or links)."""
    file = resolve_inside(request.app.state.root, path)
    if not file.is_file():
        raise ImitlabError(f"{path} not found")
    return FileResponse(file)
