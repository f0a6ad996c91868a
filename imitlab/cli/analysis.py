"""``imitlab robustness`` (distribution shifts), ``imitlab explain`` (saliency videos) and ``imitlab study``
(data efficiency sweeps): does a policy earn its place."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imitlab.cli.env_args import parse_env_kwargs
from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START

study_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Sweeps that measure what a backbone or recipe is worth.")


BACKEND = typer.Option("local", help="Where episodes (and a study's training runs) go: `local` processes or `ray` "
                       "(pip install 'imitlab[ray]'); results are the same.")
ADDRESS = typer.Option(None, help="Ray cluster address (`auto`: the running cluster; default: start a local Ray "
                       "instance).")


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ImitlabError(f"{option} expects comma-separated integers, got {text!r}") from None


def robustness_cmd(
    run: str = typer.Argument(..., help="A policy or run folder, a bundle, or `expert`."),
    perturbations: str = typer.Option("all", help="Comma-separated perturbations, or `all`, `visual`, `dynamics`."),
    severities: str = typer.Option("1,3,5", help="Comma-separated severities (1-5)."),
    episodes: int = typer.Option(20, min=1, help="Held-out seeds per cell."),
    seed_start: int = typer.Option(HELD_OUT_SEED_START, help="First seed."),
    compare: Optional[str] = typer.Option(None, help="A second policy, run on the same seeds (paired statistics)."),
    env: Optional[str] = typer.Option(None, help="Task id (needed only for `expert`)."),
    env_arg: list[str] = typer.Option([], help="Env constructor argument key=value (repeatable), e.g. "
                                      "time_limit_s=20; overrides the policy's."),
    workers: int = typer.Option(0, min=0, help="Worker processes or Ray actors (0: all cores; Ray: all CPUs of the "
                                "cluster). Results do not depend on it."),
    videos: int = typer.Option(3, min=0, help="Film a failing episode of each of the N worst cells."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: <run>/robustness)."),
    backend: str = BACKEND,
    address: Optional[str] = ADDRESS,
) -> None:
    """Success under each perturbation and severity on held-out seeds: degradation curves, JSON + HTML report."""
    from rich.console import Console
    from rich.table import Table

    from imitlab.agents import resolve_agents
    from imitlab.evaluation.robustness import (PAIRED_HEADER, paired_rows, run_suite, summary_rows,
                                              write_suite_report)

    agents = {run: run} if compare is None else {run: run, compare: compare}
    if len(agents) == 1 and compare is not None:
        raise ImitlabError("--compare needs a different policy than RUN")
    out = out or (Path(run) / "robustness" if run != "expert" else Path("runs") / "robustness-expert")
    specs = resolve_agents(agents, env, parse_env_kwargs(env_arg, None))
    report = run_suite(specs, perturbations.split(","), _int_list(severities, "--severities"),
                       list(range(seed_start, seed_start + episodes)), workers=workers or None,
                       video_dir=out / "videos", worst_videos=videos, backend=backend, address=address)
    paths = write_suite_report(report, out)
    console = Console(highlight=False, soft_wrap=True)
    # Agents are letters in the tables (a run's path would be cut to the same prefix for both), named once here.
    letters = {label: chr(ord("A") + i) for i, label in enumerate(report["agents"])}
    for label, letter in letters.items():
        console.print(f"{letter} = {label}")
    table = Table(title=f"success on {episodes} held-out seeds per cell (95 % Wilson interval)")
    for head in ["agent", "perturbation", "clean", *(f"severity {s}" for s in report["severities"])]:
        table.add_column(head)
    for label, *row in summary_rows(report):
        table.add_row(letters[label], *row)
    console.print(table)
    if report.get("paired"):
        paired = Table(title="paired on the same seeds: A - B (Newcombe interval, exact McNemar p)")
        for head in PAIRED_HEADER:
            paired.add_column(head)
        for row in paired_rows(report):
            paired.add_row(*row)
        console.print(paired)
    typer.echo(f"report: {paths['html']} (plot {paths['plot']}, data {paths['json']})")


def explain_cmd(
    run: Path = typer.Argument(..., help="A policy or run folder."),
    episodes: int = typer.Option(3, min=1, help="Episodes to film."),
    seed_start: int = typer.Option(HELD_OUT_SEED_START, help="First seed."),
    method: str = typer.Option("gradcam", help="gradcam (encoder's last feature map) or occlusion (slower)."),
    env_arg: list[str] = typer.Option([], help="Env constructor argument key=value (repeatable), e.g. "
                                      "'perturb={\"lighting\": 3}'."),
    out: Optional[Path] = typer.Option(None, help="Video folder (default: <run>/explain)."),
) -> None:
    """Rollout videos with an attribution heat map over the camera image, plus the weight-randomisation check."""
    from imitlab.evaluation.saliency import explain

    out = out or run / "explain"
    report = explain(run, list(range(seed_start, seed_start + episodes)), out, method=method,
                     env_kwargs=parse_env_kwargs(env_arg, None))
    for e in report["episodes"]:
        typer.echo(f"seed {e['seed']}: {'success' if e['success'] else 'failure'}, {e['length']} steps -> {e['video']}")
    check = report["randomization_check"]
    rho = ", ".join(f"{k} {v:+.2f}" for k, v in check["rank_correlation"].items())
    typer.echo(f"randomisation check on {check['frames']} frames: rank correlation of trained vs random-weight "
               f"maps {rho} (near 0: the maps depend on the learned weights)")


def _train_args(pairs: list[str]) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """``key=value`` (every run) or ``backbone:key=value`` (that backbone's runs), values parsed as JSON."""

    common: dict[str, object] = {}
    per_backbone: dict[str, dict[str, object]] = {}
    for pair in pairs:
        head, sep, rest = pair.partition(":")
        if sep and "=" not in head:
            per_backbone.setdefault(head, {}).update(parse_env_kwargs([rest], None))
        else:
            common.update(parse_env_kwargs([pair], None))
    return common, per_backbone


@study_app.command("data-efficiency")
def data_efficiency_cmd(
    env: str = typer.Option(..., help="Task id, e.g. imitlab/Push-v0."),
    out: Path = typer.Option(..., help="Study folder (rerun the same command to resume)."),
    demos: str = typer.Option("5,10,20", help="Comma-separated numbers of demonstrations (nested subsets)."),
    backbones: str = typer.Option("lite0,nature_cnn", help="Comma-separated backbones; the first two are paired."),
    train_seeds: int = typer.Option(1, min=1, help="Training seeds per (backbone, demos) cell."),
    episodes: int = typer.Option(20, min=1, help="Held-out evaluation seeds per run."),
    perturbations: str = typer.Option("visual", help="Perturbations for the shifted curve (`` for none)."),
    severity: int = typer.Option(3, help="Severity of the shifted curve (1-5)."),
    noise: float = typer.Option(0.2, min=0.0, help="DART noise of the recorded demonstrations."),
    image_size: Optional[int] = typer.Option(None, help="Camera image size (env default if omitted)."),
    env_arg: list[str] = typer.Option([], help="Env constructor argument key=value (repeatable)."),
    epochs: int = typer.Option(10, min=1, help="Training epochs per run."),
    equal_updates: bool = typer.Option(False, help="Scale each run's epochs (and eval_every) by largest/its demos: "
                                       "every run about as many gradient steps as the largest, whose epochs "
                                       "--epochs gives."),
    train_arg: list[str] = typer.Option([], help="TrainConfig field key=value for every run, or backbone:key=value "
                                        "for one backbone's (repeatable), e.g. lite0:pooling=spatial_softmax."),
    offline_episodes: int = typer.Option(5, min=0, help="Expert rollouts scoring the offline decision metrics."),
    workers: int = typer.Option(0, min=0, help="Evaluation worker processes or Ray actors (0: all cores or CPUs)."),
    backend: str = BACKEND,
    address: Optional[str] = ADDRESS,
) -> None:
    """Success against number of demos per backbone, in distribution and shifted, with paired tests."""
    from imitlab.training.study import StudyConfig, run_study

    common, per_backbone = _train_args(train_arg)
    config = StudyConfig(
        env_id=env, out=str(out), demos=tuple(_int_list(demos, "--demos")),
        backbones=tuple(b.strip() for b in backbones.split(",") if b.strip()), train_seeds=train_seeds,
        env_kwargs=parse_env_kwargs(env_arg, image_size), noise=noise, episodes=episodes,
        perturbations=tuple(p for p in perturbations.split(",") if p.strip()), severity=severity,
        offline_episodes=offline_episodes, train={"epochs": epochs, **common}, backbone_train=per_backbone,
        equal_updates=equal_updates,
        workers=workers, backend=backend, address=address)
    summary = run_study(config)
    for p in summary["points"]:
        shifted = f", shifted {100 * p['shifted']['success_rate']:.0f} %" if "shifted" in p else ""
        typer.echo(f"{p['backbone']:>10} {p['demos']:>4} demos: clean {100 * p['clean']['success_rate']:.0f} % "
                   f"({p['clean']['successes']}/{p['clean']['episodes']}){shifted}")
    typer.echo(f"report: {out / 'study.md'} (plot {out / 'study.png'}, data {out / 'study.json'})")
