// Wardlink ward dashboard: one page, no build step, served by the hub and, as the ward view,
// by each ward's edge (which marks the page with a `wardlink-view` meta element naming its
// edge and ward, and tells it over the WebSocket whether the hub is reachable).
//
// Sign-in takes a token (pasted, or ?token= once; kept in sessionStorage for this tab only).
// The ward view is first painted from the hub's history endpoint; the WebSocket then resumes
// with ?since= the history's seq, and every reconnect resumes from the last event seen, so a
// network blip loses nothing and repeats nothing. Values update in place (no layout shift).
"use strict";

const TOKEN_KEY = "wardlink.token";
const WINDOW_MS = 30 * 60 * 1000;
const VITALS = [
  ["hr", "HR", "/min"],
  ["spo2", "SpO\u2082", "%"],
  ["rr", "RR", "/min"],
  ["temp", "Temp", "\u00b0C"],
  ["bp", "BP", "mmHg"],
];
const RANK = { high: 3, medium: 2, low: 1 };

const $ = (id) => document.getElementById(id);

// Which server this page is on: the hub, or an edge's ward view (one ward only).
const VIEW = (() => {
  const m = document.querySelector('meta[name="wardlink-view"]');
  return m ? { kind: "ward", edge: m.dataset.edge, ward: m.dataset.ward } : { kind: "hub" };
})();

function wardsShown() {
  return VIEW.kind === "ward" ? [VIEW.ward] : state.claims.wards || [];
}

// Says plainly what this page is connected to and, on a ward view, whether the hub is
// reachable (alarms are then answered here; texts from the hub may not go out).
function renderView(hub) {
  const v = $("view");
  if (VIEW.kind === "hub") {
    v.className = "view hub";
    v.textContent = "Hub";
    return;
  }
  v.className = `view ward ${hub || "unknown"}`;
  v.dataset.hub = hub || "unknown";
  const link = hub === "reachable" ? "hub reachable" : hub === "unreachable" ? "hub unreachable: this ward view works alone" : "hub: checking";
  v.textContent = `Ward view (${VIEW.edge}) \u2014 ${link}`;
}
const state = {
  token: null,
  claims: null,
  lastSeq: 0,
  ws: null,
  retry: 0,
  failures: 0,
  patients: new Map(),
  alarms: new Map(),
  edges: new Map(),
  dirty: new Set(),
  frame: 0,
  expiry: 0,
  reconnect: 0,
  resume: false,
  applied: new Set(),
  openPatient: null,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
  } catch (_) {
    return null;
  }
}

function ago(ms) {
  if (!ms) return "no data";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function toast(text) {
  $("toast").textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => ($("toast").textContent = ""), 6000);
}

// ---- sign-in ---------------------------------------------------------------------------

const MESSAGE_KEY = "wardlink.message";

// Back to sign-in: the token is forgotten and the page reloads, so nothing of the last
// session (tiles, alarms, an open chart) stays on screen for whoever signs in next.
function signIn(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.setItem(MESSAGE_KEY, message || "");
  state.token = null;
  location.reload();
}

function showSignIn() {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-message").textContent = sessionStorage.getItem(MESSAGE_KEY) || "";
  sessionStorage.removeItem(MESSAGE_KEY);
  $("token").focus();
}

// Fires at the token's expiry (re-armed: a timer cannot wait more than about 24 days).
function armExpiry() {
  const left = state.claims.exp * 1000 - Date.now();
  if (left <= 0) return signIn("Your session has expired. Sign in again.");
  state.expiry = setTimeout(armExpiry, Math.min(left, 2 ** 31 - 1));
}

function boot() {
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showSignIn();
  const claims = claimsOf(token);
  if (!claims || !claims.exp) return signIn("That is not a Wardlink access token.");
  if (claims.exp * 1000 <= Date.now()) return signIn("Your session has expired. Sign in again.");
  state.token = token;
  state.claims = claims;
  armExpiry();
  $("signin").hidden = true;
  $("app").hidden = false;
  const wards = wardsShown();
  $("wards").textContent = wards.length ? wards.join(", ") : "all wards";
  renderView(null);
  $("who").textContent = `${claims.sub} (${claims.role})`;
  firstPaint().then(connect);
}

