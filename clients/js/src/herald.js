// Herald's JavaScript client, for browsers and Node. src/herald.js (an ES module) is the
// one source; herald.js, the script-tag build push nodes serve at /herald.js (a global
// `Herald`), is generated from it by build.js, and the tests fail when the two differ.
//
//   const herald = new Herald("ws://localhost:8004/ws", { token: async () => fetchToken() });
//   herald.on("message", (m) => console.log(m.channel, m.offset, m.data));
//   await herald.connect();
//   const reply = await herald.publish("group:room-1", "chat", { text: "hi" });
//   await herald.close();
//
// It reconnects with exponential backoff and jitter, resumes every channel after the
// highest offset it handed to the app (so nothing is lost and nothing comes twice), acks
// what the app handled, pings the server so a dead connection is noticed, renews its token
// in band before it expires, and closes cleanly so that its acks hold.

const OPEN = 1;
const CLOSE_TOKEN_EXPIRED = 4001;
const CLOSE_REVOKED = 4003;
// Refresh errors the server answers with the connection unchanged: worth another try.
const REFRESH_ERRORS = new Set(["invalid_token", "token_mismatch", "auth_unavailable"]);
// A retried refresh must reach the server a little before exp, or it lands after the 4001.
const REFRESH_MARGIN_MS = 500;
const REFRESH_RETRY_MAX_MS = 8000;
const REFRESH_ANSWER_MS = 5000;

export class Herald {
  #handlers = {};
  #pending = new Map(); // publish seq -> {resolve, reject, timer}
  #timers = new Set(); // every timer this client set, cleared when it closes
  #nextSeq = 1;
  #attempt = 0;
  #ws = null;
  #pinger = null;
  #closedByUser = false;
  #refreshing = null; // the socket a refresh is under way on
  #refreshAnswer = null; // resolves with true (refreshed) or false (refused)
  #WebSocket;

