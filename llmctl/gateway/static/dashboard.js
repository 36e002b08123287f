// llmctl's dashboard: polls /ui/api/state, starts and stops servers, follows a log.
// Every value goes into the page as text (textContent), never as HTML.
"use strict";
const POLL_MS = 1000;
const LOG_KEEP = 200000; // characters of log kept in the page
let key = sessionStorage.getItem("llmctl-key") || "";
const fragment = new URLSearchParams(location.hash.slice(1)); // /ui#key=KEY: never sent to the server
if (fragment.get("key")) {
  key = fragment.get("key");
  sessionStorage.setItem("llmctl-key", key);
  history.replaceState(null, "", location.pathname);
}
let logAbort = null;

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function headers(json) {
  const h = {};
  if (key) h.Authorization = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function duration(s) {
  if (s === null || s === undefined) return "";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
  return h ? h + "h " + m + "m" : m ? m + "m " + r + "s" : r + "s";
}

function setStatus(text, bad) {
  $("status").textContent = text;
  $("status").className = bad ? "error" : "";
}

async function api(path, options) {
  const resp = await fetch(path, Object.assign({ headers: headers(options && options.body) }, options));
  if (resp.status === 401) {
    $("key-form").hidden = false;
    throw new Error("the gateway needs its API key");
  }
  const data = await resp.json();
  if (!resp.ok) throw new Error((data.error && data.error.message) || "HTTP " + resp.status);
  return data;
}

function button(label, cls, onClick) {
  const b = el("button", label, cls);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function profileRow(p) {
  const tr = el("tr");
  tr.id = "profile-" + p.name;
  tr.dataset.profile = p.name;
  const idle = p.idle_left_s === undefined ? (p.idle_ttl === null ? "never" : "") : duration(p.idle_left_s);
  const vram = p.vram_mib === null || p.vram_mib === undefined ? "" : p.vram_mib + " MiB";
  const inflight = p.inflight + (p.waiting ? " (+" + p.waiting + " waiting)" : "");
  const model = p.model ? String(p.model).split("/").pop() : "";
  const cells = [[p.name, "name"], [p.state, "state state-" + p.state], [p.engine], [model, "model"],
    [p.port], [p.pid], [duration(p.uptime_s), "uptime"], [p.restarts], [vram], [inflight, "inflight"],
    [idle, "idle"]];
  for (const [text, cls] of cells) tr.append(el("td", text, cls));
  tr.children[1].title = p.reason || p.message || "";
  tr.children[3].title = p.model || "";
  const actions = el("td");
  const start = button("start", "start", () => act(p.name, "start"));
  const stop = button("stop", "stop", () => act(p.name, "stop"));
  start.disabled = ["running", "starting", "stopping", "recovering"].includes(p.state);
  stop.disabled = ["stopped", "starting", "stopping"].includes(p.state);
  actions.append(start, stop, button("log", "log", () => followLog(p.name)));
  tr.append(actions);
  return tr;
}

function recentRow(r) {
  const tr = el("tr");
  const tokens = r.prompt_tokens === null && r.completion_tokens === null ? ""
    : (r.prompt_tokens ?? "?") + " / " + (r.completion_tokens ?? "?");
  const cells = [new Date(r.time * 1000).toLocaleTimeString(), r.model || "", r.profile || "", r.endpoint,
    r.status, tokens, Math.round(r.latency_s * 1000) + " ms"];
  for (const text of cells) tr.append(el("td", text));
  return tr;
}

function render(state) {
  $("profiles").tBodies[0].replaceChildren(...state.profiles.map(profileRow));
  $("recent").tBodies[0].replaceChildren(...state.recent.map(recentRow));
  $("tasks").textContent = state.tasks.length ? "Tasks: " + state.tasks.map(
    (t) => t.name + " → " + [t.profile].concat(t.fallback).join(", ")).join("; ") : "";
}

async function poll() {
  try {
    render(await api("/ui/api/state"));
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (err) {
    setStatus(err.message, true);
  }
  setTimeout(poll, POLL_MS);
}

async function act(name, what) {
  try {
    const data = await api("/ui/api/profiles/" + encodeURIComponent(name) + "/" + what,
      { method: "POST", body: "{}" });
    setStatus(data.message);
  } catch (err) {
    setStatus(what + " " + name + ": " + err.message, true);
  }
}

function appendLog(text) {
  const pre = $("log");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.append(document.createTextNode(text));
  if (pre.textContent.length > LOG_KEEP) pre.textContent = pre.textContent.slice(-LOG_KEEP);
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

async function followLog(name) {
  if (logAbort) logAbort.abort();
  const abort = logAbort = new AbortController();
  $("log-name").textContent = name;
  $("log").textContent = "";
  try {
    const resp = await fetch("/ui/api/logs/" + encodeURIComponent(name) + "?kb=32",
      { headers: headers(false), signal: abort.signal });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        appendLog("\n[the log stream ended: the gateway stopped; choose “log” again to follow it]\n");
        break;
      }
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const lines = buf.slice(0, end).split("\n").filter((l) => l.startsWith("data:"));
        buf = buf.slice(end + 2);
        if (lines.length) appendLog(lines.map((l) => l.slice(l.startsWith("data: ") ? 6 : 5)).join("\n"));
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) appendLog("\n[log: " + err.message + "]\n");
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value;
  sessionStorage.setItem("llmctl-key", key);
  $("key-form").hidden = true;
});
poll();
