"""One self-contained HTML page per evaluation, viewable offline: every plot is an inline base64 PNG and every
video a base64 ``data:`` URI, so the single file can be mailed, archived or opened on a robot's laptop.

Input is the evaluation's JSON (``EvalSummary.to_json()``), so a page can be rebuilt from any saved report.json.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from imitlab.evaluation.offline import offline_rows
from imitlab.evaluation.rollout import category_cell, category_columns

_SUCCESS = "#2e9d46"
_FAILURE = "#d0473a"
_ERROR = "#8a8a8a"
#: Colours of the best and worst episodes' traces when their outcome is not what "best" and "worst" suggest
#: (every episode failed, or every one succeeded): green and red keep meaning success and failure.
_BEST_FAILED = "#3b6fd4"
_WORST_SUCCEEDED = "#e08a1e"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.ok { color: #2e9d46; font-weight: 600; } .bad { color: #d0473a; font-weight: 600; }
.err { color: #666; font-weight: 600; }
.videos { display: flex; flex-wrap: wrap; gap: 1em; } .videos figure { margin: 0; }
img { max-width: 100%; } pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
"""


def write_html_report(data: dict[str, Any], path: Path) -> Path:
    """Write the page for one evaluation (``data`` from ``EvalSummary.to_json()``, video paths readable from here)."""
    path = Path(path)
    path.write_text(html_report(data), encoding="utf-8")
    return path


def html_report(data: dict[str, Any]) -> str:
    """The page: summary, per-seed success, metric histograms, action traces, videos, provenance, episodes."""
    episodes = data["per_episode"]
    scored = [e for e in episodes if e["outcome"] != "error"] or episodes
    ranked = sorted(scored, key=lambda e: (not e["success"], -e["episode_return"], e["seed"]))
    best, worst = ranked[0], ranked[-1]
    sections = [
        f"<h1>Closed-loop evaluation: {_esc(data['agent'])}</h1>",
        f"<p>Env <code>{_esc(data['env_id'])}</code> with <code>{_esc(json.dumps(data['env_kwargs']))}</code>; "
        f"{data['episodes']} episodes on seeds {episodes[0]['seed']}..{episodes[-1]['seed']}.</p>",
        _summary_table(data),
        _errors(data),
        "<h2>Success per seed</h2>", _img(_success_figure(episodes)),
        "<h2>Metric distributions</h2>", _img(_histogram_figure(scored)),
        "<h2>Action traces</h2>", _traces_legend(best, worst),
        _img(_actions_figure(scored, data.get("action_labels") or [], best, worst)),
        "<h2>Videos</h2>", _videos(episodes),
        "<h2>Policy</h2>", _provenance(data.get("policy") or {}),
        "<h2>Episodes</h2>", _episode_table(episodes),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>imitlab evaluation: {_esc(data['agent'])}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _summary_table(data: dict[str, Any]) -> str:
    low, high = data["success_ci95"]
    tts = data.get("mean_time_to_success")
    rate, ret, length, ms = (data[k] for k in ("success_rate", "mean_return", "mean_length", "inference_ms_per_step"))
    rows = [
        ("success rate (scored episodes)",
         f"{'-' if rate is None else f'{100 * rate:.1f} %'} ({data['successes']}/{data['scored_episodes']})"),
        ("95 % Wilson interval", f"{100 * low:.1f} - {100 * high:.1f} %"),
        ("errors (not scored: exception, crash, timeout, unstable simulation)", data["errors"]),
        ("return", "-" if ret is None else f"{ret:.2f} +- {data.get('std_return') or 0.0:.2f}"),
        ("episode length (steps)", "-" if length is None else f"{length:.1f}"),
        ("steps to success (successful episodes)", "-" if tts is None else f"{tts:.1f}"),
        ("ended early without success (driving: off-road)", data["terminated_episodes"]),
        ("policy inference per step", "-" if ms is None else f"{ms:.3f} ms"),
    ] + [(name, f"{value:.4f}") for name, value in data["metrics"].items()]
    rows += [(name, cells[0]) for name, cells in offline_rows([data]).items()]
    if data.get("interrupted"):
        rows.insert(0, ("interrupted", f"{len(data['seeds_not_run'])} seeds not run"))
    return _table(rows)


def _errors(data: dict[str, Any]) -> str:
    """The episodes that could not be scored, with why: they are neither successes nor failures."""
    if not data["errors"]:
        return ""
    rows = [(f"seed {e['seed']}", f"{e['kind']}: {e['reason']}") for e in data["error_episodes"]]
    return "<h2>Errors</h2>" + _table(rows)


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig: Figure) -> str:
    return f'<img alt="plot" src="data:image/png;base64,{_png(fig)}">'


