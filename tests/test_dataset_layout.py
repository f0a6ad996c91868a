"""The dataset layout has one source: README shows ``demos.dataset.LAYOUT`` verbatim, and LAYOUT names exactly
what the writer puts in a dataset folder and an episode file."""

from __future__ import annotations

import re
from pathlib import Path

import h5py

from imitlab.demos.dataset import EPISODE_DIR, HEADER, LAYOUT, MASKS
from imitlab.demos.exclusions import EXCLUSIONS

README = Path(__file__).resolve().parents[1] / "README.md"


def layout_entries() -> dict[str, set[str]]:
    """LAYOUT's folder entries, episode-file entries and attributes, each split into always-written and
    optional ones (``optional``, or ``human episodes`` only)."""
    found: dict[str, set[str]] = {k: set() for k in ("folder", "folder?", "episode", "episode?", "attrs", "attrs?")}
    attrs_text = ""
    for line in LAYOUT.splitlines()[1:]:
        indent = len(line) - len(line.lstrip())
        name, _, text = line.strip().partition(" ")
        if indent == 2:
            found["folder?" if "optional" in text else "folder"].add(name)
        elif indent == 6 and name != "attrs":
            found["episode?" if "human episodes only" in text else "episode"].add(name)
        if indent == 6:
            attrs_text = text if name == "attrs" else ""
        elif indent > 6 and attrs_text:
            attrs_text += " " + line.strip()
        if name == "attrs" or (indent > 6 and attrs_text):
            always, _, human = attrs_text.partition(";")
            found["attrs"] = set(re.sub(r"\(JSON\)", "", always).replace(",", " ").split())
            found["attrs?"] = set(human.partition(":")[2].replace(",", " ").split())
    return found


def test_readme_shows_the_layout_verbatim():
    section = README.read_text(encoding="utf-8").split("## Dataset format", 1)[1]
    assert section.split("```\n", 2)[1] == LAYOUT


def test_layout_names_what_the_writer_writes(tiny_demos):
    layout = layout_entries()
    assert layout["folder"] == {HEADER, f"{EPISODE_DIR}/demo_000000.hdf5"}
    assert layout["folder?"] == {MASKS, EXCLUSIONS}
    assert layout["attrs?"] == {"operator", "assisted"}
    written: set[str] = set()
    with h5py.File(tiny_demos / EPISODE_DIR / "demo_000000.hdf5", "r") as f:
        f.visit(lambda name: written.add(re.sub(r"^(obs|final_obs)/.*", r"\1/<key>", name)))
        assert sorted(f["obs"]) == sorted(f["final_obs"]) == ["image", "state"]
        assert set(f.attrs) == layout["attrs"]
    assert written - {"obs", "final_obs"} == layout["episode"]
    assert layout["episode?"] == {"intervention"}
