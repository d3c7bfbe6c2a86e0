"use strict";
var __defProp = Object.defineProperty;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp.call(to, key) && key !== except)
        __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);
var tether_exports = {};
__export(tether_exports, {
  CloseCode: () => CloseCode,
  DEFAULT_MAX_FRAME: () => DEFAULT_MAX_FRAME,
  DecodeError: () => DecodeError,
  Emitter: () => Emitter,
  HttpSocket: () => HttpSocket,
  Kind: () => Kind,
  MAX_AUTH_LEN: () => MAX_AUTH_LEN,
  MAX_MAX_FRAME: () => MAX_MAX_FRAME,
  MAX_PING_PAYLOAD: () => MAX_PING_PAYLOAD,
  MAX_REASON_LEN: () => MAX_REASON_LEN,
  MIN_MAX_FRAME: () => MIN_MAX_FRAME,
  RejectReason: () => RejectReason,
  RoomRequestError: () => RoomRequestError,
  Rooms: () => Rooms,
  RpcError: () => RpcError,
  SUBPROTOCOL: () => SUBPROTOCOL,
  SendError: () => SendError,
  TetherClient: () => TetherClient,
  TetherEvent: () => TetherEvent,
  VERSION: () => VERSION,
  clipReason: () => clipReason,
  decodeFrame: () => decodeFrame,
  encodeFrame: () => encodeFrame,
  fromHex: () => fromHex,
  isAssignedCloseCode: () => isAssignedCloseCode,
  toHex: () => toHex
});
module.exports = __toCommonJS(tether_exports);
const VERSION = 1;
const SUBPROTOCOL = "tether.v1";
const MIN_MAX_FRAME = 16384;
const DEFAULT_MAX_FRAME = 1 << 20;
const MAX_MAX_FRAME = 16 << 20;
const MAX_AUTH_LEN = 4096;
const MAX_PING_PAYLOAD = 1024;
const MAX_REASON_LEN = 1024;
const MAGIC = [84, 84, 72, 82];
const Kind = {
  HELLO: 1,
  WELCOME: 2,
  REJECT: 3,
  DATA: 16,
  ACK: 17,
  PING: 32,
  PONG: 33,
  CLOSE: 48
};
const CloseCode = {
  TransportReplaced: 1e3,
  GoingAway: 1001,
  HandshakeTimeout: 1002,
  Resync: 1003,
  ProtocolError: 2e3,
  FrameTooLarge: 2001,
  Normal: 3e3,
  ReplayOverflow: 3001,
  SessionExpired: 3002,
  SequenceViolation: 3003,
  Kicked: 3004,
  FrameLimit: 3005
};
const RejectReason = {
  UnsupportedVersion: 1,
  UnknownSession: 2,
  InvalidToken: 3,
  TokenReused: 4,
  Overloaded: 5,
  ShuttingDown: 6,
  Unauthorized: 7,
  BadHello: 8
};
function isAssignedCloseCode(c) {
  return c >= 1e3 && c <= 1003 || c === 2e3 || c === 2001 || c >= 3e3 && c <= 3005 || c >= 4e3 && c <= 4999;
}
class DecodeError extends Error {
  constructor(kind, detail) {
    super(`${kind}: ${detail}`);
    this.name = "DecodeError";
    this.kind = kind;
  }
  get closeCode() {
    return this.kind === "FrameTooLarge" ? 2001 : 2e3;
  }
}
const utf8Encoder = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Lossy = new TextDecoder("utf-8", { ignoreBOM: true });
class Reader {
  constructor(buf, type) {
    this.buf = buf;
    this.type = type;
    this.pos = 0;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  take(n, field) {
    if (this.buf.length - this.pos < n)
      throw new DecodeError("Truncated", `frame 0x${hex2(this.type)} truncated in field \`${field}\``);
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8(field) {
    return this.view.getUint8(this.take(1, field));
  }
  u16(field) {
    return this.view.getUint16(this.take(2, field));
  }
  u32(field) {
    return this.view.getUint32(this.take(4, field));
  }
  u64(field) {
    return this.view.getBigUint64(this.take(8, field));
  }
  bytes(n, field) {
    const at = this.take(n, field);
    return this.buf.slice(at, at + n);
  }
  /** A u16 length then the bytes; the limit is checked before the bytes are looked for. */
  prefixed(field, max) {
    const n = this.u16(field);
    if (n > max)
      throw new DecodeError("TooLong", `frame 0x${hex2(this.type)} field \`${field}\` is ${n} bytes, limit ${max}`);
    return this.bytes(n, field);
  }
  text(field) {
    const raw = this.prefixed(field, MAX_REASON_LEN);
    try {
      return utf8Strict.decode(raw);
    } catch {
      throw new DecodeError("InvalidUtf8", `frame 0x${hex2(this.type)} field \`${field}\` is not valid UTF-8`);
    }
  }
  rest() {
    const r = this.buf.slice(this.pos);
    this.pos = this.buf.length;
    return r;
  }
  finish() {
    const extra = this.buf.length - this.pos;
    if (extra > 0)
      throw new DecodeError("TrailingBytes", `frame 0x${hex2(this.type)} has ${extra} unexpected trailing bytes`);
  }
  invalid(field, reason) {
    return new DecodeError("InvalidValue", `frame 0x${hex2(this.type)} field \`${field}\`: ${reason}`);
  }
  reserved(value) {
    return new DecodeError("ReservedBits", `frame 0x${hex2(this.type)} field \`flags\` has reserved bits set (0x${hex2(value)})`);
  }
}
function decodeFrame(buf, maxFrame = DEFAULT_MAX_FRAME) {
  if (buf.length > maxFrame)
    throw new DecodeError("FrameTooLarge", `frame of ${buf.length} bytes exceeds the ${maxFrame}-byte limit`);
  if (buf.length === 0)
    throw new DecodeError("Empty", "empty frame: every frame starts with a type byte");
  const type = buf[0];
  const r = new Reader(buf.subarray(1), type);
  switch (type) {
    case Kind.HELLO: {
      const magic = r.bytes(4, "magic");
      if (magic.some((b, i) => b !== MAGIC[i]))
        throw new DecodeError("BadMagic", "HELLO does not start with the TTHR magic");
      const minVersion = r.u8("min_version");
      const maxVersion = r.u8("max_version");
      const flags = r.u8("flags");
      if (flags & 254)
        throw r.reserved(flags);
      const maxFrame2 = r.u32("max_frame");
      const idleTimeoutMs = r.u32("idle_timeout_ms");
      const resume = flags & 1 ? { sessionId: r.bytes(16, "session_id"), token: r.bytes(32, "resume_token"), lastReceived: r.u64("last_received") } : null;
      const auth = r.prefixed("auth", MAX_AUTH_LEN);
      r.finish();
      if (minVersion > maxVersion)
        throw r.invalid("min_version", "greater than max_version");
      if (maxFrame2 < MIN_MAX_FRAME)
        throw r.invalid("max_frame", "below the 16384-byte minimum");
      return { type: "hello", minVersion, maxVersion, maxFrame: maxFrame2, idleTimeoutMs, resume, auth };
    }
    case Kind.WELCOME: {
      const version = r.u8("version");
      const flags = r.u8("flags");
      if (flags & 254)
        throw r.reserved(flags);
      const f = {
        type: "welcome",
        version,
        resumed: (flags & 1) !== 0,
        sessionId: r.bytes(16, "session_id"),
        token: r.bytes(32, "resume_token"),
        lastReceived: r.u64("last_received"),
        maxFrame: r.u32("max_frame"),
        idleTimeoutMs: r.u32("idle_timeout_ms"),
        graceMs: r.u32("grace_ms")
      };
      r.finish();
      if (f.maxFrame < MIN_MAX_FRAME)
        throw r.invalid("max_frame", "below the 16384-byte minimum");
      return f;
    }
    case Kind.REJECT: {
      const reason = r.u8("reason");
      if (reason < 1 || reason > 8)
        throw r.invalid("reason", "unknown reject reason");
      const retryAfterMs = r.u32("retry_after_ms");
      const minVersion = r.u8("min_version");
      const maxVersion = r.u8("max_version");
      const message = r.text("message");
      r.finish();
      return { type: "reject", reason, retryAfterMs, minVersion, maxVersion, message };
    }
    case Kind.DATA: {
      const seq = r.u64("seq");
      if (seq === 0n)
        throw r.invalid("seq", "sequence numbers start at 1");
      return { type: "data", seq, payload: r.rest() };
    }
    case Kind.ACK: {
      const ack = r.u64("ack");
      r.finish();
      return { type: "ack", ack };
    }
    case Kind.PING:
    case Kind.PONG: {
      const nonce = r.u32("nonce");
      const ack = r.u64("ack");
      const payload = r.rest();
      if (payload.length > MAX_PING_PAYLOAD) {
        throw new DecodeError("TooLong", `frame 0x${hex2(type)} field \`payload\` is ${payload.length} bytes, limit ${MAX_PING_PAYLOAD}`);
      }
      return { type: type === Kind.PING ? "ping" : "pong", nonce, ack, payload };
    }
    case Kind.CLOSE: {
      const code = r.u16("code");
      if (!isAssignedCloseCode(code))
        throw r.invalid("code", "unassigned close code");
      const retryAfterMs = r.u32("retry_after_ms");
      const reason = r.text("reason");
      r.finish();
      return { type: "close", code, retryAfterMs, reason };
    }
    default:
      throw new DecodeError("UnknownType", `unknown frame type 0x${hex2(type)}`);
  }
}
function encodeFrame(f) {
  const text = f.type === "reject" ? utf8Encoder.encode(f.message) : f.type === "close" ? utf8Encoder.encode(f.reason) : null;
  const len = 1 + (() => {
    switch (f.type) {
      case "hello":
        return 15 + (f.resume ? 56 : 0) + 2 + f.auth.length;
      case "welcome":
        return 70;
      case "reject":
        return 9 + text.length;
      case "data":
        return 8 + f.payload.length;
      case "ack":
        return 8;
      case "ping":
      case "pong":
        return 12 + f.payload.length;
      case "close":
        return 8 + text.length;
    }
  })();
  const buf = new Uint8Array(len);
  const v = new DataView(buf.buffer);
  let p = 0;
  const u8 = (x) => {
    v.setUint8(p, x);
    p += 1;
  };
  const u16 = (x) => {
    v.setUint16(p, x);
    p += 2;
  };
  const u32 = (x) => {
    v.setUint32(p, x);
    p += 4;
  };
  const u64 = (x) => {
    v.setBigUint64(p, x);
    p += 8;
  };
  const raw = (b) => {
    buf.set(b, p);
    p += b.length;
  };
  switch (f.type) {
    case "hello":
      u8(Kind.HELLO);
      raw(MAGIC);
      u8(f.minVersion);
      u8(f.maxVersion);
      u8(f.resume ? 1 : 0);
      u32(f.maxFrame);
      u32(f.idleTimeoutMs);
      if (f.resume) {
        raw(f.resume.sessionId);
        raw(f.resume.token);
        u64(f.resume.lastReceived);
      }
      u16(f.auth.length);
      raw(f.auth);
      break;
    case "welcome":
      u8(Kind.WELCOME);
      u8(f.version);
      u8(f.resumed ? 1 : 0);
      raw(f.sessionId);
      raw(f.token);
      u64(f.lastReceived);
      u32(f.maxFrame);
      u32(f.idleTimeoutMs);
      u32(f.graceMs);
      break;
    case "reject":
      u8(Kind.REJECT);
      u8(f.reason);
      u32(f.retryAfterMs);
      u8(f.minVersion);
      u8(f.maxVersion);
      u16(text.length);
      raw(text);
      break;
    case "data":
      u8(Kind.DATA);
      u64(f.seq);
      raw(f.payload);
      break;
    case "ack":
      u8(Kind.ACK);
      u64(f.ack);
      break;
    case "ping":
    case "pong":
      u8(f.type === "ping" ? Kind.PING : Kind.PONG);
      u32(f.nonce);
      u64(f.ack);
      raw(f.payload);
      break;
    case "close":
      u8(Kind.CLOSE);
      u16(f.code);
      u32(f.retryAfterMs);
      u16(text.length);
      raw(text);
      break;
  }
  return buf;
}
function clipReason(text) {
  const b = utf8Encoder.encode(text);
  if (b.length <= MAX_REASON_LEN)
    return text;
  let end = MAX_REASON_LEN;
  while (end > 0 && (b[end] & 192) === 128)
    end -= 1;
  return utf8Lossy.decode(b.subarray(0, end));
}
function hex2(n) {
  return n.toString(16).padStart(2, "0");
}
function toHex(b) {
  return Array.from(b, hex2).join("");
}
function fromHex(s) {
  if (!/^([0-9a-f]{2})*$/i.test(s))
    throw new Error("not hex");
  return Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
}
function toBase64(b) {
  let s = "";
  for (let i = 0; i < b.length; i += 32768)
    s += String.fromCharCode(...b.subarray(i, i + 32768));
  return btoa(s);
}
function fromBase64(s) {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}
const PROFILES = {
  default: { interval: 2e4, probeTimeout: 5e3, probes: 3, handshakeTimeout: 5e3 },
  realtime: { interval: 3e3, probeTimeout: 1500, probes: 3, handshakeTimeout: 3e3 }
};
const BACKOFF = { initial: 500, max: 3e4, resumeMax: 2e3, stableAfter: 1e4 };
const RACE = { delay: 750, minDelay: 500, maxInFlight: 3 };
const ACK_DELAY = 50;
const ACK_EVERY = 32n;
const REPLAY_MAX_BYTES = 1 << 20;
const REPLAY_MAX_MESSAGES = 4096;
class Outbound {
  constructor() {
    this.nextSeq = 1n;
    this.buf = [];
    this.bytes = 0;
    this.acked = 0n;
    this.written = 0n;
  }
  push(payload) {
    if (this.buf.length >= REPLAY_MAX_MESSAGES || this.bytes + payload.length > REPLAY_MAX_BYTES)
      return null;
    const seq = this.nextSeq++;
    this.bytes += payload.length;
    this.buf.push({ seq, payload });
    return seq;
  }
  lastAssigned() {
    return this.nextSeq - 1n;
  }
  longest() {
    return this.buf.reduce((m, e) => Math.max(m, e.payload.length), 0);
  }
  /** A cumulative ack: an error text when it acknowledges what was never written (§7.2). */
  onAck(ack) {
    if (ack > this.written)
      return `ack ${ack} is beyond the last seq written (${this.written})`;
    while (this.buf.length && this.buf[0].seq <= ack)
      this.bytes -= this.buf.shift().payload.length;
    if (ack > this.acked)
      this.acked = ack;
    return null;
  }
  /** The server said in WELCOME what it has: everything after is written again (§7.5). */
  rewind(peer) {
    if (peer < this.acked)
      return `the server's last_received ${peer} went back below its ack ${this.acked}`;
    if (peer > this.lastAssigned())
      return `the server's last_received ${peer} is beyond the last seq sent (${this.lastAssigned()})`;
    this.written = peer;
    return this.onAck(peer);
  }
  nextToWrite() {
    if (!this.buf.length)
      return null;
    const e = this.buf[Number(this.written + 1n - this.buf[0].seq)];
    if (!e)
      return null;
    this.written = e.seq;
    return e;
  }
  /** The session ended: hand everything back and number the next one from 1. */
  takeUnacked() {
    const out = this.buf.map((e) => e.payload);
    Object.assign(this, new Outbound());
    return out;
  }
}
class Inbound {
  constructor() {
    this.delivered = 0n;
    this.acked = 0n;
    this.ackDue = null;
  }
  onData(now, seq) {
    if (seq <= this.delivered) {
      this.ackDue ?? (this.ackDue = now + ACK_DELAY);
      return "duplicate";
    }
    if (seq !== this.delivered + 1n)
      return "gap";
    this.delivered = seq;
    if (this.delivered - this.acked >= ACK_EVERY)
      this.ackDue = now;
    else
      this.ackDue ?? (this.ackDue = now + ACK_DELAY);
    return "deliver";
  }
  /** The ack value goes out (ACK, PING, PONG or HELLO). */
  ackSent() {
    this.acked = this.delivered;
    this.ackDue = null;
    return this.delivered;
  }
  reset() {
    this.delivered = 0n;
    this.acked = 0n;
    this.ackDue = null;
  }
}
class Heartbeat {
  constructor(t, now, nextNonce) {
    this.t = t;
    this.nextNonce = nextNonce;
    this.probe = null;
    this.outstanding = [];
    this.lastHeard = now;
  }
  reset(now) {
    this.lastHeard = now;
    this.probe = null;
    this.outstanding = [];
  }
  deadline() {
    return this.probe ? this.probe.deadline : this.lastHeard + this.t.interval;
  }
  /** Any frame arrived: it ends the probe and forgets the nonces. */
  onHeard(now) {
    this.lastHeard = now;
    this.probe = null;
    this.outstanding = [];
  }
  rttFor(now, nonce) {
    const hit = this.outstanding.find(([n]) => n === nonce);
    return hit ? now - hit[1] : null;
  }
  /** A one-shot probe (network change): dead if nothing arrives within probe_timeout. */
  probeNow(now) {
    this.probe = { network: true, sent: this.t.probes, deadline: now + this.t.probeTimeout };
    return this.takeNonce(now);
  }
  takeNonce(now) {
    const n = this.nextNonce;
    this.nextNonce = this.nextNonce + 1 >>> 0;
    this.outstanding.push([n, now]);
    if (this.outstanding.length > 8)
      this.outstanding.shift();
    return n;
  }
  poll(now) {
    if (now < this.deadline())
      return null;
    const p = this.probe;
    if (p && p.sent >= this.t.probes) {
      this.probe = null;
      return { dead: p.network ? "network" : "idle" };
    }
    this.probe = { network: p ? p.network : false, sent: p ? p.sent + 1 : 1, deadline: now + this.t.probeTimeout };
    return { ping: this.takeNonce(now) };
  }
}
class Backoff {
  constructor() {
    this.attempt = 0;
    this.lateUsed = null;
  }
  reset() {
    this.attempt = 0;
  }
  ceiling(resumable) {
    const cap = resumable ? BACKOFF.resumeMax : BACKOFF.max;
    return Math.min(cap, BACKOFF.initial * 2 ** Math.min(this.attempt, 31));
  }
  next(now, random, resumableUntil, budget, retryAfter) {
    let delay = random() * this.ceiling(resumableUntil !== null);
    if (resumableUntil !== null) {
      const latest = resumableUntil - budget;
      if (now < latest)
        delay = Math.min(delay, latest - now);
      else if (this.lateUsed !== resumableUntil) {
        this.lateUsed = resumableUntil;
        delay = 0;
      }
    }
    if (retryAfter !== null)
      delay = Math.max(delay, retryAfter);
    this.attempt += 1;
    return delay;
  }
}
class Racers {
  constructor() {
    this.list = [];
    this.next = null;
  }
  /** A WebSocket starts; another may start `wait` ms later (null: no racing). */
  start(r, wait) {
    this.list.push(r);
    this.next = wait === null ? null : r.started + wait;
  }
  get(tid) {
    return this.list.find((r) => r.tid === tid);
  }
  /** One racer, removed (to close). */
  remove(tid) {
    const i = this.list.findIndex((r) => r.tid === tid);
    return i >= 0 ? this.list.splice(i, 1)[0] : void 0;
  }
  /** Every racer, removed (to close, or one to keep); racing stops. */
  takeAll() {
    this.next = null;
    return this.list.splice(0);
  }
  /** Racers started `limit` ms ago or earlier, removed (to close). */
  expired(now, limit) {
    const gone = this.list.filter((r) => now >= r.started + limit);
    this.list = this.list.filter((r) => now < r.started + limit);
    return gone;
  }
  /** True when racing is on and another is due. */
  due(now) {
    return this.next !== null && now >= this.next;
  }
  /** True while racing is on (none has opened yet). */
  racing() {
    return this.next !== null;
  }
  /** Makes room for one more under `max` opening at once: the oldest, removed (to close). */
  makeRoom(max) {
    return this.list.length >= max ? this.list.shift() ?? null : null;
  }
  /** The next instant something is due: another start, or the oldest reaching `limit`. */
  deadline(limit) {
    const oldest = this.list.length ? this.list[0].started + limit : Infinity;
    const at = Math.min(this.next ?? Infinity, oldest);
    return at === Infinity ? null : at;
  }
}
function raceWait(c, rtt) {
  return rtt === null ? c.delay : Math.min(c.delay, Math.max(c.minDelay, 4 * rtt));
}
class TetherEvent extends Event {
  constructor(type, detail) {
    super(type);
    this.detail = detail;
  }
}
class Emitter extends EventTarget {
  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    const h = (e) => fn(e.detail);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }
  /** Like `on`, for the next event of that type only. */
  once(type, fn) {
    const h = (e) => fn(e.detail);
    this.addEventListener(type, h, { once: true });
    return () => this.removeEventListener(type, h);
  }
}
function raceSettings(o = {}) {
  const c = { delay: o.delay ?? RACE.delay, minDelay: o.minDelay ?? RACE.minDelay, maxInFlight: o.maxInFlight ?? RACE.maxInFlight };
  const ms = (x) => typeof x === "number" && Number.isFinite(x);
  if (!ms(c.minDelay) || !ms(c.delay) || !(c.minDelay > 0 && c.delay >= c.minDelay)) {
    throw new Error(`race.delay: delay ${c.delay} ms with minDelay ${c.minDelay} ms cannot work; use 0 < minDelay <= delay, e.g. 500 and 750`);
  }
  if (!Number.isInteger(c.maxInFlight) || c.maxInFlight < 1 || c.maxInFlight > 8) {
    throw new Error(`race.maxInFlight: ${c.maxInFlight} is not a whole number from 1 to 8; use 3 (or 1 to turn racing off)`);
  }
  return c;
}
class SendError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
    this.name = "SendError";
  }
}
const systemClock = {
  now: () => performance.now(),
  wall: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h)
};
function defaultStorage() {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null;
  }
}
class TetherClient extends Emitter {
  constructor(url, opts = {}) {
    super();
    this.freshToken = false;
    this.tokenCall = 0;
    this.tokenPending = false;
    this.tokenRetried = false;
    this.carrier = null;
    this.preferHttp = false;
    this.wsOpened = false;
    this.attemptHttp = false;
    this.upgradeAt = null;
    this.upgradeProbe = null;
    this.session = null;
    this.resumableUntil = null;
    this.out = new Outbound();
    this.inb = new Inbound();
    this.backoff = new Backoff();
    this.retryNotBefore = null;
    this.offlineUntil = 0;
    this.nextTid = 0;
    this.ws = null;
    this.racers = new Racers();
    this.pingPayload = new Uint8Array(0);
    this.peerMaxFrame = MIN_MAX_FRAME;
    this.lastRtt = null;
    this.pacingRtt = null;
    this.serverSlow = false;
    this.lastEnd = null;
    this.queue = [];
    this.timer = null;
    this.busy = false;
    this.dirtyCore = false;
    this.dirtyOut = false;
    this.unlisten = null;
    this.url = url;
    this.t = PROFILES[opts.profile ?? "default"];
    this.raceCfg = raceSettings(opts.race ?? {});
    this.auth = utf8Encoder.encode(opts.token ?? "");
    if (this.auth.length > MAX_AUTH_LEN)
      throw new Error("token is longer than 4096 bytes");
    this.getToken = opts.getToken ?? null;
    this.storage = opts.storage === void 0 ? defaultStorage() : opts.storage;
    this.key = opts.storageKey ?? `tether:${url}`;
    const kinds = opts.transports ?? ["websocket", "http"];
    if (kinds.length === 0 || kinds.some((k) => k !== "websocket" && k !== "http")) {
      throw new Error(`transports: ${JSON.stringify(kinds)}; use one or both of "websocket" and "http"`);
    }
    const WS = opts.WebSocketImpl ?? globalThis.WebSocket ?? null;
    this.WS = kinds.includes("websocket") ? WS : null;
    const canFetch = typeof globalThis.fetch === "function";
    this.Http = kinds.includes("http") ? opts.HttpImpl ?? (canFetch ? HttpSocket : null) : null;
    if (!this.WS && !this.Http) {
      throw new Error("no transport: this runtime has neither WebSocket nor fetch; pass opts.WebSocketImpl (e.g. the ws package)");
    }
    this.preferHttp = !this.WS;
    this.upgradeEvery = opts.upgradeCheck ?? 3e4;
    this.leaveMs = Math.max(0, Math.min(opts.leaveGrace ?? 1e4, 4294967295));
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    const now = this.clock.now();
    this.hb = new Heartbeat(this.t, now, Math.floor(this.random() * 2 ** 32) >>> 0);
    this.link = { k: "waiting", until: now };
    this.restore(now);
    this.reported = this.computeState();
    this.listenToPage();
    this.arm();
  }
  // ───── public API ─────
  get state() {
    return this.reported;
  }
  /** The session id (32 hex digits), or null before the first WELCOME. */
  get sessionId() {
    return this.session ? toHex(this.session.id) : null;
  }
  /** The kind of transport carrying the session (or that last did), null before the first. */
  get transport() {
    return this.carrier;
  }
  /** The last round-trip time measured by PING/PONG, in ms. */
  get rtt() {
    return this.lastRtt;
  }
  /** Unacknowledged outgoing messages and their payload bytes. */
  get buffered() {
    return { messages: this.out.buf.length, bytes: this.out.bytes };
  }
  /** Queues a message: written at once if connected, else on the next transport, replayed until acknowledged. */
  send(data) {
    if (this.link.k === "closed")
      throw new SendError("closed", "the session has ended; create a new client");
    const payload = typeof data === "string" ? utf8Encoder.encode(data) : data.slice();
    const max = this.peerMaxFrame - 9;
    if (payload.length > max)
      throw new SendError("too-large", `message of ${payload.length} bytes exceeds the ${max}-byte limit`);
    const seq = this.out.push(payload);
    if (seq === null) {
      throw new SendError("buffer-full", `${this.out.buf.length} messages (${this.out.bytes} bytes) wait for acknowledgement; retry later`);
    }
    this.dirtyOut = true;
    this.input((now) => this.flush(now));
    return Number(seq);
  }
  /** Ends the session deliberately (CLOSE 3000 or a 4xxx code) and stops for good. */
  close(code = CloseCode.Normal, reason = "") {
    this.input((now) => {
      if (this.link.k === "closed")
        return;
      const c = code >= 3e3 && isAssignedCloseCode(code) ? code : CloseCode.Normal;
      if (this.link.k !== "established")
        this.dropTransport();
      this.endSession(now, "local-close", reason, c, true, false);
    });
  }
  /**
   * Starts again after the session ended for good (`close()`, `disconnect()`, a kick or a
   * refusal): a fresh session, the backoff reset. Does nothing while the client is running.
   */
  connect() {
    this.input((now) => {
      if (this.link.k !== "closed")
        return;
      this.backoff.reset();
      this.retryNotBefore = null;
      this.serverSlow = false;
      this.freshToken = this.tokenRetried = false;
      this.offlineUntil = 0;
      this.link = { k: "waiting", until: now };
      if (!this.unlisten)
        this.listenToPage();
    });
  }
  /** Ends the session (as `close()`); `connect()` opens a fresh one later. */
  disconnect(reason = "") {
    this.close(CloseCode.Normal, reason);
  }
  /**
   * The page is going away (called on `pagehide`, unless the page is kept in the back-forward cache):
   * the server keeps the session `leaveGrace` ms only (CLOSE 1001, §6.2), enough for a reload to
   * resume it. The session is kept here too, for that reload.
   */
  leaving() {
    this.input((now) => {
      if (this.link.k !== "established" || !this.session || this.leaveMs === 0)
        return;
      this.sendFrame({ type: "close", code: CloseCode.GoingAway, retryAfterMs: this.leaveMs, reason: "the page is going away" });
      this.dropTransport();
      this.resumableUntil = now + this.leaveMs;
      this.link = { k: "waiting", until: now + Math.min(this.leaveMs, 1e3) };
      this.dirtyCore = true;
    });
  }
  /** probe_now (§8.7): probe a live link at once (dropped if unanswered), or retry at once while waiting. */
  probe() {
    this.input((now) => this.networkChange(now));
  }
  /** Demo aid: drop the WebSocket without a CLOSE, and fail every attempt for `ms` (as a browser that went offline). */
  simulateOffline(ms) {
    this.input((now) => {
      if (this.link.k === "closed")
        return;
      this.offlineUntil = now + ms;
      if (this.link.k !== "waiting")
        this.lose(now, "offline", "simulated offline", false);
      this.clock.setTimeout(() => this.probe(), ms);
    });
  }
  // ───── drive loop ─────
  /** Runs one input, then persists, reports and re-arms the timer (the drive contract, §1.1). */
  input(fn) {
    if (this.busy) {
      fn(this.clock.now());
      return;
    }
    this.busy = true;
    try {
      fn(this.clock.now());
      const state = this.computeState();
      if (state !== this.reported) {
        this.emit("state", { state, previous: this.reported });
        this.reported = state;
      }
      this.persist();
    } finally {
      this.busy = false;
    }
    while (this.queue.length)
      this.dispatchEvent(this.queue.shift());
    this.arm();
  }
  emit(type, detail) {
    this.queue.push(new TetherEvent(type, detail));
  }
  arm() {
    if (this.timer !== null)
      this.clock.clearTimeout(this.timer);
    this.timer = null;
    const at = this.pollTimeout();
    if (at === null)
      return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.input((now) => this.onTimeout(now));
    }, Math.max(0, at - this.clock.now()));
  }
  pollTimeout() {
    const l = this.link;
    let at = l.k === "waiting" ? l.until : l.k === "connecting" ? Math.min(l.deadline, this.racers.deadline(this.t.handshakeTimeout) ?? Infinity) : l.k === "handshaking" ? l.deadline : l.k === "established" ? Math.min(this.hb.deadline(), this.inb.ackDue ?? Infinity, this.upgradeAt ?? Infinity) : null;
    if (this.resumableUntil !== null && l.k !== "established")
      at = at === null ? this.resumableUntil : Math.min(at, this.resumableUntil);
    return at;
  }
  computeState() {
    if (this.link.k === "closed")
      return "closed";
    if (this.link.k === "established")
      return "connected";
    if (this.session)
      return "reconnecting";
    return this.lastEnd === "expired" ? "expired" : "connecting";
  }
  // ───── inputs ─────
  onTimeout(now) {
    if (this.resumableUntil !== null && this.link.k !== "established" && now >= this.resumableUntil) {
      this.dropTransport();
      this.link = { k: "waiting", until: now };
      this.endSession(now, "expired", "no resume succeeded within the grace period", null, false, true);
    }
    const l = this.link;
    if (l.k === "waiting" && now >= l.until)
      this.startAttempt(now);
    else if (l.k === "connecting")
      this.race(now, l.deadline);
    else if (l.k === "handshaking" && now >= l.deadline) {
      this.serverSlow = true;
      this.lose(now, "handshake-timeout", "no WELCOME within the handshake timeout", false);
    } else if (l.k === "established") {
      if (this.upgradeAt !== null && now >= this.upgradeAt)
        this.tryUpgrade(now);
      const a = this.hb.poll(now);
      if (a && "ping" in a)
        this.sendPing(a.ping);
      else if (a) {
        const network = a.dead === "network";
        this.lose(now, network ? "network-changed" : "heartbeat-timeout", `nothing heard for ${Math.round(now - this.hb.lastHeard)} ms`, network);
      }
      this.flush(now);
    }
  }
  startAttempt(now) {
    if (this.getToken && !this.session && !this.freshToken) {
      this.link = { k: "waiting", until: now + this.t.handshakeTimeout };
      if (!this.tokenPending)
        this.fetchToken();
      return;
    }
    this.link = { k: "connecting", started: now, deadline: now + this.t.handshakeTimeout };
    this.attemptHttp = false;
    this.openRacer(now, this.preferHttp && this.Http ? "http" : this.WS ? "websocket" : "http");
  }
  /** Asks the application's `getToken` for a credential; the attempt starts when it answers. */
  fetchToken() {
    const call = ++this.tokenCall;
    this.tokenPending = true;
    const failed = (message) => this.input((now) => {
      if (call !== this.tokenCall || this.link.k === "closed")
        return;
      this.tokenPending = false;
      this.emit("attemptfailed", { reason: "token", message });
      this.schedule(now, false);
    });
    let answer;
    try {
      answer = Promise.resolve(this.getToken());
    } catch (e) {
      failed(`getToken() threw: ${String(e)}`);
      return;
    }
    answer.then((token) => {
      if (typeof token !== "string")
        return failed(`getToken() gave ${typeof token}, not a string`);
      const auth = utf8Encoder.encode(token);
      if (auth.length > MAX_AUTH_LEN)
        return failed("getToken() gave a token longer than 4096 bytes");
      this.input((now) => {
        if (call !== this.tokenCall || this.link.k === "closed")
          return;
        this.tokenPending = false;
        this.auth = auth;
        this.freshToken = true;
        if (this.link.k === "waiting" && !this.session)
          this.startAttempt(now);
      });
    }, (e) => failed(`getToken() failed: ${String(e)}`));
  }
  /** Opens one more connection for the current attempt (§9.7). Every handler checks `tid`: a loser's late events do nothing. */
  openRacer(now, kind) {
    const tid = ++this.nextTid;
    const c = this.raceCfg;
    const racer = { tid, started: now, ws: null, kind };
    if (kind === "http")
      this.attemptHttp = true;
    this.racers.start(racer, c.maxInFlight > 1 && !this.serverSlow ? raceWait(c, this.pacingRtt) : null);
    const fail = () => this.clock.setTimeout(() => this.input((n) => this.transportClosed(n, tid)), 0);
    if (now < this.offlineUntil) {
      fail();
      return;
    }
    let ws;
    try {
      if (kind === "http" && this.Http)
        ws = new this.Http(this.url);
      else if (this.WS)
        ws = new this.WS(this.url, SUBPROTOCOL);
      else {
        fail();
        return;
      }
    } catch {
      fail();
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this.input((n) => this.connected(n, tid));
    ws.onmessage = (e) => this.input((n) => this.received(n, tid, e.data));
    const gone = () => this.input((n) => this.transportClosed(n, tid));
    ws.onclose = gone;
    ws.onerror = gone;
    racer.ws = ws;
  }
  /**
   * Time passed while connecting (§9.7): WebSockets opening for longer than the handshake timeout are
   * closed, another is raced when one is due, and the attempt fails at its deadline — except that a
   * resumable session keeps racing (a silent outage must not leave it waiting on SYN retransmissions
   * or backoff when the path returns), reporting each budget that passed without an answer.
   * A browser cannot tell when a WebSocket's TCP connection is up (Rust's `handle_reachable`), so
   * racing goes on until one opens, and "reached the server" means opened: a hung attempt here
   * never reached it. After the server shed an attempt (`serverSlow`, until a WELCOME) nothing is
   * raced, so the attempt fails at its deadline even for a resumable session.
   */
  race(now, deadline) {
    const hto = this.t.handshakeTimeout;
    for (const r of this.racers.expired(now, hto))
      dropSocket(r.ws);
    if (now >= deadline) {
      const message = "no WebSocket opened within the handshake timeout";
      if (!(this.racers.racing() && this.resumableUntil !== null))
        return this.lose(now, "handshake-timeout", message, false);
      this.emit("attemptfailed", { reason: "handshake-timeout", message });
      this.link = { k: "connecting", started: now, deadline: now + hto };
    }
    if (this.racers.due(now) || this.racers.list.length === 0) {
      const oldest = this.racers.makeRoom(this.raceCfg.maxInFlight);
      if (oldest)
        dropSocket(oldest.ws);
      const last = this.racers.list[this.racers.list.length - 1]?.kind ?? (this.preferHttp ? "http" : "websocket");
      const http = this.Http && (last === "http" || !this.WS || !this.wsOpened && !this.attemptHttp);
      this.openRacer(now, http ? "http" : "websocket");
    }
  }
  /** The open WebSocket carrying (or handshaking for) the session. */
  currentTid() {
    return "tid" in this.link ? this.link.tid : null;
  }
  /** A WebSocket of the attempt opened: the first wins, the others are closed, HELLO goes out on it. */
  connected(now, tid) {
    const won = this.racers.get(tid);
    if (this.link.k !== "connecting" || !won)
      return;
    for (const r of this.racers.takeAll())
      if (r !== won)
        dropSocket(r.ws);
    this.ws = won.ws;
    this.carrier = won.kind;
    if (won.kind === "websocket")
      this.wsOpened = true;
    if (this.ws && this.ws.protocol !== SUBPROTOCOL) {
      this.lose(now, "protocol-error", `the server did not agree to ${SUBPROTOCOL} (got "${this.ws.protocol}")`, false);
      return;
    }
    const s = this.session;
    this.sendFrame({
      type: "hello",
      minVersion: VERSION,
      maxVersion: VERSION,
      maxFrame: DEFAULT_MAX_FRAME,
      idleTimeoutMs: this.t.interval + (this.t.probes + 1) * this.t.probeTimeout,
      // dead_after + one probe's flight (§8.4)
      resume: s ? { sessionId: s.id, token: s.token, lastReceived: this.inb.delivered } : null,
      auth: this.auth
    });
    this.link = { k: "handshaking", tid, started: won.started, deadline: won.started + this.t.handshakeTimeout, helloAt: now };
  }
  transportClosed(now, tid) {
    const r = this.racers.get(tid);
    if (r && r.kind === "websocket" && this.link.k === "connecting" && this.Http && !this.attemptHttp) {
      this.racers.remove(tid);
      dropSocket(r.ws);
      this.openRacer(now, "http");
      return;
    }
    if (this.currentTid() === tid || this.racers.get(tid)) {
      if (this.link.k === "handshaking")
        this.serverSlow = true;
      this.lose(now, "closed", "the connection closed or failed", false);
    }
  }
  received(now, tid, data) {
    if (this.currentTid() !== tid)
      return;
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data instanceof Uint8Array ? data : null;
    if (!bytes)
      return this.protocolError(now, CloseCode.ProtocolError, "a text WebSocket message");
    let f;
    try {
      f = decodeFrame(bytes, DEFAULT_MAX_FRAME);
    } catch (e) {
      if (!(e instanceof DecodeError))
        throw e;
      return this.protocolError(now, e.closeCode, e.message);
    }
    if (this.link.k === "handshaking")
      this.onHandshakeFrame(now, tid, f);
    else if (this.link.k === "established")
      this.onEstablishedFrame(now, f);
    this.flush(now);
  }
  /** §8.7: called on online/offline/visibility/pageshow and by `probe()`. */
  networkChange(now) {
    const l = this.link;
    const soon = Math.max(now, this.retryNotBefore ?? now);
    if (l.k === "established") {
      this.sendPing(this.hb.probeNow(now));
    } else if (l.k === "waiting" || (l.k === "connecting" || l.k === "handshaking") && now - l.started >= this.t.probeTimeout) {
      this.dropTransport();
      this.backoff.reset();
      this.link = { k: "waiting", until: soon };
      this.emit("reconnecting", { attempt: 0, delay: soon - now });
    }
  }
  // ───── handshake (§5) ─────
  onHandshakeFrame(now, tid, f) {
    if (f.type === "welcome")
      return this.onWelcome(now, tid, f);
    if (f.type === "close")
      return this.onClose(now, f);
    if (f.type !== "reject")
      return this.protocolError(now, CloseCode.ProtocolError, `frame ${f.type} before WELCOME`);
    this.dropTransport();
    if (f.retryAfterMs > 0)
      this.retryNotBefore = now + f.retryAfterMs;
    const r = f.reason;
    const gone = r === RejectReason.UnknownSession || r === RejectReason.InvalidToken || r === RejectReason.TokenReused;
    const transient = r === RejectReason.Overloaded || r === RejectReason.ShuttingDown;
    if (transient)
      this.serverSlow = true;
    if (this.session && (gone || r === RejectReason.BadHello)) {
      this.link = { k: "waiting", until: now };
      this.endSession(now, r === RejectReason.UnknownSession ? "expired" : "refused", f.message, r, false, true);
    } else if (transient || gone) {
      this.lose(now, "rejected", `REJECT ${r}: ${f.message}`, false);
    } else if (r === RejectReason.Unauthorized && this.getToken && this.freshToken && !this.tokenRetried) {
      this.tokenRetried = true;
      this.freshToken = false;
      this.lose(now, "rejected", `REJECT ${r}: ${f.message}`, false);
    } else {
      this.link = { k: "waiting", until: now };
      this.endSession(now, "refused", f.message, r, false, false);
    }
  }
  onWelcome(now, tid, w) {
    if (this.link.k === "handshaking")
      this.pacingRtt = now - this.link.helloAt;
    if (w.version !== VERSION)
      return this.protocolError(now, CloseCode.ProtocolError, `WELCOME chose version ${w.version}`);
    const needed = this.t.interval + (this.t.probes + 1) * this.t.probeTimeout;
    if (w.idleTimeoutMs < needed) {
      const msg = `the server drops a silent transport after ${w.idleTimeoutMs} ms but this client needs ${needed} ms: raise the server's idle timeout or shorten the client's interval / probe cycle`;
      this.sendFrame({ type: "close", code: CloseCode.Normal, retryAfterMs: 0, reason: clipReason(msg) });
      this.dropTransport();
      this.link = { k: "waiting", until: now };
      return this.endSession(now, "incompatible", msg, null, false, false);
    }
    this.peerMaxFrame = Math.min(w.maxFrame, MAX_MAX_FRAME);
    const beyondFrameLimit = () => {
      if (this.out.longest() <= this.peerMaxFrame - 9)
        return false;
      const msg = `a ${this.out.longest()}-byte message waits for the server but its max_frame ${this.peerMaxFrame} allows ${this.peerMaxFrame - 9}`;
      this.sendFrame({ type: "close", code: CloseCode.FrameLimit, retryAfterMs: 0, reason: clipReason(msg) });
      this.dropTransport();
      this.link = { k: "waiting", until: now };
      this.endSession(now, "incompatible", msg, null, false, true);
      return true;
    };
    const resuming = this.session;
    if (w.resumed) {
      if (!resuming || toHex(resuming.id) !== toHex(w.sessionId)) {
        return this.protocolError(now, CloseCode.ProtocolError, "WELCOME resumed a session that was not asked for");
      }
      const before = this.out.lastAssigned();
      const ackedBefore = this.out.acked;
      const err = this.out.rewind(w.lastReceived);
      if (err) {
        this.link = { k: "established", tid, since: now };
        return this.endSession(now, "sequence-violation", err, CloseCode.SequenceViolation, true, true);
      }
      if (beyondFrameLimit())
        return;
      Object.assign(resuming, { token: w.token, idleMs: w.idleTimeoutMs, graceMs: w.graceMs });
      this.noteAcked(ackedBefore);
      this.emit("resumed", { session: toHex(w.sessionId), replayed: Number(before - w.lastReceived), transport: this.carrier ?? "websocket" });
    } else {
      if (resuming)
        this.endSession(now, "expired", "the server opened a new session instead of resuming", null, false, true);
      this.out.rewind(0n);
      if (beyondFrameLimit())
        return;
      this.inb.reset();
      this.session = { id: w.sessionId, token: w.token, idleMs: w.idleTimeoutMs, graceMs: w.graceMs };
      this.freshToken = this.tokenRetried = false;
      this.emit("connected", { session: toHex(w.sessionId), transport: this.carrier ?? "websocket" });
    }
    this.inb.ackSent();
    this.link = { k: "established", tid, since: now };
    this.preferHttp = this.carrier === "http";
    this.upgradeAt = this.carrier === "http" && this.WS ? now + this.upgradeEvery : null;
    this.hb.reset(now);
    this.resumableUntil = null;
    this.retryNotBefore = null;
    this.serverSlow = false;
    this.lastEnd = null;
    this.dirtyCore = this.dirtyOut = true;
  }
  // ───── established ─────
  onEstablishedFrame(now, f) {
    if (f.type === "pong") {
      const rtt = this.hb.rttFor(now, f.nonce);
      if (rtt !== null)
        this.onRtt(rtt);
    }
    this.hb.onHeard(now);
    let ack = null;
    switch (f.type) {
      case "data": {
        const v = this.inb.onData(now, f.seq);
        if (v === "gap") {
          const msg = `gap: expected seq ${this.inb.delivered + 1n}, got ${f.seq}`;
          return this.endSession(now, "sequence-violation", msg, CloseCode.SequenceViolation, true, true);
        }
        if (v === "deliver") {
          this.dirtyCore = true;
          const data = f.payload;
          this.emit("message", { data, seq: Number(f.seq), text: () => utf8Lossy.decode(data) });
        }
        break;
      }
      case "ack":
        ack = f.ack;
        break;
      case "ping": {
        const acked2 = this.out.acked;
        const err2 = this.out.onAck(f.ack);
        if (err2)
          return this.endSession(now, "sequence-violation", err2, CloseCode.SequenceViolation, true, true);
        this.dirtyOut = true;
        this.noteAcked(acked2);
        this.sendFrame({ type: "pong", nonce: f.nonce, ack: this.inb.ackSent(), payload: new Uint8Array(0) });
        break;
      }
      case "pong":
        ack = f.ack;
        break;
      case "close":
        return this.onClose(now, f);
      default:
        return this.protocolError(now, CloseCode.ProtocolError, `frame ${f.type} after WELCOME`);
    }
    if (ack === null)
      return;
    const before = this.out.buf.length;
    const acked = this.out.acked;
    const err = this.out.onAck(ack);
    if (err)
      return this.endSession(now, "sequence-violation", err, CloseCode.SequenceViolation, true, true);
    if (this.out.buf.length !== before)
      this.dirtyOut = true;
    this.noteAcked(acked);
  }
  /** Reports an ack that moved past `before`. */
  noteAcked(before) {
    if (this.out.acked > before)
      this.emit("acked", { seq: Number(this.out.acked) });
  }
  onRtt(ms) {
    this.pacingRtt = ms;
    this.lastRtt = Math.round(ms * 10) / 10;
    this.pingPayload = utf8Encoder.encode(JSON.stringify({ rtt_ms: this.lastRtt }));
    this.emit("rtt", { ms: this.lastRtt });
  }
  onClose(now, c) {
    this.dropTransport();
    if (c.retryAfterMs > 0)
      this.retryNotBefore = now + c.retryAfterMs;
    if (c.code < 3e3)
      return this.lose(now, "peer-closed", `${c.code}: ${c.reason}`, c.code === CloseCode.Resync);
    const restart = c.code === 3001 || c.code === 3002 || c.code === 3003 || c.code === 3005;
    this.link = { k: "waiting", until: now };
    this.endSession(now, c.code === 3002 ? "expired" : "peer-closed", c.reason, c.code, false, restart);
  }
  protocolError(now, code, text) {
    this.sendFrame({ type: "close", code, retryAfterMs: 0, reason: clipReason(text) });
    this.dropTransport();
    this.loseNoClose(now, "protocol-error", text, false);
  }
  sendPing(nonce) {
    this.sendFrame({ type: "ping", nonce, ack: this.inb.ackSent(), payload: this.pingPayload });
  }
  /** Writes everything owed on an established transport: new DATA, then an ACK if one is due. */
  flush(now) {
    if (this.link.k !== "established")
      return;
    for (let e = this.out.nextToWrite(); e; e = this.out.nextToWrite())
      this.sendFrame({ type: "data", seq: e.seq, payload: e.payload });
    if (this.inb.ackDue !== null && this.inb.ackDue <= now)
      this.sendFrame({ type: "ack", ack: this.inb.ackSent() });
  }
  // ───── losing transports and ending sessions ─────
  lose(now, reason, message, immediate) {
    this.dropTransport();
    this.loseNoClose(now, reason, message, immediate);
  }
  loseNoClose(now, reason, message, immediate) {
    const l = this.link;
    if (l.k === "closed")
      return;
    if (l.k === "established") {
      if (now - l.since >= BACKOFF.stableAfter)
        this.backoff.reset();
      if (this.session)
        this.resumableUntil = this.hb.lastHeard + this.expiryAfter(this.session);
      this.emit("disconnected", { reason, message });
    } else if (l.k !== "waiting") {
      this.emit("attemptfailed", { reason, message });
    }
    this.schedule(now, immediate);
  }
  /** last heard + dead_after + (idle if idle > grace) + grace: never before the server gives up (§10.2). */
  expiryAfter(s) {
    const cycle = this.t.interval + this.t.probes * this.t.probeTimeout;
    return cycle + (s.idleMs > s.graceMs ? s.idleMs : 0) + s.graceMs;
  }
  schedule(now, immediate) {
    const retryAfter = this.retryNotBefore === null ? null : Math.max(0, this.retryNotBefore - now);
    const attempt = this.backoff.attempt;
    const delay = immediate && retryAfter === null ? 0 : this.backoff.next(now, this.random, this.resumableUntil, this.t.handshakeTimeout, retryAfter);
    this.emit("reconnecting", { attempt, delay });
    this.link = { k: "waiting", until: now + delay };
  }
  /** Ends the session: tells the server (if connected and `sendClose`), hands back the unacked, restarts or stops. */
  endSession(now, reason, message, code, sendClose, restart) {
    if (sendClose && this.link.k === "established") {
      this.sendFrame({ type: "close", code: code ?? CloseCode.Normal, retryAfterMs: 0, reason: clipReason(message) });
      this.dropTransport();
    }
    const session = this.sessionId;
    this.session = null;
    const unacked = this.out.takeUnacked();
    this.inb.reset();
    this.resumableUntil = null;
    this.lastEnd = reason;
    this.dirtyCore = this.dirtyOut = true;
    this.emit("ended", { session, reason, code, message, unacked, restarting: restart });
    if (restart) {
      this.backoff.reset();
      this.schedule(now, false);
    } else {
      this.dropTransport();
      this.link = { k: "closed" };
      this.unlisten?.();
    }
  }
  // ───── transport I/O ─────
  sendFrame(f) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1)
      return;
    try {
      ws.send(encodeFrame(f));
    } catch {
    }
  }
  /**
   * On the fallback: tries a WebSocket beside it. One that opens means WebSockets get through now: it
   * is closed, and the session moves to a new WebSocket at once (a resume; nothing is lost).
   */
  tryUpgrade(now) {
    this.upgradeAt = now + this.upgradeEvery;
    if (!this.WS || this.upgradeProbe)
      return;
    let probe;
    try {
      probe = new this.WS(this.url, SUBPROTOCOL);
    } catch {
      return;
    }
    this.upgradeProbe = probe;
    const done = (opened) => this.input((n) => {
      if (this.upgradeProbe !== probe)
        return;
      this.upgradeProbe = null;
      dropSocket(probe);
      if (!opened || this.link.k !== "established" || this.carrier !== "http")
        return;
      this.preferHttp = false;
      this.lose(n, "upgrade", "a WebSocket opened: the session moves there from the HTTP fallback", true);
    });
    probe.onopen = () => done(true);
    probe.onclose = probe.onerror = () => done(false);
  }
  /** Abandons the current connection and any still opening, at once: nothing they still carry is read again (§2.3, §7.6). */
  dropTransport() {
    dropSocket(this.ws);
    this.ws = null;
    this.upgradeAt = null;
    if (this.upgradeProbe)
      dropSocket(this.upgradeProbe);
    this.upgradeProbe = null;
    for (const r of this.racers.takeAll())
      dropSocket(r.ws);
  }
  // ───── page life cycle and persistence ─────
  listenToPage() {
    const g = globalThis;
    if (typeof g.addEventListener !== "function" || typeof g.document === "undefined")
      return;
    const change = () => this.probe();
    const visible = () => {
      if (g.document.visibilityState === "visible")
        change();
    };
    const shown = (e) => {
      if (e.persisted)
        change();
    };
    const hide = (e) => {
      if (!e.persisted)
        this.leaving();
      this.dirtyCore = true;
      this.persist();
    };
    g.addEventListener("online", change);
    g.addEventListener("offline", change);
    g.document.addEventListener("visibilitychange", visible);
    g.addEventListener("pageshow", shown);
    g.addEventListener("pagehide", hide);
    this.unlisten = () => {
      g.removeEventListener("online", change);
      g.removeEventListener("offline", change);
      g.document.removeEventListener("visibilitychange", visible);
      g.removeEventListener("pageshow", shown);
      g.removeEventListener("pagehide", hide);
      this.unlisten = null;
    };
  }
  /**
   * Two keys: `<key>` holds the session (id, token, last_received, the local expiry as a wall-clock
   * deadline), `<key>:out` our unacknowledged messages, so a reload resumes without a gap either way.
   */
  persist() {
    const st = this.storage;
    if (!st || !this.dirtyCore && !this.dirtyOut)
      return;
    try {
      const s = this.session;
      if (!s) {
        st.removeItem(this.key);
        st.removeItem(`${this.key}:out`);
      } else {
        if (this.dirtyCore) {
          const now = this.clock.now();
          const until = this.resumableUntil ?? this.hb.lastHeard + this.expiryAfter(s);
          st.setItem(this.key, JSON.stringify({
            v: 1,
            id: toHex(s.id),
            token: toHex(s.token),
            idle: s.idleMs,
            grace: s.graceMs,
            recv: this.inb.delivered.toString(),
            expires: this.clock.wall() + (until - now)
          }));
        }
        if (this.dirtyOut) {
          const o = this.out;
          st.setItem(`${this.key}:out`, JSON.stringify({
            next: o.nextSeq.toString(),
            acked: o.acked.toString(),
            buf: o.buf.map((e) => [e.seq.toString(), toBase64(e.payload)])
          }));
        }
      }
    } catch {
    }
    this.dirtyCore = this.dirtyOut = false;
  }
  restore(now) {
    if (!this.storage)
      return;
    try {
      const raw = this.storage.getItem(this.key);
      if (!raw)
        return;
      const c = JSON.parse(raw);
      const id = fromHex(c.id);
      const token = fromHex(c.token);
      if (c.v !== 1 || id.length !== 16 || token.length !== 32)
        throw new Error("bad stored session");
      const o = JSON.parse(this.storage.getItem(`${this.key}:out`) ?? '{"next":"1","acked":"0","buf":[]}');
      const out = new Outbound();
      out.nextSeq = BigInt(o.next);
      out.acked = out.written = BigInt(o.acked);
      out.buf = o.buf.map(([seq, b64]) => ({ seq: BigInt(seq), payload: fromBase64(b64) }));
      out.bytes = out.buf.reduce((n, e) => n + e.payload.length, 0);
      this.out = out;
      this.inb.delivered = this.inb.acked = BigInt(c.recv);
      this.session = { id, token, idleMs: Number(c.idle), graceMs: Number(c.grace) };
      this.resumableUntil = now + (Number(c.expires) - this.clock.wall());
    } catch {
      this.session = null;
      this.out = new Outbound();
      this.inb.reset();
      this.storage.removeItem(this.key);
      this.storage.removeItem(`${this.key}:out`);
    }
  }
}
const HTTP_BATCH = 256 * 1024;
class HttpSocket {
  constructor(url, fetchImpl = (i, o) => fetch(i, o)) {
    this.fetchImpl = fetchImpl;
    this.readyState = 0;
    this.protocol = SUBPROTOCOL;
    this.binaryType = "arraybuffer";
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this.abort = new AbortController();
    this.queue = [];
    this.posting = false;
    this.target = new URL(url);
    this.target.protocol = this.target.protocol === "wss:" ? "https:" : "http:";
    const id = new Uint8Array(16);
    globalThis.crypto.getRandomValues(id);
    this.target.searchParams.set("id", toHex(id));
    void this.stream();
  }
  request(role, body) {
    const u = new URL(this.target);
    u.searchParams.set("tether", role);
    return this.fetchImpl(u.toString(), {
      method: "POST",
      body,
      headers: { "content-type": "text/plain" },
      signal: this.abort.signal,
      cache: "no-store"
    });
  }
  async stream() {
    try {
      const res = await this.request("stream", new Uint8Array(0));
      if (res.status !== 200 || !res.body)
        throw new Error(`the fallback stream was answered ${res.status}`);
      if (this.readyState !== 0)
        return;
      this.readyState = 1;
      this.onopen?.(new Event("open"));
      const reader = res.body.getReader();
      let buf = new Uint8Array(0);
      for (; ; ) {
        const { value, done } = await reader.read();
        if (done || this.readyState !== 1)
          break;
        buf = concatBytes([buf, value]);
        while (buf.length >= 4) {
          const len = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0);
          if (buf.length < 4 + len)
            break;
          const frame = buf.slice(4, 4 + len);
          buf = buf.slice(4 + len);
          if (this.readyState !== 1)
            return;
          this.onmessage?.({ data: frame.buffer });
        }
      }
    } catch {
    }
    this.gone();
  }
  send(data) {
    if (this.readyState !== 1)
      throw new Error("the fallback transport is not open");
    const f = new Uint8Array(4 + data.length);
    new DataView(f.buffer).setUint32(0, data.length);
    f.set(data, 4);
    this.queue.push(f);
    void this.pump();
  }
  async pump() {
    if (this.posting || this.queue.length === 0 || this.readyState !== 1)
      return;
    this.posting = true;
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && (n === 0 || bytes + this.queue[n].length <= HTTP_BATCH))
      bytes += this.queue[n++].length;
    const body = concatBytes(this.queue.splice(0, n));
    try {
      const res = await this.request("send", body);
      if (res.status !== 204)
        throw new Error(`a fallback POST was answered ${res.status}`);
    } catch {
      this.posting = false;
      return this.gone();
    }
    this.posting = false;
    void this.pump();
  }
  close() {
    if (this.readyState >= 2)
      return;
    this.readyState = 3;
    this.abort.abort();
  }
  gone() {
    if (this.readyState >= 2)
      return;
    this.readyState = 3;
    this.abort.abort();
    this.onclose?.({ code: 1006 });
  }
}
function concatBytes(parts) {
  if (parts.length === 1)
    return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
function dropSocket(ws) {
  if (!ws)
    return;
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  try {
    ws.close();
  } catch {
  }
}
class RpcError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
    this.name = "RpcError";
  }
}
const ERROR_FIELDS = { room: "string", undelivered: "number", size: "number", limit: "number" };
function roomError(m) {
  const e = { op: m.op ?? "", code: m.code ?? "", message: m.message ?? "" };
  for (const [k, type] of Object.entries(ERROR_FIELDS)) {
    if (typeof m[k] === type)
      e[k] = m[k];
  }
  return e;
}
class RoomRequestError extends Error {
  constructor(detail) {
    super(detail.message);
    this.detail = detail;
    this.name = "RoomRequestError";
  }
}
class Rooms extends Emitter {
  constructor(client) {
    super();
    this.client = client;
    this.joinedRooms = /* @__PURE__ */ new Map();
    this.pending = [];
    this.waiting = [];
    this.calls = /* @__PURE__ */ new Map();
    this.nextId = 1;
    client.on("message", (m) => this.onMessage(m.text()));
    client.on("ended", (e) => this.onEnded(e));
  }
  /** Rooms this client has joined (they are joined again if the session is replaced). */
  get rooms() {
    return [...this.joinedRooms.keys()];
  }
  /**
   * Joins `room` (as `name`). Resolves with the gateway's `joined` answer, or rejects with its
   * `error` (a `RoomRequestError`). The membership outlives the session: a fresh session joins
   * again, and a join made while offline is answered once the message gets through.
   */
  join(room, name) {
    this.joinedRooms.set(room, name);
    return this.ask("join", room, name === void 0 ? { op: "join", room } : { op: "join", room, name });
  }
  /** Leaves `room`; resolves on the gateway's `left`, rejects with its `error`. */
  leave(room) {
    this.joinedRooms.delete(room);
    return this.ask("leave", room, { op: "leave", room });
  }
  ask(op, room, msg) {
    const p = new Promise((resolve, reject) => {
      this.waiting.push({ op, room, resolve, reject });
      try {
        this.op(msg);
      } catch (e) {
        this.waiting.pop();
        reject(e);
      }
    });
    p.catch(() => {
    });
    return p;
  }
  /** Settles the oldest request waiting for `op` (on `room`, when given). */
  answer(op, room, settle) {
    const i = this.waiting.findIndex((w) => w.op === op && (room === void 0 || w.room === room));
    if (i >= 0)
      settle(this.waiting.splice(i, 1)[0]);
  }
  /** Says `body` in `room`; the message's sequence number (`acked` reports when the gateway has it). */
  say(room, body) {
    return this.client.send(JSON.stringify({ op: "say", room, body }));
  }
  /** Asks for the member list; answers come back in request order, so a FIFO matches them. */
  members(room) {
    return new Promise((resolve, reject) => {
      this.pending.push({ room, resolve, reject });
      try {
        this.op({ op: "members", room });
      } catch (e) {
        this.pending.pop();
        reject(e);
      }
    });
  }
  /**
   * Asks the application's backend (the gateway's `rpc` hook): resolves with its `result`, or rejects
   * with an `RpcError` (its error, the gateway's, or `timeout` after `timeout` ms, 10 s by default).
   * Sent while offline, it goes out on the resume, like every message.
   */
  rpc(method, data, opts = {}) {
    const id = this.nextId++;
    const timeout = opts.timeout ?? 1e4;
    const p = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id);
        reject(new RpcError("timeout", `no reply to ${method} within ${timeout} ms`));
      }, timeout);
      this.calls.set(id, { resolve, reject, timer });
      try {
        this.op(data === void 0 ? { op: "rpc", id, method } : { op: "rpc", id, method, data });
      } catch (e) {
        clearTimeout(timer);
        this.calls.delete(id);
        reject(e);
      }
    });
    return p;
  }
  op(msg) {
    this.client.send(JSON.stringify(msg));
  }
  fire(type, detail) {
    this.dispatchEvent(new TetherEvent(type, detail));
  }
  onMessage(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return this.fire("error", { op: "", code: "not_json", message: "the gateway sent a message that is not JSON" });
    }
    switch (m.ev) {
      case "joined": {
        const members = m.members ?? [];
        const joined = { room: m.room, you: m.you, members, count: m.count ?? members.length };
        this.answer("join", m.room, (w) => w.resolve(joined));
        return this.fire("joined", joined);
      }
      case "left":
        this.joinedRooms.delete(m.room);
        this.answer("leave", m.room, (w) => w.resolve(void 0));
        return this.fire("left", { room: m.room });
      case "presence":
        return this.fire("presence", { room: m.room, member: m.member });
      case "message":
        return this.fire("roomMessage", { room: m.room, from: m.from, body: m.body });
      case "publish":
        return this.fire("publish", { room: m.room ?? null, body: m.body });
      case "reply": {
        const reply = { id: m.id };
        if ("result" in m)
          reply.result = m.result;
        if (m.error !== void 0)
          reply.error = { code: String(m.error.code ?? ""), message: String(m.error.message ?? "") };
        const call = this.calls.get(m.id);
        if (call) {
          this.calls.delete(m.id);
          clearTimeout(call.timer);
          if (reply.error)
            call.reject(new RpcError(reply.error.code, reply.error.message));
          else
            call.resolve(reply.result);
        }
        return this.fire("reply", reply);
      }
      case "members": {
        const members = m.members ?? [];
        const i = this.pending.findIndex((p) => p.room === m.room);
        if (i >= 0)
          this.pending.splice(i, 1)[0].resolve(members);
        return this.fire("members", { room: m.room, members, count: m.count ?? members.length });
      }
      case "error": {
        const e = roomError(m);
        if (e.op === "members")
          this.pending.shift()?.reject(new Error(e.message));
        if (e.op === "join" || e.op === "leave") {
          if (e.op === "join" && e.room !== void 0)
            this.joinedRooms.delete(e.room);
          this.answer(e.op, e.room, (w) => w.reject(new RoomRequestError(e)));
        }
        return this.fire("error", e);
      }
    }
  }
  /** Membership belongs to the session: a fresh session joins the same rooms again. */
  onEnded(e) {
    for (const [id, c] of this.calls) {
      clearTimeout(c.timer);
      this.calls.delete(id);
      c.reject(new RpcError("session_ended", `the session ended (${e.reason}) before the reply`));
    }
    const pending = this.pending;
    this.pending = [];
    for (const p of pending)
      p.reject(new Error(`the session ended (${e.reason})`));
    const waiting = this.waiting;
    this.waiting = [];
    if (!e.restarting) {
      for (const w of waiting)
        w.reject(new Error(`the session ended (${e.reason})`));
      return;
    }
    for (const w of waiting) {
      if (w.op === "leave")
        w.resolve(void 0);
      else
        this.waiting.push(w);
    }
    for (const [room, name] of this.joinedRooms)
      this.op(name === void 0 ? { op: "join", room } : { op: "join", room, name });
  }
}