  constructor(url, options = {}) {
    this.url = url;
    this.token = options.token; // a string, or a function (plain or async) returning a fresh one
    this.positions = Object.assign({}, options.positions || {}); // channel -> last offset handled
    this.autoAck = options.autoAck !== false;
    this.minDelayMs = options.minDelayMs || 500;
    this.maxDelayMs = options.maxDelayMs || 15000;
    this.closeTimeoutMs = options.closeTimeoutMs || 2000;
    this.connId = null;
    this.connects = 0; // connections opened (welcomed)
    this.refreshes = 0; // tokens renewed in band
    this.expiresAt = null; // the token's exp (epoch seconds) as the last `refreshed` said
    this.#WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket here: pass options.WebSocket (in Node 20, the ws package's WebSocket)");
    }
  }

  on(event, handler) {
    (this.#handlers[event] = this.#handlers[event] || []).push(handler);
    return this;
  }

  off(event, handler) {
    this.#handlers[event] = (this.#handlers[event] || []).filter((h) => h !== handler);
    return this;
  }

  once(event, handler) {
    const wrapped = (value) => { this.off(event, wrapped); handler(value); };
    return this.on(event, wrapped);
  }

  // Resolves with the welcome frame once connected, and keeps reconnecting after that.
  // Rejects if the server ends the session for good first (4003, or 4001 with a fixed token).
  connect() {
    this.#closedByUser = false;
    return new Promise((resolve, reject) => {
      const connected = (welcome) => { this.off("ended", ended); resolve(welcome); };
      const ended = (error) => { this.off("connected", connected); reject(error); };
      this.once("connected", connected);
      this.once("ended", ended);
      this.#open();
    });
  }

  ack(channel, offset) { this.#send({ type: "ack", channel, offset }); }

  // Publish on a channel the token allows; resolves with the reply {seq, id, channel, offset},
  // rejects with an Error whose `code` is the server's (forbidden_channel, not_a_member, ...).
  publish(channel, event, data, timeoutMs = 10000) {
    const seq = String(this.#nextSeq++);
    return new Promise((resolve, reject) => {
      if (!this.#ws || this.#ws.readyState !== OPEN) { reject(codedError("not_connected", "not connected")); return; }
      const timer = setTimeout(() => { this.#pending.delete(seq); reject(codedError("no_reply", "no reply")); }, timeoutMs);
      this.#pending.set(seq, { resolve, reject, timer });
      this.#send({ type: "publish", seq, channel, event, data });
    });
  }

  // Close cleanly: a close frame, then a wait (closeTimeoutMs at most) for the server's answer,
  // which comes once the server has stored this connection's acks. Resolves when closed.
  close() {
    this.#closedByUser = true;
    this.#clearTimers();
    const ws = this.#ws;
    if (!ws || ws.readyState > OPEN) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.closeTimeoutMs);
      const self = this;
      function done() { clearTimeout(timer); self.off("disconnected", done); resolve(); }
      this.on("disconnected", done);
      ws.close(1000, "bye");
    });
  }

  #emit(event, value) {
    for (const h of this.#handlers[event] || []) {
      try { h(value); } catch (e) { console.error(e); }
    }
  }

  #later(ms, fn) {
    const timer = setTimeout(() => { this.#timers.delete(timer); fn(); }, ms);
    this.#timers.add(timer);
    return timer;
  }

  #clearTimers() {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    clearInterval(this.#pinger);
  }

  async #freshToken() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }

  async #open() {
    let token;
    try { token = await this.#freshToken(); }
    catch (e) { this.#emit("error", { code: "token_unavailable", message: String(e) }); return this.#retry(); }
    if (this.#closedByUser) return;
    const ws = new this.#WebSocket(this.url, ["herald", token]);
    this.#ws = ws;
    ws.onopen = () => {
      // Resume first thing: the backlog after our positions comes before anything live.
      ws.send(JSON.stringify({ type: "resume", positions: this.positions }));
    };
    ws.onmessage = (event) => { if (this.#ws === ws) this.#receive(ws, JSON.parse(event.data)); };
    ws.onclose = (event) => this.#closed(ws, event);
    // A failed connection is followed by its close event, which decides what comes next.
    // Without a handler the ws package (Node) would throw the error out of the event loop.
    ws.onerror = () => {};
  }

  #closed(ws, event) {
    if (this.#ws !== ws) return;
    this.#ws = null;
    this.#refreshing = null;
    if (this.#refreshAnswer) this.#refreshAnswer(false);
    clearInterval(this.#pinger);
    for (const [, p] of this.#pending) { clearTimeout(p.timer); p.reject(codedError("disconnected", "disconnected")); }
    this.#pending.clear();
    this.#emit("disconnected", { code: event.code, reason: event.reason });
    if (this.#closedByUser) return;
    if (event.code === CLOSE_REVOKED) return this.#end("revoked", event.reason || "kicked or revoked");
    if (event.code === CLOSE_TOKEN_EXPIRED) {
      if (typeof this.token !== "function") return this.#end("token_expired", "the token expired and cannot be renewed");
      this.#attempt = 0; // the connection was fine: come straight back with a fresh token
      return this.#open();
    }
    this.#retry();
  }

  #end(code, message) {
    this.#clearTimers();
    const error = codedError(code, message);
    this.#emit("error", { code, message });
    this.#emit("ended", error);
  }

  #retry() {
    const ceiling = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.#attempt++);
    this.#later(ceiling / 2 + Math.random() * ceiling / 2, () => { if (!this.#closedByUser) this.#open(); });
  }

  #receive(ws, frame) {
    switch (frame.type) {
      case "welcome":
        this.#attempt = 0;
        this.connId = frame.conn_id;
        this.connects++;
        clearInterval(this.#pinger);
        this.#pinger = setInterval(() => this.#send({ type: "ping" }), (frame.heartbeat_s || 10) * 1000);
        this.#emit("connected", frame);
        break;
      case "message": {
        const last = this.positions[frame.channel] || 0;
        if (frame.offset <= last) return; // a duplicate after a reconnect
        this.positions[frame.channel] = frame.offset;
        this.#emit("message", frame);
        if (this.autoAck) this.ack(frame.channel, frame.offset);
        break;
      }
      case "reply": {
        const p = this.#pending.get(String(frame.seq));
        if (!p) return;
        this.#pending.delete(String(frame.seq));
        clearTimeout(p.timer);
        if (frame.error) p.reject(codedError(frame.error.code, frame.error.message));
        else p.resolve(frame);
        break;
      }
      case "expiring":
        this.#emit("expiring", frame);
        if (typeof this.token === "function" && this.#refreshing !== ws) this.#refresh(ws, frame.in_s);
        break;
      case "refreshed":
        this.refreshes++;
        this.expiresAt = frame.exp;
        if (this.#refreshAnswer) this.#refreshAnswer(true);
        this.#emit("refreshed", frame);
        break;
      case "error":
        if (REFRESH_ERRORS.has(frame.code) && this.#refreshAnswer) this.#refreshAnswer(false);
        this.#emit("error", frame);
        break;
    }
  }

  // Send `refresh` with a fresh token on this very socket; on a refusal, try again while a
  // retry can still land before exp. If none does, the server closes with 4001 and we reconnect.
  async #refresh(ws, inS) {
    this.#refreshing = ws;
    const deadline = Date.now() + Number(inS || 0) * 1000;
    for (let attempt = 0; ; attempt++) {
      let accepted = false;
      try {
        const token = await this.#freshToken();
        if (this.#ws !== ws) return;
        accepted = await new Promise((resolve) => {
          const timer = this.#later(REFRESH_ANSWER_MS, () => resolve(false));
          this.#refreshAnswer = (value) => { clearTimeout(timer); this.#timers.delete(timer); resolve(value); };
          ws.send(JSON.stringify({ type: "refresh", token }));
        });
      } catch (e) {
        this.#emit("error", { code: "token_unavailable", message: String(e) });
      } finally {
        this.#refreshAnswer = null;
      }
      if (accepted || this.#ws !== ws) break;
      const delay = refreshRetryDelayMs(attempt, deadline - Date.now());
      if (delay === null) break;
      await new Promise((resolve) => this.#later(delay, resolve));
      if (this.#ws !== ws) break;
    }
    if (this.#refreshing === ws) this.#refreshing = null;
  }

  #send(frame) {
    if (this.#ws && this.#ws.readyState === OPEN) this.#ws.send(JSON.stringify(frame));
  }
}

// How long to wait before retrying a refused refresh, or null when no retry can land before exp.
function refreshRetryDelayMs(attempt, remainingMs) {
  const delay = Math.min(REFRESH_RETRY_MAX_MS, 500 * 2 ** attempt, remainingMs / 2);
  return remainingMs - delay > REFRESH_MARGIN_MS ? delay : null;
}

function codedError(code, message) {
  const error = new Error(message);
  error.code = code;
  return error;
}

export default Herald;
