// reactor's traces page: plain JavaScript, no build step, no third-party code.
// Everything shown is put in the page as text (textContent), never as HTML.
"use strict";

const MAX_EVENTS = 200;
const state = {
  token: sessionStorage.getItem("reactor.token") || "",
  lastEventId: null,
  openRun: null,
  refreshTimer: null,
  streamAbort: null,
  runsRunning: false,
};

// ---------------------------------------------------------------- helpers

function $(sel) { return document.querySelector(sel); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "title") node.title = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function badge(text, cls) {
  return el("span", {class: "badge s-" + String(cls || text).replace(/[^a-z-]/gi, "")}, text);
}

function pad(n, w) { return String(n).padStart(w || 2, "0"); }

function fmtTime(ts) {
  if (ts === null || ts === undefined) return "";
  const d = new Date(ts * 1000);
  return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
}

function fmtDateTime(ts) {
  if (ts === null || ts === undefined) return "";
  const d = new Date(ts * 1000);
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + fmtTime(ts);
}

function fmtDur(s) {
  if (s === null || s === undefined) return "";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms";
  if (s < 120) return s.toFixed(2) + " s";
  return (s / 60).toFixed(1) + " min";
}

function fmtSpan(s) {
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (s >= size && s % size === 0) return (s / size) + " " + unit;
  }
  return s + " s";
}

function json(v) { return JSON.stringify(v, null, 2); }

function compact(v) {
  const s = JSON.stringify(v);
  return s === "{}" ? "" : s;
}

