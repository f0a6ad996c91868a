"""Episodes a person has excluded from training, with the reason: ``exclusions.json`` beside the episodes.

Curating a dataset must never lose data, so excluding an episode neither deletes nor rewrites it: the file
only names it (``{"demo_000003": {"reason": "drove off the road", "excluded_at": "2026-...Z"}}``, written
atomically), the training loader skips what it names, and removing the entry brings the episode back.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import write_json_atomic
from imitlab.demos.dataset import DemoDataset, read_sidecar_json

EXCLUSIONS = "exclusions.json"


def read_exclusions(dataset: DemoDataset) -> dict[str, str]:
    """Excluded episode file stem -> reason; empty when nothing is excluded."""
    path = dataset.path / EXCLUSIONS
    entries = read_sidecar_json(path, "exclusion")
    if not isinstance(entries, dict) or not all(isinstance(v, dict) and isinstance(v.get("reason"), str)
                                                for v in entries.values()):
        raise ImitlabError(f"corrupt exclusion file {path}: expected {{episode: {{\"reason\": ...}}}}")
    return {name: entry["reason"] for name, entry in entries.items()}


def set_excluded(dataset: DemoDataset, episode: str, reason: str | None) -> dict[str, str]:
    """Exclude ``episode`` (a file stem such as ``demo_000003``) with a non-empty ``reason``, or bring it back
    with ``reason=None``; returns the exclusions now in force."""
    if episode not in {p.stem for p in dataset.episode_paths()}:
        raise ImitlabError(f"{dataset.path} has no episode {episode!r}")
    read_exclusions(dataset)  # validates the file before it is rewritten
    path = dataset.path / EXCLUSIONS
    entries = json.loads(path.read_text()) if path.is_file() else {}
    if reason is None:
        entries.pop(episode, None)
    else:
        if not reason.strip():
            raise ImitlabError("say why the episode is excluded (the reason is empty)")
        entries[episode] = {"reason": reason.strip(),
                            "excluded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(path, dict(sorted(entries.items())))
    return read_exclusions(dataset)
