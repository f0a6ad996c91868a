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
    overwrite: bool = typer.Option(False, help="Replace the report folder if it holds an earlier report."),
    episode_timeout: float = typer.Option(0.0, min=0.0, help="Wall seconds per episode before it counts as an "
                                          "error (0: 10x the env's time limit, at least 60 s)."),
    image_size: Optional[int] = typer.Option(None, help="Override the camera size (expert only)."),
    env_arg: list[str] = typer.Option([], help="Env constructor argument key=value (repeatable), e.g. "
                                      "'perturb={\"lighting\": 3}'; overrides the policy's."),
    offline_episodes: int = typer.Option(5, min=0, help="Offline decision metrics (accuracy, recall, F1) on the "
                                         "expert's rollouts of the first N evaluation seeds (0: off)."),
    offline_demos: Optional[Path] = typer.Option(None, help="A held-out dataset for the offline metrics instead."),
    backend: str = typer.Option("local", help="Where episodes run: `local` processes or `ray` actors (pip install "
                                "'imitlab[ray]'); per-seed results are the same."),
    device: str = typer.Option("cpu", help="Where a torch policy runs in each worker: cpu, cuda or auto (CUDA when "
                               "present). The default keeps results identical from machine to machine."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (`auto`: the running cluster; default: "
                                          "start a local Ray instance)."),
    chunk_exec: Optional[str] = typer.Option(None, help="A chunk head's execution: `open` (a whole chunk, then "
                                             "infer again) or `ensemble` (ACT's temporal ensembling; default: the "
                                             "policy's own)."),
    sample: bool = typer.Option(False, help="A gmm head samples its mixture (seeded per episode) instead of acting "
                                "on the most likely mode."),
) -> None:
    """Closed-loop evaluation on held-out seeds: success rate with a 95 % Wilson interval, metrics, videos.

    An episode whose worker raises, crashes or hangs, or whose simulation goes unstable, is an error: counted
    apart, never as a failure. Ctrl-C or SIGTERM writes a partial report of the finished episodes."""
    from imitlab.agents import EXPERT, resolve_agent
    from imitlab.core.action_execution import ActOptions
    from imitlab.core.fsio import check_out_dir
    from imitlab.evaluation.evaluate import EvaluationInterrupted, evaluate_to_folder, summary_line

    if out is None:
        out = Path(agent) / "eval" if agent != EXPERT else Path("runs") / "eval-expert"
    check_out_dir(out, overwrite)  # before loading anything
    spec = resolve_agent(agent, env, parse_env_kwargs(env_arg, image_size), device, ActOptions(chunk_exec, sample))
    seeds = list(range(seed_start, seed_start + episodes))
    offline = None
    if offline_episodes or offline_demos:
        from imitlab.evaluation.offline import offline_metrics

        offline = offline_metrics(spec, seeds[:offline_episodes], offline_demos)
    try:
        summary, paths = evaluate_to_folder(spec, seeds, out, overwrite=overwrite, videos=videos, offline=offline,
                                            workers=workers or None, episode_timeout=episode_timeout or None,
                                            backend=backend, address=address)
    except EvaluationInterrupted as interrupted:
        partial = f"partial report: {out / 'report.md'}" if interrupted.summary.episodes else "no episode finished"
        typer.echo(f"imitlab: interrupted: {summary_line(interrupted.summary.to_json())}; {partial}", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"{summary_line(summary.to_json())}; report: {paths['markdown']} and {paths['html']}")


def compare_cmd(
    agent_a: str = typer.Argument(..., help="A: a policy or run folder, a bundle, or `expert`."),
    agent_b: str = typer.Argument(..., help="B, evaluated on the same seeds."),
    env: Optional[str] = typer.Option(None, help="Task id (needed only when both sides are `expert`)."),
    episodes: int = typer.Option(50, min=1, help="Number of held-out seeds."),
    seed_start: int = typer.Option(HELD_OUT_SEED_START, help="First seed."),
    workers: int = typer.Option(0, min=0, help="Worker processes (0: all cores)."),
    out: Path = typer.Option(Path("runs/compare"), help="Folder for compare.json and compare.md."),
    overwrite: bool = typer.Option(False, help="Replace --out if it holds an earlier comparison."),
    episode_timeout: float = typer.Option(0.0, min=0.0, help="Wall seconds per episode before it counts as an "
                                          "error (0: 10x the env's time limit, at least 60 s)."),
) -> None:
    """Evaluate two policies on the same seeds and report the paired success difference (McNemar, Newcombe CI).
    A seed where either side's episode is an error is left out of the pairing and listed."""
    from imitlab.agents import resolve_pair
    from imitlab.core.fsio import check_out_dir
    from imitlab.evaluation.compare import compare, write_comparison

    check_out_dir(out, overwrite)
    spec_a, spec_b = resolve_pair(agent_a, agent_b, env)
    result = compare(spec_a, spec_b, list(range(seed_start, seed_start + episodes)), workers=workers or None,
                     episode_timeout=episode_timeout or None)
    paths = write_comparison(result, out)
    s = result["success"]
    low, high = s["success_diff_ci95"]
    typer.echo(f"A only: {s['only_a']}, B only: {s['only_b']}, both: {s['both_succeed']}, neither: {s['neither']}; "
               f"success A - B = {100 * s['success_diff']:+.1f} points (95 % CI {100 * low:+.1f} to {100 * high:+.1f}), "
               f"McNemar p = {s['mcnemar_p']:.3g}"
               + (f"; {len(result['errors'])} seeds left out (errors)" if result["errors"] else "")
               + f"; report: {paths['markdown']}")
