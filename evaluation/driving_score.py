"""The driving score of CARLA's leaderboard for Town-v0 episodes, and a cell's summary of them.

An episode's driving score is its route completion times one penalty factor per infraction committed:
``route_completion * prod(PENALTIES[kind] ** count)``. The factors for vehicles (0.60), static objects (0.65) and
red lights (0.70) are the leaderboard's. Town-v0 counts more kinds; this is how each one weighs:

- ``collision_kerb`` (kerbs, buildings): 0.65, as the leaderboard's collisions with the static layout;
- ``opposite_lane`` (each entry into the oncoming lane outside a junction): 0.80, the leaderboard's mildest
  traffic-rule factor (its stop sign);
- ``blocked`` and ``off_route`` end the episode (as the leaderboard's agent-blocked and route-deviation do): they
  cost the route not completed, no factor.

Infractions per km are the counts over all scored episodes divided by the distance they drove along their routes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from imitlab.evaluation.rollout import EpisodeResult
from imitlab.evaluation.stats import wilson_interval

#: Penalty factor per infraction of each kind Town-v0 counts (``imitlab.envs.town.env.INFRACTIONS``).
PENALTIES: dict[str, float] = {
    "collision_vehicle": 0.60,
    "collision_static": 0.65,
    "collision_kerb": 0.65,
    "red_light": 0.70,
    "opposite_lane": 0.80,
    "blocked": 1.0,
    "off_route": 1.0,
}


def driving_score(metrics: Mapping[str, float]) -> float:
    """Route completion times ``PENALTIES[kind] ** count`` for every infraction kind in an episode's metrics."""
    score = float(metrics["route_completion"])
    for kind, factor in PENALTIES.items():
        score *= factor ** int(metrics.get(kind, 0))
    return score


def episode_row(result: EpisodeResult) -> dict[str, Any]:
    """One episode for the report: outcome, route completion, distance, infractions and driving score."""
    row: dict[str, Any] = {"seed": result.seed, "outcome": result.outcome, "success": result.success,
                           "length": result.length}
    if result.outcome == "error":
        return row | {"error": f"{result.error_kind}: {result.error}"}
    metrics = result.metrics
    return row | {
        "route_completion": float(metrics["route_completion"]),
        "distance_m": float(metrics["distance"]),
        "infractions": {kind: int(metrics.get(kind, 0)) for kind in PENALTIES},
        "driving_score": driving_score(metrics),
    }


def cell_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Success (95 % Wilson interval), mean route completion and driving score, and infractions per km, over
    the scored episodes of ``rows`` (``episode_row`` output); errors are counted apart."""
    scored = [r for r in rows if r["outcome"] != "error"]
    n = len(scored)
    successes = sum(r["success"] for r in scored)
    km = sum(r["distance_m"] for r in scored) / 1000.0
    counts = {kind: sum(r["infractions"][kind] for r in scored) for kind in PENALTIES}
    per_km = {kind: count / km if km > 0 else None for kind, count in counts.items()}
    total = sum(counts.values())
    return {
        "episodes": len(rows),
        "scored": n,
        "errors": len(rows) - n,
        "successes": successes,
        "success_rate": successes / n if n else None,
        "success_ci95": list(wilson_interval(successes, n)) if n else [0.0, 1.0],
        "route_completion": _mean([r["route_completion"] for r in scored]),
        "driving_score": _mean([r["driving_score"] for r in scored]),
        "km": km,
        "infractions": counts,
        "infractions_per_km": per_km,
        "all_infractions_per_km": total / km if km > 0 else None,
    }


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None
