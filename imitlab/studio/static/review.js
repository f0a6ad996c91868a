// Review page: a dataset's episodes with audit flags; exclude/include with a reason; edit the split; play an episode.
"use strict";

const $ = id => document.getElementById(id);
const review = {path: null, episodes: [], episode: null, t: 0, timer: null};
window.review = review;
const COLORS = ["#2f6fed", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#6b7280", "#d946ef", "#0ea5e9", "#84cc16", "#f43f5e",
                "#14b8a6", "#a16207", "#4338ca", "#be123c"];

async function loadDatasets() {
  const list = await api("/api/datasets");
  $("datasets").replaceChildren(el("option", {value: ""}, list.length ? "choose a dataset…" : "no datasets found"),
    ...list.map(d => el("option", {value: d.path}, d.error ? `${d.path} (unreadable)` : `${d.path} · ${d.env_id} · ${d.episodes} episodes`)));
  const wanted = new URLSearchParams(location.search).get("dataset");
  if (wanted) { $("datasets").value = wanted; await openDataset(wanted); }
}

async function openDataset(path) {
  clearError();
  try {
    const data = await api("/api/dataset?path=" + encodeURIComponent(path));
    review.path = path;
    review.episodes = data.episodes;
    $("episodes-title").textContent = `Episodes · ${path} · ${data.env_id}`;
    renderTable();
  } catch (err) { showError(err.message); }
}

function renderTable() {
  const body = $("episodes").querySelector("tbody");
  body.replaceChildren(...review.episodes.map(ep => {
    const reason = el("input", {type: "text", class: "inline reason", placeholder: "why exclude?"});
    const action = ep.excluded
      ? el("span", {}, el("span", {class: "badge warn", title: ep.excluded}, "excluded: " + ep.excluded), " ",
           el("button", {class: "include", onclick: () => setExcluded(ep.name, null)}, "Include"))
      : el("span", {}, reason, " ", el("button", {class: "danger exclude", onclick: () => setExcluded(ep.name, reason.value)}, "Exclude"));
    const split = el("select", {class: "split", onchange: e => setSplit(ep.name, e.target.value)},
                     ...["", "train", "valid"].map(s => el("option", {value: s, selected: ep.split === (s || null)}, s || "–")));
    const row = el("tr", {"data-episode": ep.name, class: (ep.excluded ? "excluded " : "") + (review.episode && review.episode.name === ep.name ? "selected" : "")},
      el("td", {class: "name"}, el("a", {href: "#", onclick: e => { e.preventDefault(); openEpisode(ep.name); }}, ep.name)),
      el("td", {}, ep.seed ?? "–"),
      el("td", {}, el("span", {class: "badge " + (ep.success ? "ok" : "bad")}, ep.success ? "yes" : "no")),
      el("td", {}, ep.length ?? "–"),
      el("td", {class: "nowrap"}, ep.source + (ep.operator ? " · " + ep.operator : "")),
      el("td", {}, ...ep.flags.map(f => el("span", {class: "chip", title: f.reason}, f.check))),
      el("td", {}, split),
      el("td", {class: "training"}, action));
    return row;
  }));
}

async function setExcluded(name, reason) {
  clearError();
  try {
    await api("/api/exclude", {path: review.path, name, reason});
    showNotice(reason === null ? `${name} is back in training` : `${name} excluded from training (the file is kept)`);
    await openDataset(review.path);
  } catch (err) { showError(err.message); }
}

async function setSplit(name, split) {
  clearError();
  try {
    if (!split) throw new Error("choose train or valid (an episode cannot leave the split)");
    await api("/api/split", {path: review.path, name, split});
    await openDataset(review.path);
  } catch (err) { showError(err.message); await openDataset(review.path); }
}

async function openEpisode(name) {
  clearError();
  try {
    const ep = await api(`/api/episode?path=${encodeURIComponent(review.path)}&name=${encodeURIComponent(name)}`);
    review.episode = ep;
    $("player-title").textContent = `Player · ${name} · seed ${ep.attrs.seed} · ${ep.length} steps`;
    $("cameras").replaceChildren(...ep.cameras.map(cam => el("figure", {style: "margin:0"}, el("img", {id: "frame-" + cam, alt: cam}),
                                                               el("figcaption", {class: "legend"}, cam))));
    $("scrub").max = ep.length - 1;
    renderTable();
    seek(0);
  } catch (err) { showError(err.message); }
}

