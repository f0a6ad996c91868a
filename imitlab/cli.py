"""The ``imitlab`` command line: record -> train -> eval, and the quickstart that runs them all."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from imitlab.errors import ImitlabError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Record expert demos, clone them into a pretrained-CNN policy, validate it in closed loop.")


#: A value starting like JSON (list, object, quoted string, number, true/false/null) must be valid JSON.
_LOOKS_LIKE_JSON = re.compile(r"\s*([\[{\"]|-?\d|(true|false|null)\s*$)")


def _parse_env_kwargs(pairs: list[str], image_size: int | None) -> dict[str, Any]:
    """``key=value`` pairs -> env constructor kwargs. A value that looks like JSON is parsed strictly (a typo in
    ``'cameras=["agentview",'`` is an error, not the string itself); any other value is a string."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ImitlabError(f"--env-arg expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        if not _LOOKS_LIKE_JSON.match(raw):
            kwargs[key] = raw
            continue
        try:
            kwargs[key] = json.loads(raw, parse_constant=_reject_constant)
        except ValueError as error:
            raise ImitlabError(f"--env-arg {key}={raw!r}: not valid JSON ({error})") from None
    if image_size is not None:
        kwargs["image_size"] = image_size
    return kwargs


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


@app.command()
def record(
    env: str = typer.Option(..., help="Task id, e.g. imitlab/LaneFollow-v0."),
    out: Path = typer.Option(..., help="Dataset folder (created, or extended if it holds the same env)."),
    episodes: int = typer.Option(50, min=1, help="Episodes to record."),
    seed_start: Optional[int] = typer.Option(None, help="First seed; episode i uses seed_start + i (default: 0, or "
                                             "the seed after the last one already in --out)."),
    noise: float = typer.Option(0.0, min=0.0, help="DART noise: std of Gaussian noise on the executed action."),
    image_size: Optional[int] = typer.Option(None, help="Camera image size (env default if omitted)."),
    env_arg: list[str] = typer.Option([], help="Extra env constructor argument key=value (repeatable)."),
    teleop: bool = typer.Option(False, help="Drive yourself with the keyboard in an OpenCV window (needs a display)."),
    randomize: str = typer.Option("", help="Domain randomisation: perturbations (e.g. lighting,colours; `visual`, "
                                  "`all`) at a severity 0-5 drawn per episode from its seed."),
) -> None:
    """Record expert (or, with --teleop, human) demonstrations into a dataset folder."""
    from imitlab.demos.recorder import record as run_record
    from imitlab.demos.teleop import record_teleop

    env_kwargs = _parse_env_kwargs(env_arg, image_size)
    if teleop:
        summary = record_teleop(env, out, episodes, seed_start, env_kwargs)
    else:
        summary = run_record(env, out, episodes, seed_start, noise, env_kwargs,
                             randomize=randomize.split(",") if randomize else ())
    typer.echo(f"wrote {summary.episodes} episodes ({summary.steps} steps, {summary.successes} successful) to {summary.path}")


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="Dataset folder written by `imitlab record`."),
    out: Path = typer.Option(..., help="Run folder for checkpoints, logs and TensorBoard events."),
    backbone: str = typer.Option("lite0", help="lite0 (ImageNet-pretrained EfficientNet-Lite0) or nature_cnn."),
    pretrained: bool = typer.Option(True, help="Start lite0 from ImageNet weights."),
    pooling: str = typer.Option("avg", help="lite0 pooling: avg, or spatial_softmax (keypoints; for manipulation)."),
    keypoints: int = typer.Option(32, min=1, help="Keypoints of spatial_softmax pooling."),
    freeze_backbone: bool = typer.Option(False, help="Train only the head on cached backbone features."),
    freeze_blocks: int = typer.Option(0, min=0, help="lite0: keep the stem + first N-1 blocks at ImageNet weights and "
                                      "cache their output (6: ~3x faster epochs, no augmentation)."),
    freeze_batchnorm: bool = typer.Option(False, help="lite0: normalise with the ImageNet BatchNorm statistics "
                                          "while fine-tuning too (training and rollouts then agree)."),
    backbone_lr: float = typer.Option(3e-4, help="Backbone learning rate."),
    head_lr: float = typer.Option(1e-3, help="Head learning rate."),
    ema_decay: float = typer.Option(0.0, min=0.0, max=0.99999, help="Validate and save a moving average of the "
                                    "weights with this decay per step (e.g. 0.998; 0: the raw weights)."),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(64, min=1),
    augment_shift: int = typer.Option(4, min=0, help="Random-shift augmentation padding in pixels (0: off)."),
    eval_every: int = typer.Option(1, min=1, help="Closed-loop validation every N epochs."),
    eval_episodes: int = typer.Option(8, min=1, help="Validation rollouts per check."),
    patience: int = typer.Option(0, min=0, help="Early stop after N validations without improvement (0: off)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, min=0, help="torch CPU threads and image-decoding threads (0: all cores)."),
    val_fraction: float = typer.Option(0.1, min=0.0, max=0.9, help="Fraction of episodes held out for validation loss."),
    init_policy: Optional[Path] = typer.Option(None, help="Start from this saved policy's weights (same backbone)."),
    loader_mode: str = typer.Option("auto", help="memory (decode the demos once), chunked (stream them from disk "
                                    "every epoch) or auto (memory when they fit --memory-budget-mb)."),
    memory_budget_mb: float = typer.Option(4096.0, min=0.0, help="MiB of decoded demos allowed in memory."),
    dagger_rounds: int = typer.Option(0, min=0, help="DAgger: rounds of policy rollouts labelled by the expert."),
    dagger_episodes: int = typer.Option(10, min=1, help="DAgger: episodes collected per round."),
    dagger_beta: float = typer.Option(0.5, min=0.0, max=1.0, help="DAgger: expert-control probability in round 1."),
    dagger_epochs: int = typer.Option(0, min=0, help="DAgger: fine-tuning epochs per round (0: --epochs)."),
) -> None:
    """Behaviour cloning: fit a policy to a dataset; the checkpoint kept is the best in closed loop."""
    from imitlab.training.bc import TrainConfig, train as run_train
    from imitlab.training.dagger import DaggerConfig, run_dagger

    config = TrainConfig(
        dataset=str(dataset), out=str(out), backbone=backbone, pretrained=pretrained, pooling=pooling,
        keypoints=keypoints, freeze_backbone=freeze_backbone, freeze_blocks=freeze_blocks,
        freeze_batchnorm=freeze_batchnorm, backbone_lr=backbone_lr, head_lr=head_lr, ema_decay=ema_decay, epochs=epochs,
        batch_size=batch_size, augment_shift=augment_shift, eval_every=eval_every, eval_episodes=eval_episodes,
        patience=patience, seed=seed, threads=threads, val_fraction=val_fraction,
        init_policy=str(init_policy) if init_policy else None, loader_mode=loader_mode,
        memory_budget_mb=memory_budget_mb,
    )
    if dagger_rounds:
        log = run_dagger(DaggerConfig(config, rounds=dagger_rounds, episodes_per_round=dagger_episodes,
                                      beta=dagger_beta, round_epochs=dagger_epochs or None))
        best = log["rounds"][log["chosen_round"]]["bc"]
    else:
        best = run_train(config)["best"]
    typer.echo(f"best policy: {out / 'best'} (epoch {best['epoch']}, validation success "
               f"{100 * best['rollout']['success_rate']:.0f} % on {eval_episodes} seeds)")


