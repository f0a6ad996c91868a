// Teleoperation page: sends held keys / gamepad axes over a WebSocket, shows the frames the server streams.
"use strict";

const studio = {ws: null, keys: {}, held: new Set(), labels: [], mode: "none", latencies: [], frames: 0, saved: []};
window.studio = studio;  // read by the browser tests and the latency benchmark

const $ = id => document.getElementById(id);
const PAD_DEAD = 0.0;  // the dead zone is applied on the server (demos/controls.py), raw axes are sent

function send(message) {
  if (studio.ws && studio.ws.readyState === WebSocket.OPEN) studio.ws.send(JSON.stringify(message));
}

function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/teleop");
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("cannot open the teleoperation socket"));
    ws.onclose = () => { if (studio.ws === ws) { studio.ws = null; showError("connection to the studio server closed"); setEnabled(false); } };
    ws.onmessage = event => (typeof event.data === "string" ? onJson(JSON.parse(event.data)) : onFrame(event.data));
  });
}

function setEnabled(on) {
  for (const id of ["save", "discard", "pause", "step-once", "reset"]) $(id).disabled = !on;
}

function onJson(msg) {
  if (msg.type === "error") { showError(msg.message); return; }
  clearError();
  if (msg.type === "session") {
    studio.keys = msg.keys; studio.labels = msg.labels; studio.assist = msg.assist;
    setEnabled(true);
    $("hand-back").disabled = !msg.assist;
    buildBars(msg.labels);
    buildLegend(msg.keys, msg.control_hz, msg.speed);
  } else if (msg.type === "saved") {
    studio.saved.push(msg);
    showNotice(`saved ${msg.path} (${msg.steps} steps, ${msg.success ? "solved" : "not solved"})`);
    $("saved-count").textContent = `${studio.saved.length} episode(s) saved this session`;
  }
}

const objectUrls = {};

function onFrame(buffer) {
  const arrival = performance.timeOrigin + performance.now();
  const headerLength = new DataView(buffer).getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLength)));
  let offset = 4 + headerLength;
  let sceneImage = null;
  for (const [name, size] of header.views) {
    const blob = new Blob([new Uint8Array(buffer, offset, size)], {type: "image/jpeg"});
    offset += size;
    const img = name === "view" ? $("view") : camImage(name);
    if (objectUrls[name]) URL.revokeObjectURL(objectUrls[name]);
    objectUrls[name] = URL.createObjectURL(blob);
    img.src = objectUrls[name];
    if (name === "view") sceneImage = img;
  }
  const record = {step: header.report.step, stamp: header.stamp_ms, arrival: arrival - header.stamp_ms, shown: null, mode: header.mode};
  studio.frames += 1;
  studio.latencies.push(record);
  if (studio.latencies.length > 5000) studio.latencies.shift();
  if (sceneImage) sceneImage.decode().then(() => {
    record.shown = performance.timeOrigin + performance.now() - header.stamp_ms;
    $("latency").textContent = record.shown.toFixed(0) + " ms";
  }).catch(() => {});
  showStatus(header);
}

function camImage(name) {
  let img = document.getElementById("cam-" + name);
  if (!img) {
    img = el("img", {id: "cam-" + name, alt: name});
    $("cams").append(el("figure", {}, img, el("figcaption", {}, name.replace(/_image$/, "").replace(/^image$/, "agent view"))));
  }
  return img;
}

function showStatus(header) {
  const r = header.report;
  studio.mode = header.mode; studio.step = r.step; studio.success = r.success; studio.seed = header.seed;
  $("mode").textContent = header.mode;
  $("ep-seed").textContent = header.seed;
  $("step").textContent = r.step;
  $("controller").textContent = r.controller;
  $("reward").textContent = r.reward.toFixed(3);
  $("metrics").textContent = Object.entries(r.info).map(([k, v]) => `${k} ${v.toFixed(3)}`).join("  ");
  const badge = $("success");
  badge.textContent = r.success ? "solved" : (r.done ? "ended, not solved" : "not solved");
  badge.className = "badge " + (r.success ? "ok" : r.done ? "bad" : "");
  $("pause").firstChild.textContent = header.mode === "paused" ? "Resume " : "Pause ";
  r.action.forEach((value, i) => {
    const span = document.getElementById("bar-" + i);
    if (!span) return;
    span.style.left = (50 + 50 * Math.min(0, value)) + "%";
    span.style.width = (50 * Math.abs(value)) + "%";
    document.getElementById("val-" + i).textContent = value.toFixed(2);
  });
}

