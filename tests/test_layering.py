"""The package's layers, checked from the source: who may import whom, and constants defined in one place."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder of each ``imitlab.<name>`` package (pyproject maps them to top-level folders).
PACKAGES = {"core": ROOT / "imitlab" / "core", "cli": ROOT / "imitlab" / "cli", "envs": ROOT / "envs",
            "policies": ROOT / "policies", "demos": ROOT / "demos", "training": ROOT / "training",
            "evaluation": ROOT / "evaluation", "deploy": ROOT / "deploy"}
SOURCES = [path for folder in PACKAGES.values() for path in folder.rglob("*.py")] + list((ROOT / "imitlab").glob("*.py"))


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """Every ``imitlab...`` module imported anywhere in a folder's files (inside functions too), by file."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(folder.parent))] = {n for n in names if n.split(".")[0] == "imitlab"}
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{file} imports {name}" for file, names in imported_modules(PACKAGES[package]).items()
                  for name in names if name.startswith(tuple(f"imitlab.{f}" for f in forbidden)))


@pytest.mark.parametrize("package, forbidden", [
    ("core", ("envs", "policies", "demos", "training", "evaluation", "deploy", "cli", "agents", "quickstart")),
    ("envs", ("policies", "demos", "training", "evaluation", "deploy", "cli", "agents", "quickstart")),
    ("policies", ("training", "evaluation", "deploy", "cli", "agents", "quickstart")),
    ("evaluation", ("deploy", "training", "cli", "agents", "quickstart")),
    ("training", ("deploy", "cli", "agents", "quickstart")),
    ("deploy", ("cli", "agents", "quickstart")),
])
def test_lower_layers_import_no_higher_one(package, forbidden):
    assert violations(package, forbidden) == []


def test_the_layer_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    (tmp_path / "lazy.py").write_text("def f():\n    from imitlab.deploy.runtime import load_bundle\n")
    monkeypatch.setitem(PACKAGES, "evaluation", tmp_path)
    assert violations("evaluation", ("deploy",)) == [f"{tmp_path.name}/lazy.py imports imitlab.deploy.runtime",
                                                     f"{tmp_path.name}/lazy.py imports imitlab.deploy.runtime.load_bundle"]


def test_deploy_runtime_and_the_cli_import_without_torch():
    """A robot's runtime needs no torch, and ``imitlab --help`` starts in about a second (the train command's
    options come from the torch-free ``training/config.py``)."""
    code = "import sys, imitlab.deploy.runtime, imitlab.deploy.server, imitlab.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["DEMO_SEED_START", "DAGGER_SEED_START", "VALIDATION_SEED_START",
                                  "HELD_OUT_SEED_START"])
def test_each_seed_range_is_defined_once(name):
    definitions = [f"{path.relative_to(ROOT)}:{i}" for path in SOURCES
                   for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                   if re.match(rf"\s*{name}\s*(:\s*\w+\s*)?=", line)]
    assert definitions == ["imitlab/core/seeds.py:" + definitions[0].split(":")[1]], definitions


def test_no_seed_range_is_written_as_a_literal_outside_core():
    literal = re.compile(r"\b(200_?000|500_?000|1_?000_?000)\b")
    hits = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}" for path in SOURCES if path.name != "seeds.py"
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if literal.search(line) and "seed" in line.lower()]
    assert hits == []
