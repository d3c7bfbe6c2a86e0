// Test doubles: a virtual clock, an in-memory Storage, and a fake WebSocket
// whose "server side" speaks frames (decoded with the client's own codec).
import { TetherClient, decodeFrame, encodeFrame } from '../dist/tether.js';

export class FakeClock {
  t = 1000;
  wallBase = 1_700_000_000_000;
  timers = [];
  nextId = 1;
  now() { return this.t; }
  wall() { return this.wallBase + this.t; }
  setTimeout(fn, ms) { const id = this.nextId++; this.timers.push({ id, at: this.t + Math.max(0, ms), fn }); return id; }
  clearTimeout(id) { this.timers = this.timers.filter((x) => x.id !== id); }
  /** Runs every timer due within `ms`, in time order, moving the clock to each. */
  advance(ms = 0) {
    const end = this.t + ms;
    for (let n = 0; ; n++) {
      if (n > 100_000) throw new Error('timers keep firing: a busy loop');
      const due = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      this.t = Math.max(this.t, due.at);
      due.fn();
    }
    this.t = end;
  }
}

export class MemoryStorage {
  map = new Map();
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
  removeItem(k) { this.map.delete(k); }
}

export class FakeWebSocket {
  static all = [];
  /** Called with each new socket (before the client sets its handlers): the test's network decides its fate. */
  static onCreate = null;
  readyState = 0;
  binaryType = 'blob';
  protocol = '';
  sent = []; // decoded frames the client wrote
  closed = false;
  onopen = null; onmessage = null; onclose = null; onerror = null;
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    FakeWebSocket.all.push(this);
    FakeWebSocket.onCreate?.(this);
  }
  send(bytes) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(decodeFrame(bytes));
  }
  close() { this.closed = true; this.readyState = 3; }
  // ---- the server's side ----
  open() { this.readyState = 1; this.protocol = 'tether.v1'; this.onopen?.({}); }
  deliver(frame) { const b = encodeFrame(frame); this.onmessage?.({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.length) }); }
  raw(data) { this.onmessage?.({ data }); }
  drop() { this.readyState = 3; this.onclose?.({}); }
  /** A failed connect as browsers report it: error, then close. */
  fail() { this.readyState = 3; this.onerror?.({}); this.onclose?.({}); }
  take(type) { const out = this.sent.filter((f) => !type || f.type === type); this.sent = this.sent.filter((f) => type && f.type !== type); return out; }
}

/** The HTTP fallback's socket, faked the same way (`kind` tells them apart). */
export class FakeHttpSocket extends FakeWebSocket {
  kind = 'http';
  constructor(url) { super(url, undefined); }
}

export const seqBytes = (from, n) => Uint8Array.from({ length: n }, (_, i) => (from + i) & 0xff);
export const SID = seqBytes(0, 16);
export const enc = (s) => new TextEncoder().encode(s);
export const dec = (b) => new TextDecoder().decode(b);

export function welcome(over = {}) {
  return {
    type: 'welcome', version: 1, resumed: false, sessionId: SID, token: seqBytes(0x20, 32),
    lastReceived: 0n, maxFrame: 1 << 20, idleTimeoutMs: 40000, graceMs: 60000, ...over,
  };
}

/** A client on a virtual clock with a fake WebSocket; records every event. */
export function setup(opts = {}) {
  FakeWebSocket.all = [];
  const clock = opts.clock ?? new FakeClock();
  let onSocket = null;
  FakeWebSocket.onCreate = (ws) => { ws.createdAt = clock.t; onSocket?.(ws); };
  const storage = opts.storage ?? new MemoryStorage();
  let r = 0.5;
  const client = new TetherClient('ws://test/', {
    WebSocketImpl: FakeWebSocket, transports: ['websocket'], clock, storage, random: () => r, ...opts.client,
  });
  const events = [];
  for (const type of ['state', 'connected', 'resumed', 'disconnected', 'attemptfailed', 'reconnecting', 'message', 'rtt', 'ended']) {
    client.on(type, (detail) => events.push({ type, t: clock.t, detail }));
  }
  const h = {
    client, clock, storage, events,
    setRandom(v) { r = v; },
    ws: () => FakeWebSocket.all.at(-1),
    sockets: () => FakeWebSocket.all,
    /** Sockets neither closed by the client nor failed: still opening, or open. */
    live: () => FakeWebSocket.all.filter((w) => !w.closed && w.readyState !== 3),
    /** Runs `fn(ws)` for every socket created from now on (it plays the network). */
    onSocket(fn) { onSocket = fn; },
    of: (type) => events.filter((e) => e.type === type).map((e) => e.detail),
    clear: () => { events.length = 0; },
    /** Runs the first attempt, opens it and answers with WELCOME. */
    connect(over = {}) {
      clock.advance(0);
      const ws = h.ws();
      ws.open();
      const hello = ws.take('hello')[0];
      ws.deliver(welcome(over));
      return { ws, hello };
    },
  };
  return h;
}
