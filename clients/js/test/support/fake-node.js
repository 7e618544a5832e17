// A stand-in push node for the client's unit tests: it accepts any handshake, records how the
// client authenticated, and lets the test play the server's side frame by frame (expiring,
// refreshed, error frames, 4001 and 4003 closes).
import { once } from "node:events";
import { WebSocketServer } from "ws";

const WAIT_MS = 5000;

class Queue {
  #items = [];
  #waiters = [];
  put(item) { const waiter = this.#waiters.shift(); if (waiter) waiter(item); else this.#items.push(item); }
  get(timeoutMs = WAIT_MS, what = "an item") {
    if (this.#items.length) return Promise.resolve(this.#items.shift());
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => { this.#waiters.splice(this.#waiters.indexOf(waiter), 1); fail(new Error(`no ${what} in ${timeoutMs} ms`)); }, timeoutMs);
      const waiter = (item) => { clearTimeout(timer); ok(item); };
      this.#waiters.push(waiter);
    });
  }
  get size() { return this.#items.length; }
}

export class Peer {
  constructor(ws, request) {
    this.ws = ws;
    this.path = request.url;
    this.protocols = (request.headers["sec-websocket-protocol"] || "").split(",").map((p) => p.trim());
    this.frames = new Queue();
    this.closeCode = null; // the code of the client's close frame, once received
    ws.on("message", (data) => this.frames.put(JSON.parse(String(data))));
    ws.on("close", (code) => { this.closeCode = code; });
  }

  async expect(kind) {
    const frame = await this.frames.get(WAIT_MS, `${kind} frame`);
    if (frame.type !== kind) throw new Error(`expected a ${kind} frame, got ${JSON.stringify(frame)}`);
    return frame;
  }

  send(frame) { this.ws.send(JSON.stringify(frame)); }
  message(channel, offset) {
    this.send({ type: "message", channel, offset, id: `m${offset}`, event: "e", data: null, ts: 0 });
  }
  close(code, reason = "") { this.ws.close(code, reason); }
}

export class FakeNode {
  #accepted = new Queue();

  static async start() {
    const node = new FakeNode();
    node.server = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      handleProtocols: (protocols) => (protocols.has("herald") ? "herald" : false),
    });
    node.server.on("connection", (ws, request) => {
      const peer = new Peer(ws, request);
      peer.send({ type: "welcome", conn_id: "c1", user_id: "alice", heartbeat_s: 10, positions: {} });
      node.#accepted.put(peer);
    });
    await once(node.server, "listening");
    node.url = `ws://127.0.0.1:${node.server.address().port}/ws`;
    return node;
  }

  // The next connection the client opened, once it sent its resume frame.
  async connected() {
    const peer = await this.#accepted.get(WAIT_MS, "connection");
    peer.resume = await peer.expect("resume");
    return peer;
  }

  get pendingConnections() { return this.#accepted.size; }

  async stop() {
    for (const ws of this.server.clients) ws.terminate();
    await new Promise((ok) => this.server.close(ok));
  }
}