async function api(path) {
  const r = await fetch(path, { headers: { authorization: `Bearer ${state.token}` } });
  if (r.status === 401) {
    signIn("Your access was refused. Sign in again.");
    throw new Error("401");
  }
  if (!r.ok) throw new Error(`${r.status}`);
  return r.json();
}

// The ward view starts from each ward's history; the live stream resumes after the oldest of
// their seqs (events in between that a history already held are skipped by seq).
async function firstPaint() {
  let since = null;
  for (const ward of wardsShown()) {
    try {
      const h = await api(`/api/wards/${encodeURIComponent(ward)}/history`);
      for (const e of h.events) {
        if (typeof e.seq === "number" && e.seq > 0) state.applied.add(e.seq);
        apply(e);
      }
      since = since === null ? h.seq : Math.min(since, h.seq);
    } catch (e) {
      if (!state.token) return;
      toast(`Ward ${ward}: history unavailable (${e.message}); showing live data only.`);
    }
  }
  if (since !== null) {
    state.lastSeq = since;
    state.resume = true;
  }
}

// ---- live connection -------------------------------------------------------------------

function setLink(kind, text) {
  const l = $("link");
  l.className = `link ${kind}`;
  l.textContent = text;
}

function connect() {
  if (!state.token) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  let query = `token=${encodeURIComponent(state.token)}`;
  if (state.resume || state.lastSeq > 0) query += `&since=${state.lastSeq}`;
  const ws = new WebSocket(`${proto}://${location.host}/ws?${query}`);
  state.ws = ws;
  setLink("wait", "Connecting\u2026");
  ws.onopen = () => {
    state.retry = 0;
    state.failures = 0;
    setLink("live", "Live");
  };
  ws.onmessage = (m) => {
    let msg;
    try {
      msg = JSON.parse(m.data);
    } catch (_) {
      return;
    }
    if (msg.type === "error") {
      // An acknowledgement of a version overtaken by a worsening: the alarm stays news, and
      // its button may be pressed again for what the list shows now.
      if (msg.error === "stale_version" && msg.alert) {
        const b = document.querySelector(`[data-ack="${CSS.escape(msg.alert)}"]`);
        if (b) b.disabled = false;
        return toast(`Not acknowledged: the alarm worsened before your click (now version ${msg.version}). Check it and acknowledge again.`);
      }
      return toast(msg.message || msg.error);
    }
    if (typeof msg.seq === "number") {
      if (msg.seq <= state.lastSeq) return;
      state.lastSeq = msg.seq;
      document.body.dataset.seq = String(msg.seq);
      if (state.applied.delete(msg.seq)) return;
    }
    apply(msg);
  };
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    state.ws = null;
    // 1008 also closes idle and flooding sessions: only an expired or revoked token signs out.
    if (e.code === 1008 && (state.claims.exp * 1000 <= Date.now() || /expired|revoked|token/i.test(e.reason))) {
      return signIn(`Session ended: ${e.reason || "access refused"}.`);
    }
    setLink("down", "Disconnected \u2014 reconnecting");
    state.failures += 1;
    const wait = Math.min(5000, 250 * 2 ** state.retry++);
    state.reconnect = setTimeout(async () => {
      // A refused upgrade looks like a network error to a page: ask the API why.
      if (state.failures >= 3 && wardsShown().length) {
        try {
          const now = new Date().toISOString();
          await api(`/api/wards/${encodeURIComponent(wardsShown()[0])}/history?from=${now}&to=${now}`);
        } catch (_) {
          if (!state.token) return;
        }
      }
      connect();
    }, wait);
  };
}

function send(message) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    toast("Not connected: try again when the page shows Live.");
    return false;
  }
  state.ws.send(JSON.stringify(message));
  return true;
}

