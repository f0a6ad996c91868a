"""Files and folders that are either complete or absent, and output folders that are never silently replaced.

Single files go to a temp file beside the target, are fsynced and renamed over it, then the folder is fsynced
so the rename itself survives a power cut. Whole folders (a policy's weights and JSON, a report with its videos)
are staged in a hidden folder beside the target and renamed into place as one, so a reader never sees new
weights with old metadata. POSIX cannot swap two folders atomically: replacing one renames the old folder
aside first, so a crash between the two renames leaves it in ``.<name>.old-*`` beside the target, never lost,
and ``recover_dir`` puts it back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from imitlab.core.errors import ImitlabError
from imitlab.core.permissions import apply_umask


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) durably: temp file, fsync, rename, fsync folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_atomic(path, json.dumps(payload, indent=2) + "\n")


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root``), before it is renamed into place."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(Path(folder))


def staging_dir(target: Path) -> Path:
    """A new hidden folder beside ``target`` (same filesystem, so it can be renamed onto it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def publish_dir(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` folder to ``target``, replacing a folder already there. The published
    folder gets the modes of the user's umask, not mkdtemp's 0700 (nor safetensors' 0600 files)."""
    staging, target = Path(staging), Path(target)
    apply_umask(staging)
    fsync_tree(staging)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old)


def recover_dir(target: Path) -> None:
    """After a crash, when nothing else writes ``target``: drop abandoned staging folders beside it, and undo a
    replacement cut between its two renames by putting the old folder back."""
    target = Path(target)
    for abandoned in target.parent.glob(f".{target.name}.partial-*"):
        shutil.rmtree(abandoned, ignore_errors=True)
    if target.exists():
        return
    for old in sorted(target.parent.glob(f".{target.name}.old-*/{target.name}")):
        os.replace(old, target)
        shutil.rmtree(old.parent, ignore_errors=True)
        fsync_dir(target.parent)
        return


def check_out_dir(path: Path, overwrite: bool, flag: str = "--out") -> None:
    """Refuse an output folder that is a file, or that exists with something in it, unless ``overwrite``."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ImitlabError(f"{flag} {path}: {existing} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ImitlabError(f"{path} already exists and is not empty; pass --overwrite to replace it "
                           f"or choose another {flag}")


def claim_out_dir(path: Path, overwrite: bool, flag: str = "--out") -> None:
    """``check_out_dir``, then remove what ``overwrite`` allows to be replaced: the caller builds ``path`` anew."""
    check_out_dir(path, overwrite, flag)
    if Path(path).exists():
        shutil.rmtree(path)
