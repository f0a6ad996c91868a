"""``--env-arg key=value`` options -> env constructor kwargs (shared by ``record``, ``eval`` and the analyses)."""

from __future__ import annotations

import json
import re
from typing import Any

from imitlab.core.errors import ImitlabError

#: A value starting like JSON (list, object, quoted string, number, true/false/null) must be valid JSON.
_LOOKS_LIKE_JSON = re.compile(r"\s*([\[{\"]|-?\d|(true|false|null)\s*$)")


def parse_env_kwargs(pairs: list[str], image_size: int | None) -> dict[str, Any]:
    """``key=value`` pairs -> env constructor kwargs. A value that looks like JSON is parsed strictly (a typo in
    ``'cameras=["agentview",'`` is an error, not the string itself); any other value is a string."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ImitlabError(f"--env-arg expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        if not _LOOKS_LIKE_JSON.match(raw):
            kwargs[key] = raw
            continue
        try:
            kwargs[key] = json.loads(raw, parse_constant=_reject_constant)
        except ValueError as error:
            raise ImitlabError(f"--env-arg {key}={raw!r}: not valid JSON ({error})") from None
    if image_size is not None:
        kwargs["image_size"] = image_size
    return kwargs


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")
