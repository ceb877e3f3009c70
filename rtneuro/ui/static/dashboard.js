// rtneuro operator dashboard. Protocol: docs/ui.md; REST: docs/control-api.md. Uses common.js (RT) and uPlot.
// Everything is drawn on requestAnimationFrame from typed-array rings filled by the data socket's frames.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const DPR = () => window.devicePixelRatio || 1;

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k in e && typeof v !== "string") e[k] = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  const svg = (tag, attrs) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };
  const fin = (x) => typeof x === "number" && Number.isFinite(x);
  const fmt = (x, d = 1) => (fin(x) ? x.toFixed(d) : "—");
  const unitName = (u) => (u || "").replace(/^uV/, "µV").replace(/ uV/, " µV");
  function fmtDur(s) {
    if (!fin(s)) return "—";
    const m = Math.floor(s / 60), r = s - 60 * m;
    return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${r.toFixed(0).padStart(2, "0")}`
      : `${m}:${r.toFixed(1).padStart(4, "0")}`;
  }
  function fmtNum(x) {
    if (!fin(x)) return String(x);
    const a = Math.abs(x);
    return a !== 0 && (a >= 1e5 || a < 1e-3) ? x.toExponential(2) : String(+x.toPrecision(4));
  }
  const clock = () => new Date().toLocaleTimeString();
  function setResult(node, ok, text) { node.textContent = text; node.className = "result " + (ok ? "ok" : "err"); }
  function debounce(fn, ms) { let t = 0; return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); }; }
  function rgba(hex, a) { const n = parseInt(hex.slice(1), 16); return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${a})`; }
  function abgr(hex) { const n = parseInt(hex.slice(1), 16); return (0xff000000 | ((n & 255) << 16) | (n & 0xff00) | (n >> 16)) >>> 0; }

  const PALETTE = ["#7fc8f8", "#9be29b", "#f7c873", "#f49ac1", "#b9a3f5", "#6fe0d0", "#f29b76", "#d6e685"];
  // rtneuro.messages.DECISION_STATUS
  const STATUS_NAMES = ["accepted", "clipped", "refused", "ramp", "watchdog", "estop", "safe", "device", "estop_clear", "disarm", "arm", "limit"];
  const STATUS_COLOUR = { accepted: "#4cc38a", clipped: "#e8b341", refused: "#ef5350", ramp: "#5aa9e6", watchdog: "#b48ef0",
    estop: "#ff1744", estop_clear: "#80cbc4", safe: "#90a4ae", device: "#ff7043", disarm: "#9e9e9e", arm: "#c5e1a5", limit: "#ffab40" };
  const TL_ROWS = [["accepted", ["accepted"]], ["clipped", ["clipped", "limit"]], ["refused", ["refused"]], ["ramp", ["ramp"]],
    ["watchdog", ["watchdog", "device", "safe"]], ["estop", ["estop", "estop_clear"]], ["arm/disarm", ["arm", "disarm"]]];
  const TL_ROW_OF = {};
  TL_ROWS.forEach(([, names], i) => names.forEach((n) => { TL_ROW_OF[n] = i; }));
  const QBITS = [[8, "nonfinite", "#f06292"], [2, "clip", "#ffa726"], [4, "jump", "#ffee58"], [1, "flat", "#90a4ae"]];
  const SPIKE_TYPES = new Set(["spike_detect", "synthetic_spikes"]);

  const S = {
    graph: null, status: null, role: null, ended: false, positions: {}, ui: {}, hello: false,
    latestT: -Infinity,       // newest stream time seen in any frame (the right edge of the time displays)
    stimulators: [],
  };
  let dataSock = null;
  // what the tests read: readiness, role, frames handled, the traces' draw count and cost (ms, exponential
  // average), the views asked for, decision records shown
  const PERF = window.rtDashboard = { ready: false, role: null, frames: 0, traceDraws: 0, fullDraws: 0, traceMs: 0, views: [], decisions: 0 };

  // ---------------------------------------------------------------- header, stimulation buttons

  function notice(text) { const n = $("notice"); n.textContent = text || ""; n.hidden = !text; }

  function banner(state, text) {
    const b = $("estop-banner");
    b.dataset.state = state;
    $("estop-banner-text").textContent = text;
    b.hidden = false;
  }

  function stimText(stims) {
    const e = Object.entries(stims || {});
    return e.length ? e.map(([k, v]) => `${k}: ${v}`).join(" · ") : "no stimulator answered";
  }

  let estopTry = 0;
  async function estop(how) {
    const t = clock(), me = ++estopTry;
    if (S.role && S.role !== "steer") {   // the server would refuse it (403): say so at once
      banner("failed", `EMERGENCY STOP at ${t} NOT SENT: this page has an observer token, which cannot steer — ` +
        "use the hardware stop, 'rtneuro stop --now', or a page opened with a steer token");
      return;
    }
    banner("sent", `EMERGENCY STOP sent at ${t} (${how}) — waiting for the server…`);
    setTimeout(() => {
      if (me === estopTry && $("estop-banner").dataset.state === "sent") {
        banner("failed", `EMERGENCY STOP sent at ${t}: NO ANSWER after 3 s — use the hardware stop (or 'rtneuro stop --now')`);
      }
    }, 3000);
    try {
      const r = await RT.api("POST", "/api/stimulation/estop", { reason: `operator: dashboard ${how}`.slice(0, 200) });
      const failed = Object.values(r.stimulators || {}).some((v) => v !== "ok") || (r.missing && r.missing.length);
      banner(failed ? "failed" : "ok", `EMERGENCY STOP at ${t}: ${r.latched ? "LATCHED" : "not latched"} — ${stimText(r.stimulators)}` +
        (r.missing && r.missing.length ? ` — no answer from ${r.missing.join(", ")}` : "") +
        (failed ? " — CHECK THE DEVICE, use the hardware stop" : ""));
    } catch (e) {
      banner("failed", `EMERGENCY STOP at ${t} FAILED: ${e.message} — use the hardware stop`);
    }
  }

  function reason(def) { return ($("stim-reason").value.trim() || def).slice(0, 200); }

  async function stimAction(path, label) {
    try {
      const r = await RT.api("POST", path, { reason: reason("operator (dashboard)") });
      const text = `${label}: ${"armed" in r ? (r.armed ? "armed" : "disarmed") : ("latched" in r ? (r.latched ? "latched" : "cleared") : r.status || "done")} — ${stimText(r.stimulators)}`;
      setResult($("control-result"), true, text);
      if (path.endsWith("/estop/clear")) banner("cleared", `Emergency stop cleared at ${clock()} — ${stimText(r.stimulators)}`);
    } catch (e) {
      setResult($("control-result"), false, `${label}: ${e.message}`);
    }
  }

  function setupHeader() {
    $("estop").addEventListener("click", () => estop("button"));
    document.addEventListener("keydown", (e) => {
      if ((e.key === "Escape" || e.key === "Pause" || e.code === "Pause") && !e.repeat) {
        e.preventDefault();
        estop(`key ${e.key}`);   // with an observer token the banner says it cannot be sent
      }
    }, true);
    $("estop-banner-close").addEventListener("click", () => { $("estop-banner").hidden = true; });
    $("estop-clear").addEventListener("click", () => {
      if (confirm("Clear the emergency stop? Stimulation stays disarmed until you arm it.")) stimAction("/api/stimulation/estop/clear", "clear estop");
    });
    $("arm").addEventListener("click", () => stimAction("/api/stimulation/arm", "arm"));
    $("disarm").addEventListener("click", () => stimAction("/api/stimulation/disarm", "disarm"));
  }

  function chip(id, text, cls) { const c = $(id); c.textContent = text; c.className = "chip" + (cls ? " " + cls : ""); }

  function renderStatus(st) {
    const was = S.status && S.status.state;
    S.status = st;
    if (st.state === "running" && was !== "running" && was) refreshGraph();
    const state = $("status-state");
    state.textContent = st.state || "?";
    state.dataset.state = st.state || "";
    $("status-trun").textContent = fmtDur(st.t_run_s);
    const sp = st.speed !== undefined ? st.speed : S.graph && S.graph.speed;
    $("status-speed").textContent = sp === undefined || sp === null ? "—" : typeof sp === "number" ? `${sp}×` : String(sp);
    const stim = st.stimulation || {};
    if (S.graph && !S.stimulators.length) chip("status-armed", "no stimulator", "");
    else if (stim.armed === undefined) chip("status-armed", "—", "");
    else chip("status-armed", stim.armed ? "ARMED" : `disarmed${stim.disarm_reason ? ": " + stim.disarm_reason : ""}`, stim.armed ? "warn" : "info");
    chip("status-estop", stim.estop ? "ESTOP LATCHED" : "estop clear", stim.estop ? "bad" : "ok");
    $("status-estop").dataset.latched = stim.estop ? "1" : "0";
    const rec = st.recording || {};
    chip("status-recording", rec.active ? `● REC ${rec.segment || ""}` : rec.path ? "not recording" : "no recorder", rec.active ? "bad" : "");
    $("status-paused").hidden = !st.paused;
    $("status-paused").className = "chip warn";
    const ew = [];
    if (st.errors) ew.push(`${st.errors} errors`);
    if (st.warnings) ew.push(`${st.warnings} warnings`);
    if (st.restarts) ew.push(`${st.restarts} restarts`);
    $("status-errors").hidden = !ew.length;
    chip("status-errors", ew.join(" · "), st.errors ? "bad" : "warn");
    $("status-errors").hidden = !ew.length;
    updateGraphLabels(st.streams || {});
    renderLatency(st);
  }

  function applyRole(role) {
    if (!role || role === S.role) return;
    S.role = role;
    PERF.role = role;
    document.body.dataset.role = role;
    const obs = role !== "steer";
    chip("status-role", obs ? "observer: read only" : "steer", obs ? "info" : "");
    for (const b of document.querySelectorAll(".steer")) {
      b.disabled = obs;
      if (obs) b.title = "an observer token reads but cannot steer";
    }
    for (const f of document.querySelectorAll("#param-forms input, #param-forms select")) f.disabled = obs;
  }

  // ---------------------------------------------------------------- the events socket (/api/ws)

  let evSock = null, lastStatusAt = 0;
  function connectEvents() {
    const ws = new WebSocket(RT.wsURL("/api/ws"));
    evSock = ws;
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "hello") applyRole(m.role);
      else if (m.type === "status") { lastStatusAt = performance.now(); renderStatus(m); }
      else if (m.type === "decisions") addDecisionRecords(m.records || []);
      else if (m.type === "change") addChange(m.record, true);
      else if (m.type === "ack") ackResult(m.result);
      else if (m.type === "dropped") $("changes-info").textContent = `(${m.count} events dropped: this page was slow)`;
      else if (m.type === "end") runEnded();
    };
    ws.onclose = (ev) => {
      if (evSock === ws) evSock = null;
      if (!S.ended && ev.code !== 1000 && ev.code !== 1008) setTimeout(connectEvents, 1500);
      else if (ev.code === 1008) notice("the token was refused: open the address the run printed (with #token=...)");
    };
  }

  function runEnded() {
    if (S.ended) return;
    S.ended = true;
    const st = $("status-state");
    st.textContent = "ended";
    st.dataset.state = "ended";
    notice("The run has ended.");
  }

  async function pollStatus() {
    if (S.ended || document.hidden || performance.now() - lastStatusAt < 3000) return;
    try { renderStatus(await RT.api("GET", "/api/status")); } catch (e) { /* shown by the state chip */ }
  }

  // ---------------------------------------------------------------- the graph

  const G = { labels: {}, procs: {} };

  function buildGraph(g) {
    const el = $("graph-svg");
    el.replaceChildren();
    G.labels = {};
    G.procs = {};
    const nodes = g.nodes || {}, streams = g.streams || {};
    const producer = (s) => (streams[s] ? streams[s].producer : null);
    const layer = {};
    const layerOf = (n, depth = 0) => {
      if (n in layer) return layer[n];
      if (depth > 64 || !nodes[n]) return 0;
      let l = 0;
      for (const s of nodes[n].inputs || []) {
        const p = producer(s);
        if (p && p !== n && nodes[p]) l = Math.max(l, layerOf(p, depth + 1) + 1);
      }
      return (layer[n] = l);
    };
    const ids = Object.keys(nodes);
    ids.forEach((n) => layerOf(n));
    const maxL = Math.max(0, ...ids.map((n) => layer[n]));
    for (const n of ids) if (nodes[n].category === "stimulator") layer[n] = maxL;
    const NW = 168, GX = 44, LH = 13, PAD = 8;
    const procs = {};
    for (const n of ids) (procs[nodes[n].process] = procs[nodes[n].process] || []).push(n);
    const order = Object.keys(procs).sort((a, b) => Math.min(...procs[a].map((n) => layer[n])) - Math.min(...procs[b].map((n) => layer[n])));
    // each process is a band holding its nodes at their layers' x; bands are packed like a skyline (a band sits
    // under the lowest band it overlaps in x), so processes that follow each other share a row
    const pos = {}, placed = [];
    let width = 0, height = 0;
    const gProc = svg("g"), gEdge = svg("g"), gNode = svg("g");
    for (const p of order) {
      const byL = {};
      for (const n of procs[p]) (byL[layer[n]] = byL[layer[n]] || []).push(n);
      let bandH = 0;
      const rel = {};
      for (const list of Object.values(byL)) {
        let yy = 0;
        for (const n of list) {
          const hgt = 30 + LH * (nodes[n].outputs || []).length;
          rel[n] = { x: PAD + 8 + layer[n] * (NW + GX), dy: 18 + yy, h: hgt };
          yy += hgt + 8;
        }
        bandH = Math.max(bandH, yy);
      }
      const xs = procs[p].map((n) => rel[n].x);
      const x0 = Math.min(...xs) - 8, x1 = Math.max(...xs) + NW + 8;
      let y = PAD;
      for (const b of placed) if (b.x0 < x1 + 6 && x0 < b.x1 + 6) y = Math.max(y, b.y1 + 8);
      placed.push({ x0, x1, y1: y + bandH + 18 });
      for (const n of procs[p]) pos[n] = { x: rel[n].x, y: y + rel[n].dy, h: rel[n].h };
      const info = (g.processes || {})[p] || {};
      gProc.append(svg("rect", { class: "proc", x: x0, y, width: x1 - x0, height: bandH + 18, rx: 4 }));
      const title = svg("text", { class: "proc-title", x: x0 + 6, y: y + 12 });
      G.procs[p] = title;
      procTitle(p, info);
      gProc.append(title);
      width = Math.max(width, x1 + PAD);
      height = Math.max(height, y + bandH + 18 + PAD);
    }
    for (const n of ids) {
      const nd = nodes[n], p = pos[n];
      const grp = svg("g", { class: `node ${nd.category}`, transform: `translate(${p.x},${p.y})` });
      grp.append(svg("rect", { width: NW, height: p.h - 4 }));
      const t = svg("text", { class: "nid", x: 6, y: 13 });
      t.textContent = n.length > 22 ? n.slice(0, 21) + "…" : n;
      const ty = svg("text", { class: "ntype", x: 6, y: 25 });
      ty.textContent = `${nd.type} · ${nd.category}`;
      grp.append(t, ty);
      (nd.outputs || []).forEach((s, i) => {
        const info = streams[s] || {};
        const line = svg("text", { class: "st" + (info.kind === "sig" || info.kind === "feat" ? " pick" : ""), x: 6, y: 38 + i * LH, "data-stream": s });
        const name = svg("tspan");
        name.textContent = (s.length > 16 ? s.slice(0, 15) + "…" : s) + " ";
        const rate = svg("tspan", { class: "rate" });
        rate.textContent = info.sfreq ? `${fmtNum(info.sfreq)} Hz` : info.kind || "";
        const prob = svg("tspan", { class: "prob" });
        const tip = svg("title");
        tip.textContent = `${s} (${info.kind}${info.n_channels ? ", " + info.n_channels + " ch" : ""}${info.sfreq ? ", " + info.sfreq + " Hz nominal" : ""})`;
        line.append(tip, name, rate, prob);
        grp.append(line);
        G.labels[s] = { rate, prob, tip, base: tip.textContent, node: n, row: i };
      });
      gNode.append(grp);
    }
    for (const n of ids) {
      const p = pos[n];
      for (const s of nodes[n].inputs || []) {
        const src = producer(s);
        if (!src || !pos[src]) continue;
        const q = pos[src], row = Math.max(0, (nodes[src].outputs || []).indexOf(s));
        const x0 = q.x + NW, y0 = q.y + 34 + row * LH, x1 = p.x, y1 = p.y + 14;
        const dx = Math.max(20, (x1 - x0) / 2);
        const kind = (streams[s] || {}).kind;
        gEdge.append(svg("path", { class: "edge" + (kind === "cmd" ? " cmd" : ""), d: `M${x0},${y0} C${x0 + dx},${y0} ${x1 - dx},${y1} ${x1},${y1}` }));
      }
    }
    el.append(gProc, gEdge, gNode);
    el.setAttribute("width", Math.max(width, 100));
    el.setAttribute("height", Math.max(height, 40));
    el.setAttribute("viewBox", `0 0 ${Math.max(width, 100)} ${Math.max(height, 40)}`);
  }

  function procTitle(p, info) {
    const t = G.procs[p];
    if (!t) return;
    const live = S.status && S.status.state === "running";
    t.textContent = `process ${p}` + (info.pid ? ` · pid ${info.pid}` : "") + (info.restarts ? ` · ${info.restarts} restarts` : "") +
      (info.alive === false && live ? " · NOT ALIVE" : "");
    t.setAttribute("class", "proc-title" + (info.alive === false && live ? " dead" : ""));
  }

  function updateGraphLabels(rows) {
    for (const [s, r] of Object.entries(rows)) {
      const l = G.labels[s];
      if (!l) continue;
      if (fin(r.rate_hz)) {
        l.rate.textContent = `${fmtNum(r.rate_hz)} Hz`;
        l.rate.setAttribute("class", "rate" + (r.rate_hz === 0 && S.graph && (S.graph.streams[s] || {}).sfreq ? " zero" : ""));
      }
      const probs = [];
      if (r.gaps) probs.push(`gaps ${r.gaps}`);
      if (r.invalid) probs.push(`invalid ${r.invalid}`);
      l.prob.textContent = probs.length ? " · " + probs.join(" · ") : "";
      l.prob.setAttribute("class", "prob" + (r.invalid ? " bad" : ""));
      const lat = r.latency_ms;
      l.tip.textContent = l.base + (lat ? `\nlatency p50 ${fmt(lat.p50, 2)} ms, p99 ${fmt(lat.p99, 2)} ms` : "") +
        (fin(r.samples) ? `\n${r.samples} samples` : "");
    }
  }

  // ---------------------------------------------------------------- views and frames

  // The views of every panel, rebuilt as one set (docs/ui.md: the client's whole set replaces the last one).
  // Each panel's view ids carry a version so that frames of a replaced view are recognised and dropped.
  const handlers = new Map();
  let viewVer = 0;
  const pushViews = debounce(() => {
    if (!dataSock || !S.graph) return;
    viewVer++;
    handlers.clear();
    const views = [];
    const add = (kind, view, fn) => {
      if (views.length >= 32) return;
      const id = `${kind}${viewVer}.${views.length}`;
      views.push({ id, ...view });
      handlers.set(id, fn);
    };
    traceViews(add);
    spectrumViews(add);
    qualityViews(add);
    scalpViews(add);
    featureViews(add);
    rasterViews(add);
    stimViews(add);
    dataSock.setViews(views);
    PERF.views = views;
  }, 60);

  function onFrame(hd, arrays) {
    PERF.frames++;
    const fn = handlers.get(hd.view);
    if (fn) fn(hd, arrays);
  }

  function seen(t) { if (fin(t) && t > S.latestT) S.latestT = t; }

  // A ring of trace bins (docs/ui.md `trace`): slot b % cap holds absolute bin b; ids say which bin a slot holds.
  class BinRing {
    constructor() { this.binLen = 0; this.nCh = 0; this.cap = 0; this.newest = -1; this.version = 0; this.channels = []; }
    add(hd, env, want) {
      const nCh = hd.channels.length;
      if (!nCh) return;
      const n = env.length / (nCh * 2);
      const cap = Math.max(want || 0, n, 16) + 8;
      if (hd.bin_len !== this.binLen || nCh !== this.nCh || hd.sfreq !== this.sfreq || cap > this.cap) {
        this.binLen = hd.bin_len; this.nCh = nCh; this.sfreq = hd.sfreq; this.cap = cap;
        this.env = new Float32Array(cap * nCh * 2);
        this.ids = new Float64Array(cap).fill(-1);
        this.newest = -1;
      }
      this.channels = hd.channels;
      const stride = nCh * 2;
      for (let r = 0; r < n; r++) {
        const b = hd.first_bin + r, slot = b % this.cap;
        this.ids[slot] = b;
        this.env.set(env.subarray(r * stride, r * stride + stride), slot * stride);
      }
      this.newest = Math.max(this.newest, hd.first_bin + n - 1);
      if (fin(hd.t_first)) { this.tRef = hd.t_first; this.bRef = hd.first_bin; }
      this.version++;
      seen(this.timeOf(this.newest + 1));
    }
    has(b) { return this.ids[b % this.cap] === b; }
    off(b) { return (b % this.cap) * this.nCh * 2; }
    timeOf(b) { return fin(this.tRef) && this.sfreq > 0 ? this.tRef + (b - this.bRef) * this.binLen / this.sfreq : NaN; }
    binsFor(span) { return this.sfreq > 0 ? Math.max(1, Math.round(span * this.sfreq / this.binLen)) : 1; }
  }

  // ---------------------------------------------------------------- traces

  const T = { stream: null, chans: [], span: 10, dc: true, scale: {}, ring: new BinRing(), needAuto: true, dirty: true,
    touched: false, points: 0, W: 0, H: 0, img: null, buf: null, flags: {}, qsum: null };
  const GUTTER = 74;
  const STRIP_MAX = 128;  // columns drawn by scrolling at most; beyond, the whole window is drawn again

  function traceStreams() {
    const st = (S.graph && S.graph.streams) || {};
    return Object.keys(st).filter((s) => (st[s].kind === "sig" || st[s].kind === "feat") && st[s].sfreq > 0 && st[s].n_channels > 0);
  }
  function groupOf(info, i) {
    const ty = info.ch_types && info.ch_types[i] && info.ch_types[i] !== "misc" ? info.ch_types[i] + " " : "";
    return ty + unitName((info.units || [])[i] || "");
  }
  function nice125(x, dir) {
    if (!(x > 0) || !fin(x)) return 1;
    const e = Math.floor(Math.log10(x)), m = x / 10 ** e;
    const steps = [1, 2, 5, 10];
    let i = steps.findIndex((s) => s >= m - 1e-9);
    if (dir === undefined) return steps[i] * 10 ** e;
    if (Math.abs(steps[i] - m) > 1e-6 && dir < 0) i -= 1;
    i += dir;
    const k = ((i % 3) + 3) % 3, ee = e + Math.floor(i / 3);
    return [1, 2, 5][k] * 10 ** ee;
  }

  function selectTraceStream(name, byUser) {
    const st = S.graph.streams[name];
    if (!st) return;
    if (byUser) T.touched = true;
    T.stream = name;
    $("trace-stream").value = name;
    T.chans = [];
    for (let i = 0; i < Math.min(st.n_channels, 64); i++) T.chans.push(i);
    T.ring = new BinRing();
    T.needAuto = true;
    T.dirty = true;
    T.statsAt = 0;
    const list = $("trace-channels");
    list.replaceChildren();
    (st.ch_names || []).forEach((n, i) => {
      const cb = h("input", { type: "checkbox", checked: i < 64, "data-i": String(i) });
      list.append(h("label", { title: n, "data-name": n }, cb, " " + n));
    });
    renderScales();
    setupSpectrumFmax();
    setupScalp();
    pushViews();
  }

  function channelsChanged() {
    const sel = [];
    for (const cb of $("trace-channels").querySelectorAll("input")) if (cb.checked && sel.length < 256) sel.push(+cb.dataset.i);
    T.chans = sel;
    T.dirty = true;
    renderScales();
    pushViews();
  }

  function renderScales() {
    const info = S.graph.streams[T.stream] || {};
    const groups = [...new Set(T.chans.map((i) => groupOf(info, i)))];
    const box = $("trace-scales");
    box.replaceChildren();
    for (const g of groups) {
      if (!(g in T.scale)) T.scale[g] = 100;
      const val = h("b", { text: `${fmtNum(T.scale[g])} ${g.split(" ").pop()}`, title: `${g}: one channel lane spans this much` });
      const step = (d) => { T.scale[g] = nice125(T.scale[g], d); val.textContent = `${fmtNum(T.scale[g])} ${g.split(" ").pop()}`; T.dirty = true; };
      box.append(h("span", { class: "scale", "data-group": g }, h("span", { text: (g.split(" ")[0] || "—") + ":", class: "muted" }),
        h("button", { type: "button", text: "−", title: "smaller traces", onclick: () => step(1) }), val,
        h("button", { type: "button", text: "+", title: "larger traces", onclick: () => step(-1) })));
    }
  }

  // per channel in the visible window: [mean of bin mids, range]; null when no data
  function windowStats() {
    const r = T.ring;
    if (!r.binLen || r.newest < 0) return null;
    const nb = r.binsFor(T.span), start = r.newest - nb + 1;
    const out = r.channels.map(() => [0, Infinity, -Infinity, 0]);
    for (let b = start; b <= r.newest; b++) {
      if (!r.has(b)) continue;
      const o = r.off(b);
      for (let c = 0; c < r.nCh; c++) {
        const lo = r.env[o + 2 * c], hi = r.env[o + 2 * c + 1];
        if (!(lo <= hi)) continue;
        const s = out[c];
        s[0] += (lo + hi) / 2; s[3]++;
        if (lo < s[1]) s[1] = lo;
        if (hi > s[2]) s[2] = hi;
      }
    }
    return out.map((s) => (s[3] ? [s[0] / s[3], s[2] - s[1]] : null));
  }

  function autoScale() {
    const stats = windowStats();
    if (!stats) return false;
    const info = S.graph.streams[T.stream] || {};
    const byG = {};
    T.ring.channels.forEach((ch, c) => {
      if (stats[c] && stats[c][1] > 0) (byG[groupOf(info, ch)] = byG[groupOf(info, ch)] || []).push(stats[c][1]);
    });
    for (const [g, v] of Object.entries(byG)) {
      v.sort((a, b) => a - b);
      T.scale[g] = nice125(v[Math.floor(v.length / 2)] * 1.2);
    }
    renderScales();
    T.dirty = true;
    return Object.keys(byG).length > 0;
  }

  function traceViews(add) {
    if (!T.stream || !T.chans.length || !T.points) return;
    const want = T.chans.slice();
    add("tr", { kind: "trace", stream: T.stream, channels: want, span_s: T.span, points: T.points }, (hd, a) => {
      if (hd.stream !== T.stream || hd.channels.join() !== T.chans.join()) return;
      const nb = Math.ceil(T.span * hd.sfreq / hd.bin_len);
      T.ring.add(hd, a.env, Math.max(nb, T.points));
      T.dirty = true;
    });
  }

  function fitCanvas(cv) {
    const r = cv.getBoundingClientRect(), d = DPR();
    const w = Math.max(1, Math.round(r.width * d)), hh = Math.max(1, Math.round(r.height * d));
    if (cv.width !== w || cv.height !== hh) { cv.width = w; cv.height = hh; return true; }
    return false;
  }

  function resizeTraces() {
    const cv = $("trace-canvas");
    fitCanvas(cv);
    T.W = cv.width; T.H = cv.height;
    T.img = cv.getContext("2d").createImageData(T.W, T.H);
    T.buf = new Uint32Array(T.img.data.buffer);
    const pts = Math.max(8, Math.min(4096, Math.round(cv.getBoundingClientRect().width - GUTTER)));
    T.dirty = true;
    if (pts !== T.points) { T.points = pts; pushViews(); }
  }

  const BG = abgr("#0b0e10"), GRID = abgr("#1d242b"), LANE = abgr("#13181d");
  const CH_COL = PALETTE.map(abgr);

  // the whole window drawn again (what a scrolled draw must equal: tests/test_ui_browser.py)
  PERF.redrawTraces = () => { T.drawn = null; drawTraces(); };

  function drawTraces() {
    const t0 = performance.now();
    drawTraces1();
    PERF.traceMs = 0.9 * PERF.traceMs + 0.1 * (performance.now() - t0);
    PERF.traceDraws++;
  }
  // The traces are drawn pixel by pixel into T.buf (an ImageData): one column is the min/max of the bins it covers,
  // absolute bin b falling in absolute column floor(b * PW / nb), so a column shows the same data in every draw.
  // When only new data arrived the canvas scrolls onto itself and only the new columns are computed and put:
  // a draw costs what arrived, not the whole window (64 channels x 10 s). Anything else (stream, channels,
  // scales, size, an offset that moved) redraws everything.
  function drawTraces1() {
    T.dirty = false;
    const cv = $("trace-canvas"), ctx = cv.getContext("2d");
    if (!T.buf) return;
    const W = T.W, H = T.H, buf = T.buf, d = DPR();
    const r = T.ring, info = (S.graph && S.graph.streams[T.stream]) || {};
    const n = T.chans.length, ready = r.binLen && r.newest >= 0 && r.channels.join() === T.chans.join();
    const G0 = Math.round(GUTTER * d), PW = W - G0;
    if (!n || !ready || PW < 2) {
      buf.fill(BG);
      ctx.putImageData(T.img, 0, 0);
      ctx.fillStyle = "#7d8894";
      ctx.font = `${12 * d}px system-ui`;
      ctx.fillText(!T.stream ? "no signal stream" : !n ? "no channel selected" : "waiting for data…", G0 + 10 * d, 20 * d);
      T.drawn = null;
      return;
    }
    if (T.needAuto && autoScale()) T.needAuto = false;
    const lane = H / n, nb = r.binsFor(T.span);
    const now = performance.now();
    if (now - (T.statsAt || 0) > 200 || !T.off || T.off.length !== n) { T.statsAt = now; updateOffsets(info, n, lane); }
    const colEnd = Math.floor((r.newest + 1) * PW / nb);  // columns colEnd - PW .. colEnd - 1 hold only complete bins
    const key = `${W}|${H}|${nb}|${r.binLen}|${T.span}|${T.stream}|${T.chans.join()}|${T.dc}|${JSON.stringify(T.scale)}|${T.offVersion}`;
    const prev = T.drawn;
    let c0 = colEnd - PW;
    const full = !prev || prev.key !== key || colEnd - prev.colEnd > Math.min(STRIP_MAX, PW - 1) || colEnd < prev.colEnd;
    if (full) {
      PERF.fullDraws++;
      if (!T.rowBg || T.rowBg.length !== H || T.rowN !== n) {
        T.rowBg = new Uint32Array(H);
        for (let y = 0; y < H; y++) T.rowBg[y] = Math.floor(y / lane) % 2 ? LANE : BG;
        T.rowN = n;
      }
      for (let y = 0; y < H; y++) buf.fill(T.rowBg[y], y * W, y * W + W);
      drawColumns(buf, W, G0 - (colEnd - PW), c0, colEnd, nb, PW, lane, info);
      ctx.putImageData(T.img, 0, 0);
      T.labelsDrawn = "";
    } else {
      if (colEnd === prev.colEnd) return;
      ctx.drawImage(cv, G0 + colEnd - prev.colEnd, 0, PW - (colEnd - prev.colEnd), H, G0, 0, PW - (colEnd - prev.colEnd), H);
      c0 = prev.colEnd;
      const w = colEnd - c0;
      if (!T.strip || T.strip.width !== w || T.strip.height !== H) {
        T.strip = ctx.createImageData(w, H);
        T.stripBuf = new Uint32Array(T.strip.data.buffer);
      }
      const sb = T.stripBuf;
      for (let y = 0; y < H; y++) sb.fill(T.rowBg[y], y * w, y * w + w);
      drawColumns(sb, w, -c0, c0, colEnd, nb, PW, lane, info);
      ctx.putImageData(T.strip, G0 + c0 - (colEnd - PW), 0);
    }
    T.drawn = { key, colEnd };
    drawLabels(ctx, info, lane, G0, d);
    // the time at the right edge, at the foot of the gutter (which never scrolls; no DOM change, no layout)
    const tEnd = r.timeOf(colEnd * nb / PW), fh = 13 * d;
    ctx.fillStyle = "#0b0e10";
    ctx.fillRect(0, H - fh, G0, fh);
    if (fin(tEnd)) {
      ctx.fillStyle = "#7d8894";
      ctx.font = `${10 * d}px system-ui`;
      ctx.textBaseline = "bottom";
      ctx.fillText(`→ ${fmt(tEnd, 1)} s`, 3 * d, H - 1 * d, G0 - 5 * d);
    }
  }

  // the columns c0 .. c1 - 1 (absolute) into bufW-wide pixels buf, absolute column c at x = c + x0
  function drawColumns(buf, W, x0, c0, c1, nb, PW, lane, info) {
    const r = T.ring, H = T.H, n = T.chans.length;
    const env = r.env, stride = r.nCh * 2, cap = r.cap, ids = r.ids;
    // second ticks where a whole second (5 s beyond 10 s windows) begins
    const dt = T.span <= 10 ? 1 : 5;
    for (let c = c0; c < c1; c++) {
      const ta = r.timeOf(c * nb / PW), tb = r.timeOf((c + 1) * nb / PW);
      if (!(fin(ta) && fin(tb)) || Math.floor(tb / dt) === Math.floor(ta / dt)) continue;
      const x = c + x0;
      for (let y = 0; y < H; y += 2) buf[y * W + x] = GRID;
    }
    for (let j = 0; j < n; j++) {
      const k = (lane / T.scale[groupOf(info, T.chans[j])]) || 1;
      const mid = (j + 0.5) * lane, off = T.dc && T.off ? T.off[j] : 0;
      const col = CH_COL[j % CH_COL.length];
      let pLo = NaN, pHi = NaN;
      for (let c = c0 - 1; c < c1; c++) {
        const b0 = Math.ceil(c * nb / PW), b1 = Math.max(b0 + 1, Math.ceil((c + 1) * nb / PW));
        let lo = Infinity, hi = -Infinity;
        for (let b = b0; b < b1; b++) {
          const slot = b % cap;
          if (ids[slot] !== b) continue;
          const o = slot * stride + 2 * j, v0 = env[o], v1 = env[o + 1];
          if (v0 < lo) lo = v0;
          if (v1 > hi) hi = v1;
        }
        if (!(lo <= hi)) { pLo = NaN; continue; }   // a gap (or non-finite samples): left blank
        let a = lo, z = hi;
        if (pLo === pLo) { if (a > pHi) a = pHi; if (z < pLo) z = pLo; }   // join the previous column
        pLo = lo; pHi = hi;
        if (c < c0) continue;  // the column before: only its values, to join
        let ya = Math.round(mid - (z - off) * k), yb = Math.round(mid - (a - off) * k);
        if (ya < 0) ya = 0;
        if (yb > H - 1) yb = H - 1;
        const x = c + x0;
        for (let i = ya * W + x, e = yb * W + x; i <= e; i += W) buf[i] = col;
      }
    }
  }

  // per-channel offsets (the window's mean), applied only when one would move its trace by 2 pixels or more
  function updateOffsets(info, n, lane) {
    const stats = T.dc ? windowStats() : null;
    const next = T.chans.map((ch, j) => (stats && stats[j] ? stats[j][0] : 0));
    const moved = !T.off || T.off.length !== n || next.some((v, j) => Math.abs(v - T.off[j]) * ((lane / T.scale[groupOf(info, T.chans[j])]) || 1) >= 2);
    if (moved) { T.off = next; T.offVersion = (T.offVersion || 0) + 1; }
  }

  // channel names in the gutter, coloured by the quality flags (redrawn when a flag changes or after a full draw)
  function drawLabels(ctx, info, lane, G0, d) {
    const names = info.ch_names || [];
    const lk = T.chans.map((ch) => T.flags[names[ch] || String(ch)] | 0).join();
    if (T.labelsDrawn === lk) return;
    T.labelsDrawn = lk;
    ctx.putImageData(T.img, 0, 0, 0, 0, G0, T.H);
    ctx.font = `${Math.min(11, Math.max(7, lane / d - 1)) * d}px system-ui`;
    ctx.textBaseline = "middle";
    const every = Math.max(1, Math.ceil((9 * d) / lane));
    for (let j = 0; j < T.chans.length; j += every) {
      const name = names[T.chans[j]] || String(T.chans[j]);
      const f = T.flags[name] | 0;
      const q = QBITS.find(([bit]) => f & bit);
      ctx.fillStyle = q ? q[2] : "#aeb8c2";
      ctx.fillText(q ? `${name} ${q[1]}` : name, 3 * d, (j + 0.5) * lane, G0 - 5 * d);
    }
  }

  function setupTraces() {
    $("trace-stream").addEventListener("change", (e) => selectTraceStream(e.target.value, true));
    $("trace-span").addEventListener("change", (e) => { T.span = +e.target.value; T.dirty = true; RS.dirty = true; pushViews(); });
    $("trace-dc").addEventListener("change", (e) => { T.dc = e.target.checked; T.dirty = true; });
    $("trace-auto").addEventListener("click", () => autoScale());
    $("trace-channels").addEventListener("change", channelsChanged);
    const setAll = (on) => { $("trace-channels").querySelectorAll("input").forEach((cb, i) => { cb.checked = on && i < 256; }); channelsChanged(); };
    $("ch-all").addEventListener("click", () => setAll(true));
    $("ch-none").addEventListener("click", () => setAll(false));
    $("graph-svg").addEventListener("click", (e) => {
      const t = e.target.closest(".st.pick");
      if (t && S.graph.streams[t.dataset.stream]) selectTraceStream(t.dataset.stream, true);
    });
    new ResizeObserver(resizeTraces).observe($("trace-wrap"));
  }

  // ---------------------------------------------------------------- signal-quality flags

  const Q = { streams: [] };
  function setupQuality() {
    const g = S.graph;
    Q.streams = [];
    for (const [id, nd] of Object.entries(g.nodes)) {
      if (nd.type !== "quality") continue;
      const s = (nd.outputs || []).find((o) => g.streams[o] && g.streams[o].kind === "feat" && g.streams[o].sfreq > 0);
      if (s && Q.streams.length < 4) Q.streams.push(s);
    }
  }
  function qualityViews(add) {
    for (const s of Q.streams) {
      const info = S.graph.streams[s];
      add("q", { kind: "trace", stream: s, span_s: 2, points: Math.min(4096, Math.max(8, Math.ceil(info.sfreq * 2) + 2)) }, (hd, a) => {
        const nCh = hd.channels.length, n = a.env.length / (2 * nCh);
        if (!n) return;
        const last = (n - 1) * nCh * 2, names = info.ch_names || [];
        const sum = [];
        for (let c = 0; c < nCh; c++) {
          const v = a.env[last + 2 * c + 1], name = names[hd.channels[c]];
          if (name === "n_bad" || name === "any") { sum.push(`${name} ${fin(v) ? v : "?"}`); continue; }
          const f = fin(v) ? v | 0 : 8;
          if (T.flags[name] !== f) { T.flags[name] = f; T.dirty = true; }
        }
        T.qsum = sum.join(" · ");
        Q.dirty = true;
      });
    }
  }
  function renderQuality() {
    Q.dirty = false;
    $("quality-summary").textContent = T.qsum ? `quality: ${T.qsum}` : "";
    for (const lab of $("trace-channels").children) {
      const f = T.flags[lab.dataset.name] | 0;
      const q = QBITS.find(([bit]) => f & bit);
      lab.className = q ? `q${q[0]}` : "";
      lab.title = lab.dataset.name + (f ? ": " + QBITS.filter(([bit]) => f & bit).map((x) => x[1]).join(", ") : "");
    }
  }

  // ---------------------------------------------------------------- spectrum (uPlot)

  const SP = { plot: null, data: null, dirty: false, key: "" };
  function setupSpectrumFmax() {
    const info = S.graph.streams[T.stream] || {};
    const ny = info.sfreq / 2;
    const sel = $("spectrum-fmax"), prev = +sel.value;
    sel.replaceChildren();
    for (const f of [40, 60, 100, 250, 500, 1000, 5000].filter((f) => f < ny).concat([ny])) {
      sel.append(h("option", { value: String(f), text: f === ny ? `${fmtNum(f)} (Nyquist)` : String(f) }));
    }
    const want = prev && prev <= ny ? prev : Math.min(ny, 100);
    sel.value = String([...sel.options].map((o) => +o.value).reduce((a, b) => (Math.abs(b - want) < Math.abs(a - want) ? b : a)));
  }
  function darkAxes(xl, yl) {
    const ax = { stroke: "#8a96a3", grid: { stroke: "#262d35", width: 1 }, ticks: { stroke: "#333b44", width: 1 }, font: "10px system-ui" };
    return [{ ...ax, label: xl, labelFont: "10px system-ui", labelSize: 14 }, { ...ax, label: yl, labelFont: "10px system-ui", labelSize: 14, size: 44 }];
  }
  function spectrumViews(add) {
    if (!T.stream || !T.chans.length) return;
    const chans = T.chans.slice(0, 64);
    add("sp", { kind: "spectrum", stream: T.stream, channels: chans, fmax: +$("spectrum-fmax").value || 60, seconds: 2 }, (hd, a) => {
      seen(hd.t);
      SP.frame = { hd, freqs: a.freqs, psd: a.psd_db };
      SP.dirty = true;
    });
  }
  function drawSpectrum() {
    SP.dirty = false;
    const { hd, freqs, psd } = SP.frame;
    const nF = freqs.length, nCh = hd.channels.length;
    if (!nF || !nCh) return;
    const names = (S.graph.streams[hd.stream] || {}).ch_names || [];
    const data = [Float64Array.from(freqs)];
    const mean = new Float64Array(nF);
    for (let c = 0; c < nCh; c++) {
      const row = Float64Array.from(psd.subarray(c * nF, (c + 1) * nF));
      for (let i = 0; i < nF; i++) mean[i] += 10 ** (row[i] / 10) / nCh;
      data.push(row);
    }
    for (let i = 0; i < nF; i++) mean[i] = 10 * Math.log10(mean[i] || 1e-30);
    data.push(mean);
    const key = `${hd.stream}|${hd.channels.join()}|${nF}`;
    const el = $("spectrum");
    if (!SP.plot || SP.key !== key) {
      if (SP.plot) SP.plot.destroy();
      SP.key = key;
      const series = [{ label: "Hz" }];
      for (let c = 0; c < nCh; c++) series.push({ label: names[hd.channels[c]] || String(hd.channels[c]), stroke: rgba(PALETTE[c % PALETTE.length], 0.45), width: 1, points: { show: false } });
      series.push({ label: "mean", stroke: "#ffffff", width: 2, points: { show: false } });
      SP.plot = new uPlot({ width: Math.max(200, el.clientWidth), height: 210, legend: { show: false }, cursor: { points: { show: false }, drag: { x: false, y: false } },
        scales: { x: { time: false } }, axes: darkAxes("Hz", "dB"), series }, data, el);
    } else SP.plot.setData(data);
    $("spectrum-info").textContent = `${hd.stream} · ${nCh} ch · Welch, last 2 s · white: mean power`;
  }

  // ---------------------------------------------------------------- scalp map

  const SC = { stream: null, idx: [], xy: [], vals: null, label: "", dirty: false, lastSpec: 0, weights: null, G: 40, lut: null };
  function setupScalp() {
    const pos = S.positions || {};
    const name = pos[T.stream] ? T.stream : Object.keys(pos).find((s) => S.graph.streams[s]);
    $("p-scalp").hidden = !name;
    $("p-scalp").parentElement.classList.toggle("single", !name);
    SC.stream = name || null;
    SC.idx = []; SC.xy = []; SC.weights = null; SC.vals = null;
    if (!name) return;
    const names = S.graph.streams[name].ch_names || [];
    names.forEach((n, i) => { const p = pos[name][n]; if (p && SC.idx.length < 256) { SC.idx.push(i); SC.xy.push(p); } });
    SC.dirty = true;
  }
  function scalpViews(add) {
    if (!SC.stream || SC.idx.length < 3) return;
    add("sc", { kind: "spectrum", stream: SC.stream, channels: SC.idx, fmax: 13, seconds: 2 }, (hd, a) => {
      const nF = a.freqs.length, nCh = hd.channels.length;
      const v = new Float64Array(nCh);
      for (let c = 0; c < nCh; c++) {
        let s = 0, k = 0;
        for (let i = 0; i < nF; i++) if (a.freqs[i] >= 8 && a.freqs[i] <= 12) { s += 10 ** (a.psd_db[c * nF + i] / 10); k++; }
        v[c] = k ? 10 * Math.log10(s / k) : NaN;
      }
      SC.vals = v; SC.label = "alpha 8–12 Hz, dB"; SC.lastSpec = performance.now(); SC.dirty = true;
    });
  }
  function scalpFallback() {
    // no spectrum frames: the peak-to-peak of the trace envelope of the channels shown
    if (performance.now() - SC.lastSpec < 3000 || SC.stream !== T.stream) return;
    const stats = windowStats();
    if (!stats) return;
    const pos = new Map(T.ring.channels.map((ch, c) => [ch, c]));
    SC.vals = Float64Array.from(SC.idx, (ch) => (pos.has(ch) && stats[pos.get(ch)] ? stats[pos.get(ch)][1] : NaN));
    SC.label = `peak-to-peak ${unitName((S.graph.streams[T.stream].units || [])[0] || "")} (trace)`;
    SC.dirty = true;
  }
  function viridis(t) {
    const st = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const x = Math.max(0, Math.min(1, t)) * (st.length - 1), i = Math.min(st.length - 2, Math.floor(x)), f = x - i;
    return st[i].map((v, k) => Math.round(v + (st[i + 1][k] - v) * f));
  }
  function drawScalp() {
    SC.dirty = false;
    const cv = $("scalp");
    fitCanvas(cv);
    const ctx = cv.getContext("2d"), W = cv.width, H = cv.height, d = DPR();
    ctx.clearRect(0, 0, W, H);
    const R = Math.min(W, H - 24 * d) / 2 / 1.25, cx = W / 2, cy = (H - 16 * d) / 2 + 4 * d;
    const Gn = SC.G, ext = 1.15, n = SC.xy.length;
    if (!SC.weights && n) {
      SC.weights = new Float32Array(Gn * Gn * n);
      SC.inside = new Uint8Array(Gn * Gn);
      for (let gy = 0; gy < Gn; gy++) for (let gx = 0; gx < Gn; gx++) {
        const x = ((gx + 0.5) / Gn * 2 - 1) * ext, y = (1 - (gy + 0.5) / Gn * 2) * ext, cell = gy * Gn + gx;
        if (x * x + y * y > ext * ext) continue;
        SC.inside[cell] = 1;
        let sum = 0;
        for (let c = 0; c < n; c++) {
          const dx = x - SC.xy[c][0], dy = y - SC.xy[c][1];
          const w = 1 / (dx * dx + dy * dy + 1e-4) ** 1.5;
          SC.weights[cell * n + c] = w; sum += w;
        }
        for (let c = 0; c < n; c++) SC.weights[cell * n + c] /= sum;
      }
      SC.off = document.createElement("canvas");
      SC.off.width = Gn; SC.off.height = Gn;
    }
    if (SC.vals && n) {
      let lo = Infinity, hi = -Infinity;
      for (const v of SC.vals) if (fin(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      if (lo <= hi) {
        const vals = Float64Array.from(SC.vals, (v) => (fin(v) ? v : (lo + hi) / 2));
        const octx = SC.off.getContext("2d"), img = octx.createImageData(Gn, Gn);
        for (let cell = 0; cell < Gn * Gn; cell++) {
          if (!SC.inside[cell]) continue;
          let v = 0;
          for (let c = 0; c < n; c++) v += SC.weights[cell * n + c] * vals[c];
          const [r, g, b] = viridis(hi > lo ? (v - lo) / (hi - lo) : 0.5);
          img.data.set([r, g, b, 255], cell * 4);
        }
        octx.putImageData(img, 0, 0);
        ctx.save();
        ctx.beginPath(); ctx.arc(cx, cy, R * ext, 0, 2 * Math.PI); ctx.clip();
        ctx.imageSmoothingEnabled = true;
        ctx.drawImage(SC.off, cx - R * ext, cy - R * ext, 2 * R * ext, 2 * R * ext);
        ctx.restore();
        ctx.fillStyle = "#aeb8c2"; ctx.font = `${10 * d}px system-ui`; ctx.textBaseline = "bottom";
        ctx.fillText(`${fmtNum(lo)} … ${fmtNum(hi)}  ${SC.label}`, 4 * d, H - 2 * d);
      }
    }
    ctx.strokeStyle = "#d6dde4"; ctx.lineWidth = 1.5 * d;
    ctx.beginPath(); ctx.arc(cx, cy, R, 0, 2 * Math.PI); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(cx - 0.1 * R, cy - 0.995 * R); ctx.lineTo(cx, cy - 1.12 * R); ctx.lineTo(cx + 0.1 * R, cy - 0.995 * R); ctx.stroke();
    for (const s of [-1, 1]) { ctx.beginPath(); ctx.ellipse(cx + s * 1.04 * R, cy, 0.05 * R, 0.17 * R, 0, 0, 2 * Math.PI); ctx.stroke(); }
    ctx.fillStyle = "#0b0e10";
    for (const [x, y] of SC.xy) { ctx.beginPath(); ctx.arc(cx + x * R, cy - y * R, 1.6 * d, 0, 2 * Math.PI); ctx.fill(); }
    $("scalp-info").textContent = SC.stream ? `${SC.stream} · ${n} electrodes` : "";
  }

  // ---------------------------------------------------------------- feature streams over time (uPlot)

  const F = { charts: [], chosen: [], span: 30 };
  function setupFeatures() {
    const g = S.graph, qs = new Set(Q.streams);
    const cands = Object.keys(g.streams).filter((s) => g.streams[s].kind === "feat" && g.streams[s].sfreq > 0 && g.streams[s].n_channels > 0 && !qs.has(s));
    const ctlIn = new Set(Object.values(g.nodes).filter((n) => n.category === "controller").flatMap((n) => n.inputs || []));
    const pref = cands.filter((s) => ctlIn.has(s)).concat(cands.filter((s) => !ctlIn.has(s)));
    F.chosen = pref.slice(0, 2);
    const box = $("feature-streams");
    box.replaceChildren();
    for (const s of cands) {
      box.append(h("label", {}, h("input", { type: "checkbox", value: s, checked: F.chosen.includes(s) }), " " + s));
    }
    box.onchange = () => {
      F.chosen = [...box.querySelectorAll("input:checked")].map((i) => i.value).slice(0, 6);
      buildFeatureCharts();
    };
    $("p-features").hidden = !cands.length;
    buildFeatureCharts();
  }

  class LineChart {
    constructor(parent, stream, chans, span, mode, title) {
      this.stream = stream; this.chans = chans; this.span = span; this.mode = mode;
      this.ring = new BinRing(); this.dirty = false; this.last = 0; this.plot = null;
      this.el = h("div", { class: "fchart" }, h("div", { class: "ftitle", text: title }));
      parent.append(this.el);
    }
    view() {
      const info = S.graph.streams[this.stream];
      return { kind: "trace", stream: this.stream, channels: this.chans, span_s: this.span,
        points: Math.min(this.mode === "max" ? 600 : 2000, Math.max(8, Math.ceil(info.sfreq * this.span) + 2)) };
    }
    frame(hd, a) {
      if (hd.channels.join() !== this.chans.join()) return;
      this.ring.add(hd, a.env, Math.ceil(this.span * hd.sfreq / hd.bin_len) + 4);
      this.dirty = true;
    }
    draw() {
      this.dirty = false;
      const r = this.ring, nb = r.binsFor(this.span), start = r.newest - nb + 1, tEnd = r.timeOf(r.newest);
      if (r.newest < 0 || !fin(tEnd)) return;
      const xs = [], ys = this.chans.map(() => []);
      for (let b = Math.max(start, r.newest - r.cap + 1); b <= r.newest; b++) {
        xs.push(r.timeOf(b) - tEnd);
        const ok = r.has(b), o = r.off(b);
        for (let c = 0; c < this.chans.length; c++) {
          const lo = r.env[o + 2 * c], hi = r.env[o + 2 * c + 1];
          ys[c].push(ok && fin(lo) && fin(hi) ? (this.mode === "max" ? hi : (lo + hi) / 2) : null);
        }
      }
      if (!this.plot) {
        const names = (S.graph.streams[this.stream] || {}).ch_names || [];
        const units = (S.graph.streams[this.stream] || {}).units || [];
        const series = [{ label: "s", value: (u, v) => (v === null || v === undefined ? "—" : v.toFixed(2)) }].concat(this.chans.map((ch, c) =>
          ({ label: names[ch] || String(ch), stroke: PALETTE[c % PALETTE.length], width: 1.3, points: { show: false },
            value: (u, v) => (v === null || v === undefined ? "—" : fmtNum(v) + (units[ch] ? " " + unitName(units[ch]) : "")) })));
        if (this.mode === "max") series.forEach((s, i) => { if (i) s.paths = uPlot.paths.stepped({ align: 1 }); });
        this.plot = new uPlot({ width: Math.max(200, this.el.clientWidth), height: this.mode === "max" ? 110 : 130,
          cursor: { points: { show: false }, drag: { x: false, y: false } },
          scales: { x: { time: false, range: [-this.span, 0] } }, axes: darkAxes("s", ""), series }, [xs, ...ys], this.el);
      } else this.plot.setData([xs, ...ys]);
    }
    resize() { if (this.plot) this.plot.setSize({ width: Math.max(200, this.el.clientWidth), height: this.plot.height }); }
    destroy() { if (this.plot) this.plot.destroy(); this.el.remove(); }
  }

  function buildFeatureCharts() {
    F.charts.forEach((c) => c.destroy());
    F.charts = F.chosen.map((s) => {
      const info = S.graph.streams[s];
      const chans = Array.from({ length: Math.min(8, info.n_channels) }, (_, i) => i);
      return new LineChart($("features"), s, chans, F.span, "mid",
        `${s} · ${fmtNum(info.sfreq)} Hz${info.n_channels > 8 ? ` · first 8 of ${info.n_channels} columns` : ""}`);
    });
    pushViews();
  }
  function featureViews(add) { for (const c of F.charts) add("f", c.view(), (hd, a) => c.frame(hd, a)); }

  // ---------------------------------------------------------------- spike raster

  const RS = { stream: null, cap: 65536, t: new Float64Array(65536), ch: new Int32Array(65536), n: 0, head: 0, maxCh: 0, nCh: 1, dirty: false, drawnT: 0 };
  function setupRaster() {
    const g = S.graph;
    const cands = Object.keys(g.streams).filter((s) => g.streams[s].kind === "evt" &&
      (s.endsWith(".spikes") || SPIKE_TYPES.has((g.nodes[g.streams[s].producer] || {}).type)));
    $("p-raster").hidden = !cands.length;
    const sel = $("raster-stream");
    sel.replaceChildren(...cands.map((s) => h("option", { value: s, text: s })));
    sel.onchange = () => selectRaster(sel.value);
    if (cands.length) selectRaster(cands.find((s) => (g.nodes[g.streams[s].producer] || {}).type === "spike_detect") || cands[0]);
  }
  function selectRaster(s) {
    const g = S.graph, nd = g.nodes[g.streams[s].producer] || {};
    RS.stream = s; RS.n = 0; RS.head = 0; RS.maxCh = 0;
    $("raster-stream").value = s;
    // channels of the signal the events were found in: the producer's input, or its own signal output (a synthetic probe)
    const sigs = (nd.inputs || []).concat(nd.outputs || []).map((x) => g.streams[x] || {}).filter((x) => x.kind === "sig");
    RS.nCh = Math.max(1, sigs.length ? sigs[0].n_channels || 1 : 1);
    RS.dirty = true;
    pushViews();
  }
  function rasterViews(add) {
    if (!RS.stream) return;
    add("r", { kind: "events", stream: RS.stream }, (hd, a) => {
      if (hd.type !== "events") return;
      for (let i = 0; i < a.time.length; i++) {
        RS.t[RS.head] = a.time[i]; RS.ch[RS.head] = a.channel[i];
        RS.head = (RS.head + 1) % RS.cap; RS.n = Math.min(RS.cap, RS.n + 1);
        if (a.channel[i] > RS.maxCh) RS.maxCh = a.channel[i];
        seen(a.time[i]);
      }
      RS.dirty = true;
    });
  }
  function drawRaster() {
    RS.dirty = false;
    RS.drawnT = S.latestT;
    const cv = $("raster");
    fitCanvas(cv);
    const ctx = cv.getContext("2d"), W = cv.width, H = cv.height, d = DPR();
    ctx.clearRect(0, 0, W, H);
    const nCh = Math.max(RS.nCh, RS.maxCh + 1), G0 = 34 * d, PW = W - G0, lane = (H - 14 * d) / nCh;
    const tEnd = S.latestT, span = T.span;
    ctx.fillStyle = "#7d8894"; ctx.font = `${10 * d}px system-ui`; ctx.textBaseline = "middle";
    const every = Math.max(1, Math.ceil(10 * d / lane));
    for (let c = 0; c < nCh; c += every * Math.ceil(nCh / every / 8)) ctx.fillText(String(c), 2 * d, (c + 0.5) * lane);
    if (!fin(tEnd)) return;
    ctx.fillStyle = "#e6edf3";
    ctx.beginPath();
    let shown = 0;
    for (let k = 0; k < RS.n; k++) {
      const i = (RS.head - 1 - k + RS.cap) % RS.cap, dt = tEnd - RS.t[i];
      if (dt > span) break;
      if (dt < 0) continue;
      ctx.rect(G0 + (1 - dt / span) * PW, RS.ch[i] * lane, Math.max(1, d), Math.max(1, lane - (lane > 3 ? 1 : 0)));
      shown++;
    }
    ctx.fill();
    ctx.fillStyle = "#7d8894"; ctx.textBaseline = "bottom";
    ctx.fillText(`−${span} s`, G0, H);
    ctx.fillText(`${fmt(tEnd, 1)} s`, W - 48 * d, H);
    $("raster-info").textContent = `${shown} events in ${span} s · ${nCh} channels`;
  }

  // ---------------------------------------------------------------- stimulation: timeline, refusals, delivered

  const ST = { recs: [], keys: new Set(), keyList: [], dirty: false, counts: {}, refDirty: false, delivered: null, span: 30, drawnT: 0 };
  function setupStim() {
    const g = S.graph;
    S.stimulators = Object.keys(g.nodes).filter((n) => g.nodes[n].category === "stimulator");
    $("p-stim").hidden = !S.stimulators.length;
    if (ST.delivered) { ST.delivered.destroy(); ST.delivered = null; }
    const del = S.stimulators.map((s) => `${s}.delivered`).find((s) => g.streams[s] && g.streams[s].sfreq > 0);
    if (del) {
      const names = g.streams[del].ch_names || [];
      let chans = names.map((n, i) => (n.endsWith("amplitude_ma") ? i : -1)).filter((i) => i >= 0).slice(0, 8);
      if (!chans.length) chans = [0];
      ST.delivered = new LineChart($("delivered"), del, chans, ST.span, "max", `${del}: delivered amplitude (max per bin)`);
    }
  }
  function stimViews(add) {
    for (const s of S.stimulators) {
      const ds = `${s}.decisions`;
      if (!S.graph.streams[ds]) continue;
      add("d", { kind: "events", stream: ds }, (hd, a) => {
        if (hd.type !== "decisions") return;
        const recs = [];
        for (let i = 0; i < a.time.length; i++) {
          const code = a.status[i];
          const name = Array.isArray(hd.status) && hd.status.length === a.time.length ? hd.status[i] : STATUS_NAMES[code] || String(code);
          recs.push({ time: a.time[i], t_stream: a.t_stream[i], amplitude_ma: a.amplitude_ma[i], frequency_hz: a.frequency_hz[i],
            channel: a.channel[i], status: name, reason: (hd.reason || [])[i] || "", stimulator: s });
        }
        addDecisionRecords(recs);
      });
    }
    if (ST.delivered) add("dl", ST.delivered.view(), (hd, a) => ST.delivered.frame(hd, a));
  }
  function addDecisionRecords(records) {
    for (const r0 of records) {
      const status = typeof r0.status === "string" ? r0.status : STATUS_NAMES[r0.status] || String(r0.status);
      const key = `${fin(r0.time) ? r0.time.toFixed(6) : ""}|${status}|${r0.channel}|${fin(r0.t_stream) ? r0.t_stream.toFixed(6) : ""}`;
      if (ST.keys.has(key)) continue;
      ST.keys.add(key); ST.keyList.push(key);
      if (ST.keyList.length > 8000) ST.keys.delete(ST.keyList.shift());
      const t = fin(r0.t_stream) ? r0.t_stream : S.latestT;
      const r = { ...r0, status, t };
      ST.recs.push(r);
      PERF.decisions++;
      ST.counts[status] = (ST.counts[status] || 0) + 1;
      if (fin(r0.t_stream)) seen(r0.t_stream);
      if (status !== "accepted" && status !== "ramp" && status !== "clipped") ST.refDirty = true;
    }
    if (ST.recs.length > 4000) ST.recs.splice(0, ST.recs.length - 3000);
    ST.dirty = true;
  }
  function drawTimeline() {
    ST.dirty = false;
    ST.drawnT = S.latestT;
    const cv = $("timeline");
    fitCanvas(cv);
    const ctx = cv.getContext("2d"), W = cv.width, H = cv.height, d = DPR();
    ctx.clearRect(0, 0, W, H);
    const G0 = 66 * d, PW = W - G0 - 4 * d, rowH = (H - 14 * d) / TL_ROWS.length;
    const last = ST.recs.length ? ST.recs[ST.recs.length - 1].t : -Infinity;
    const tEnd = Math.max(fin(S.latestT) ? S.latestT : -Infinity, fin(last) ? last : -Infinity);
    ctx.font = `${10 * d}px system-ui`; ctx.textBaseline = "middle";
    TL_ROWS.forEach(([label, names], i) => {
      ctx.fillStyle = i % 2 ? "#0f1317" : "#13181d";
      ctx.fillRect(G0, i * rowH, PW, rowH);
      ctx.fillStyle = STATUS_COLOUR[names[0]];
      ctx.fillText(label, 3 * d, (i + 0.5) * rowH);
    });
    ST.hits = [];
    if (!fin(tEnd)) return;
    for (let k = ST.recs.length - 1; k >= 0; k--) {
      const r = ST.recs[k], dt = tEnd - r.t;
      if (!(dt <= ST.span)) continue;   // the two sources may interleave: no early exit
      const row = TL_ROW_OF[r.status] !== undefined ? TL_ROW_OF[r.status] : 4;
      const x = G0 + (1 - dt / ST.span) * PW;
      ctx.fillStyle = STATUS_COLOUR[r.status] || "#ccc";
      ctx.fillRect(x - d, row * rowH + 2 * d, 2.5 * d, rowH - 4 * d);
      ST.hits.push([x / d, (row + 0.5) * rowH / d, r]);
    }
    ctx.fillStyle = "#7d8894"; ctx.textBaseline = "bottom";
    ctx.fillText(`−${ST.span} s`, G0, H);
    ctx.fillText(`${fmt(tEnd, 1)} s`, W - 52 * d, H);
    const c = ST.counts;
    $("stim-counts").textContent = ["accepted", "clipped", "refused", "watchdog", "estop"].filter((s) => c[s]).map((s) => `${s} ${c[s]}`).join(" · ");
  }
  function timelineHover(e) {
    const rect = e.target.getBoundingClientRect(), x = e.clientX - rect.left, y = e.clientY - rect.top;
    let best = null, bd = 6;
    for (const [hx, hy, r] of ST.hits || []) {
      const dd = Math.abs(hx - x) + (Math.abs(hy - y) > 10 ? 99 : 0);
      if (dd < bd) { bd = dd; best = r; }
    }
    const tip = $("tip");
    if (!best) { tip.hidden = true; return; }
    tip.textContent = `${best.status}${best.stimulator ? " · " + best.stimulator : ""} · t ${fmt(best.t, 3)} s\n` +
      `${fmt(best.amplitude_ma, 2)} mA · ${fmt(best.frequency_hz, 1)} Hz · ch ${best.channel}` + (best.reason ? `\n${best.reason}` : "");
    tip.style.left = `${e.clientX + 12}px`; tip.style.top = `${e.clientY + 12}px`;
    tip.hidden = false;
  }
  function renderRefusals() {
    ST.refDirty = false;
    const recs = [];
    for (let k = ST.recs.length - 1; k >= 0 && recs.length < 200; k--) {
      const r = ST.recs[k];
      if (r.status !== "accepted" && r.status !== "ramp" && r.status !== "clipped") recs.push(r);
    }
    recs.sort((a, b) => b.t - a.t);
    const rows = recs.slice(0, 30).map((r) =>
      h("li", { title: r.reason || "" }, h("span", { class: "t", text: `${fmt(r.t, 2)} s ` }),
        h("span", { class: r.status === "arm" || r.status === "estop_clear" ? "ok" : "err", text: r.status }), ` ${r.reason || ""}`));
    $("refusals").replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- latency

  const LAT = { plot: null, key: "", acc: new Float64Array(14), edges: [0, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 200, Infinity] };
  function renderLatency(st) {
    const l = st.latency_ms;
    $("latency-p50").textContent = l ? fmt(l.p50, 2) : "—";
    $("latency-p99").textContent = l ? fmt(l.p99, 2) : "—";
    $("latency-n").textContent = l && fin(l.n) ? String(l.n) : "—";
    let edges, counts, note;
    const hist = st.latency_hist;
    if (hist && Array.isArray(hist.edges_ms) && Array.isArray(hist.counts) && hist.counts.length) {
      edges = hist.edges_ms; counts = hist.counts; note = "histogram of the recent end-to-end latencies";
    } else if (l && fin(l.p50)) {
      const i = LAT.edges.findIndex((e, k) => l.p50 >= e && l.p50 < LAT.edges[k + 1]);
      if (i >= 0) LAT.acc[i]++;
      edges = LAT.edges; counts = Array.from(LAT.acc); note = "histogram of the p50 of each status (this page's count)";
    } else {
      $("latency-note").textContent = S.stimulators.length ? "no latency yet (none on the virtual clock)" : "no stimulator: no end-to-end latency";
      return;
    }
    $("latency-note").textContent = note;
    const xs = counts.map((_, i) => i);
    const labels = counts.map((_, i) => `${fmtNum(edges[i])}${fin(edges[i + 1]) ? "–" + fmtNum(edges[i + 1]) : "+"}`);
    const key = labels.join();
    const el = $("latency-hist");
    if (!LAT.plot || LAT.key !== key) {
      if (LAT.plot) LAT.plot.destroy();
      LAT.key = key;
      const axes = darkAxes("ms", "n");
      axes[0].splits = () => xs;
      axes[0].values = (u, sp) => sp.map((i) => labels[i] || "");
      axes[0].rotate = -40; axes[0].size = 40;
      LAT.plot = new uPlot({ width: Math.max(200, el.clientWidth), height: 150, legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        scales: { x: { time: false, range: [-0.6, counts.length - 0.4] }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
        axes, series: [{}, { label: "n", fill: rgba("#5aa9e6", 0.6), stroke: "#5aa9e6", paths: uPlot.paths.bars({ size: [0.85, 60] }), points: { show: false } }] },
      [xs, counts], el);
    } else LAT.plot.setData([xs, counts]);
  }

  // ---------------------------------------------------------------- live parameters

  // A parameter's type as named by live_schema (rtneuro.nodes.base._type_name): "float", "int | None", "'a' | 'b'", "bool", ...
  function paramKind(p) {
    const parts = String(p.type || "").split("|").map((s) => s.trim()).filter(Boolean);
    const nullable = parts.includes("None");
    const rest = parts.filter((s) => s !== "None");
    const lit = rest.length && rest.every((s) => /^'.*'$|^".*"$|^-?\d+(\.\d+)?$|^True$|^False$/.test(s));
    if (lit) return { kind: "select", nullable, choices: rest.map((s) => (/^['"]/.test(s) ? s.slice(1, -1) : s === "True" ? true : s === "False" ? false : +s)) };
    if (rest.length === 1 && rest[0] === "bool" && !nullable) return { kind: "bool" };
    if (rest.length && rest.every((s) => s === "int" || s === "float")) return { kind: "number", nullable, int: rest.every((s) => s === "int") };
    if (rest.length === 1 && rest[0] === "str") return { kind: "str", nullable };
    return { kind: "json", nullable };
  }

  function paramInput(name, p) {
    const k = paramKind(p);
    let inp;
    if (k.kind === "bool") inp = h("input", { type: "checkbox", name, checked: !!p.value });
    else if (k.kind === "select") {
      inp = h("select", { name });
      if (k.nullable) inp.append(h("option", { value: "null", text: "null" }));
      for (const c of k.choices) inp.append(h("option", { value: JSON.stringify(c), text: String(c) }));
      inp.value = JSON.stringify(p.value === undefined ? null : p.value);
    } else if (k.kind === "number") {
      inp = h("input", { type: "number", name, step: k.int ? "1" : "any", placeholder: k.nullable ? "null" : "",
        value: p.value === null || p.value === undefined ? "" : String(p.value), required: !k.nullable });
      const lo = "ge" in p ? p.ge : "gt" in p ? p.gt : null, hi = "le" in p ? p.le : "lt" in p ? p.lt : null;
      if (lo !== null) inp.min = String(lo);
      if (hi !== null) inp.max = String(hi);
    } else {
      inp = h("input", { type: "text", name, value: k.kind === "str" ? (p.value === null ? "" : String(p.value)) : JSON.stringify(p.value),
        placeholder: k.nullable ? "null" : p.type });
    }
    inp.dataset.kind = k.kind;
    inp.dataset.nullable = k.nullable ? "1" : "";
    inp.dataset.current = JSON.stringify(p.value === undefined ? null : p.value);
    inp.addEventListener("input", () => inp.classList.toggle("dirty", JSON.stringify(readInput(inp)) !== inp.dataset.current));
    return inp;
  }

  function readInput(inp) {
    const k = inp.dataset.kind, nullable = !!inp.dataset.nullable, v = inp.value;
    if (k === "bool") return inp.checked;
    if (k === "select") return JSON.parse(v);
    if (k === "number") return v.trim() === "" ? (nullable ? null : NaN) : Number(v);
    if (k === "str") return v === "" && nullable ? null : v;
    if (v.trim() === "" && nullable) return null;
    try { return JSON.parse(v); } catch (e) { return v; }
  }

  function writeInput(inp, value) {
    inp.dataset.current = JSON.stringify(value);
    if (inp.classList.contains("dirty") || document.activeElement === inp) return;
    const k = inp.dataset.kind;
    if (k === "bool") inp.checked = !!value;
    else if (k === "select") inp.value = JSON.stringify(value);
    else if (k === "number" || k === "str") inp.value = value === null || value === undefined ? "" : String(value);
    else inp.value = JSON.stringify(value);
  }

  function buildForms(g) {
    const box = $("param-forms");
    box.replaceChildren();
    for (const [id, nd] of Object.entries(g.nodes)) {
      const live = nd.live || {};
      if (!Object.keys(live).length) continue;
      const form = h("form", { class: "pform", "data-node": id, noValidate: true });   // the server checks, with its messages
      form.append(h("div", { class: "ftitle" }, id, h("small", { text: nd.type })));
      for (const [name, p] of Object.entries(live)) {
        const hint = { lower: "only lower", higher: "only higher", true: "only → true", false: "only → false" }[p.stricter];
        form.append(h("label", { title: (p.doc || "") + ` (${p.type})` }, h("span", { text: name }), paramInput(name, p),
          hint ? h("span", { class: "hint", text: hint }) : null));
      }
      const res = h("div", { class: "result" });
      form.append(h("button", { type: "submit", class: "steer", text: "Apply" }), res);
      form.addEventListener("submit", (e) => { e.preventDefault(); submitForm(form, id, res); });
      box.append(form);
    }
    if (!box.children.length) box.append(h("div", { class: "muted", text: "no node of this graph has live parameters" }));
  }

  const pendingSets = new Map();
  async function submitForm(form, node, res) {
    const changes = {};
    for (const inp of form.querySelectorAll("input[name], select[name]")) {
      const v = readInput(inp);
      if (typeof v === "number" && !Number.isFinite(v)) { setResult(res, false, `${inp.name}: give a number`); return; }
      if (JSON.stringify(v) !== inp.dataset.current) changes[inp.name] = v;
    }
    if (!Object.keys(changes).length) { setResult(res, true, "nothing changed"); return; }
    setResult(res, true, "applying…");
    try {
      const r = await RT.api("POST", "/api/params", { changes: { [node]: changes } });
      const vals = (r.values || {})[node] || changes;
      for (const [k, v] of Object.entries(vals)) {
        const inp = form.querySelector(`[name="${CSS.escape(k)}"]`);
        if (inp) { inp.classList.remove("dirty"); writeInput(inp, v); }
      }
      if (r.status === "pending") { pendingSets.set(r.id, res); setResult(res, true, `#${r.id} pending: not applied within the wait; its record follows`); }
      else setResult(res, r.status === "applied", appliedText(r, node));
    } catch (e) {
      setResult(res, false, e.message);
    }
  }
  function appliedText(r, node) {
    const a = (r.applied || {})[node];
    const errs = Object.entries(r.errors || {}).map(([n, e]) => `${n}: ${e}`).join("; ");
    const where = a ? (a.stream ? `at ${a.stream}[${a.index}]` : a.at && Object.keys(a.at).length ? "at " + Object.entries(a.at).map(([s, i]) => `${s}[${i}]`).join(", ") : "at the next chunk") +
      (fin(a.t_stream) ? ` (t ${a.t_stream.toFixed(3)} s)` : "") : "";
    return `#${r.id} ${r.status} ${where}${errs ? " — " + errs : ""}`;
  }
  function ackResult(r) {
    if (!r || !pendingSets.has(r.id)) return;
    const res = pendingSets.get(r.id);
    pendingSets.delete(r.id);
    setResult(res, r.status === "applied", appliedText(r, Object.keys(r.applied || {})[0]));
  }

  function setupControls() {
    const res = $("control-result");
    const post = async (path, body, label, show) => {
      try { setResult(res, true, `${label}: ${show(await RT.api("POST", path, body))}`); } catch (e) { setResult(res, false, `${label}: ${e.message}`); }
    };
    const annotate = () => {
      const text = $("annotate-text").value.trim();
      if (!text) { setResult(res, false, "annotation: write a text first"); return; }
      post("/api/annotations", { text: text.slice(0, 500) }, "annotation", (r) => {
        $("annotate-text").value = "";
        return `#${r.id} at ${fin(r.t_stream) ? "t " + r.t_stream.toFixed(3) + " s" : "LSL " + fmt(r.t_lsl, 3)}`;
      });
    };
    $("annotate-button").addEventListener("click", annotate);
    $("annotate-text").addEventListener("keydown", (e) => { if (e.key === "Enter") annotate(); });
    $("record-start").addEventListener("click", () => {
      const label = $("record-label").value.trim();
      post("/api/recording/start", label ? { label: label.slice(0, 100) } : {}, "segment", (r) => `'${r.segment}' started`);
    });
    $("record-stop").addEventListener("click", () => post("/api/recording/stop", undefined, "segment", (r) => `'${r.segment}' stopped`));
    $("pause").addEventListener("click", () => post("/api/replay/pause", undefined, "pause", (r) => (r.paused ? "paused" : "running") + (r.stimulation && r.stimulation !== "none" ? ` (stimulation: ${r.stimulation})` : "")));
    $("resume").addEventListener("click", () => post("/api/replay/resume", undefined, "resume", (r) => (r.paused ? "paused" : "running") + (r.stimulation && r.stimulation !== "none" ? ` (stimulation: ${r.stimulation})` : "")));
  }

  // ---------------------------------------------------------------- control records

  const CH = { seen: new Set() };
  function summary(r) {
    const a = r.args || {};
    if (r.op === "set") return Object.entries(a.changes || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    if (a.text !== undefined) return JSON.stringify(a.text);
    if (a.reason !== undefined) return a.reason || "";
    if (a.label !== undefined) return a.label + (fin(a.duration_s) ? ` (${a.duration_s.toFixed(1)} s)` : "");
    return Object.entries(a).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ");
  }
  function addChange(r, live) {
    if (!r || CH.seen.has(r.seq)) return;
    CH.seen.add(r.seq);
    const errs = r.errors && Object.keys(r.errors).length ? Object.entries(r.errors).map(([n, e]) => `${n}: ${e}`).join("; ") : "";
    const li = h("li", { title: JSON.stringify(r), "data-seq": String(r.seq) },
      h("span", { class: "t", text: `#${r.seq} ${fin(r.t_stream) ? r.t_stream.toFixed(2) + " s" : ""} ${r.who || ""} ` }),
      h("span", { class: "op", text: r.op }), " " + summary(r), errs ? h("span", { class: "err", text: " — " + errs }) : null);
    const list = $("changes");   // newest first, in seq order whatever order the list and the events came in
    let before = list.firstChild;
    while (before && +before.dataset.seq > r.seq) before = before.nextSibling;
    list.insertBefore(li, before);
    while (list.children.length > 150) list.lastChild.remove();
    if (live && r.op === "set") {
      for (const [k, v] of Object.entries((r.args || {}).changes || {})) {
        const dot = k.indexOf(".");
        const form = document.querySelector(`form[data-node="${CSS.escape(k.slice(0, dot))}"]`);
        const inp = form && form.querySelector(`[name="${CSS.escape(k.slice(dot + 1))}"]`);
        if (inp) writeInput(inp, v);
      }
    }
  }

  // ---------------------------------------------------------------- the data socket

  function onHello(m) {
    applyRole(m.role);
    S.positions = m.positions || {};
    S.ui = m.ui || {};
    if (!S.graph && m.graph && m.graph.nodes) applyGraph(m.graph);
    const first = !S.hello;
    S.hello = true;
    if (S.graph && first) {
      const want = (S.ui.traces || []).find((s) => traceStreams().includes(s));
      if (want && !T.touched && want !== T.stream) selectTraceStream(want, false);
      else { setupScalp(); pushViews(); }
    }
  }

  function onDataMessage(m) {
    if (m.type === "error") setResult($("control-result"), false, `view ${m.view || ""}: ${m.error}`);
    else if (m.type === "end") runEnded();
  }

  // ---------------------------------------------------------------- the graph arrives: build every panel

  function applyGraph(g) {
    S.graph = g;
    $("graph-name").textContent = g.name || "";
    document.title = `rtneuro — ${g.name}`;
    buildGraph(g);
    setupStim();
    setupQuality();
    buildForms(g);
    if (S.role) { const r = S.role; S.role = null; applyRole(r); }
    const sel = $("trace-stream"), names = traceStreams();
    sel.replaceChildren(...names.map((s) => h("option", { value: s, text: `${s} (${g.streams[s].kind}, ${g.streams[s].n_channels} ch, ${fmtNum(g.streams[s].sfreq)} Hz)` })));
    const first = ((S.ui && S.ui.traces) || []).find((s) => names.includes(s)) || names.find((s) => g.streams[s].kind === "sig") || names[0];
    setupFeatures();
    setupRaster();
    if (first) selectTraceStream(first, false);
    else { $("p-spectrum").hidden = true; setupScalp(); }
    if (S.status) renderStatus(S.status);
  }

  async function refreshGraph() {
    if (S.ended || document.hidden || !S.graph) return;
    try {
      const g = await RT.api("GET", "/api/graph");
      for (const [p, info] of Object.entries(g.processes || {})) procTitle(p, info);
      for (const [id, nd] of Object.entries(g.nodes || {})) {
        const form = document.querySelector(`form[data-node="${CSS.escape(id)}"]`);
        if (!form) continue;
        for (const [k, p] of Object.entries(nd.live || {})) {
          const inp = form.querySelector(`[name="${CSS.escape(k)}"]`);
          if (inp) writeInput(inp, p.value);
        }
      }
    } catch (e) { /* the status chip says when the run is gone */ }
  }

  // ---------------------------------------------------------------- the drawing loop

  function frame(ts) {
    requestAnimationFrame(frame);
    if (document.hidden) return;
    if (T.dirty) drawTraces();
    if (Q.dirty) renderQuality();
    if (SP.dirty && SP.frame) drawSpectrum();
    if (!$("p-scalp").hidden) {
      if (ts - (SC.lastFb || 0) > 500) { SC.lastFb = ts; scalpFallback(); }
      if (SC.dirty) drawScalp();
    }
    for (const c of F.charts) if (c.dirty && ts - c.last > 66) { c.last = ts; c.draw(); }
    if (ST.delivered && ST.delivered.dirty && ts - ST.delivered.last > 66) { ST.delivered.last = ts; ST.delivered.draw(); }
    if (!$("p-raster").hidden && (RS.dirty || RS.drawnT !== S.latestT)) drawRaster();
    if (!$("p-stim").hidden && (ST.dirty || ST.drawnT !== S.latestT)) drawTimeline();
    if (ST.refDirty) renderRefusals();
  }

  async function main() {
    setupHeader();
    setupTraces();
    setupControls();
    $("spectrum-fmax").addEventListener("change", () => pushViews());
    $("timeline").addEventListener("mousemove", timelineHover);
    $("timeline").addEventListener("mouseleave", () => { $("tip").hidden = true; });
    window.addEventListener("resize", debounce(() => {
      if (SP.plot) SP.plot.setSize({ width: Math.max(200, $("spectrum").clientWidth), height: 210 });
      if (LAT.plot) LAT.plot.setSize({ width: Math.max(200, $("latency-hist").clientWidth), height: 150 });
      F.charts.forEach((c) => c.resize());
      if (ST.delivered) ST.delivered.resize();
      SC.dirty = RS.dirty = ST.dirty = true;
    }, 150));
    if (!RT.token()) {
      notice("No token: open the address the run printed (http://HOST:PORT/#token=...).");
      $("status-state").textContent = "no token";
      return;
    }
    requestAnimationFrame(frame);
    connectEvents();
    dataSock = new RT.DataSocket({
      hello: onHello, frame: onFrame, message: onDataMessage,
      close: (ev) => { if (ev.code === 1000) runEnded(); },
    });
    const [g, st, ch] = await Promise.allSettled([RT.api("GET", "/api/graph"), RT.api("GET", "/api/status"), RT.api("GET", "/api/changes")]);
    if (g.status === "fulfilled") { if (!S.graph) applyGraph(g.value); } else if (!S.graph) notice(`GET /api/graph: ${g.reason.message}`);
    if (st.status === "fulfilled" && !lastStatusAt) renderStatus(st.value);
    if (ch.status === "fulfilled") for (const r of (ch.value.changes || []).slice(-150)) addChange(r, false);
    document.body.dataset.ready = "1";
    PERF.ready = true;
    setInterval(pollStatus, 2000);
    setInterval(refreshGraph, 10000);
  }

  main();
})();
