// `herald dev` as a real process for the client's end-to-end tests, on free ports, with its
// data in a temporary directory; and the few HTTP calls a backend makes (tokens, messages).
// HERALD_BIN names the herald command (the Python suite sets it); the default is the
// repository's .venv.
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = resolve(fileURLToPath(import.meta.url), "../../../../..");
const HERALD_BIN = process.env.HERALD_BIN || join(REPO, ".venv", "bin", "herald");
// Outside the ephemeral range, as the Python suite's tests/support/servers.py does.
const LISTEN_PORTS = [20000, 32000];

function bindable(port) {
  return new Promise((ok) => {
    const server = createServer();
    server.once("error", () => ok(false));
    server.listen(port, "127.0.0.1", () => server.close(() => ok(true)));
  });
}

async function freePortBase(count) {
  for (let tries = 0; tries < 100; tries++) {
    const base = LISTEN_PORTS[0] + Math.floor(Math.random() * (LISTEN_PORTS[1] - LISTEN_PORTS[0] - count - 1));
    let free = true;
    for (let n = 1; n <= count && free; n++) free = await bindable(base + n);
    if (free) return base;
  }
  throw new Error("no free block of ports");
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function healthy(url, deadline) {
  while (Date.now() < deadline) {
    try { if ((await fetch(url)).ok) return; } catch { /* not up yet */ }
    await sleep(100);
  }
  throw new Error(`${url} not healthy in time`);
}

export class HeraldDev {
  constructor(dir, base) {
    this.dir = dir;
    this.base = base;
    this.dataDir = join(dir, "herald-data");
    this.logPath = join(dir, "herald-dev.log");
    this.authUrl = `http://127.0.0.1:${base + 1}`;
    this.collectUrl = `http://127.0.0.1:${base + 2}`;
    this.pushUrl = `http://127.0.0.1:${base + 4}`;
    this.wsUrl = `ws://127.0.0.1:${base + 4}/ws`;
    this.process = null;
  }

  static async start() {
    const dev = new HeraldDev(mkdtempSync(join(tmpdir(), "herald-js-")), await freePortBase(4));
    await dev.start();
    return dev;
  }

  // Starts (or starts again: same data directory, same ports) and waits until every service answers.
  async start(timeoutMs = 30000) {
    const log = openSync(this.logPath, "a");
    this.process = spawn(HERALD_BIN, ["dev", "--port-base", String(this.base)], {
      env: { ...process.env, HERALD_DATA_DIR: this.dataDir, HERALD_HEARTBEAT_S: "1", PYTHONUNBUFFERED: "1" },
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    // However this test file ends, it does not leave a server behind.
    const child = this.process;
    process.once("exit", () => child.kill("SIGKILL"));
    const exited = new Promise((_, fail) => this.process.once("exit", (code) => fail(new Error(`herald dev exited with ${code}:\n${this.logTail()}`))));
    exited.catch(() => {});
    const deadline = Date.now() + timeoutMs;
    const ready = Promise.all([this.authUrl, this.collectUrl, this.pushUrl].map((url) => healthy(`${url}/healthz`, deadline)));
    await Promise.race([ready, exited]);
    this.demo = JSON.parse(readFileSync(join(this.dataDir, "demo-app.json"), "utf8"));
  }

  // SIGTERM and wait for the exit (SIGKILL after 15 s); resolves with the exit code.
  stop() {
    const child = this.process;
    if (!child || child.exitCode !== null) return Promise.resolve(child ? child.exitCode : null);
    return new Promise((ok) => {
      const killer = setTimeout(() => child.kill("SIGKILL"), 15000);
      child.once("exit", (code) => { clearTimeout(killer); ok(code); });
      child.kill("SIGTERM");
    });
  }

  logTail(lines = 30) {
    try { return readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n"); } catch { return ""; }
  }

  async #call(base, method, path, body) {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.demo.api_key}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  // A connect token of the demo app; options: ttl_s, publish (channel patterns).
  async token(userId, options = {}) {
    return (await this.#call(this.authUrl, "POST", "/v1/tokens", { user_id: userId, ...options })).token;
  }

  // One message to users; resolves with {id, channel, offset, online} for the first one.
  async send(users, event, data = null) {
    return (await this.#call(this.collectUrl, "POST", "/v1/messages", { to: { users }, event, data })).messages[0];
  }

  async message(id) { return this.#call(this.collectUrl, "GET", `/v1/messages/${id}`); }
  async join(group, userId) { return this.#call(this.collectUrl, "PUT", `/v1/groups/${group}/members/${userId}`); }
  async kick(userId) { return this.#call(this.collectUrl, "POST", `/v1/users/${userId}/kick`); }
}

export function user(tag = "js") {
  return `${tag}-${Math.random().toString(16).slice(2, 10)}`;
}

// Resolves once condition() holds; rejects after timeoutMs.
export async function until(condition, timeoutMs = 10000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export { sleep };
