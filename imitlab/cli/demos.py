"""``imitlab demos ...``: inspect, audit, watch, reshape and convert demonstration datasets.

No command changes an input dataset's episode files: merge, filter and import write new folders, export
writes a new file (robomimic) or folder (LeRobot), and split only (re)writes the dataset's ``masks.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table

from imitlab.core.errors import ImitlabError

if TYPE_CHECKING:
    from imitlab.demos.audit import AuditReport

demos_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Inspect, audit, play, merge/split/filter and convert demonstration datasets.")

DATASET = typer.Argument(..., help="Dataset folder written by `imitlab record`.")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _success_text(successes: int, episodes: int, unknown: int) -> str:
    known = episodes - unknown
    text = f"{100 * successes / known:.1f} % ({successes}/{known})" if known else "unknown"
    return text + (f", not recorded for {unknown} episodes" if unknown else "")


def _open(path: Path):
    from imitlab.demos.dataset import DemoDataset

    return DemoDataset(path)


@demos_app.command()
def info(dataset: Path = DATASET, as_json: bool = typer.Option(False, "--json", help="Print JSON instead.")) -> None:
    """Summary: env, episodes, steps, success rate, sources, observation shapes, disk size, masks, exclusions."""
    from dataclasses import asdict

    from imitlab.demos.stats import summarize

    s = summarize(_open(dataset))
    if as_json:
        typer.echo(json.dumps({**asdict(s), "success_rate": s.success_rate}, indent=2))
        return
    table = Table(title=f"dataset {s.path}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("env", f"{s.env_id} {json.dumps(s.env_kwargs) if s.env_kwargs else ''}"),
        ("episodes", str(s.episodes)),
        ("steps", f"{s.steps} (length min {s.length_min}, median {s.length_median:g}, max {s.length_max})"),
        ("success rate", _success_text(s.successes, s.episodes, s.success_unknown)),
        ("mean return", f"{s.mean_return:.2f}"),
        ("sources", ", ".join(f"{k}: {v}" for k, v in s.sources.items()) or "-"),
        ("noise std", ", ".join(f"{k}: {v}" for k, v in s.noise_levels.items()) or "-"),
        *((f"obs {k}", v) for k, v in s.observation.items()),
        ("action dim", str(s.action_dim)),
        ("disk size", _human_bytes(s.disk_bytes)),
        ("masks", ", ".join(f"{k}: {v}" for k, v in s.masks.items()) or "none (see `imitlab demos split`)"),
        ("excluded", "; ".join(f"{k} ({v})" for k, v in s.excluded.items()) or "none"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    _console().print(table)


@demos_app.command()
def stats(
    dataset: Path = DATASET,
    plot: Optional[Path] = typer.Option(None, help="PNG of per-dimension histograms (default: ./<dataset>-stats.png)."),
    mask: Optional[str] = typer.Option(None, help="Only episodes in this mask (e.g. train)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Action and state statistics per dimension, plus a histogram plot."""
    from imitlab.demos.stats import array_stats, plot_stats

    ds = _open(dataset)
    result = array_stats(ds, mask)
    png = plot_stats(result, plot or Path(f"{ds.path.resolve().name}-stats.png"), f"{ds.env_id} {ds.path.name}")
    data = result.to_json()
    if as_json:
        typer.echo(json.dumps({**data, "plot": str(png)}, indent=2))
        return
    console = _console()
    groups = [("actions", data["actions"], data["action_labels"])]
    if "state" in data:
        groups.append(("state", data["state"], data["state_labels"]))
    for title, desc, labels in groups:
        table = Table(title=f"{title} ({data['samples']} steps)")
        table.add_column("dim")
        for name in desc:
            table.add_column(name, justify="right")
        if title == "actions":
            table.add_column("at +-1", justify="right")
        for i, label in enumerate(labels):
            cells = [f"{desc[name][i]:.3f}" for name in desc]
            if title == "actions":
                cells.append(f"{100 * data['action_saturation'][i]:.1f} %")
            table.add_row(label, *cells)
        console.print(table)
    console.print(f"plot: {png}")


