"""``imitlab eval`` (closed loop on held-out seeds) and ``imitlab compare`` (two agents, paired)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imitlab.cli.env_args import parse_env_kwargs
from imitlab.core.seeds import HELD_OUT_SEED_START


def evaluate_cmd(
    agent: str = typer.Argument(..., help="A policy or run folder, or `expert`."),
    env: Optional[str] = typer.Option(None, help="Task id (required for `expert`; checked against a policy's)."),
    episodes: int = typer.Option(50, min=1, help="Number of held-out seeds."),
    seed_start: int = typer.Option(HELD_OUT_SEED_START, help="First seed (the held-out range starts there)."),
    workers: int = typer.Option(0, min=0, help="Worker processes (0: all cores). Results do not depend on it."),
    videos: int = typer.Option(4, min=0, help="Write N mp4s: the best and worst episodes, alternately."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: <run>/eval or runs/eval-expert)."),
    image_size: Optional[int] = typer.Option(None, help="Override the camera size (expert only)."),
    env_arg: list[str] = typer.Option([], help="Env constructor argument key=value (repeatable), e.g. "
                                      "'perturb={\"lighting\": 3}'; overrides the policy's."),
    offline_episodes: int = typer.Option(5, min=0, help="Offline decision metrics (accuracy, recall, F1) on the "
                                         "expert's rollouts of the first N evaluation seeds (0: off)."),
    offline_demos: Optional[Path] = typer.Option(None, help="A held-out dataset for the offline metrics instead."),
) -> None:
    """Closed-loop evaluation on held-out seeds: success rate with a 95 % Wilson interval, metrics, videos."""
    from imitlab.agents import EXPERT, resolve_agent
    from imitlab.evaluation.evaluate import evaluate, write_report

    if out is None:
        out = Path(agent) / "eval" if agent != EXPERT else Path("runs") / "eval-expert"
    spec = resolve_agent(agent, env, parse_env_kwargs(env_arg, image_size))
    seeds = list(range(seed_start, seed_start + episodes))
    summary = evaluate(spec, seeds, workers=workers or None, video_dir=out / "videos", videos=videos)
    if offline_episodes or offline_demos:
        from imitlab.evaluation.offline import offline_metrics

        summary.offline = offline_metrics(spec, seeds[:offline_episodes], offline_demos)
    paths = write_report(summary, out)
    data = summary.to_json()
    low, high = data["success_ci95"]
    typer.echo(f"success {data['successes']}/{data['episodes']} = {100 * data['success_rate']:.0f} % "
               f"(95 % CI {100 * low:.0f}-{100 * high:.0f} %); report: {paths['markdown']} and {paths['html']}")


def compare_cmd(
    agent_a: str = typer.Argument(..., help="A: a policy or run folder, a bundle, or `expert`."),
    agent_b: str = typer.Argument(..., help="B, evaluated on the same seeds."),
    env: Optional[str] = typer.Option(None, help="Task id (needed only when both sides are `expert`)."),
    episodes: int = typer.Option(50, min=1, help="Number of held-out seeds."),
    seed_start: int = typer.Option(HELD_OUT_SEED_START, help="First seed."),
    workers: int = typer.Option(0, min=0, help="Worker processes (0: all cores)."),
    out: Path = typer.Option(Path("runs/compare"), help="Folder for compare.json and compare.md."),
) -> None:
    """Evaluate two policies on the same seeds and report the paired success difference (McNemar, Newcombe CI)."""
    from imitlab.agents import resolve_pair
    from imitlab.evaluation.compare import compare, write_comparison

    spec_a, spec_b = resolve_pair(agent_a, agent_b, env)
    result = compare(spec_a, spec_b, list(range(seed_start, seed_start + episodes)), workers=workers or None)
    paths = write_comparison(result, out)
    s = result["success"]
    low, high = s["success_diff_ci95"]
    typer.echo(f"A only: {s['only_a']}, B only: {s['only_b']}, both: {s['both_succeed']}, neither: {s['neither']}; "
               f"success A - B = {100 * s['success_diff']:+.1f} points (95 % CI {100 * low:+.1f} to {100 * high:+.1f}), "
               f"McNemar p = {s['mcnemar_p']:.3g}; report: {paths['markdown']}")
