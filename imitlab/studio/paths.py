"""Paths typed into the studio's pages: relative to the folder it serves, and never outside it."""

from __future__ import annotations

from pathlib import Path

from imitlab.core.errors import ImitlabError

#: Folders never searched for datasets and runs.
_SKIP = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache"}


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved; an empty path or one that leaves ``root`` is an ImitlabError."""
    if not relative.strip():
        raise ImitlabError("enter a path (relative to the studio's folder)")
    path = (root / relative.strip()).resolve()
    if path != root and root not in path.parents:
        raise ImitlabError(f"{relative} is outside the studio's folder {root}")
    return path


def find_folders(root: Path, marker: str, max_depth: int = 5) -> list[Path]:
    """Folders under ``root`` (at most ``max_depth`` levels down) that contain a file named ``marker``."""
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / marker).is_file():
            found.append(folder)
        if depth == max_depth:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in _SKIP)
        except OSError:
            return
        for child in children:
            walk(child, depth + 1)

    walk(root, 0)
    return found