function buildBars(labels) {
  const bars = $("bars");
  bars.replaceChildren();
  labels.forEach((label, i) => bars.append(el("span", {class: "mono"}, label), el("div", {class: "bar"}, el("span", {id: "bar-" + i})),
                                           el("span", {class: "mono", id: "val-" + i}, "0.00")));
}

function keyName(code) {
  return code.replace(/^Key/, "").replace(/^Arrow/, "").replace("Space", "space");
}

function buildLegend(keys, hz, speed) {
  const byControl = {};
  for (const [code, control] of Object.entries(keys)) (byControl[control] = byControl[control] || []).push(code);
  const legend = $("legend");
  legend.replaceChildren(`${hz} Hz control${speed !== 1 ? " × " + speed : ""}. `);
  for (const [control, codes] of Object.entries(byControl)) {
    legend.append(el("span", {style: "margin-right:12px"}, ...codes.map(c => el("kbd", {}, keyName(c))), " " + control));
  }
  legend.append(el("span", {}, " · ", el("kbd", {}, "P"), " pause ", el("kbd", {}, "N"), " step ", el("kbd", {}, "G"), " expert drives"));
}

function typing(event) {
  const t = event.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT");
}

let lastInput = "";
let padControls = [];
let padAxes = {};

function sendInput() {
  const message = {type: "input", codes: [...studio.held].sort(), controls: padControls, axes: padAxes};
  const text = JSON.stringify(message);
  if (text !== lastInput) { lastInput = text; send(message); }
}

window.addEventListener("keydown", event => {
  if (typing(event) || !studio.ws) return;
  if (event.code in studio.keys) {
    event.preventDefault();
    if (!studio.held.has(event.code)) { studio.held.add(event.code); sendInput(); }
  } else if (event.code === "KeyP" && !event.repeat) {
    send({type: studio.mode === "paused" ? "resume" : "pause"});
    studio.mode = studio.mode === "paused" ? "running" : "paused";
  } else if (event.code === "KeyN") {
    send({type: "step"});
  } else if (event.code === "KeyG" && !event.repeat) {
    send({type: "hand_back"});
  }
});

window.addEventListener("keyup", event => {
  if (studio.held.delete(event.code)) sendInput();
});

window.addEventListener("blur", () => { if (studio.held.size) { studio.held.clear(); sendInput(); } });

function pollGamepad() {
  const pads = navigator.getGamepads ? [...navigator.getGamepads()].filter(Boolean) : [];
  if (pads.length && studio.ws) {
    const p = pads[0];
    const axis = i => (p.axes[i] || 0);
    const button = i => (p.buttons[i] ? p.buttons[i].value : 0);
    padAxes = {steer: axis(0), throttle: button(7) - button(6), x: -axis(1), y: -axis(0), z: -axis(3), yaw: button(5) - button(4)};
    padControls = p.buttons[0] && p.buttons[0].pressed ? ["gripper"] : [];
    sendInput();
  }
  requestAnimationFrame(pollGamepad);
}

async function start() {
  clearError();
  try {
    if (!studio.ws) studio.ws = await connect();
  } catch (err) { showError(err.message); return; }
  studio.held.clear(); lastInput = "";
  send({type: "start", env_id: $("env-id").value, env_kwargs: $("env-kwargs").value, seed: Number($("seed").value),
        speed: Number($("speed").value), assist: $("assist").checked});
}

$("start").addEventListener("click", start);
$("pause").addEventListener("click", () => send({type: studio.mode === "paused" ? "resume" : "pause"}));
$("step-once").addEventListener("click", () => send({type: "step"}));
$("reset").addEventListener("click", () => send({type: "reset", seed: Number($("seed").value)}));
$("hand-back").addEventListener("click", () => send({type: "hand_back"}));
$("save").addEventListener("click", () => send({type: "save", dataset: $("dataset").value, operator: $("operator").value}));
$("discard").addEventListener("click", () => send({type: "discard"}));
for (const button of document.querySelectorAll("button")) button.addEventListener("mouseup", () => button.blur());

api("/api/envs").then(ids => $("env-ids").replaceChildren(...ids.map(id => el("option", {value: id})))).catch(err => showError(err.message));
requestAnimationFrame(pollGamepad);