// ---- model -----------------------------------------------------------------------------

function patient(id, ward) {
  let p = state.patients.get(id);
  if (!p) {
    p = { id, ward, values: {}, ts: 0, news2: null, risk: null, series: {}, silencedUntil: 0 };
    for (const [k] of VITALS) p.series[k] = [];
    state.patients.set(id, p);
    p.tile = tile(p);
    placeTiles();
  }
  return p;
}

function apply(msg) {
  switch (msg.type) {
    case "vitals": {
      const p = patient(msg.patient, msg.ward);
      const t = Date.parse(msg.ts);
      const v = msg.values || {};
      Object.assign(p.values, v);
      if (v.sbp !== undefined) p.series.bp.push([t, v.sbp]);
      for (const [k] of VITALS) if (k !== "bp" && v[k] !== undefined) p.series[k].push([t, v[k]]);
      for (const k of Object.keys(p.series)) {
        const s = p.series[k];
        while (s.length && s[0][0] < Date.now() - WINDOW_MS) s.shift();
      }
      p.ts = Math.max(p.ts, t);
      if (msg.news2 !== undefined) {
        p.news2 = msg.news2;
        p.risk = msg.news2_detail ? msg.news2_detail.risk : null;
      }
      touch(p);
      break;
    }
    case "alert": {
      // An update changes what the episode reads now; its age stays that of the last change
      // of state.
      const before = state.alarms.get(msg.id);
      if (msg.state === "resolved") state.alarms.delete(msg.id);
      else state.alarms.set(msg.id, { ...msg, at: msg.update && before ? before.at : Date.parse(msg.ts) });
      const p = patient(msg.patient, msg.ward);
      touch(p);
      renderAlarms();
      placeTiles();
      break;
    }
    case "silence": {
      const p = patient(msg.patient, msg.ward);
      p.silencedUntil = Date.parse(msg.until);
      touch(p);
      break;
    }
    case "edge":
      state.edges.set(msg.edge, msg);
      renderEdges();
      break;
    case "link":
      // An edge that restarted numbers its events afresh: take its position.
      if (typeof msg.head === "number" && msg.head < state.lastSeq) state.lastSeq = msg.head;
      renderView(msg.hub);
      break;
    default:
  }
}

function alarmsOf(p) {
  return [...state.alarms.values()].filter((a) => a.patient === p.id);
}

function topAlarm(p) {
  let top = null;
  for (const a of alarmsOf(p)) {
    if (!top || RANK[a.priority] > RANK[top.priority]) top = a;
  }
  return top;
}

// ---- ward view -------------------------------------------------------------------------

function tile(p) {
  const node = el("div", { class: "tile", tabindex: "0", role: "button", "data-patient": p.id });
  node.setAttribute("aria-label", `Patient ${p.id}: open history`);
  const flag = el("span", { class: "flag" });
  node.append(el("div", { class: "head" }, el("span", { class: "bed", text: p.id }), flag));
  const grid = el("div", { class: "vitals" });
  const cells = {};
  for (const [k, label, unit] of VITALS) {
    const value = el("span", { class: "value", "data-vital": k, text: "\u2013" });
    const spark = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    spark.setAttribute("viewBox", "0 0 100 18");
    spark.setAttribute("preserveAspectRatio", "none");
    spark.setAttribute("aria-hidden", "true");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    spark.append(line);
    grid.append(el("div", { class: "vital" }, el("span", { class: "label", text: label }), value, el("span", { class: "unit", text: ` ${unit}` }), spark));
    cells[k] = { value, line };
  }
  node.append(grid);
  const alarm = el("p", { class: "alarm-text", "data-role": "alarm-text" });
  node.append(alarm);
  const news = el("span", { class: "news", "data-news": "", text: "NEWS2 \u2013" });
  const age = el("span", { class: "age", text: "no data" });
  const silenced = el("span", { class: "silenced" });
  node.append(el("div", { class: "foot" }, news, silenced, age));
  const open = () => openPatient(p);
  node.addEventListener("click", open);
  node.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      open();
    }
  });
  return { node, flag, cells, news, age, silenced, alarm };
}