@demos_app.command("audit")
def audit_cmd(
    dataset: Path = DATASET,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    short_ratio: float = typer.Option(0.5, help="Flag episodes shorter than this x the median length."),
    long_ratio: float = typer.Option(2.0, help="Flag episodes longer than this x the median length."),
    saturation: float = typer.Option(0.5, help="Flag when more than this fraction of action values is at +-1."),
    jerk_step: float = typer.Option(1.0, help="A step-to-step action change above this counts as a jump."),
    jerk_fraction: float = typer.Option(0.05, help="Flag when more than this fraction of steps jump."),
    idle_steps: int = typer.Option(20, help="Flag this many consecutive steps without state change."),
) -> None:
    """Flag suspicious episodes (failed, too short/long, NaN/inf, saturated, jerky, idle, duplicates).

    Findings are not errors: the exit code is 0 unless the dataset or one of its episode files cannot be read.
    """
    from imitlab.demos.audit import AuditConfig, audit

    config = AuditConfig(short_ratio=short_ratio, long_ratio=long_ratio, saturation_fraction=saturation,
                         jerk_step=jerk_step, jerk_fraction=jerk_fraction, idle_steps=idle_steps)
    report = audit(_open(dataset), config)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_audit(report)
    corrupt = sorted(report.flagged({"corrupt"}))
    if corrupt:
        raise ImitlabError(f"{len(corrupt)} episode file(s) cannot be read: {', '.join(corrupt[:5])}"
                           f"{' ...' if len(corrupt) > 5 else ''}; the others were audited")


def _print_audit(report: AuditReport) -> None:
    console = _console()
    if report.flags:
        table = Table(title=f"audit of {report.dataset}")
        table.add_column("episode")
        table.add_column("check")
        table.add_column("reason")
        for flag in report.flags:
            table.add_row(flag.episode, flag.check, flag.reason)
        console.print(table)
    counts = ", ".join(f"{k}: {v}" for k, v in report.counts().items())
    console.print(f"{len(report.flagged())} of {report.episodes} episodes flagged" + (f" ({counts})" if counts else "")
                  + ("; drop them with `imitlab demos filter --drop-audit-flags`" if report.flags else ""))


@demos_app.command()
def play(
    dataset: Path = DATASET,
    episode: list[str] = typer.Option([], help="Episode number or name (repeatable; default: the first)."),
    all_episodes: bool = typer.Option(False, "--all", help="Play every episode."),
    out: Optional[Path] = typer.Option(None, help="Video folder (default: ./<dataset>-videos)."),
    resimulate: bool = typer.Option(False, help="Replay the actions from the seed and film the env's render view."),
) -> None:
    """Write episodes as annotated mp4s (stored camera frames, or a re-simulation from the seed)."""
    from imitlab.demos.play import play as run_play

    ds = _open(dataset)
    paths = ds.episode_paths()
    if not paths:
        raise ImitlabError(f"dataset {ds.path} has no episodes")
    selectors = episode or ([] if all_episodes else [paths[0].stem])
    results = run_play(ds, selectors, out or Path(f"{ds.path.resolve().name}-videos"), resimulate)
    for r in results:
        note = ""
        if resimulate:
            note = " (re-simulation matches the recording)" if r.diverged_at is None else \
                f" (re-simulation diverges from the recording at step {r.diverged_at})"
        typer.echo(f"{r.episode}: {r.video} ({r.frames} frames){note}")


@demos_app.command()
def merge(
    datasets: list[Path] = typer.Argument(..., help="Two or more datasets of the same env."),
    out: Path = typer.Option(..., help="New dataset folder."),
) -> None:
    """Concatenate datasets of the same env into a new folder (episode files copied unchanged)."""
    from imitlab.demos.edit import merge as run_merge

    result = run_merge(datasets, out)
    typer.echo(f"wrote {result.kept} episodes to {result.path}")


@demos_app.command()
def split(
    dataset: Path = DATASET,
    valid_fraction: float = typer.Option(0.1, help="Fraction of episodes in the valid mask."),
    seed: int = typer.Option(0, help="Seed of the episode shuffle."),
    overwrite: bool = typer.Option(False, help="Replace existing train/valid masks."),
) -> None:
    """Write seeded train/valid masks (by episode) into the dataset's masks.json."""
    from imitlab.demos.edit import TRAIN_MASK, VALID_MASK, split as run_split

    demos = _open(dataset)
    masks = run_split(demos, valid_fraction, seed, overwrite)
    typer.echo(f"masks: {TRAIN_MASK} {len(masks[TRAIN_MASK])} episodes, {VALID_MASK} {len(masks[VALID_MASK])} "
               f"episodes -> {dataset / 'masks.json'}")
    left_out = sorted({p.stem for p in demos.episode_paths()} - set(masks[TRAIN_MASK]) - set(masks[VALID_MASK]))
    if left_out:
        typer.echo(f"left out {len(left_out)} unreadable episode{'s' * (len(left_out) > 1)}: {', '.join(left_out)}")


