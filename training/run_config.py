"""A training run's config as one TOML file: the knobs of ``TrainConfig`` at the top level, DAgger's in a
``[dagger]`` table. Recipes (``recipes/*.toml``) and the ``config.toml`` every run saves share this layout, so
``imitlab train --config runs/x/config.toml`` repeats a run.

Precedence, lowest first: the dataclass defaults, the config file, then ``--set key=value`` and command-line
flags. ``dagger.<knob>`` keys address the ``[dagger]`` table.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from imitlab.core.config_fields import ConfigField, build_config, config_fields, parse_value
from imitlab.core.config_files import read_toml
from imitlab.core.errors import ImitlabError
from imitlab.training.config import DAGGER_TABLE, DaggerConfig, TrainConfig


def recipe_path(name: str) -> Path:
    """The recipe ``recipes/<name>.toml`` shipped with imitlab (the quickstart's, the manipulation tasks')."""
    path = Path(str(resources.files("imitlab.recipes") / f"{name}.toml"))
    if not path.is_file():
        raise ImitlabError(f"no recipe {name!r} (recipes: {', '.join(sorted(p.stem for p in path.parent.glob('*.toml')))})")
    return path


def knobs() -> dict[str, ConfigField]:
    """Every settable key: ``TrainConfig``'s fields, then DaggerConfig's as ``dagger.<field>``."""
    fields = {f.name: f for f in config_fields(TrainConfig)}
    fields.update({f"{DAGGER_TABLE}.{f.name}": f for f in config_fields(DaggerConfig, exclude=("train",))})
    return fields


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs -> {key: value}, each value parsed by its field's type."""
    fields = knobs()
    settings = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ImitlabError(f"--set expects key=value, got {pair!r}")
        if key not in fields:
            raise ImitlabError(f"--set {key}: unknown key (known keys: {', '.join(fields)})")
        settings[key] = parse_value(key, text, fields[key].type)
    return settings


def resolve_run_config(config_file: Path | None, settings: dict[str, Any]) -> tuple[TrainConfig, DaggerConfig]:
    """The run's configs: defaults, then ``config_file`` (a recipe or a saved ``config.toml``), then ``settings``
    (``{key: value}``, keys as in :func:`knobs`). DAgger runs when ``dagger.rounds`` > 0."""
    document = read_toml(config_file) if config_file is not None else {}
    where = str(config_file) if config_file is not None else "imitlab train"
    dagger_values = document.pop(DAGGER_TABLE, {})
    if not isinstance(dagger_values, dict):
        raise ImitlabError(f"{where}: {DAGGER_TABLE!r} must be a table ([{DAGGER_TABLE}])")
    for key, value in settings.items():
        table, dot, name = key.partition(".")
        if dot and table == DAGGER_TABLE:
            dagger_values[name] = value
        else:
            document[key] = value
    train = build_config(TrainConfig, document, where)
    dagger = build_config(DaggerConfig, dagger_values, f"{where} [{DAGGER_TABLE}]", train=train)
    return train, dagger