function touch(p) {
  state.dirty.add(p);
  if (!state.frame) state.frame = requestAnimationFrame(flush);
}

function flush() {
  state.frame = 0;
  for (const p of state.dirty) renderTile(p);
  state.dirty.clear();
}

function fmt(k, v) {
  if (v === undefined || v === null) return "\u2013";
  return k === "temp" ? v.toFixed(1) : String(Math.round(v));
}

function renderTile(p) {
  const t = p.tile;
  for (const [k] of VITALS) {
    const text = k === "bp"
      ? (p.values.sbp !== undefined ? `${Math.round(p.values.sbp)}/${p.values.dbp !== undefined ? Math.round(p.values.dbp) : "\u2013"}` : "\u2013")
      : fmt(k, p.values[k]);
    if (t.cells[k].value.textContent !== text) t.cells[k].value.textContent = text;
    t.cells[k].line.setAttribute("points", sparkPoints(p.series[k]));
  }
  t.news.textContent = p.news2 === null ? "NEWS2 \u2013" : `NEWS2 ${p.news2}`;
  t.news.className = `news ${p.risk || ""}`;
  t.news.setAttribute("data-news", p.news2 === null ? "" : String(p.news2));
  const top = topAlarm(p);
  const lost = alarmsOf(p).some((a) => a.kind === "signal_lost");
  t.node.classList.toggle("lost", lost);
  for (const r of ["high", "medium", "low"]) t.node.classList.toggle(`alarm-${r}`, !!top && top.priority === r);
  t.flag.className = `flag ${lost ? "lost" : top ? top.priority : ""}`;
  t.flag.textContent = lost ? "SIGNAL LOST" : top ? top.priority.toUpperCase() : "";
  // The worst open alarm as it reads now (current and worst values), never its raise text.
  const text = top ? top.message : "";
  if (t.alarm.textContent !== text) t.alarm.textContent = text;
  t.silenced.textContent = p.silencedUntil > Date.now() ? "silenced" : "";
  t.age.textContent = ago(p.ts);
}

function sparkPoints(series) {
  if (series.length < 2) return "";
  const start = Date.now() - WINDOW_MS;
  let lo = Infinity;
  let hi = -Infinity;
  for (const [, v] of series) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const span = hi - lo || 1;
  return series
    .map(([t, v]) => `${(((t - start) / WINDOW_MS) * 100).toFixed(1)},${(16 - ((v - lo) / span) * 14).toFixed(1)}`)
    .join(" ");
}

function placeTiles() {
  const sorted = [...state.patients.values()].sort((a, b) => {
    const ra = topAlarm(a);
    const rb = topAlarm(b);
    const ka = ra ? RANK[ra.priority] + (ra.state === "acknowledged" ? 0 : 0.5) : 0;
    const kb = rb ? RANK[rb.priority] + (rb.state === "acknowledged" ? 0 : 0.5) : 0;
    return kb - ka || a.id.localeCompare(b.id);
  });
  const box = $("tiles");
  const current = [...box.children];
  if (sorted.length === current.length && sorted.every((p, i) => p.tile.node === current[i])) return;
  for (const p of sorted) box.append(p.tile.node);
}

function renderEdges() {
  const box = $("edges");
  box.replaceChildren(
    ...[...state.edges.values()].map((e) =>
      el("span", { class: `edge ${e.state}`, "data-edge": e.edge, text: `${e.ward}: edge ${e.state}` }),
    ),
  );
}

// ---- alarm list ------------------------------------------------------------------------

