"""Recipes as files: a run's saved config repeats it bit for bit, the train CLI is derived from the config
dataclasses (every field a flag with its docstring), and bad keys or values are one line naming the key."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from imitlab.cli import app
from imitlab.cli.config_options import flag_name
from imitlab.core.config_files import read_toml
from imitlab.core.errors import ImitlabError
from imitlab.training.bc import RUN_CONFIG, TrainConfig
from imitlab.training.dagger import DaggerConfig, save_dagger_config
from imitlab.training.run_config import knobs, parse_settings, resolve_run_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def cli(*args: str) -> None:
    """``imitlab ARGS`` in this process (errors raise, as ``main`` would print them); torch's threads restored."""
    threads = torch.get_num_threads()
    try:
        app(list(args), standalone_mode=False)
    finally:
        torch.set_num_threads(threads)


def weights_digest(run: Path) -> str:
    return hashlib.sha256((run / "last" / "policy.safetensors").read_bytes()).hexdigest()


def test_a_run_repeats_bit_for_bit_from_its_saved_config(tiny_demos, tmp_path):
    first = tmp_path / "first"
    cli("train", str(tiny_demos), "--out", str(first), "--backbone", "nature_cnn", "--no-pretrained",
        "--epochs", "1", "--eval-episodes", "1", "--threads", "1", "--no-progress", "--set", "val_fraction=0.25")
    saved = read_toml(first / RUN_CONFIG)
    assert saved["backbone"] == "nature_cnn" and saved["val_fraction"] == 0.25 and saved["epochs"] == 1
    cli("train", "--config", str(first / RUN_CONFIG), "--out", str(tmp_path / "again"))
    assert weights_digest(tmp_path / "again") == weights_digest(first)
    assert read_toml(tmp_path / "again" / RUN_CONFIG) == {**saved, "out": str(tmp_path / "again")}


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.toml")))
def test_every_recipe_resolves_to_a_valid_config(recipe):
    train, dagger = resolve_run_config(RECIPES / recipe, {})
    assert Path(train.out).parts[0] == "runs" and dagger.rounds == 0


def test_precedence_is_defaults_then_file_then_set_then_flags(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('dataset = "d"\nout = "o"\nepochs = 5\nhead_lr = 0.01\n[dagger]\nrounds = 2\n')
    train, dagger = resolve_run_config(recipe, {**parse_settings(["epochs=7", "dagger.episodes=3"]), "head_lr": 0.5})
    assert (train.epochs, train.head_lr, train.batch_size) == (7, 0.5, TrainConfig.batch_size)
    assert (dagger.rounds, dagger.episodes) == (2, 3) and dagger.train is train


@pytest.mark.parametrize("text, message", [
    ('dataset = "d"\nout = "o"\nepoch = 3\n', "unknown key 'epoch'"),
    ('dataset = "d"\nout = "o"\nepochs = "three"\n', "epochs: expected int, got 'three'"),
    ('dataset = "d"\nout = "o"\npretrained = 1\n', "pretrained: expected bool, got 1"),
    ('dataset = "d"\nout = "o"\nhead_hidden = [256, "x"]\n', r"head_hidden\[1\]: expected int"),
    ('dataset = "d"\nout = "o"\n[dagger]\nround = 2\n', r"\[dagger\]: unknown key 'round'"),
    ('dataset = "d"\nout = "o"\nepochs = 0\n', "epochs: must be at least 1"),
    ('out = "o"\n', "'dataset' is required"),
    ('dataset = "d"\nout = \n', "not a valid TOML file"),
])
def test_bad_config_files_are_one_line_naming_the_key(tmp_path, text, message):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    with pytest.raises(ImitlabError, match=message):
        resolve_run_config(recipe, {})


@pytest.mark.parametrize("args, message", [
    (["--set", "epoch=3"], "--set epoch: unknown key"),
    (["--set", "epochs=many"], "epochs: expected int, got 'many'"),
    (["--head-hidden", "256,x"], r"head_hidden\[1\]: expected int"),
    (["--epochs", "0"], "epochs: must be at least 1"),
])
def test_bad_settings_on_the_command_line_are_one_line_naming_the_key(tmp_path, args, message):
    with pytest.raises(ImitlabError, match=message) as error:
        cli("train", str(tmp_path), "--out", str(tmp_path / "o"), *args)
    assert "\n" not in str(error.value)


def test_train_help_lists_every_field_with_its_docstring(monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")
    monkeypatch.setenv("TERMINAL_WIDTH", "2000")
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    for key, field in knobs().items():
        if key != "dataset":  # the positional argument
            assert flag_name(key) in text, key
        assert " ".join(field.doc.split()) in text, key


def test_readme_shows_each_recipe_as_one_command():
    readme = (RECIPES.parent / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"imitlab train --config recipes/(\w+\.toml)", readme))
    tabletop = {p.name for p in RECIPES.glob("*.toml") if not p.name.startswith("quickstart")}
    assert tabletop <= shown <= {p.name for p in RECIPES.glob("*.toml")}


def test_a_dagger_run_config_round_trips(tmp_path):
    dagger = DaggerConfig(TrainConfig(dataset="d", out=str(tmp_path), head_hidden=(64,), extra={"note": "x"}),
                          rounds=2, episodes=3, epochs=4)
    save_dagger_config(tmp_path / RUN_CONFIG, dagger)
    train, again = resolve_run_config(tmp_path / RUN_CONFIG, {})
    assert train == dagger.train and again == dagger
