"""``imitlab quickstart``: the whole driving pipeline in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def quickstart_cmd(
    out: Path = typer.Option(Path("runs/quickstart"), help="Folder for the demos, both runs and the report."),
    overwrite: bool = typer.Option(False, help="Retrain runs already in --out (recorded demos are kept)."),
) -> None:
    """Record driving demos, fine-tune Lite0 and a scratch CNN on them, evaluate both on 50 held-out seeds."""
    from imitlab.quickstart import QuickstartConfig, run_quickstart

    report = run_quickstart(QuickstartConfig(out=out, overwrite=overwrite))
    typer.echo(f"\nreport: {report}")
