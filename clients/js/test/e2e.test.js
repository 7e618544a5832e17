// The client against a real `herald dev` process (started here on free ports): connect,
// ack, publish with replies, clean close, resume after a restart, in-band token refresh.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { Herald } from "herald-push-client";
import { HeraldDev, sleep, until, user } from "./support/herald-dev.js";

// The refresh test's tokens last TOKEN_TTL_S; it keeps the connection open for six of their lifetimes.
const TOKEN_TTL_S = 3;
const REFRESH_TEST_MS = 6 * TOKEN_TTL_S * 1000;

let dev;
const open = new Set();

before(async () => { dev = await HeraldDev.start(); });
after(async () => {
  if (process.env.HERALD_DEV_LOG) console.log(dev.logTail(60)); // HERALD_DEV_LOG=1: show the server's log
  await Promise.all([...open].map((client) => client.close()));
  const code = await dev.stop();
  assert.equal(code, 0, `herald dev exited with ${code} on SIGTERM:\n${dev.logTail()}`);
});

function client(token, options = {}) {
  const herald = new Herald(dev.wsUrl, { token, WebSocket, minDelayMs: 100, maxDelayMs: 1000, ...options });
  open.add(herald);
  return herald;
}

function inbox(herald) {
  const received = [];
  herald.on("message", (m) => received.push(m));
  return received;
}

async function statusOf(id, wanted) {
  let status = "";
  for (let n = 0; n < 100 && status !== wanted; n++) {
    status = (await dev.message(id)).status;
    if (status !== wanted) await sleep(100);
  }
  return status;
}

test("it connects with the token as a subprotocol and receives its user's messages", async () => {
  const alice = user();
  const herald = client(await dev.token(alice));
  const received = inbox(herald);

  const welcome = await herald.connect();
  const sent = await dev.send([alice], "order.shipped", { order: 42 });
  await until(() => received.length === 1, 10000, "the message");

  assert.equal(welcome.user_id, alice);
  assert.deepEqual([received[0].channel, received[0].offset, received[0].data], [`user:${alice}`, sent.offset, { order: 42 }]);
  assert.deepEqual(herald.positions, { [`user:${alice}`]: sent.offset });
  await herald.close();
});

test("a message is acked once the message handlers ran", async () => {
  const bob = user();
  const herald = client(await dev.token(bob));
  await herald.connect();

  const sent = await dev.send([bob], "n", 1);

  assert.equal(await statusOf(sent.id, "acked"), "acked");
  await herald.close();
});

test("without autoAck, only an explicit ack acks", async () => {
  const carol = user();
  const herald = client(await dev.token(carol), { autoAck: false });
  const received = inbox(herald);
  await herald.connect();
  const sent = await dev.send([carol], "n", 1);
  await until(() => received.length === 1, 10000, "the message");
  assert.equal(await statusOf(sent.id, "delivered"), "delivered");

  herald.ack(received[0].channel, received[0].offset);

  assert.equal(await statusOf(sent.id, "acked"), "acked");
  await herald.close();
});

test("publish resolves with the stored message's reply, and rejects with the server's code", async () => {
  const dave = user();
  const room = `room-${user("r")}`;
  await dev.join(room, dave);
  const herald = client(await dev.token(dave, { publish: ["group:room-*"] }));
  const received = inbox(herald);
  await herald.connect();

  const reply = await herald.publish(`group:${room}`, "chat", { text: "hi" });
  await until(() => received.length === 1, 10000, "the published message");
  const refused = await herald.publish("broadcast", "chat", {}).catch((error) => error);

  assert.equal(reply.channel, `group:${room}`);
  assert.deepEqual([received[0].id, received[0].offset, received[0].data], [reply.id, reply.offset, { text: "hi" }]);
  assert.equal(refused.code, "forbidden_channel");
  await herald.close();
});

test("a clean close makes what was handled hold for the next connection", async () => {
  const erin = user();
  const first = client(await dev.token(erin));
  const firstInbox = inbox(first);
  await first.connect();
  await dev.send([erin], "handled");
  await until(() => firstInbox.length === 1, 10000, "the first message");
  await first.close();

  const next = await dev.send([erin], "next");
  const second = client(await dev.token(erin)); // no positions of its own
  const secondInbox = inbox(second);
  await second.connect();
  await until(() => secondInbox.length === 1, 10000, "the next message");
  await sleep(300);

  assert.deepEqual(secondInbox.map((m) => [m.event, m.offset]), [["next", next.offset]]);
  await second.close();
});

test("a kick ends the session: an ended event, no reconnect", async () => {
  const frank = user();
  const herald = client(await dev.token(frank), { minDelayMs: 50 });
  const ended = new Promise((ok) => herald.once("ended", ok));
  await herald.connect();

  await dev.kick(frank);
  const error = await ended;
  await sleep(300);

  assert.equal(error.code, "revoked");
  assert.equal(herald.connects, 1);
});

test("after herald dev restarts, it resumes and what was sent meanwhile arrives once", async () => {
  const grace = user();
  const herald = client(() => dev.token(grace), { minDelayMs: 500, maxDelayMs: 1000 });
  const received = inbox(herald);
  await herald.connect();
  const before = await dev.send([grace], "before");
  await until(() => received.length === 1, 10000, "the first message");

  assert.equal(await dev.stop(), 0);
  await dev.start(); // the same data directory and ports
  const meanwhile = [];
  for (let n = 0; n < 3; n++) meanwhile.push((await dev.send([grace], "meanwhile", n)).offset);
  await until(() => received.length === 4, 15000, "what was sent meanwhile");
  await sleep(500); // anything more would be a duplicate come late

  assert.deepEqual(received.map((m) => m.offset), [before.offset, ...meanwhile]);
  assert.equal(herald.connects, 2);
  await herald.close();
});

test("a 3 s token stays connected through in-band refreshes, losing nothing", async () => {
    const heidi = user();
    const herald = client(() => dev.token(heidi, { ttl_s: TOKEN_TTL_S }));
    const received = inbox(herald);
    const disconnects = [];
    herald.on("disconnected", (e) => disconnects.push(e.code));
    await herald.connect();

    const sent = [];
    const started = Date.now();
    while (Date.now() - started < REFRESH_TEST_MS) {
      sent.push((await dev.send([heidi], "tick")).offset);
      await sleep(1000);
      if (Date.now() - started > (TOKEN_TTL_S + 1) * 1000) { // one lifetime passed: fail now, not at the end
        assert.ok(herald.refreshes >= 1, `no in-band refresh of a ${TOKEN_TTL_S} s token; closes: ${disconnects}`);
      }
    }
    await until(() => received.length >= sent.length, 5000, "every message");

    assert.deepEqual(disconnects, []);
    assert.equal(herald.connects, 1);
    assert.ok(herald.refreshes >= REFRESH_TEST_MS / (TOKEN_TTL_S * 1000), `only ${herald.refreshes} refreshes`);
    assert.deepEqual(received.map((m) => m.offset), sent);
    await herald.close();
  });
