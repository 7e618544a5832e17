// The client against a fake push node that speaks exactly the protocol's frames: how it
// authenticates, refreshes its token in band, reconnects on 4001, stops on 4003 and closes
// cleanly. No Herald runs here; e2e.test.js covers the real server.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { WebSocket } from "ws";

import { Herald } from "herald-push-client";
import { FakeNode } from "./support/fake-node.js";
import { sleep, until } from "./support/herald-dev.js";

let node;
const clients = [];

beforeEach(async () => { node = await FakeNode.start(); });
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await node.stop();
});

function client(token, options = {}) {
  const herald = new Herald(node.url, { token, WebSocket, minDelayMs: 20, maxDelayMs: 50, ...options });
  clients.push(herald);
  return herald;
}

// A token function handing out a new token on each call, remembering them.
function tokens() {
  const issued = [];
  const next = () => { issued.push(`ht_token${issued.length + 1}`); return issued.at(-1); };
  next.issued = issued;
  return next;
}

test("the token travels as the second subprotocol, never in the URL", async () => {
  const herald = client("ht_secret");
  await herald.connect();
  const peer = await node.connected();

  assert.equal(peer.path, "/ws");
  assert.deepEqual(peer.protocols, ["herald", "ht_secret"]);
});

for (const kind of ["plain", "async"]) {
  test(`expiring is answered with a fresh token from a ${kind} function, on the same connection`, async () => {
    const issue = tokens();
    const herald = client(kind === "plain" ? issue : async () => issue());
    await herald.connect();
    const peer = await node.connected();

    peer.send({ type: "expiring", in_s: 30 });
    const refresh = await peer.expect("refresh");
    peer.send({ type: "refreshed", exp: 1900000000 });
    await until(() => herald.refreshes === 1, 5000, "the refreshed frame");

    assert.equal(refresh.token, issue.issued[1]);
    assert.notEqual(issue.issued[1], issue.issued[0]);
    assert.equal(herald.expiresAt, 1900000000);
    assert.equal(herald.connects, 1);
  });
}

test("a refused refresh is tried again on the same connection", async () => {
  const issue = tokens();
  const herald = client(issue);
  const errors = [];
  herald.on("error", (e) => errors.push(e.code));
  await herald.connect();
  const peer = await node.connected();

  peer.send({ type: "expiring", in_s: 5 });
  await peer.expect("refresh");
  peer.send({ type: "error", code: "token_mismatch", message: "another user's token" });
  const retried = await peer.expect("refresh");
  peer.send({ type: "refreshed", exp: 1900000000 });
  await until(() => herald.refreshes === 1, 5000, "the refreshed frame");

  assert.equal(retried.token, issue.issued[2]);
  assert.deepEqual(errors, ["token_mismatch"]);
  assert.equal(herald.connects, 1);
});

test("a fixed token is not refreshed, and a 4001 then ends the session with token_expired", async () => {
  const herald = client("ht_fixed");
  const ended = new Promise((ok) => herald.once("ended", ok));
  await herald.connect();
  const peer = await node.connected();

  peer.send({ type: "expiring", in_s: 1 });
  peer.close(4001, "token expired");
  const error = await ended;
  await sleep(200);

  assert.equal(error.code, "token_expired");
  assert.equal(peer.frames.size, 0, "nothing to refresh with: no refresh frame");
  assert.equal(node.pendingConnections, 0, "no reconnect");
});

test("a 4001 close reconnects at once with a fresh token and resumes where it was", async () => {
  const issue = tokens();
  const herald = client(issue, { minDelayMs: 5000, maxDelayMs: 5000 });
  const received = [];
  herald.on("message", (m) => received.push(m.offset));
  await herald.connect();
  const first = await node.connected();
  first.message("user:alice", 7);
  await until(() => received.length === 1, 5000, "the message");

  first.close(4001, "token expired");
  const second = await node.connected(); // the backoff is 5 s: only a 4001 comes back at once

  assert.deepEqual(second.resume.positions, { "user:alice": 7 });
  assert.deepEqual(second.protocols, ["herald", issue.issued[1]]);
  assert.equal(herald.connects, 2);
});

test("a 4003 close ends the session with revoked, without reconnecting", async () => {
  const issue = tokens();
  const herald = client(issue);
  const ended = new Promise((ok) => herald.once("ended", ok));
  await herald.connect();
  const peer = await node.connected();

  peer.close(4003, "token revoked");
  const error = await ended;
  await sleep(200);

  assert.equal(error.code, "revoked");
  assert.equal(issue.issued.length, 1);
  assert.equal(node.pendingConnections, 0);
});

test("an ack_beyond_sent error frame is reported and the connection stays", async () => {
  const herald = client("ht_t");
  const errors = [];
  herald.on("error", (e) => errors.push(e.code));
  await herald.connect();
  const peer = await node.connected();

  peer.send({ type: "error", code: "ack_beyond_sent", message: "ack clamped to 3" });
  peer.message("user:alice", 4);
  await peer.expect("ack");

  assert.deepEqual(errors, ["ack_beyond_sent"]);
  assert.equal(herald.connects, 1);
});

test("a clean close acks what was handled, then waits for the server's close answer", async () => {
  const herald = client("ht_t");
  await herald.connect();
  const peer = await node.connected();
  peer.message("user:alice", 3);
  const ack = await peer.expect("ack");
  peer.ws._socket.pause(); // the server is busy storing acks: no close answer yet

  let closed = false;
  const closing = herald.close().then(() => { closed = true; });
  await sleep(300);
  const waited = !closed;
  peer.ws._socket.resume();
  await closing;

  assert.ok(waited, "close() resolved before the server answered");
  assert.deepEqual(ack, { type: "ack", channel: "user:alice", offset: 3 });
  assert.equal(peer.closeCode, 1000);
});
