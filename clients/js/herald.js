// Herald's browser client: one file, no build step. Also served by every push node at /herald.js.
//
//   const herald = new Herald("ws://localhost:8004/ws", { token: "ht_..." });
//   herald.on("message", (m) => console.log(m.channel, m.offset, m.data));
//   await herald.connect();
//   const reply = await herald.publish("group:room-1", "chat", { text: "hi" });
//
// It reconnects with exponential backoff and jitter, resumes every channel after the
// highest offset it handed to the app (so nothing is lost and nothing comes twice), acks
// what the app handled, and pings the server so a dead connection is noticed.
(function (root) {
  "use strict";

  class Herald {
    constructor(url, options = {}) {
      this.url = url;
      this.token = options.token;            // a string, or an async function returning one
      this.positions = Object.assign({}, options.positions || {}); // channel -> last offset handled
      this.autoAck = options.autoAck !== false;
      this.minDelayMs = options.minDelayMs || 500;
      this.maxDelayMs = options.maxDelayMs || 15000;
      this.handlers = {};
      this.pending = new Map();               // seq -> {resolve, reject, timer}
      this.nextSeq = 1;
      this.attempt = 0;
      this.ws = null;
      this.closedByUser = false;
      this.connId = null;
    }

    on(event, handler) { (this.handlers[event] = this.handlers[event] || []).push(handler); return this; }
    off(event, handler) { this.handlers[event] = (this.handlers[event] || []).filter((h) => h !== handler); return this; }
    emit(event, value) { for (const h of this.handlers[event] || []) { try { h(value); } catch (e) { console.error(e); } } }

    // Resolves with the welcome frame once connected; keeps reconnecting after that.
    connect() {
      this.closedByUser = false;
      return new Promise((resolve) => { this.once("connected", resolve); this.open(); });
    }

    once(event, handler) {
      const wrapped = (value) => { this.off(event, wrapped); handler(value); };
      return this.on(event, wrapped);
    }

    async open() {
      let token;
      try { token = typeof this.token === "function" ? await this.token() : this.token; }
      catch (e) { this.emit("error", { code: "token", message: String(e) }); return this.retry(); }
      const ws = new WebSocket(this.url, ["herald", token]);
      this.ws = ws;
      ws.onopen = () => {
        // Resume first thing: the backlog after our positions comes before anything live.
        ws.send(JSON.stringify({ type: "resume", positions: this.positions }));
      };
      ws.onmessage = (event) => this.receive(JSON.parse(event.data));
      ws.onclose = (event) => {
        clearInterval(this.pinger);
        if (this.ws === ws) this.ws = null;
        for (const [, p] of this.pending) { clearTimeout(p.timer); p.reject(new Error("disconnected")); }
        this.pending.clear();
        this.emit("disconnected", { code: event.code, reason: event.reason });
        if (event.code === 4003) { this.emit("error", { code: "revoked", message: event.reason || "kicked" }); return; }
        if (!this.closedByUser) this.retry();
      };
    }

    retry() {
      const ceiling = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.attempt++);
      setTimeout(() => { if (!this.closedByUser) this.open(); }, ceiling / 2 + Math.random() * ceiling / 2);
    }

    receive(frame) {
      switch (frame.type) {
        case "welcome":
          this.attempt = 0;
          this.connId = frame.conn_id;
          this.pinger = setInterval(() => this.send({ type: "ping" }), (frame.heartbeat_s || 10) * 1000);
          this.emit("connected", frame);
          break;
        case "message": {
          const last = this.positions[frame.channel] || 0;
          if (frame.offset <= last) return;   // a duplicate after a reconnect
          this.positions[frame.channel] = frame.offset;
          this.emit("message", frame);
          if (this.autoAck) this.ack(frame.channel, frame.offset);
          break;
        }
        case "reply": {
          const p = this.pending.get(String(frame.seq));
          if (!p) return;
          this.pending.delete(String(frame.seq));
          clearTimeout(p.timer);
          if (frame.error) { const e = new Error(frame.error.message); e.code = frame.error.code; p.reject(e); }
          else p.resolve(frame);
          break;
        }
        case "error":
          this.emit("error", frame);
          break;
      }
    }

    send(frame) { if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame)); }
    ack(channel, offset) { this.send({ type: "ack", channel, offset }); }

    // Publish on a channel the token allows; resolves with {id, channel, offset}.
    publish(channel, event, data, timeoutMs = 10000) {
      const seq = String(this.nextSeq++);
      return new Promise((resolve, reject) => {
        if (!this.ws || this.ws.readyState !== 1) { reject(new Error("not connected")); return; }
        const timer = setTimeout(() => { this.pending.delete(seq); reject(new Error("no reply")); }, timeoutMs);
        this.pending.set(seq, { resolve, reject, timer });
        this.send({ type: "publish", seq, channel, event, data });
      });
    }

    close() { this.closedByUser = true; if (this.ws) this.ws.close(1000, "bye"); }
  }

  if (typeof module !== "undefined" && module.exports) module.exports = Herald;
  else root.Herald = Herald;
})(typeof self !== "undefined" ? self : this);