function seek(t) {
  const ep = review.episode;
  if (!ep) return;
  review.t = Math.max(0, Math.min(ep.length - 1, t));
  $("scrub").value = review.t;
  $("t").textContent = `t = ${review.t}`;
  for (const cam of ep.cameras) {
    $("frame-" + cam).src = `/api/frame?path=${encodeURIComponent(review.path)}&name=${encodeURIComponent(ep.name)}&camera=${cam}&t=${review.t}`;
  }
  plot($("plot-actions"), ep.actions, ep.action_labels, "action", ep.intervention);
  plot($("plot-state"), ep.state, ep.state.length ? ep.state[0].map((_, i) => "s" + i) : [], "state", null);
  const a = ep.actions[review.t].map((v, i) => `${ep.action_labels[i]} ${v.toFixed(2)}`).join("  ");
  const who = ep.intervention ? (ep.intervention[review.t] ? " · human" : " · expert") : "";
  $("plot-legend").textContent = `${a} · reward ${ep.rewards[review.t].toFixed(3)}${who}`;
}

function plot(canvas, rows, labels, title, shade) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 24;
  ctx.clearRect(0, 0, w, h);
  if (!rows.length) return;
  const values = rows.flat().filter(Number.isFinite);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
  const x = t => pad + (w - 2 * pad) * (rows.length > 1 ? t / (rows.length - 1) : 0);
  const y = v => h - pad - (h - 2 * pad) * (v - lo) / (hi - lo);
  if (shade) {  // steps the expert controlled (assist mode) in grey
    ctx.fillStyle = "#eef1f5";
    shade.forEach((who, t) => { if (!who) ctx.fillRect(x(t) - 1, pad, Math.max(2, (w - 2 * pad) / rows.length), h - 2 * pad); });
  }
  ctx.strokeStyle = "#d0d5dd"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(pad, y(0)); ctx.lineTo(w - pad, y(0)); ctx.stroke();
  labels.forEach((label, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length]; ctx.lineWidth = 1.6; ctx.beginPath();
    rows.forEach((row, t) => (t ? ctx.lineTo(x(t), y(row[i])) : ctx.moveTo(x(t), y(row[i]))));
    ctx.stroke();
  });
  ctx.strokeStyle = "#111827"; ctx.lineWidth = 1.5;
  ctx.beginPath(); ctx.moveTo(x(review.t), pad - 6); ctx.lineTo(x(review.t), h - pad + 6); ctx.stroke();
  ctx.fillStyle = "#667085"; ctx.font = "12px system-ui";
  ctx.fillText(`${title}  [${lo.toFixed(2)}, ${hi.toFixed(2)}]`, pad, 14);
  let lx = pad + 170;
  if (labels.length <= 6) labels.forEach((label, i) => { ctx.fillStyle = COLORS[i % COLORS.length]; ctx.fillText(label, lx, 14); lx += ctx.measureText(label).width + 14; });
}

$("scrub").addEventListener("input", e => seek(Number(e.target.value)));
$("play").addEventListener("click", () => {
  if (review.timer) { clearInterval(review.timer); review.timer = null; $("play").textContent = "Play"; return; }
  if (!review.episode) return;
  if (review.t >= review.episode.length - 1) seek(0);
  $("play").textContent = "Pause";
  review.timer = setInterval(() => {
    if (review.t >= review.episode.length - 1) { clearInterval(review.timer); review.timer = null; $("play").textContent = "Play"; return; }
    seek(review.t + 1);
  }, 100);
});
$("datasets").addEventListener("change", e => e.target.value && openDataset(e.target.value));
$("open").addEventListener("click", () => openDataset($("dataset-path").value || $("datasets").value));
$("auto-split").addEventListener("click", async () => {
  clearError();
  try {
    const masks = await api("/api/split/auto", {path: review.path, valid_fraction: Number($("valid-fraction").value)});
    showNotice(`split written: ${masks.train.length} train, ${masks.valid.length} valid episodes (masks.json)`);
    await openDataset(review.path);
  } catch (err) { showError(err.message); }
});
loadDatasets().catch(err => showError(err.message));