@app.command("eval")
def evaluate_cmd(
    agent: str = typer.Argument(..., help="A policy or run folder, or `expert`."),
    env: Optional[str] = typer.Option(None, help="Task id (required for `expert`; checked against a policy's)."),
    episodes: int = typer.Option(50, min=1, help="Number of held-out seeds."),
    seed_start: int = typer.Option(1_000_000, help="First seed (held-out range starts at 1000000)."),
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
    from imitlab.evaluation.evaluate import evaluate, write_report

    if out is None:
        out = Path(agent) / "eval" if agent != "expert" else Path("runs") / "eval-expert"
    kwargs = _parse_env_kwargs(env_arg, image_size)
    seeds = list(range(seed_start, seed_start + episodes))
    summary = evaluate(agent, seeds, env_id=env, env_kwargs=kwargs, workers=workers or None,
                       video_dir=out / "videos", videos=videos)
    if offline_episodes or offline_demos:
        from imitlab.evaluation.evaluate import resolve_agent
        from imitlab.evaluation.offline import offline_metrics

        summary.offline = offline_metrics(resolve_agent(agent, env, kwargs), seeds[:offline_episodes], offline_demos)
    paths = write_report(summary, out)
    data = summary.to_json()
    low, high = data["success_ci95"]
    typer.echo(f"success {data['successes']}/{data['episodes']} = {100 * data['success_rate']:.0f} % "
               f"(95 % CI {100 * low:.0f}-{100 * high:.0f} %); report: {paths['markdown']} and {paths['html']}")


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), help="Folder for the demos, both runs and the report."),
) -> None:
    """Record driving demos, fine-tune Lite0 and a scratch CNN on them, evaluate both on 50 held-out seeds."""
    from imitlab.quickstart import QuickstartConfig, run_quickstart

    report = run_quickstart(QuickstartConfig(out=out))
    typer.echo(f"\nreport: {report}")


from imitlab.cli_demos import demos_app  # noqa: E402

app.add_typer(demos_app, name="demos")

from imitlab.cli_deploy import register as register_deploy  # noqa: E402

register_deploy(app)

from imitlab.studio.cli import register as register_studio  # noqa: E402

register_studio(app)

from imitlab.cli_analysis import register as register_analysis  # noqa: E402

register_analysis(app)


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


if __name__ == "__main__":
    main()
