"""``imitlab benchmark town``: the CoRL2017 / NoCrash matrix on Town-v0 (success, route completion,
infractions per km, driving score), for a policy, the expert and any run compared with it on the same routes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from imitlab.cli.env_args import parse_env_kwargs
from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START

benchmark_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                            help="Standard benchmarks on held-out routes, towns and weathers.")

#: Default number of held-out routes per cell (CoRL2017 drives 25 per task and condition).
EPISODES_PER_CELL = 25


def _names(text: str) -> list[str]:
    return [] if text.strip() == "all" else [item.strip() for item in text.split(",") if item.strip()]


@benchmark_app.command("town")
def town_cmd(
    run: str = typer.Argument(..., help="A policy or run folder, a bundle, or `expert`."),
    episodes: int = typer.Option(EPISODES_PER_CELL, help="Held-out routes per cell."),
    seed_start: int = typer.Option(HELD_OUT_SEED_START, help="First seed (cell i starts at seed_start + i * 10000)."),
    tasks: str = typer.Option("all", help="Comma-separated rows: straight, one_turn, navigation, navigation_dense."),
    conditions: str = typer.Option("all", help="Comma-separated columns: training, new_town, new_weather, "
                                   "new_town_weather."),
    compare: list[str] = typer.Option([], help="Another policy, run or bundle on the same routes, paired against "
                                      "RUN (repeatable)."),
    with_expert: bool = typer.Option(False, help="Add the privileged expert's row (paired against RUN)."),
    dense_traffic: int = typer.Option(20, help="Cars in the navigation_dense task."),
    env_arg: list[str] = typer.Option([], help="Env constructor argument key=value (repeatable), e.g. image_size=64 "
                                      "for the expert; town, weather, task and traffic are the matrix's."),
    workers: int = typer.Option(0, min=0, help="Worker processes (0: all cores). Results do not depend on it."),
    backend: str = typer.Option("local", help="Where episodes run: `local` processes or `ray` actors; per-seed "
                                "results are the same."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (`auto`: the running cluster)."),
    episode_timeout: float = typer.Option(0.0, min=0.0, help="Wall seconds per episode before it counts as an "
                                          "error (0: 10x the longest route's time limit)."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: <run>/benchmark-town, or "
                                       "runs/benchmark-town-expert)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it holds an earlier report."),
) -> None:
    """Success (95 % Wilson interval), route completion, infractions per km and driving score per task and
    condition, with the exact seeds; JSON + HTML report, paired tests against every compared agent."""
    from rich.console import Console
    from rich.table import Table

    from imitlab.agents import EXPERT, resolve_agent
    from imitlab.core.fsio import check_out_dir
    from imitlab.evaluation.town_benchmark import (ENV_ID, MATRIX_KWARGS, BenchmarkInterrupted, run_benchmark,
                                                   select_cells)
    from imitlab.evaluation.town_report import (PAIRED_HEAD, SUMMARY_HEAD, paired_rows, seed_lines, summary_rows,
                                                write_benchmark_report)

    if out is None:
        out = Path(run) / "benchmark-town" if Path(run).is_dir() else Path("runs") / f"benchmark-town-{Path(run).stem}"
    check_out_dir(out, overwrite)
    overrides = parse_env_kwargs(env_arg, None)
    fixed = sorted(set(overrides) & set(MATRIX_KWARGS))
    if fixed:
        raise ImitlabError(f"--env-arg {', '.join(fixed)}: the benchmark sets {', '.join(MATRIX_KWARGS)} per cell")
    if dense_traffic < 0:
        raise ImitlabError(f"--dense-traffic must be a non-negative number of cars, got {dense_traffic}")
    cells = select_cells(_names(tasks), _names(conditions), dense_traffic)
    names = [run, *compare]
    if len(set(names)) != len(names):
        raise ImitlabError("each --compare must name a different agent than RUN and the other --compare runs")
    if with_expert and EXPERT not in names:
        names.append(EXPERT)
    specs = {name: resolve_agent(name, ENV_ID, overrides) for name in names if name != EXPERT}
    if EXPERT in names:  # in the first policy's env configuration (camera size, ...), as `imitlab compare` does
        specs[EXPERT] = resolve_agent(EXPERT, ENV_ID, next(iter(specs.values())).env_kwargs if specs else overrides)
    specs = {name: specs[name] for name in names}
    try:
        report = run_benchmark(specs, cells, episodes, seed_start, workers=workers or None,
                               episode_timeout=episode_timeout or None, backend=backend, address=address)
    except BenchmarkInterrupted as interrupted:
        paths = write_benchmark_report(interrupted.report, out)
        typer.echo(f"imitlab: interrupted; partial report: {paths['html']}", err=True)
        raise typer.Exit(130) from None
    paths = write_benchmark_report(report, out)

    # Piped into a log the table keeps its columns whole rather than wrapping each cell into 80 columns.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"Town benchmark, {episodes} held-out routes per cell")
    for head in SUMMARY_HEAD:
        table.add_column(head)
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    if report["paired"]:
        paired = Table(title="Paired on the same seeds")
        for head in PAIRED_HEAD:
            paired.add_column(head)
        for row in paired_rows(report):
            paired.add_row(*row)
        console.print(paired)
    for line in seed_lines(report):
        typer.echo(line)
    typer.echo(f"report: {paths['html']} (data {paths['json']})")
