"""The ``imitlab`` command line: record -> train -> eval -> deploy, and the quickstart that runs them all.

One module per command group; each imports its heavy modules inside the command, so ``imitlab --help`` starts fast.
"""

from __future__ import annotations

import sys

import typer

from imitlab.cli.analysis import explain_cmd, robustness_cmd, study_app
from imitlab.cli.benchmark import benchmark_app
from imitlab.cli.demos import demos_app
from imitlab.cli.deploy import deploy_cmd, serve_cmd
from imitlab.cli.evaluate import compare_cmd, evaluate_cmd
from imitlab.cli.quickstart import quickstart_cmd
from imitlab.cli.record import record_cmd
from imitlab.cli.studio import studio_cmd
from imitlab.cli.train import train_cmd
from imitlab.core.errors import ImitlabError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Record expert demos, clone them into a pretrained-CNN policy, validate it in closed loop.")

app.command("record")(record_cmd)
app.command("train")(train_cmd)
app.command("eval")(evaluate_cmd)
app.command("quickstart")(quickstart_cmd)
app.add_typer(demos_app, name="demos")
app.command("deploy")(deploy_cmd)
app.command("serve")(serve_cmd)
app.command("compare")(compare_cmd)
app.command("studio")(studio_cmd)
app.command("robustness")(robustness_cmd)
app.command("explain")(explain_cmd)
app.add_typer(study_app, name="study")
app.add_typer(benchmark_app, name="benchmark")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except ImitlabError as exc:
        typer.echo(f"imitlab: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("imitlab: interrupted", err=True)
        sys.exit(130)
