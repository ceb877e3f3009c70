// rtneuro pages: what the dashboard and the participant display share.
// The token, REST calls, the data WebSocket (binary frames, flow control,
// clock exchange). Protocol: docs/ui.md. No library, no build step.
"use strict";

const RT = (() => {
  const TOKEN_KEY = "rtneuro.token";

  // The token comes in the address's fragment (#token=...), which no request carries;
  // it is kept for this tab in sessionStorage and removed from the address bar.
  function token() {
    const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token() };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let data = null;
    try { data = await r.json(); } catch (e) { data = { error: r.statusText }; }
    if (!r.ok) {
      const err = new Error((data && data.error) || r.statusText);
      err.status = r.status;
      throw err;
    }
    return data;
  }

  function wsURL(path) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${path}?token=${encodeURIComponent(token() || "")}`;
  }

  const DTYPES = { f4: Float32Array, f8: Float64Array, i4: Int32Array };

  // One binary message -> [{header, arrays: {name: TypedArray}}, ...]: the frames of one server tick, end to end
  // (docs/ui.md: each frame is u32 H | JSON | pad | arrays, padded to a multiple of 8 bytes).
  function decodeFrames(buf) {
    const dv = new DataView(buf), out = [], td = new TextDecoder();
    let off = 0;
    while (off + 4 <= buf.byteLength) {
      const h = dv.getUint32(off, true);
      const header = JSON.parse(td.decode(new Uint8Array(buf, off + 4, h)));
      off = (off + 4 + h + 7) & ~7;
      const arrays = {};
      for (const [name, dtype, shape] of header.arrays || []) {
        const T = DTYPES[dtype];
        const n = shape.reduce((a, b) => a * b, 1);
        arrays[name] = new T(buf, off, n);
        off = (off + n * T.BYTES_PER_ELEMENT + 7) & ~7;
      }
      out.push({ header, arrays });
    }
    return out;
  }

  // The data WebSocket: hello, views, binary frames acknowledged as they are handled, clock exchange.
  // handlers: {hello(msg), frame(header, arrays), message(msg), close(ev)}
  class DataSocket {
    constructor(handlers) {
      this.handlers = handlers;
      this.views = [];
      this.offset = null;       // LSL clock - performance clock (seconds), from the best recent exchange
      this.exchanges = [];      // [rtt, offset] of the last 16 exchanges
      this.closed = false;
      this.connect();
    }

    connect() {
      const ws = new WebSocket(wsURL("/api/ui/ws"));
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      this.acked = 0; this.toAck = 0;  // message counters start again on each connection
      ws.onopen = () => {
        if (this.views.length) this.send({ type: "views", views: this.views });
        for (let i = 0; i < 8; i++) setTimeout(() => this.clock(), 50 * i);
        this.clockTimer = setInterval(() => this.clock(), 2000);
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data === "string") {
          const msg = JSON.parse(ev.data);
          if (msg.type === "clock") this.onClock(msg);
          else if (msg.type === "hello") { this.window = msg.window || 16; if (this.handlers.hello) this.handlers.hello(msg); }
          else if (this.handlers.message) this.handlers.message(msg);
          return;
        }
        const frames = decodeFrames(ev.data);
        try {
          for (const { header, arrays } of frames) if (this.handlers.frame) this.handlers.frame(header, arrays);
        } finally {
          if (frames.length) this.ack(frames[0].header.seq);
        }
      };
      ws.onclose = (ev) => {
        clearInterval(this.clockTimer);
        if (this.handlers.close) this.handlers.close(ev);
        // the run ended (1000) or the token is refused: no retry; otherwise try again
        if (!this.closed && ev.code !== 1000 && ev.code !== 1008) setTimeout(() => this.connect(), 1000);
      };
    }

    // Acknowledge every half window, or 200 ms after a message, or with the next message the page sends
    // anyway (a paint report): a healthy page never fills the server's window (16 messages), and each
    // message the server reads costs it more than the few bytes it holds.
    ack(seq) {
      this.toAck = Math.max(this.toAck, seq);
      if (this.toAck - this.acked >= Math.max(1, (this.window || 16) >> 1)) this.flushAck();
      else if (!this.ackTimer) this.ackTimer = setTimeout(() => this.flushAck(), 200);
    }

    flushAck() {
      if (this.toAck > this.acked) this.send({ type: "ack", seq: this.toAck });
    }

    send(obj) {
      if (!(this.ws && this.ws.readyState === WebSocket.OPEN)) return;
      if (this.toAck > this.acked) {
        if (obj.type !== "ack") obj = { ...obj, ack: this.toAck };
        this.acked = this.toAck;
        clearTimeout(this.ackTimer);
        this.ackTimer = 0;
      }
      this.ws.send(JSON.stringify(obj));
    }

    setViews(views) {
      this.views = views;
      this.send({ type: "views", views });
    }

    clock() { this.send({ type: "clock", c: performance.now() }); }

    onClock(msg) {
      const c1 = performance.now();
      const rtt = c1 - msg.c;
      this.exchanges.push([rtt, msg.s - (msg.c + c1) / 2000]);
      if (this.exchanges.length > 16) this.exchanges.shift();
      let best = this.exchanges[0];
      for (const e of this.exchanges) if (e[0] < best[0]) best = e;
      this.offset = best[1];
    }

    // performance-clock milliseconds (a requestAnimationFrame timestamp) -> LSL seconds, or null before any exchange
    toLSL(ms) { return this.offset === null ? null : ms / 1000 + this.offset; }

    close() { this.closed = true; if (this.ws) this.ws.close(1000); }
  }

  return { token, api, wsURL, decodeFrames, DataSocket };
})();
