// Runs page: every run's validation and held-out success, its report, and a paired comparison of two runs.
"use strict";

const $ = id => document.getElementById(id);

async function loadRuns() {
  const runs = await api("/api/runs");
  const body = $("runs").querySelector("tbody");
  if (!runs.length) { body.replaceChildren(el("tr", {}, el("td", {colspan: 8}, "no runs (folders with train_log.json) under the studio's folder"))); return; }
  body.replaceChildren(...runs.map((run, i) => {
    const h = run.heldout;
    return el("tr", {"data-run": run.path},
      el("td", {}, el("input", {type: "radio", name: "a", value: run.path, checked: i === 0})),
      el("td", {}, el("input", {type: "radio", name: "b", value: run.path, checked: i === 1})),
      el("td", {class: "mono"}, run.path),
      el("td", {}, run.env_id || "–"),
      el("td", {}, run.best_epoch ?? "–"),
      el("td", {}, pct(run.best_validation)),
      el("td", {}, h ? `${h.successes}/${h.episodes} = ${pct(h.success_rate)} (${pct(h.success_ci95[0])}–${pct(h.success_ci95[1])})` : (run.error || "not evaluated")),
      el("td", {}, run.report ? el("a", {href: run.report, target: "_blank"}, "report.html") : "–"));
  }));
}

async function compare() {
  clearError();
  const a = document.querySelector("input[name=a]:checked"), b = document.querySelector("input[name=b]:checked");
  try {
    if (!a || !b) throw new Error("choose run A and run B");
    const r = await api(`/api/compare?a=${encodeURIComponent(a.value)}&b=${encodeURIComponent(b.value)}`);
    const s = r.success;
    $("comparison").replaceChildren(
      el("table", {style: "width:auto"},
        el("tr", {}, el("th", {}, ""), el("th", {}, "B succeeds"), el("th", {}, "B fails")),
        el("tr", {}, el("th", {}, "A succeeds"), el("td", {}, s.both_succeed), el("td", {}, s.only_a)),
        el("tr", {}, el("th", {}, "A fails"), el("td", {}, s.only_b), el("td", {}, s.neither))),
      el("p", {}, `A = ${r.a}, B = ${r.b} on ${s.seeds} shared seeds: success A − B ${(100 * s.success_diff).toFixed(1)} points ` +
                  `(95 % paired CI ${(100 * s.success_diff_ci95[0]).toFixed(1)} to ${(100 * s.success_diff_ci95[1]).toFixed(1)}), exact McNemar p = ${s.mcnemar_p.toPrecision(3)}`),
      el("pre", {}, r.markdown));
    $("comparison-panel").style.display = "block";
  } catch (err) { showError(err.message); }
}

$("compare").addEventListener("click", compare);
loadRuns().catch(err => showError(err.message));
