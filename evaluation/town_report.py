"""The town benchmark's outputs: rows for the terminal table, and ``benchmark.json`` + a self-contained
``benchmark.html`` written as one folder (built from the JSON alone, so a page can be rebuilt from a saved run)."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

from imitlab.core.fsio import publish_dir, staging_dir

_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}"
          "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}"
          "th,td{border:1px solid #ccc;padding:0.2em 0.55em;text-align:left;vertical-align:top}"
          "th{background:#f3f3f3}pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}")


def seed_range(seeds: list[int]) -> str:
    """``first..last`` for consecutive seeds (the benchmark's), else the list."""
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ", ".join(map(str, seeds))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def success_text(row: dict[str, Any]) -> str:
    """``12/25 = 48 % (30-67 %)``: successes over scored episodes, with the 95 % Wilson interval."""
    if not row["scored"]:
        return "-"
    low, high = row["success_ci95"]
    return f"{row['successes']}/{row['scored']} = {_pct(row['success_rate'])} ({100 * low:.0f}-{100 * high:.0f} %)"


SUMMARY_HEAD = ["agent", "task", "condition", "success (95 % CI)", "route compl.", "driving score", "infractions/km",
                "errors"]


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per (agent, cell), cells grouped so the agents of a cell are adjacent, then one overall row each."""
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in report["results"]:
        by_cell.setdefault((row["task"], row["condition"]), []).append(row)
    rows = [[r["agent"], r["task"], r["condition"], success_text(r), _pct(r["route_completion"]),
             _num(r["driving_score"]), _num(r["all_infractions_per_km"]), str(r["errors"])]
            for cell_rows in by_cell.values() for r in cell_rows]
    rows += [[r["agent"], "all", "all", success_text(r), _pct(r["route_completion"]), _num(r["driving_score"]),
              _num(r["all_infractions_per_km"]), str(r["errors"])] for r in report["overall"]]
    return rows


PAIRED_HEAD = ["A - B", "task", "condition", "pairs", "A only / B only", "success diff (95 % CI)", "McNemar p",
               "driving score diff (95 % CI)"]


def paired_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per compared agent and cell, then its overall row."""
    rows = []
    for pair in report["paired"]:
        name = f"{pair['a']} - {pair['b']}"
        for cell in [*pair["cells"], {"task": "all", "condition": "all", **pair["overall"]}]:
            if not cell["seeds"]:
                rows.append([name, cell["task"], cell["condition"], "0", "-", "-", "-", "-"])
                continue
            low, high = cell["success_diff_ci95"]
            ds = cell["driving_score"]
            rows.append([name, cell["task"], cell["condition"], str(cell["seeds"]),
                         f"{cell['only_a']} / {cell['only_b']}",
                         f"{100 * cell['success_diff']:+.0f} pts ({100 * low:+.0f} to {100 * high:+.0f})",
                         f"{cell['mcnemar_p']:.3g}",
                         f"{ds['mean_diff']:+.2f} ({ds['ci95'][0]:+.2f} to {ds['ci95'][1]:+.2f})"])
    return rows


def seed_lines(report: dict[str, Any]) -> list[str]:
    """The exact seeds of every cell, one line each."""
    return [f"{c['task']}/{c['condition']}: seeds {seed_range(c['seeds'])} (town {c['env_kwargs']['town']}, "
            f"weather {c['env_kwargs']['weather']}, traffic {c['env_kwargs']['traffic']})" for c in report["cells"]]


def write_benchmark_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``benchmark.json`` and ``benchmark.html`` as one folder renamed into place (it replaces ``out_dir``:
    check it with ``fsio.check_out_dir`` before running)."""
    staging = staging_dir(out_dir)
    try:
        (staging / "benchmark.json").write_text(json.dumps(report, indent=2))
        (staging / "benchmark.html").write_text(benchmark_html(report), encoding="utf-8")
        publish_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"json": out_dir / "benchmark.json", "html": out_dir / "benchmark.html"}


def _table(head: list[str], rows: list[list[str]]) -> str:
    esc = html.escape
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def _matrix(report: dict[str, Any], agent: str, cell_text: Any) -> str:
    """Tasks (rows) x conditions (columns) for one agent, as the CoRL2017 tables are laid out."""
    rows = [r for r in report["results"] if r["agent"] == agent]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    by_key = {(r["task"], r["condition"]): r for r in rows}
    return _table(["task", *conditions], [[t, *(cell_text(by_key[(t, c)]) if (t, c) in by_key else ""
                                                for c in conditions)] for t in tasks])


def benchmark_html(report: dict[str, Any]) -> str:
    """The page: success and driving-score matrices per agent, all metrics, infractions, paired tests,
    definitions, seeds and every episode."""
    esc = html.escape
    defs = report["definitions"]
    agents = list(report["agents"])
    parts = [f"<h1>Town benchmark: {esc(report['subject'])}</h1>",
             f"<p>Env <code>{esc(report['env_id'])}</code>; {report['episodes_per_cell']} held-out routes per cell; "
             f"agents: {esc(', '.join(agents))}. Success with 95 % Wilson intervals; errors (crash, hang, unstable "
             "simulation) are counted apart, never as failures.</p>"]
    if report["interrupted"]:
        parts.append("<p><strong>Interrupted</strong>: the tables cover the episodes that finished.</p>")
    for agent in agents:
        parts += [f"<h2>{esc(agent)}: success</h2>", _matrix(report, agent, success_text),
                  f"<h3>{esc(agent)}: driving score (route completion)</h3>",
                  _matrix(report, agent, lambda r: f"{_num(r['driving_score'])} ({_pct(r['route_completion'])})")]
    parts += ["<h2>All metrics</h2>", _table(SUMMARY_HEAD, summary_rows(report))]
    kinds = list(defs["penalties"])
    parts += ["<h2>Infractions per km</h2>", _table(
        ["agent", "task", "condition", "km", *kinds],
        [[r["agent"], r["task"], r["condition"], _num(r["km"], ".2f"),
          *(_num(r["infractions_per_km"][k]) for k in kinds)] for r in report["results"]])]
    if report["paired"]:
        parts += ["<h2>Paired comparisons (same seeds)</h2>",
                  "<p>Success difference with Newcombe's paired interval and the exact McNemar test on the seeds "
                  "where exactly one side succeeded; driving-score difference with a bootstrap interval.</p>",
                  _table(PAIRED_HEAD, paired_rows(report))]
    parts += ["<h2>Definitions</h2>",
              _table(["task", "Town-v0 task", "traffic"], [[t["name"], t["task"], str(t["traffic"])]
                                                          for t in defs["tasks"]]),
              _table(["condition", "town", "weathers"], [[c["name"], str(c["town"]), ", ".join(c["weathers"])]
                                                         for c in defs["conditions"]]),
              "<p>Driving score = route completion x the product of one factor per infraction:</p>",
              _table(["infraction", "factor"], [[k, f"{v:.2f}"] for k, v in defs["penalties"].items()]),
              f"<p>Seeds: {esc(defs['seeds'])}.</p>",
              "<h2>Seeds</h2><ul>" + "".join(f"<li>{esc(line)}</li>" for line in seed_lines(report)) + "</ul>",
              "<h2>Agents</h2>"]
    for agent, info in report["agents"].items():
        parts.append(f"<h3>{esc(agent)} ({esc(info['kind'])})</h3><pre>{esc(json.dumps(info, indent=2))}</pre>")
    parts.append("<h2>Episodes</h2>")
    for r in report["results"]:
        episodes = [[str(e["seed"]), e["outcome"], _pct(e.get("route_completion")), _num(e.get("driving_score")),
                     ", ".join(f"{k} {n}" for k, n in e.get("infractions", {}).items() if n) or e.get("error", "")]
                    for e in r["per_episode"]]
        parts += [f"<h3>{esc(r['agent'])}: {esc(r['task'])} / {esc(r['condition'])}</h3>",
                  _table(["seed", "outcome", "route compl.", "driving score", "infractions / error"], episodes)]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>imitlab town benchmark: "
            f"{esc(report['subject'])}</title><style>{_STYLE}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
