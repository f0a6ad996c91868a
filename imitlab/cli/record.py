"""``imitlab record``: expert (or keyboard) demonstrations into a dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imitlab.cli.env_args import parse_env_kwargs
from imitlab.core.seeds import DEMO_SEED_START


def record_cmd(
    env: str = typer.Option(..., help="Task id, e.g. imitlab/LaneFollow-v0."),
    out: Path = typer.Option(..., help="Dataset folder (created, or extended if it holds the same env)."),
    episodes: int = typer.Option(50, min=1, help="Episodes to record."),
    seed_start: Optional[int] = typer.Option(None, help="First seed; episode i uses seed_start + i (default: "
                                             f"{DEMO_SEED_START}, or the seed after the last one already in --out)."),
    noise: float = typer.Option(0.0, min=0.0, help="DART noise: std of Gaussian noise on the executed action."),
    image_size: Optional[int] = typer.Option(None, help="Camera image size (env default if omitted)."),
    env_arg: list[str] = typer.Option([], help="Extra env constructor argument key=value (repeatable)."),
    teleop: bool = typer.Option(False, help="Drive yourself with the keyboard in an OpenCV window (needs a display)."),
    randomize: str = typer.Option("", help="Domain randomisation: perturbations (e.g. lighting,colours; `visual`, "
                                  "`all`) at a severity 0-5 drawn per episode from its seed."),
    workers: int = typer.Option(1, min=0, help="Worker processes or Ray actors stepping their own env (0: one per "
                                "core, or per CPU of the Ray cluster). Episodes do not depend on it."),
    backend: str = typer.Option("local", help="Where episodes run: `local` processes or `ray` (pip install "
                                "'imitlab[ray]'). This process alone writes the files."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (`auto`: the running cluster; default: "
                                          "start a local Ray instance)."),
) -> None:
    """Record expert (or, with --teleop, human) demonstrations into a dataset folder."""
    from imitlab.demos.recorder import record as run_record
    from imitlab.demos.teleop import record_teleop

    env_kwargs = parse_env_kwargs(env_arg, image_size)
    if teleop:
        summary = record_teleop(env, out, episodes, seed_start, env_kwargs)
    else:
        summary = run_record(env, out, episodes, seed_start, noise, env_kwargs,
                             randomize=randomize.split(",") if randomize else (), workers=workers or None,
                             backend=backend, address=address)
    typer.echo(f"wrote {summary.episodes} episodes ({summary.steps} steps, {summary.successes} successful) to {summary.path}")
