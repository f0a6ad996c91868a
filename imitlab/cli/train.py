"""``imitlab train``: behaviour cloning (and DAgger) from a dataset folder, configured by a recipe file, flags, or both.

Every ``TrainConfig`` and ``DaggerConfig`` field is an option here (derived by ``with_config_options``), so a
new documented field becomes a flag without touching this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imitlab.cli.config_options import with_config_options
from imitlab.training.run_config import knobs


KNOBS = knobs()


@with_config_options(KNOBS, skip=("dataset",))
def train_cmd(
    settings: dict,
    dataset: Optional[Path] = typer.Argument(None, help=f"{KNOBS['dataset'].doc} (Or `dataset` in --config.)"),
    config: Optional[Path] = typer.Option(None, help="TOML recipe or a run's saved config.toml; flags and --set "
                                          "override its values."),
    set_: list[str] = typer.Option([], "--set", help="key=value override of any knob (repeatable), e.g. "
                                   "epochs=3 or dagger.rounds=2."),
) -> None:
    """Behaviour cloning: fit a policy to a dataset; the checkpoint kept is the best in closed loop."""
    from imitlab.training.bc import train
    from imitlab.training.dagger import run_dagger
    from imitlab.training.run_config import parse_settings, resolve_run_config

    overrides = {**parse_settings(set_), **settings}
    if dataset is not None:
        overrides["dataset"] = str(dataset)
    train_config, dagger_config = resolve_run_config(config, overrides)
    if dagger_config.rounds:
        log = run_dagger(dagger_config)
        best = log["rounds"][log["chosen_round"]]["bc"]
    else:
        best = train(train_config)["best"]
    typer.echo(f"best policy: {Path(train_config.out) / 'best'} (epoch {best['epoch']}, validation success "
               f"{100 * best['rollout']['success_rate']:.0f} % on {train_config.eval_episodes} seeds)")
