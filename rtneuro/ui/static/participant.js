// rtneuro participant display: one feedback value, full screen, nothing to operate.
// Configuration: hello.ui.participant (docs/ui.md, "the ui: block"). The canvas is painted only in
// requestAnimationFrame; each paint of a new value is reported to the server as [key, LSL time of the
// frame] ({"type": "paint"}) for the display latency. Needs common.js (RT).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("display");
  const g = canvas.getContext("2d", { alpha: false });

  const VIEW_ID = "participant";
  const REPORT_EVERY_MS = 250;    // paint reports: at most one message per 250 ms
  const MAX_ITEMS = 256;          // items per paint message (docs/ui.md)
  const MIN_EXCHANGES = 4;        // clock answers before paints are reported (8 come in the first 350 ms)
  const HINT_MS = 6000;
  const GREEN = "#2ecc40";
  const NEUTRAL = "#4f7fdc";
  const TARGET_BAND = "rgba(46, 204, 64, 0.22)";
  const TARGET_EDGE = "rgba(46, 204, 64, 0.85)";
  const OUTLINE = "#777";

  // what the tests read: the last painted value and its key, how many new values were painted
  const out = window.rtParticipant = {
    value: null, key: null, painted: 0, display: null, score: 0,
    sound: { running: false, frequency: null, gain: 0 },
  };

  const st = {
    spec: null,       // hello.ui.participant with its defaults
    sfreq: 0,         // the feedback stream's rate (0: irregular)
    pending: null,    // the newest received sample not painted yet: {key, value, row, arrived}
    shown: null,      // the sample on screen
    dirty: true,      // repaint without a new sample (resize, first paint)
    items: [],        // paint reports not sent yet
    lastReport: -Infinity,
    score: 0,         // seconds of stream time in the target zone
    lastIndex: -1,    // the last sample counted in the score (absolute index)
    lastT: null,      // irregular streams: time of the last sample, and whether it was in the zone
    lastIn: false,
    gesture: false,   // the participant clicked or pressed a key (Web Audio may start)
    warned: false,
  };

  // ---- configuration -------------------------------------------------------------------------

  function withDefaults(p) {
    const num = (v, d) => (typeof v === "number" && isFinite(v) ? v : d);
    const spec = {
      stream: p.stream,
      channel: num(p.channel, 0),
      display: p.display || "bar",
      min: num(p.min, 0),
      max: num(p.max, 1),
      target: Array.isArray(p.target) && p.target.length === 2 ? [Number(p.target[0]), Number(p.target[1])] : null,
      title: p.title || "",
      tone: Object.assign({ follows: "none", f_min_hz: 220, f_max_hz: 880 }, p.tone || {}),
      cursor: Object.assign({ workspace: 0.2, target_radius: 0.015 }, p.cursor || {}),
    };
    if (spec.target && spec.target[0] > spec.target[1]) spec.target.reverse();
    if (!DRAW[spec.display]) {
      showMessage(`unknown display '${spec.display}': bar shown`);
      spec.display = "bar";
    }
    return spec;
  }

  const norm = (v) => {
    const { min, max } = st.spec;
    if (!(max !== min)) return 0;
    return Math.min(1, Math.max(0, (v - min) / (max - min)));
  };
  const inTarget = (v) => !!st.spec.target && v >= st.spec.target[0] && v <= st.spec.target[1];

  // ---- data ----------------------------------------------------------------------------------

  function onHello(msg) {
    const p = msg.ui && msg.ui.participant;
    if (!p) {
      st.spec = null;
      out.display = null;
      canvas.hidden = true;
      $("title").hidden = true;
      $("hint").hidden = true;
      $("no-participant").hidden = false;
      ds.close();
      return;
    }
    st.spec = withDefaults(p);
    const meta = msg.graph && msg.graph.streams && msg.graph.streams[st.spec.stream];
    st.sfreq = meta && meta.sfreq > 0 ? meta.sfreq : 0;
    out.display = st.spec.display;
    $("title").textContent = st.spec.title;
    $("hint").textContent = st.spec.tone.follows === "none" ? "F for full screen"
      : "click to start sound / F for full screen";
    hideMessage();
    st.dirty = true;
    ds.setViews([{ id: VIEW_ID, kind: "feedback", stream: st.spec.stream }]);
    if (st.gesture) startSound();
  }

  function onFrame(h, arrays) {
    if (h.type !== "feedback" || h.view !== VIEW_ID || !st.spec) return;
    const vals = arrays.values;
    const desc = (h.arrays || []).find((a) => a[0] === "values");
    if (!vals || !desc) return;
    const [n, nch] = desc[2].length === 2 ? desc[2] : [vals.length, 1];
    if (!n) return;
    const sp = st.spec;
    const cols = sp.display === "cursor"
      ? [sp.cursor.x_index, sp.cursor.y_index, sp.cursor.target_x_index, sp.cursor.target_y_index]
      : [sp.channel];
    if (cols.slice(0, 2).some((c) => !(c >= 0 && c < nch))) {
      if (!st.warned) showMessage(`the stream '${sp.stream}' has no column ${cols.join("/")} (${nch} columns)`);
      st.warned = true;
      return;
    }
    const ch = sp.channel < nch ? sp.channel : 0;
    accumulateScore(h, vals, n, nch, ch);
    // the newest sample that can be shown; older ones of the chunk (and older chunks not painted) are never shown
    for (let i = n - 1; i >= 0; i--) {
      const row = cols.map((c) => (c >= 0 && c < nch ? vals[i * nch + c] : NaN));
      if (!isFinite(row[0]) || (sp.display === "cursor" && !isFinite(row[1]))) continue;
      st.pending = { key: h.key, value: sp.display === "cursor" ? row : row[0], row, arrived: performance.now() };
      return;
    }
  }

  // seconds in the target zone, in stream time: a regular stream's sample lasts 1/sfreq (each absolute
  // index counted once); an irregular stream's sample lasts until the next one
  function accumulateScore(h, vals, n, nch, ch) {
    if (st.sfreq > 0 && typeof h.index === "number") {
      for (let i = 0; i < n; i++) {
        const idx = h.index + i;
        if (idx <= st.lastIndex) continue;
        st.lastIndex = idx;
        if (inTarget(vals[i * nch + ch])) st.score += 1 / st.sfreq;
      }
    } else if (typeof h.t_first === "number") {
      if (st.lastT !== null && st.lastIn && h.t_first > st.lastT) st.score += h.t_first - st.lastT;
      if (st.lastT === null || h.t_first > st.lastT) {
        st.lastT = h.t_first;
        st.lastIn = inTarget(vals[(n - 1) * nch + ch]);
      }
    }
  }

  // ---- painting ------------------------------------------------------------------------------

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(window.innerWidth * dpr));
    const h = Math.max(1, Math.round(window.innerHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
      st.dirty = true;
    }
  }

  function ramp(x) {   // blue (0) -> red (1)
    const a = [30, 80, 255], b = [255, 45, 25];
    const c = a.map((v, i) => Math.round(v + (b[i] - v) * x));
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  }

  // a vertical gauge: bottom y0, top y1 -> y of value v
  const levelY = (v, y0, y1) => y0 - norm(v) * (y0 - y1);

  function drawBar(W, H, v) {
    const bw = Math.min(W * 0.14, H * 0.22), x = (W - bw) / 2;
    const y0 = H * 0.86, y1 = H * 0.16;
    const sp = st.spec;
    if (sp.target) {
      const ta = levelY(sp.target[1], y0, y1), tb = levelY(sp.target[0], y0, y1);
      g.fillStyle = TARGET_BAND;
      g.fillRect(x - bw * 0.35, ta, bw * 1.7, tb - ta);
    }
    if (v !== null) {
      const y = levelY(v, y0, y1);
      g.fillStyle = inTarget(v) ? GREEN : NEUTRAL;
      g.fillRect(x, y, bw, y0 - y);
    }
    if (sp.target) targetEdges(x - bw * 0.35, x + bw * 1.35, y0, y1);
    g.strokeStyle = OUTLINE;
    g.lineWidth = Math.max(2, H * 0.004);
    g.strokeRect(x, y1, bw, y0 - y1);
  }

  function targetEdges(xa, xb, y0, y1) {
    g.strokeStyle = TARGET_EDGE;
    g.lineWidth = Math.max(2, (y0 - y1) * 0.004);
    g.beginPath();
    for (const t of st.spec.target) {
      const y = levelY(t, y0, y1);
      g.moveTo(xa, y);
      g.lineTo(xb, y);
    }
    g.stroke();
  }

  function drawThermometer(W, H, v) {
    const s = Math.min(W, H);
    const tw = s * 0.07, cx = W / 2, r = tw * 1.05;
    const y1 = H * 0.16, y0 = H * 0.78;            // the scale: min at y0, max at y1
    const bulbY = y0 + r * 0.9;
    const sp = st.spec;
    if (sp.target) {
      const ta = levelY(sp.target[1], y0, y1), tb = levelY(sp.target[0], y0, y1);
      g.fillStyle = TARGET_BAND;
      g.fillRect(cx - tw * 2, ta, tw * 4, tb - ta);
    }
    const colour = v === null ? "#222" : ramp(norm(v));
    g.fillStyle = colour;
    g.beginPath();
    g.arc(cx, bulbY, r - 3, 0, 2 * Math.PI);
    g.fill();
    if (v !== null) {
      const y = levelY(v, y0, y1);
      g.fillRect(cx - tw / 2 + 3, y, tw - 6, bulbY - y);
    }
    if (sp.target) targetEdges(cx - tw * 2, cx + tw * 2, y0, y1);
    // the glass: a tube with a round top on a bulb
    g.strokeStyle = "#bbb";
    g.lineWidth = Math.max(2, s * 0.005);
    const a = Math.asin((tw / 2) / r);
    g.beginPath();
    g.moveTo(cx - tw / 2, bulbY - r * Math.cos(a));
    g.lineTo(cx - tw / 2, y1 - tw * 0.2);
    g.arc(cx, y1 - tw * 0.2, tw / 2, Math.PI, 0);
    g.lineTo(cx + tw / 2, bulbY - r * Math.cos(a));
    g.arc(cx, bulbY, r, -Math.PI / 2 + a, 1.5 * Math.PI - a);
    g.stroke();
    // ticks at min, max and every quarter
    g.lineWidth = Math.max(1, s * 0.002);
    g.beginPath();
    for (let k = 0; k <= 4; k++) {
      const y = y0 - (k / 4) * (y0 - y1);
      g.moveTo(cx + tw / 2 + s * 0.01, y);
      g.lineTo(cx + tw / 2 + s * (k % 2 ? 0.02 : 0.035), y);
    }
    g.stroke();
  }

  function drawSize(W, H, v) {
    const s = Math.min(W, H), cx = W / 2, cy = H * 0.54;
    const rMin = s * 0.02, rMax = s * 0.38;
    const rad = (x) => rMin + norm(x) * (rMax - rMin);
    const sp = st.spec;
    if (sp.target) {
      g.fillStyle = TARGET_BAND;
      g.beginPath();
      g.arc(cx, cy, rad(sp.target[1]), 0, 2 * Math.PI);
      g.arc(cx, cy, rad(sp.target[0]), 0, 2 * Math.PI, true);
      g.fill();
    }
    if (v !== null) {
      g.fillStyle = inTarget(v) ? GREEN : NEUTRAL;
      g.beginPath();
      g.arc(cx, cy, rad(v), 0, 2 * Math.PI);
      g.fill();
    }
    g.lineWidth = Math.max(2, s * 0.003);
    if (sp.target) {
      g.strokeStyle = TARGET_EDGE;
      for (const t of sp.target) {
        g.beginPath();
        g.arc(cx, cy, rad(t), 0, 2 * Math.PI);
        g.stroke();
      }
    }
    g.strokeStyle = "#444";
    g.beginPath();
    g.arc(cx, cy, rMax, 0, 2 * Math.PI);
    g.stroke();
  }

  function drawColour(W, H, v) {
    g.fillStyle = v === null ? "#000" : ramp(norm(v));
    g.fillRect(0, 0, W, H);
  }

  function drawScore(W, H, v) {
    const s = Math.min(W, H);
    g.fillStyle = v !== null && inTarget(v) ? GREEN : "#eee";
    g.textAlign = "center";
    g.textBaseline = "alphabetic";
    g.font = `600 ${Math.round(s * 0.22)}px system-ui, sans-serif`;
    g.fillText(st.score.toFixed(1), W / 2, H * 0.56);
    g.fillStyle = "#888";
    g.font = `${Math.round(s * 0.035)}px system-ui, sans-serif`;
    g.fillText("seconds in the target zone", W / 2, H * 0.64);
    // a small horizontal bar: min left, max right
    const bw = W * 0.36, bh = s * 0.035, x = (W - bw) / 2, y = H * 0.74;
    const sp = st.spec;
    if (sp.target) {
      g.fillStyle = TARGET_BAND;
      const xa = x + norm(sp.target[0]) * bw, xb = x + norm(sp.target[1]) * bw;
      g.fillRect(xa, y - bh * 0.4, xb - xa, bh * 1.8);
    }
    if (v !== null) {
      g.fillStyle = inTarget(v) ? GREEN : NEUTRAL;
      g.fillRect(x, y, norm(v) * bw, bh);
    }
    g.strokeStyle = OUTLINE;
    g.lineWidth = Math.max(1, s * 0.002);
    g.strokeRect(x, y, bw, bh);
  }

  // the BMI task: the workspace (+-workspace on each axis, y up), the target circle, the cursor dot
  function drawCursor(W, H, row) {
    const c = st.spec.cursor, ws = c.workspace > 0 ? c.workspace : 0.2;
    const side = Math.min(W, H) * 0.8, cx = W / 2, cy = H * 0.53;
    const k = side / (2 * ws);
    const clamp = (u) => Math.max(-ws, Math.min(ws, u));
    g.strokeStyle = "#555";
    g.lineWidth = Math.max(2, side * 0.003);
    g.strokeRect(cx - side / 2, cy - side / 2, side, side);
    if (!row) return;
    const [x, y, tx, ty] = row;
    const hasTarget = isFinite(tx) && isFinite(ty);
    const hit = hasTarget && Math.hypot(x - tx, y - ty) <= c.target_radius;
    if (hasTarget) {
      g.fillStyle = hit ? GREEN : "rgba(46, 204, 64, 0.35)";
      g.strokeStyle = GREEN;
      g.beginPath();
      g.arc(cx + clamp(tx) * k, cy - clamp(ty) * k, Math.max(2, c.target_radius * k), 0, 2 * Math.PI);
      g.fill();
      g.stroke();
    }
    g.fillStyle = "#fff";
    g.beginPath();
    g.arc(cx + clamp(x) * k, cy - clamp(y) * k, Math.max(4, side * 0.012), 0, 2 * Math.PI);
    g.fill();
  }

  const DRAW = { bar: drawBar, thermometer: drawThermometer, size: drawSize, colour: drawColour,
    score: drawScore, cursor: drawCursor };

  function paint() {
    const W = canvas.width, H = canvas.height;
    g.fillStyle = "#000";
    g.fillRect(0, 0, W, H);
    if (!st.spec) return;
    const s = st.shown;
    DRAW[st.spec.display](W, H, s ? (st.spec.display === "cursor" ? s.row : s.value) : null);
  }

  function onAnimationFrame(ts) {
    requestAnimationFrame(onAnimationFrame);
    resize();
    const fresh = st.pending;
    if (fresh && st.spec) {
      st.shown = fresh;
      st.pending = null;
    }
    if ((fresh && st.spec) || st.dirty) {
      paint();
      st.dirty = false;
    }
    if (fresh && st.spec) {
      out.value = fresh.value;
      out.key = fresh.key;
      out.score = st.score;
      out.painted += 1;
      updateSound(fresh);
      // The frame's time (the callback's argument), but never before the sample arrived: when the main
      // thread is late (a loaded machine) the callbacks run well after their frame began, and a sample
      // that arrived in between is painted in a frame whose time is older than its arrival.
      // Not reported before the clock offset is known, nor on the first answers' offset alone (one answer
      // delayed by a busy server shifts it by half its round trip: a paint "before the decision").
      const t = ds && ds.exchanges.length >= MIN_EXCHANGES ? ds.toLSL(Math.max(ts, fresh.arrived)) : null;
      if (t !== null) {
        st.items.push([fresh.key, t]);
        if (st.items.length > 4 * MAX_ITEMS) st.items.splice(0, st.items.length - 4 * MAX_ITEMS);
      }
    }
    if (st.items.length && ts - st.lastReport >= REPORT_EVERY_MS && ds) {
      st.lastReport = ts;
      while (st.items.length) ds.send({ type: "paint", items: st.items.splice(0, MAX_ITEMS) });
    }
  }

  // ---- sound (Web Audio, after a click or key: browsers refuse to start it otherwise) ---------

  const audio = { ctx: null, osc: null, gain: null };

  function startSound() {
    if (audio.ctx || !st.spec || st.spec.tone.follows === "none") return;
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    audio.ctx = new AC();
    audio.osc = audio.ctx.createOscillator();
    audio.gain = audio.ctx.createGain();
    audio.osc.type = "sine";
    audio.gain.gain.value = 0;
    audio.osc.connect(audio.gain).connect(audio.ctx.destination);
    audio.osc.start();
    audio.ctx.resume().catch(() => {});
    out.sound.running = true;
    if (st.shown) updateSound(st.shown);
  }

  // 0..1: the normalised value; on the cursor task, how close the cursor is to the target
  function soundLevel(sample) {
    if (st.spec.display !== "cursor") return norm(sample.value);
    const [x, y, tx, ty] = sample.row;
    if (!isFinite(tx) || !isFinite(ty)) return 0;
    const ws = st.spec.cursor.workspace > 0 ? st.spec.cursor.workspace : 0.2;
    return 1 - Math.min(1, Math.hypot(x - tx, y - ty) / ws);
  }

  function updateSound(sample) {
    if (!audio.ctx) return;
    const tone = st.spec.tone;
    const fmin = Math.max(20, Number(tone.f_min_hz) || 220);
    const fmax = Math.max(fmin, Number(tone.f_max_hz) || 880);
    const x = soundLevel(sample);
    let f, gain;
    if (tone.follows === "pitch") {           // equal steps in pitch: exponential in frequency
      f = fmin * Math.pow(fmax / fmin, x);
      gain = 0.2;
    } else {                                   // volume: a fixed tone between the two frequencies
      f = Math.sqrt(fmin * fmax);
      gain = 0.3 * x;
    }
    const now = audio.ctx.currentTime;
    audio.osc.frequency.setTargetAtTime(f, now, 0.015);
    audio.gain.gain.setTargetAtTime(gain, now, 0.015);
    out.sound.frequency = f;
    out.sound.gain = gain;
  }

  // ---- the page ------------------------------------------------------------------------------

  function showMessage(text) {
    const m = $("message");
    m.textContent = text;
    m.hidden = false;
  }
  function hideMessage() { $("message").hidden = true; }

  function hideHint() { $("hint").classList.add("gone"); }

  function onGesture() {
    st.gesture = true;
    hideHint();
    startSound();
  }

  window.addEventListener("pointerdown", onGesture);
  window.addEventListener("keydown", (ev) => {
    if (ev.key === "f" || ev.key === "F") {
      if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
      else if (document.documentElement.requestFullscreen) document.documentElement.requestFullscreen().catch(() => {});
    }
    onGesture();
  });
  setTimeout(hideHint, HINT_MS);

  let ds = null;
  if (!RT.token()) {
    showMessage("no token: open the address the run printed (…/participant#token=…)");
  } else {
    ds = new RT.DataSocket({
      hello: onHello,
      frame: onFrame,
      message: (msg) => {
        if (msg.type === "error") {
          console.warn("participant display:", msg.error);
          showMessage(`display: ${msg.error}`);
        } else if (msg.type === "end") {
          showMessage("the session has ended");
        }
      },
      close: (ev) => {
        if (!st.spec && $("no-participant").hidden === false) return;
        if (ev.code === 1008) showMessage("the token was refused: open the address the run printed");
        else if (ev.code === 1000) showMessage("the session has ended");
        else showMessage("connection lost, reconnecting…");
      },
    });
  }
  requestAnimationFrame(onAnimationFrame);
})();