function renderAlarms() {
  const list = $("alarm-list");
  const alarms = [...state.alarms.values()].sort(
    (a, b) => RANK[b.priority] - RANK[a.priority] || (a.state === "acknowledged") - (b.state === "acknowledged") || b.at - a.at,
  );
  $("no-alarms").hidden = alarms.length > 0;
  const keep = new Map([...list.children].map((li) => [li.dataset.alert, li]));
  const items = alarms.map((a) => {
    const old = keep.get(a.id);
    const key = `${a.state}|${a.priority}|${a.by || ""}|${a.silenced ? 1 : 0}`;
    if (old && old.dataset.key === key) {
      // Same state: what it reads now is written into the item in place (an open silence
      // form or a focused button stays where it is).
      showCurrent(old, a);
      return old;
    }
    const li = alarmItem(a);
    li.dataset.key = key;
    return li;
  });
  list.replaceChildren(...items);
}

// The episode's current text (with its worst) and version: what an acknowledgement names.
function showCurrent(li, a) {
  const msg = li.querySelector(".msg");
  if (msg.textContent !== a.message) msg.textContent = a.message;
  li.dataset.version = String(a.version || 0);
  // A worsening restarts the item's age; an update keeps it (see `apply`).
  const age = li.querySelector("[data-at]");
  if (age && age.dataset.at !== String(a.at)) {
    age.dataset.at = String(a.at);
    age.textContent = ago(a.at);
  }
}

function alarmItem(a) {
  const li = el("li", { class: `alarm ${a.priority} ${a.state}`, "data-alert": a.id, "data-state": a.state });
  li.append(
    el("div", { class: "top" },
      el("span", { class: "prio", text: a.priority.toUpperCase() }),
      el("strong", { text: a.patient }),
      el("span", { text: a.kind }),
      el("span", { class: "meta", "data-role": "state", text: a.state })),
    el("p", { class: "msg", text: a.message }),
  );
  li.dataset.version = String(a.version || 0);
  const meta = el("p", { class: "meta" });
  const age = el("span", { "data-at": String(a.at), text: ago(a.at) });
  meta.append(age);
  if (a.by) meta.append(` \u00b7 acknowledged by `, el("span", { "data-role": "by", text: a.by }));
  if (a.silenced) meta.append(" \u00b7 silenced");
  li.append(meta);
  const actions = el("div", { class: "actions" });
  if (a.state !== "acknowledged") {
    const ack = el("button", { type: "button", "data-ack": a.id, text: "Acknowledge" });
    ack.addEventListener("click", () => {
      // The version on screen at the click: a worsening since makes it not count.
      const version = Number(li.dataset.version) || undefined;
      if (send({ type: "ack", alert: a.id, version })) ack.disabled = true;
    });
    actions.append(ack);
  }
  const silence = el("button", { type: "button", "data-silence": a.patient, text: "Silence\u2026" });
  silence.addEventListener("click", () => {
    silence.hidden = true;
    actions.append(silenceForm(a, () => (silence.hidden = false)));
  });
  actions.append(silence);
  li.append(actions);
  return li;
}

function silenceForm(a, done) {
  const form = el("form", { class: "silence-form" });
  const minutes = el("select", { "aria-label": "Minutes" });
  for (const m of [2, 5, 15, 30, 60]) minutes.append(el("option", { value: String(m), text: `${m} min` }));
  const reason = el("input", { type: "text", "aria-label": "Reason", placeholder: "Reason", required: "", maxlength: "200" });
  const ok = el("button", { type: "submit", text: "Silence" });
  const cancel = el("button", { type: "button", text: "Cancel" });
  form.append(minutes, reason, ok, cancel);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (send({ type: "silence", patient: a.patient, minutes: Number(minutes.value), reason: reason.value })) {
      form.remove();
      done();
    }
  });
  cancel.addEventListener("click", () => {
    form.remove();
    done();
  });
  setTimeout(() => reason.focus(), 0);
  return form;
}

// ---- patient view ----------------------------------------------------------------------

async function openPatient(p) {
  state.openPatient = p;
  $("patient-title").textContent = `${p.id} \u00b7 ${p.ward}`;
  $("patient").hidden = false;
  $("patient-close").focus();
  await loadHistory();
}

function closePatient() {
  const p = state.openPatient;
  state.openPatient = null;
  $("patient").hidden = true;
  $("charts").replaceChildren();
  if (p) p.tile.node.focus();
}

