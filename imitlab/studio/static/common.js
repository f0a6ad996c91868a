// Shared by the studio's pages: the one-line error bar and JSON requests that surface the server's message.
"use strict";

function showError(message) {
  const bar = document.getElementById("error");
  bar.textContent = String(message).split("\n")[0];
  bar.title = String(message);
  bar.classList.add("shown");
}

function clearError() {
  document.getElementById("error").classList.remove("shown");
}

function showNotice(message) {
  const bar = document.getElementById("notice");
  bar.textContent = message;
  bar.classList.add("shown");
}

async function api(path, body) {
  const init = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error("the studio server does not answer (" + err.message + ")");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(data.detail) ? data.detail.map(d => d.msg).join("; ") : data.detail;
    throw new Error(detail || response.statusText);
  }
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(0) + " %"; }