@demos_app.command("filter")
def filter_cmd(
    dataset: Path = DATASET,
    out: Path = typer.Option(..., help="New dataset folder."),
    success_only: bool = typer.Option(False, help="Keep only successful episodes."),
    source: list[str] = typer.Option([], help="Keep only episodes from this source (repeatable): expert, "
                                              "noisy_expert, human, policy."),
    drop_audit_flags: bool = typer.Option(False, help="Drop every episode `imitlab demos audit` flags."),
    drop_flag: list[str] = typer.Option([], help="Drop episodes with this audit check (repeatable), e.g. duplicate."),
) -> None:
    """Copy the episodes that pass the conditions into a new dataset (masks carried over)."""
    from imitlab.demos.edit import filter_dataset

    checks = ["all"] if drop_audit_flags else drop_flag
    result = filter_dataset(_open(dataset), out, success_only=success_only, sources=source, drop_checks=checks)
    typer.echo(f"kept {result.kept} episodes, dropped {result.dropped} -> {result.path}")


@demos_app.command("export-robomimic")
def export_robomimic_cmd(
    dataset: Path = DATASET,
    out: Path = typer.Option(..., help="HDF5 file to write."),
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """Write the dataset as one robomimic HDF5 file (data/demo_i, env_args, mask/)."""
    from imitlab.demos.interop import export_robomimic

    path = export_robomimic(_open(dataset), out, overwrite)
    typer.echo(f"wrote {path}")


@demos_app.command("import-robomimic")
def import_robomimic_cmd(
    file: Path = typer.Argument(..., help="robomimic HDF5 file."),
    out: Path = typer.Option(..., help="New dataset folder."),
    env_id: Optional[str] = typer.Option(None, help="Override the env id stored in env_args."),
    assume_success: bool = typer.Option(False, help="Mark a foreign file's demos successful (robomimic's human "
                                                    "datasets hold successful demos only)."),
) -> None:
    """Convert a robomimic HDF5 file into a new dataset folder."""
    from imitlab.demos.interop import import_robomimic

    ds = import_robomimic(file, out, env_id, assume_success)
    typer.echo(f"wrote {len(ds)} episodes to {ds.path}")


@demos_app.command("export-lerobot")
def export_lerobot_cmd(
    dataset: Path = DATASET,
    out: Path = typer.Option(..., help="New LeRobotDataset folder (meta/, data/, videos/)."),
    vcodec: str = typer.Option("libsvtav1", help="Video codec: libsvtav1 (AV1, LeRobot's default) or libx264."),
    crf: int = typer.Option(30, min=0, max=51, help="Video quality, lower is closer to the frames (LeRobot: 30)."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Write the dataset in LeRobot's format (LeRobotDataset v3.0: parquet frames, an mp4 per camera, meta/)."""
    from imitlab.demos.lerobot_export import export_lerobot

    summary = export_lerobot(_open(dataset), out, overwrite, vcodec, crf)
    typer.echo(f"wrote {summary.episodes} episodes, {summary.frames} frames, cameras "
               f"{', '.join(summary.cameras) or 'none'} to {summary.path}")


@demos_app.command("import-lerobot")
def import_lerobot_cmd(
    source: Path = typer.Argument(..., help="LeRobotDataset v3.0 folder (with meta/info.json)."),
    out: Path = typer.Option(..., help="New dataset folder."),
    env_id: Optional[str] = typer.Option(None, help="The env its episodes belong to (default: an export's own, "
                                                    "else info.json's robot_type)."),
    assume_success: bool = typer.Option(False, help="Mark a foreign dataset's episodes successful."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Convert a LeRobotDataset folder into a new dataset folder (camera frames decoded from its videos)."""
    from imitlab.demos.lerobot_import import import_lerobot

    ds = import_lerobot(source, out, env_id, assume_success, overwrite)
    typer.echo(f"wrote {len(ds)} episodes to {ds.path}")
