// Types of herald-push-client (src/herald.js). The script-tag build (herald.js) defines the
// same class as the global `Herald`.

/** A connect token, or a function (plain or async) returning a fresh one: it is called on
 * every connect and whenever the server says the token is expiring. */
export type TokenSource = string | (() => string | Promise<string>);

/** The part of the WebSocket API the client uses: the browser's, Node 22's, or the ws package's. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface HeraldOptions {
  token: TokenSource;
  /** Where each channel resumes: channel -> the last offset handled (e.g. saved in localStorage). */
  positions?: Record<string, number>;
  /** Ack each message after the `message` handlers ran (default true). */
  autoAck?: boolean;
  /** Reconnect backoff: from minDelayMs (default 500) doubling to maxDelayMs (default 15000), with jitter. */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** How long close() waits for the server's answer to its close frame (default 2000). */
  closeTimeoutMs?: number;
  /** The WebSocket class when there is no global one (Node 20: `import { WebSocket } from "ws"`). */
  WebSocket?: WebSocketConstructor;
}

export interface WelcomeFrame {
  type: "welcome";
  conn_id: string;
  user_id: string;
  heartbeat_s: number;
  positions: Record<string, number>;
}

export interface MessageFrame {
  type: "message";
  channel: string;
  offset: number;
  id: string;
  event: string;
  data: unknown;
  ts: number;
  /** Set on messages a client published: who published it. */
  from?: { user_id: string; conn_id: string };
}

export interface ReplyFrame {
  type: "reply";
  seq: string;
  id: string;
  channel: string;
  offset: number;
}

export interface ErrorFrame {
  type?: "error";
  /** The server's code (invalid_frame, rate_limited, ack_beyond_sent, invalid_token, ...), or the
   * client's own: revoked, token_expired, token_unavailable. */
  code: string;
  message: string;
}

export interface ExpiringFrame {
  type: "expiring";
  /** Seconds until the token's exp. */
  in_s: number;
}

export interface RefreshedFrame {
  type: "refreshed";
  /** The new token's exp, epoch seconds. */
  exp: number;
}

export interface DisconnectEvent {
  code: number;
  reason: string;
}

/** An Error with the code of the server's reply or of the client's reason. */
export interface HeraldError extends Error {
  code: string;
}

export interface HeraldEvents {
  connected: WelcomeFrame;
  message: MessageFrame;
  disconnected: DisconnectEvent;
  error: ErrorFrame;
  expiring: ExpiringFrame;
  refreshed: RefreshedFrame;
  /** The server ended the session for good (4003 revoked or kicked; 4001 with a fixed token): no reconnect. */
  ended: HeraldError;
}

export class Herald {
  constructor(url: string, options: HeraldOptions);
  readonly url: string;
  token: TokenSource;
  /** channel -> the highest offset handed to the app. */
  positions: Record<string, number>;
  autoAck: boolean;
  minDelayMs: number;
  maxDelayMs: number;
  closeTimeoutMs: number;
  connId: string | null;
  /** Connections welcomed so far. */
  connects: number;
  /** Tokens renewed in band so far. */
  refreshes: number;
  /** The token's exp (epoch seconds) as the last `refreshed` frame said. */
  expiresAt: number | null;

  on<K extends keyof HeraldEvents>(event: K, handler: (value: HeraldEvents[K]) => void): this;
  off<K extends keyof HeraldEvents>(event: K, handler: (value: HeraldEvents[K]) => void): this;
  once<K extends keyof HeraldEvents>(event: K, handler: (value: HeraldEvents[K]) => void): this;
  /** Resolves with the welcome frame; rejects if the session ends for good first. */
  connect(): Promise<WelcomeFrame>;
  /** Cumulative: everything up to offset on channel was handled. */
  ack(channel: string, offset: number): void;
  /** Resolves with the reply once stored; rejects with a HeraldError (forbidden_channel, not_a_member, ...). */
  publish(channel: string, event: string, data?: unknown, timeoutMs?: number): Promise<ReplyFrame>;
  /** A close frame, then a wait for the server's answer (sent once it stored this connection's acks). */
  close(): Promise<void>;
}

export default Herald;
