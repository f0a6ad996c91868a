"""Paired comparison of two agents on the same seeds.

Both agents face the identical episode start for every seed, so seed difficulty cancels: only the discordant
seeds (one succeeds, the other fails) carry information about which is better. That makes the paired test far
more sensitive than comparing two independent success rates and their Wilson intervals. A seed where either
side's episode was an error (exception, crash, timeout, unstable simulation) has no pair: it is left out and
listed, never scored as a failure.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import publish_dir, staging_dir
from imitlab.evaluation.agent_spec import AgentSpec
from imitlab.evaluation.evaluate import EvalSummary, evaluate
from imitlab.evaluation.stats import wilson_interval


def paired_success(a: Sequence[bool], b: Sequence[bool], z: float = 1.959964) -> dict[str, Any]:
    """Per-seed success of A and B -> McNemar counts, the success-rate difference A - B with Newcombe's
    score interval for paired data (Newcombe 1998, method 10, built on Wilson intervals), and the exact
    McNemar p-value (two-sided binomial test on the discordant seeds)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_success needs two equally long, non-empty outcome lists")
    n = len(a)
    both = sum(x and y for x, y in zip(a, b))
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, z)
    l2, u2 = wilson_interval(both + only_b, n, z)
    # Newcombe's correlation estimate, shrunk by n/2 towards zero when positive (his definition for method 10).
    denom = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = cross / math.sqrt(denom) if denom > 0 else 0.0
    diff = p1 - p2
    low = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = diff + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return {
        "seeds": n, "both_succeed": both, "only_a": only_a, "only_b": only_b, "neither": neither,
        "success_diff": diff, "success_diff_ci95": [max(-1.0, low), min(1.0, high)],
        "mcnemar_p": mcnemar_exact_p(only_a, only_b),
    }


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each discordant seed favours A with probability 1/2."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2.0 ** discordant
    return min(1.0, 2.0 * tail)


def paired_mean_diff(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Mean of the per-seed differences A - B with a 95 % percentile bootstrap interval (seeds resampled)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    return {"mean_diff": float(d.mean()), "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]}


def comparison(a: EvalSummary, b: EvalSummary) -> dict[str, Any]:
    """Paired statistics of two evaluations that ran on the same seeds, plus the per-seed table."""
    seeds = [e.seed for e in a.episodes]
    if seeds != [e.seed for e in b.episodes]:
        raise ValueError("a paired comparison needs both evaluations on the same seeds in the same order")
    pairs = [(ea, eb) for ea, eb in zip(a.episodes, b.episodes) if "error" not in (ea.outcome, eb.outcome)]
    errors = [{"seed": ea.seed, **{side: f"{e.error_kind}: {e.error}" for side, e in (("a", ea), ("b", eb))
                                   if e.outcome == "error"}}
              for ea, eb in zip(a.episodes, b.episodes) if "error" in (ea.outcome, eb.outcome)]
    if not pairs:
        raise ImitlabError(f"no seed has a scored episode on both sides ({len(errors)} seeds had errors, e.g. "
                           f"seed {errors[0]['seed']}: {errors[0].get('a') or errors[0].get('b')})")
    return {
        "a": a.agent, "b": b.agent, "env_id": a.env_id,
        "success": paired_success([ea.success for ea, _ in pairs], [eb.success for _, eb in pairs]),
        "return": paired_mean_diff([ea.episode_return for ea, _ in pairs], [eb.episode_return for _, eb in pairs]),
        "per_seed": [{"seed": ea.seed, "a_success": ea.success, "b_success": eb.success,
                      "success_diff": int(ea.success) - int(eb.success),
                      "a_return": ea.episode_return, "b_return": eb.episode_return}
                     for ea, eb in pairs],
        "errors": errors,
        "reports": [a.to_json(), b.to_json()],
    }


def compare(agent_a: AgentSpec, agent_b: AgentSpec, seeds: Sequence[int], workers: int | None = None,
            progress: bool = True, episode_timeout: float | None = None) -> dict[str, Any]:
    """Evaluate both agents on ``seeds`` and compare them seed by seed (``imitlab.agents.resolve_pair`` makes
    the pair, with the expert in the other side's env configuration)."""
    a, b = (evaluate(agent, seeds, workers=workers, progress=progress, episode_timeout=episode_timeout)
            for agent in (agent_a, agent_b))
    return comparison(a, b)


def comparison_markdown(result: dict[str, Any]) -> str:
    """A short Markdown summary of a paired comparison."""
    s, r = result["success"], result["return"]
    low, high = s["success_diff_ci95"]
    return "\n".join([
        f"# Paired comparison on {s['seeds']} seeds (`{result['env_id']}`)", "",
        f"A = `{result['a']}`, B = `{result['b']}`", "",
        "| | B succeeds | B fails |", "|---|---|---|",
        f"| **A succeeds** | {s['both_succeed']} | {s['only_a']} |",
        f"| **A fails** | {s['only_b']} | {s['neither']} |", "",
        f"- success rate A - B: {100 * s['success_diff']:+.1f} points (95 % paired CI {100 * low:+.1f} to "
        f"{100 * high:+.1f}); exact McNemar p = {s['mcnemar_p']:.3g}",
        f"- return A - B: {r['mean_diff']:+.2f} per episode (95 % bootstrap CI {r['ci95'][0]:+.2f} to {r['ci95'][1]:+.2f})",
        "", "Seeds where they disagree: " + (", ".join(
            f"{p['seed']} ({'A' if p['success_diff'] > 0 else 'B'})" for p in result["per_seed"] if p["success_diff"])
            or "none"),
    ] + _error_lines(result.get("errors", []))) + "\n"


def _error_lines(errors: list[dict[str, Any]]) -> list[str]:
    if not errors:
        return []
    return ["", f"Seeds left out of the pairing, an error on either side ({len(errors)}):", ""] + [
        f"- {e['seed']}: " + "; ".join(f"{side.upper()} {e[side]}" for side in ("a", "b") if side in e)
        for e in errors]


def write_comparison(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``compare.json`` (both reports, paired statistics, per-seed table) and ``compare.md``, as one folder
    renamed into place (it replaces ``out_dir``: check it with ``fsio.check_out_dir`` before evaluating)."""
    staging = staging_dir(out_dir)
    try:
        (staging / "compare.json").write_text(json.dumps(result, indent=2))
        (staging / "compare.md").write_text(comparison_markdown(result))
        publish_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"json": out_dir / "compare.json", "markdown": out_dir / "compare.md"}