async function loadHistory() {
  const p = state.openPatient;
  if (!p) return;
  const minutes = Number($("period").value);
  const to = new Date();
  const from = new Date(to.getTime() - minutes * 60000);
  $("patient-status").textContent = "Loading\u2026";
  let h;
  try {
    h = await api(`/api/patients/${encodeURIComponent(p.id)}/history?from=${from.toISOString()}&to=${to.toISOString()}`);
  } catch (e) {
    $("patient-status").textContent = `History unavailable (${e.message}).`;
    return;
  }
  if (state.openPatient !== p) return;
  const series = { hr: [], spo2: [], rr: [], temp: [], sbp: [], dbp: [], news2: [] };
  const episodes = new Map();
  for (const e of h.events) {
    const t = Date.parse(e.ts);
    if (e.type === "vitals") {
      for (const k of Object.keys(series)) if (e.values && e.values[k] !== undefined) series[k].push([t, e.values[k]]);
      if (e.news2 !== undefined) series.news2.push([t, e.news2]);
    } else if (e.type === "alert") {
      const ep = episodes.get(e.id) || { start: t, end: null, priority: e.priority, kind: e.kind };
      ep.priority = e.priority;
      if (e.state === "resolved") ep.end = t;
      episodes.set(e.id, ep);
    }
  }
  $("patient-status").textContent = `${h.events.length} events${h.truncated ? " (the newest shown)" : ""}.`;
  const span = [from.getTime(), to.getTime()];
  const charts = [["hr", "Heart rate (/min)"], ["spo2", "SpO\u2082 (%)"], ["rr", "Respiratory rate (/min)"], ["temp", "Temperature (\u00b0C)"], ["sbp", "Systolic BP (mmHg)"], ["news2", "NEWS2 score"]];
  $("charts").replaceChildren(...charts.map(([k, title]) => chart(title, k, series[k], [...episodes.values()], span)));
}

function chart(title, key, points, episodes, [start, end]) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 300 120");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title}: ${points.length} readings`);
  const x = (t) => ((t - start) / (end - start)) * 300;
  for (const ep of episodes) {
    const r = document.createElementNS(ns, "rect");
    const x0 = Math.max(0, x(ep.start));
    const x1 = Math.min(300, x(ep.end || end));
    r.setAttribute("x", String(x0));
    r.setAttribute("width", String(Math.max(1.5, x1 - x0)));
    r.setAttribute("y", "0");
    r.setAttribute("height", "120");
    r.setAttribute("class", `episode ${ep.priority}`);
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `${ep.kind} (${ep.priority})`;
    r.append(tip);
    svg.append(r);
  }
  if (points.length) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, v] of points) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    const pad = (hi - lo) * 0.1 || 1;
    lo = key === "news2" ? Math.max(0, lo - pad) : lo - pad;
    hi += pad;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map(([t, v]) => `${x(t).toFixed(1)},${(110 - ((v - lo) / (hi - lo)) * 100).toFixed(1)}`).join(" "));
    svg.append(line);
    for (const [y, v] of [[12, hi], [114, lo]]) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", "2");
      label.setAttribute("y", String(y));
      label.textContent = key === "temp" ? v.toFixed(1) : String(Math.round(v));
      svg.append(label);
    }
  }
  return el("div", { class: "chart", "data-chart": key }, el("h3", { text: title }), svg);
}

// ---- wiring ----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    boot();
  });
  $("signout").addEventListener("click", () => signIn("Signed out."));
  $("patient-close").addEventListener("click", closePatient);
  $("period").addEventListener("change", loadHistory);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.openPatient) closePatient();
  });
  setInterval(() => {
    for (const p of state.patients.values()) {
      const text = ago(p.ts);
      if (p.tile.age.textContent !== text) p.tile.age.textContent = text;
    }
    for (const span of document.querySelectorAll("[data-at]")) span.textContent = ago(Number(span.dataset.at));
  }, 1000);
  boot();
});
