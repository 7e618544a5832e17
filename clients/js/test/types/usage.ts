// Compiled (never run) by package.test.js with tsc --strict: the declarations in index.d.ts
// accept the README's usage and refuse what the client would not do.
import Default, { Herald, type MessageFrame, type WebSocketConstructor } from "herald-push-client";

declare const WebSocketImpl: WebSocketConstructor;

const herald: Herald = new Herald("ws://localhost:8004/ws", {
  token: async () => "ht_token",
  positions: { "user:alice": 3 },
  WebSocket: WebSocketImpl,
});
const same: typeof Herald = Default;
new same("ws://localhost:8004/ws", { token: () => "ht_token", autoAck: false, closeTimeoutMs: 500 });

herald
  .on("message", (m: MessageFrame) => console.log(m.channel, m.offset.toFixed(0), m.data))
  .on("connected", (welcome) => console.log(welcome.conn_id, welcome.positions))
  .on("disconnected", (event) => console.log(event.code))
  .on("expiring", (frame) => console.log(frame.in_s))
  .on("refreshed", (frame) => console.log(frame.exp))
  .on("ended", (error) => console.log(error.code))
  .on("error", (e) => console.log(e.code, e.message));

async function session(): Promise<void> {
  const welcome = await herald.connect();
  herald.ack(`user:${welcome.user_id}`, 4);
  const reply = await herald.publish("group:room-1", "chat", { text: "hi" });
  console.log(reply.id, reply.offset, herald.refreshes, herald.expiresAt, herald.connects);
  await herald.close();
}
void session;

// @ts-expect-error: the token is a string or a function, not a number
new Herald("ws://x", { token: 42 });
// @ts-expect-error: there is no such event
herald.on("welcome", () => {});
// @ts-expect-error: an offset is a number
herald.on("message", (m) => m.offset.toUpperCase());
