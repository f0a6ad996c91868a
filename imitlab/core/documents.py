"""Versioned JSON documents (dataset.json, policy.json, bundle.json): one reader, one set of error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imitlab.core.errors import ImitlabError
from imitlab.core.limits import MAX_DOCUMENT_BYTES


def read_format_document(path: Path, fmt: str, version: int) -> dict[str, Any]:
    """The JSON object in ``path`` tagged ``{"format": fmt, "format_version": version}``.

    A missing file, an oversized one, invalid JSON, another format or another version is one ImitlabError naming
    the file.
    """
    try:
        if Path(path).stat().st_size > MAX_DOCUMENT_BYTES:
            raise ImitlabError(f"{path}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB, not a {fmt} document")
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImitlabError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImitlabError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != fmt:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ImitlabError(f"{path}: not an {fmt} document (format is {found!r})")
    if document.get("format_version") != version:
        raise ImitlabError(f"{path}: unsupported format_version {document.get('format_version')!r} "
                           f"(this imitlab reads {version})")
    return document