def _success_figure(episodes: list[dict[str, Any]]) -> Figure:
    """Return per seed, each bar coloured by outcome: which seeds fail, and whether failures are near-misses."""
    fig = Figure(figsize=(11, 2.8))
    ax = fig.add_subplot()
    x = np.arange(len(episodes))
    colours = [{"success": _SUCCESS, "failure": _FAILURE}.get(e["outcome"], _ERROR) for e in episodes]
    ax.bar(x, [e["episode_return"] for e in episodes], color=colours)
    step = max(1, len(episodes) // 25)
    ax.set_xticks(x[::step], [str(e["seed"]) for e in episodes][::step], rotation=60, fontsize=7)
    ax.set_xlabel("seed (green: success, red: failure, grey: error)")
    ax.set_ylabel("return")
    ax.axhline(0, color="#888", linewidth=0.5)
    return fig


def _histogram_figure(episodes: list[dict[str, Any]]) -> Figure:
    """Histograms of return, length, time to success and each task metric, successes and failures stacked."""
    series: dict[str, tuple[list[float], list[float]]] = {}

    def add(name: str, value: float | None, success: bool) -> None:
        if value is not None:
            series.setdefault(name, ([], []))[0 if success else 1].append(float(value))

    for e in episodes:
        add("return", e["episode_return"], e["success"])
        add("length (steps)", e["length"], e["success"])
        add("steps to success", e.get("time_to_success"), e["success"])
        for name, value in e["metrics"].items():
            add(name, value, e["success"])
    cols = 3
    rows = (len(series) + cols - 1) // cols
    fig = Figure(figsize=(11, 2.6 * rows))
    for i, (name, (ok, bad)) in enumerate(series.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.hist([ok, bad], bins=15, stacked=True, color=[_SUCCESS, _FAILURE], label=["success", "failure"])
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _actions_figure(episodes: list[dict[str, Any]], labels: list[str], best: dict[str, Any],
                    worst: dict[str, Any]) -> Figure:
    """Each action dimension over time: jitter, saturation and the moment the worst episode went wrong."""
    dims = max((len(e["actions"][0]) for e in episodes if e["actions"]), default=0)
    fig = Figure(figsize=(11, 2.2 * max(1, dims)))
    if dims == 0:
        fig.text(0.5, 0.5, "no actions recorded", ha="center")
        return fig
    for d in range(dims):
        ax = fig.add_subplot(dims, 1, d + 1)
        for e in episodes:
            if e["actions"]:
                ax.plot([a[d] for a in e["actions"]], color="#999", alpha=0.25, linewidth=0.7)
        for e, colour in ((worst, _trace_colour(worst, best=False)), (best, _trace_colour(best, best=True))):
            if e["actions"]:
                ax.plot([a[d] for a in e["actions"]], color=colour, linewidth=1.4,
                        label=f"seed {e['seed']} ({'success' if e['success'] else 'failure'})")
        ax.set_ylabel(labels[d] if d < len(labels) else f"a{d}")
        ax.set_ylim(-1.05, 1.05)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)  # beside the traces, never over them
    fig.axes[-1].set_xlabel("step")
    fig.tight_layout()
    return fig


def _trace_colour(episode: dict[str, Any], best: bool) -> str:
    """Green for a success and red for a failure, as everywhere on the page; the best episode when it failed and
    the worst when it succeeded get colours of their own."""
    if episode["success"]:
        return _SUCCESS if best else _WORST_SUCCEEDED
    return _BEST_FAILED if best else _FAILURE


def _traces_legend(best: dict[str, Any], worst: dict[str, Any]) -> str:
    def name(episode: dict[str, Any], is_best: bool) -> str:
        colour = _trace_colour(episode, is_best)
        outcome = "success" if episode["success"] else "failure"
        return (f'<span style="color:{colour};font-weight:600">{"best" if is_best else "worst"} '
                f'(seed {episode["seed"]}, {outcome})</span>')

    return f"<p>Every episode in grey; {name(best, True)} and {name(worst, False)} in colour.</p>"


def _videos(episodes: list[dict[str, Any]]) -> str:
    filmed = [e for e in episodes if e.get("video")]
    if not filmed:
        return "<p>No videos were recorded for this evaluation.</p>"
    items = []
    for e in sorted(filmed, key=lambda e: (not e["success"], -e["episode_return"])):
        outcome = '<span class="ok">success</span>' if e["success"] else '<span class="bad">failure</span>'
        caption = f"seed {e['seed']}: {outcome}, return {e['episode_return']:.2f}, {e['length']} steps"
        path = Path(e["video"])
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            media = f'<video controls loop muted width="400" src="data:video/mp4;base64,{data}"></video>'
        else:
            media = f"<p>(video {_esc(path)} missing)</p>"
        items.append(f"<figure>{media}<figcaption>{caption}</figcaption></figure>")
    return f'<div class="videos">{"".join(items)}</div>'


def _provenance(policy: dict[str, Any]) -> str:
    parts = [_table([(k, policy[k]) for k in ("kind", "path", "source_policy", "model", "epoch") if policy.get(k)])]
    if policy.get("train_config"):
        parts += ["<h3>Training configuration</h3>", _table(sorted(policy["train_config"].items()))]
    elif policy.get("kind") != "expert":
        parts.append("<p>No training configuration recorded with this policy.</p>")
    dataset = policy.get("dataset")
    if dataset:
        parts += ["<h3>Demonstrations</h3>", _table(list(dataset.items()))]
    elif policy.get("kind") != "expert":
        parts.append("<p>Dataset not found (moved, or recorded on another machine).</p>")
    return "\n".join(parts)


def _episode_table(episodes: list[dict[str, Any]]) -> str:
    names = sorted({m for e in episodes for m in e["metrics"]})
    categories = category_columns(episodes)
    head = "".join(f"<th>{_esc(h)}</th>" for h in ["seed", "outcome", "return", "length", "steps to success",
                                                   *categories, *names])
    rows = []
    for e in episodes:
        outcome = '<span class="ok">success</span>' if e["success"] else (
            f'<span class="err">error: {_esc(e["error_kind"])}</span>' if e["outcome"] == "error" else
            '<span class="bad">ended early</span>' if e["terminated"] else '<span class="bad">time limit</span>')
        cells = [str(e["seed"]), outcome, f"{e['episode_return']:.2f}", str(e["length"]),
                 "-" if e.get("time_to_success") is None else str(e["time_to_success"])]
        cells += [_esc(category_cell(e, c)) for c in categories]
        cells += [f"{e['metrics'][m]:.3f}" if m in e["metrics"] else "-" for m in names]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"
