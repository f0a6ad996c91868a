"""Config files in TOML: read with one-line errors, written atomically (``None`` values are left out: TOML has
no null, and every optional knob defaults to None)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import tomli_w

from imitlab.core.errors import ImitlabError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document in ``path``; a missing or malformed file is one ImitlabError naming it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ImitlabError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ImitlabError(f"{path}: not a valid TOML file ({error})") from None


def write_toml(path: Path, document: dict[str, Any], comment: str = "") -> None:
    """Write ``document`` (scalars, lists and tables) to ``path`` via a temporary file, with ``comment`` on top."""
    def drop_none(table: dict[str, Any]) -> dict[str, Any]:
        return {k: drop_none(v) if isinstance(v, dict) else v for k, v in table.items() if v is not None}

    text = "".join(f"# {line}\n" for line in comment.splitlines()) + tomli_w.dumps(drop_none(document))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