function showError(msg) {
  const e = $("#error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(path) {
  const resp = await fetch(path, {headers: authHeaders(), cache: "no-store"});
  if (resp.status === 401) {
    $("#login").hidden = false;
    throw new Error("a token is needed");
  }
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error((body && body.error) || (path + ": HTTP " + resp.status));
  return body;
}

// ---------------------------------------------------------------- VMs, rules, readiness

async function loadReady() {
  const r = await fetch("/readyz", {cache: "no-store"});
  const body = await r.json().catch(() => ({checks: {}}));
  const b = $("#ready");
  const failing = Object.entries(body.checks || {}).filter(([, ok]) => !ok).map(([k]) => k);
  b.textContent = body.ready ? "ready" : "not ready: " + failing.join(", ");
  b.className = "badge " + (body.ready ? "ok" : "bad");
}

async function loadVMs() {
  const vms = await api("/api/vms");
  const body = $("#vms tbody");
  body.replaceChildren(...vms.map(vm => el("tr", {dataset: {vm: vm.name}},
    el("td", {}, el("strong", {}, vm.name), " ",
       el("span", {class: "muted"}, Object.entries(vm.labels).map(([k, v]) => k + "=" + v).join(" "))),
    el("td", {title: vm.last_error || ""}, badge(vm.state)),
    el("td", {}, badge(vm.status, vm.status === "running" ? "ok" : "unknown")),
    el("td", {title: vm.resume ? JSON.stringify(vm.resume) : ""}, resumeText(vm.resume)),
    el("td", {}, vm.events_received),
    el("td", {}, vm.reconnects),
    el("td", {class: "muted"}, qemuVersion(vm.qemu_version)))));
  $("#vms-section .empty").hidden = vms.length > 0;
  fillSelect($("#f-vm"), vms.map(v => v.name));
}

// what a resume step is doing with the VM: waiting for a slot (its place), backing off, verifying...
function resumeText(r) {
  if (!r) return "";
  const left = r.until ? " " + Math.max(0, Math.round(r.until - Date.now() / 1000)) + "s" : "";
  const text = {waiting: "waiting #" + (r.position || "?"), backoff: "backoff" + left, verify: "verifying" + left,
                "gave-up": "gave up"}[r.phase] || r.phase;
  return badge(text + (r.phase !== "gave-up" && r.attempt > 1 ? " · try " + r.attempt : ""),
               r.phase === "gave-up" ? "bad" : "unknown");
}

function qemuVersion(v) {
  const q = v && (v.qemu || v);
  return q && q.major !== undefined ? [q.major, q.minor, q.micro].join(".") : "";
}

async function loadRules() {
  const rules = await api("/api/rules");
  const body = $("#rules tbody");
  body.replaceChildren(...rules.map(r => {
    const last = r.last_run;
    return el("tr", {dataset: {rule: r.name}, title: r.description || ""},
      el("td", {}, el("strong", {}, r.name),
         el("div", {class: "muted"}, r.file.split("/").pop() + ":" + r.line)),
      el("td", {}, r.on ? r.on.join(", ") : "*"),
      el("td", {}, r.mode, r.throttle ? el("div", {class: "muted"},
         "≤ " + r.throttle.max + " per " + fmtSpan(r.throttle.within)) : null,
         r.threshold ? el("div", {class: "muted"}, "when " + r.threshold.count + " distinct " +
           r.threshold.distinct.join("+") + " in " + fmtSpan(r.threshold.within) +
           " (" + Object.values(r.threshold.pending || {}).reduce((a, b) => Math.max(a, b), 0) + " now)") : null,
         correlation(r)),
      el("td", {}, last ? el("a", {href: "#run/" + last.id}, badge(last.status), " ",
                              el("span", {class: "muted"}, fmtDateTime(last.started)))
                        : el("span", {class: "muted"}, "never")));
  }));
  fillSelect($("#f-rule"), rules.map(r => r.name));
}

// after / count / unless: what the rule waits for, its counts and pending matches (per key)
function correlation(r) {
  const c = r.correlation || {};
  const parts = [];
  if (r.after) parts.push(el("div", {class: "muted corr", dataset: {form: "after"}},
    "after " + r.after.event.join("/") + " in " + fmtSpan(r.after.within) +
    " (" + Object.keys(c.after || {}).length + " keys hold one)"));
  if (r.count) {
    const counts = c.counts || {};
    const shown = Object.entries(counts).slice(0, 5).map(([k, n]) => k + ": " + n + "/" + r.count.min);
    parts.push(el("div", {class: "muted corr", dataset: {form: "count"}},
      "count " + r.count.min + " in " + fmtSpan(r.count.within) +
      (shown.length ? " (" + shown.join(", ") + (Object.keys(counts).length > 5 ? ", …" : "") + ")" : "")));
  }
  if (r.unless) {
    const pending = c.pending || [];
    const cancelled = c.cancelled || [];
    const last = cancelled.length ? cancelled[cancelled.length - 1] : null;
    parts.push(el("div", {class: "muted corr", dataset: {form: "unless"}},
      "unless " + r.unless.event.join("/") + " in " + fmtSpan(r.unless.within) + ": " +
      pending.length + " pending" +
      (pending.length ? " (" + pending.slice(0, 3).map(p => p.key + (p.late ? " late, waits for its VM"
                                                       : " until " + fmtDateTime(p.until))).join(", ") +
                        (pending.length > 3 ? ", …" : "") + ")" : "") +
      (last ? "; last cancelled by " + last.by + " from " + last.by_vm + " at " + fmtDateTime(last.at) : "")));
  }
  if (c.overflow) parts.push(el("div", {class: "muted corr bad"}, c.overflow + " refused: state full"));
  return parts;
}

function fillSelect(select, names) {
  const current = select.value;
  const have = new Set(Array.from(select.options).map(o => o.value));
  for (const n of names) if (!have.has(n)) select.append(el("option", {value: n}, n));
  select.value = current;
}

// ---------------------------------------------------------------- runs

async function loadRuns() {
  const q = new URLSearchParams();
  for (const [k, id] of [["vm", "#f-vm"], ["rule", "#f-rule"], ["since", "#f-since"]]) {
    const v = $(id).value;
    if (v) q.set(k, v);
  }
  q.set("limit", "100");
  const runs = await api("/api/runs?" + q);
  state.runsRunning = runs.some(r => r.status === "running" || r.status === "queued");
  const body = $("#runs tbody");
  body.replaceChildren(...runs.map(r => el("tr", {
      class: "clickable" + (state.openRun === r.id ? " selected" : ""), dataset: {runId: r.id},
      onclick: () => { location.hash = "#run/" + r.id; }},
    el("td", {}, el("a", {href: "#run/" + r.id}, r.id)),
    el("td", {}, fmtDateTime(r.started)),
    el("td", {}, r.rule),
    el("td", {}, r.vm),
    el("td", {}, r.event_name),
    el("td", {title: r.error || ""}, badge(r.status)),
    el("td", {}, fmtDur(r.duration)))));
  $("#runs-section .empty").hidden = runs.length > 0;
}

// ---------------------------------------------------------------- a run's trace

function kv(pairs) {
  return el("dl", {class: "kv"}, pairs.filter(p => p[1] !== null && p[1] !== undefined && p[1] !== "")
    .map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function condition(c) {
  const held = c.held === true ? badge("held", "held") : c.held === false ? badge("not held", "not-held")
                                                                          : badge("unknown", "unknown");
  const source = typeof c.source === "string" ? c.source : JSON.stringify(c.source);
  return el("div", {class: "cond", dataset: {kind: c.kind}},
    el("span", {class: "kind"}, c.kind), held, el("code", {}, source),
    c.detail && c.detail.length ? el("span", {class: "muted"}, c.detail.join("; ")) : null);
}

function step(s) {
  return el("div", {class: "step", dataset: {step: s.index}},
    el("div", {class: "step-head"},
      el("span", {class: "muted"}, "#" + s.index), el("span", {class: "action"}, s.action),
      badge(s.status), el("span", {class: "muted"}, fmtTime(s.started) + " · " + fmtDur(s.duration))),
    el("div", {}, el("span", {class: "muted"}, "arguments"), el("pre", {class: "args"}, json(s.args))),
    s.result !== null && s.result !== undefined ?
      el("div", {}, el("span", {class: "muted"}, "result"), el("pre", {class: "result"}, json(s.result))) : null,
    s.error ? el("div", {}, el("span", {class: "muted"}, "error"), el("pre", {class: "step-error"}, s.error)) : null);
}

async function openRun(id) {
  state.openRun = id;
  const section = $("#trace");
  let run;
  try {
    run = await api("/api/runs/" + id);
  } catch (err) {
    section.hidden = false;
    $("#trace-title").textContent = "Run #" + id;
    $("#trace-body").replaceChildren(el("p", {class: "muted"}, String(err.message || err)));
    return;
  }
  if (state.openRun !== id) return;
  $("#trace-title").textContent = "Run #" + run.id + " — " + run.rule;
  const ev = run.event;
  const rule = run.rule_now;
  $("#trace-body").replaceChildren(
    kv([["status", badge(run.status)], ["outcome", run.outcome === "started" ? null : run.outcome], ["VM", run.vm],
        ["started", fmtDateTime(run.started)], ["took", fmtDur(run.duration)],
        ["error", run.error ? el("span", {class: "step-error"}, run.error) : null]]),
    el("h3", {}, "Triggering event"),
    ev ? el("div", {id: "trace-event"}, kv([["event", el("strong", {}, ev.name)], ["from", ev.vm],
                                             ["at", fmtDateTime(ev.timestamp)],
                                             ["problems", ev.problems.length ? ev.problems.join("; ") : null]]),
             el("pre", {}, json(ev.data)))
       : el("p", {class: "muted"}, run.event_name + " (its data was not recorded: journal.events is 'none')"),
    el("h3", {}, "Conditions"),
    rule ? el("div", {id: "trace-conditions"},
              rule.description ? el("p", {class: "muted"}, rule.description) : null,
              run.conditions.map(condition),
              el("p", {class: "muted"}, "The rule as loaded now (" + rule.file + ":" + rule.line + ").")) :
           el("p", {class: "muted"}, "The rule " + run.rule + " is not loaded any more."),
    el("h3", {}, "Steps"),
    run.steps.length ? el("div", {id: "trace-steps"}, run.steps.map(step))
                     : el("p", {class: "muted"}, run.status === "running" ? "running…" : "no steps ran"));
  section.hidden = false;
  for (const tr of document.querySelectorAll("#runs tr.selected")) tr.classList.remove("selected");
  const row = document.querySelector(`#runs tr[data-run-id="${run.id}"]`);
  if (row) row.classList.add("selected");
}

function route() {
  const m = /^#run\/(\d+)$/.exec(location.hash);
  if (m) {
    openRun(Number(m[1]));
  } else {
    state.openRun = null;
    $("#trace").hidden = true;
  }
}

// ---------------------------------------------------------------- live events (server-sent events over fetch)

function addEvent(e, fresh) {
  const list = $("#events");
  const li = el("li", {class: fresh ? "event new" : "event", dataset: {name: e.name, vm: e.vm, seq: e.seq}},
    el("span", {class: "muted"}, fmtTime(e.timestamp)),
    el("strong", {class: "name"}, e.name),
    el("span", {class: "vm"}, e.vm),
    el("span", {class: "data", title: compact(e.data)}, compact(e.data)));
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function scheduleRefresh(delay) {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(async () => {
    state.refreshTimer = null;
    await refresh();
  }, delay);
}

function onMessage(kind, data, fresh) {
  let obj;
  try { obj = JSON.parse(data); } catch { return; }
  if (kind === "event") {
    addEvent(obj, fresh);
    scheduleRefresh(1000);
  } else if (kind === "run") {
    scheduleRefresh(300);
    if (state.openRun !== null && obj.run === state.openRun) setTimeout(() => openRun(obj.run), 300);
  }
}

async function stream() {
  const live = $("#live");
  for (;;) {
    let fresh = false;
    try {
      const headers = authHeaders({"Accept": "text/event-stream"});
      if (state.lastEventId !== null) headers["Last-Event-ID"] = String(state.lastEventId);
      const resp = await fetch("/api/events?backlog=50", {headers, cache: "no-store"});
      if (resp.status === 401) { $("#login").hidden = false; throw new Error("token needed"); }
      if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
      live.textContent = "stream: live";
      live.className = "badge ok";
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      setTimeout(() => { fresh = true; }, 500);
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let kind = "message", data = [], id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "event") kind = val;
            else if (field === "data") data.push(val);
            else if (field === "id") id = val;
          }
          if (id !== null && /^\d+$/.test(id)) state.lastEventId = Number(id);
          if (data.length) onMessage(kind, data.join("\n"), fresh);
        }
      }
    } catch (err) {
      // fall through: reconnect below
    }
    live.textContent = "stream: reconnecting";
    live.className = "badge off";
    await new Promise(r => setTimeout(r, 2000));
  }
}

// ---------------------------------------------------------------- start

async function refresh() {
  try {
    await Promise.all([loadReady(), loadVMs(), loadRules(), loadRuns()]);
    showError("");
  } catch (err) {
    showError(String(err.message || err));
  }
}

function start() {
  $("#login").addEventListener("submit", ev => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem("reactor.token", state.token);
    $("#login").hidden = true;
    refresh();
  });
  for (const id of ["#f-vm", "#f-rule", "#f-since"]) $(id).addEventListener("change", loadRuns);
  $("#trace-close").addEventListener("click", ev => { ev.preventDefault(); location.hash = ""; });
  window.addEventListener("hashchange", route);
  refresh().then(route);
  stream();
  setInterval(() => { if (!document.hidden) refresh(); }, 5000);
  setInterval(() => { if (state.runsRunning && state.openRun !== null) openRun(state.openRun); }, 2000);
}

document.addEventListener("DOMContentLoaded", start);
