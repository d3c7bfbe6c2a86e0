// tether browser client: wire protocol v1 over WebSocket (docs/PROTOCOL.md),
// and the gateway's room protocol on top of it (docs/GATEWAY.md).
//
// The session machine mirrors crates/tether-proto/src/client/mod.rs: one session
// (id, resume token, both reliable streams) carried by a succession of
// WebSockets. Link states are named by what they wait for:
//   waiting (backoff) → connecting (WebSockets opening: another is raced
//   beside a slow one, §9.7) → handshaking (HELLO sent) → established → back
//   to waiting when the transport is lost.
// `closed` is terminal. Everything runs on one timer armed for the next
// deadline after each input, like the Rust runtime's drive loop (§1.1).

// ───────────────────────────── frames (§3, §4) ─────────────────────────────

export const VERSION = 1;
export const SUBPROTOCOL = 'tether.v1';
export const MIN_MAX_FRAME = 16384;
export const DEFAULT_MAX_FRAME = 1 << 20;
export const MAX_MAX_FRAME = 16 << 20;
export const MAX_AUTH_LEN = 4096;
export const MAX_PING_PAYLOAD = 1024;
export const MAX_REASON_LEN = 1024;
const MAGIC = [0x54, 0x54, 0x48, 0x52]; // "TTHR"

export const Kind = {
  HELLO: 0x01, WELCOME: 0x02, REJECT: 0x03, DATA: 0x10,
  ACK: 0x11, PING: 0x20, PONG: 0x21, CLOSE: 0x30,
} as const;

export const CloseCode = {
  TransportReplaced: 1000, GoingAway: 1001, HandshakeTimeout: 1002, Resync: 1003,
  ProtocolError: 2000, FrameTooLarge: 2001,
  Normal: 3000, ReplayOverflow: 3001, SessionExpired: 3002, SequenceViolation: 3003, Kicked: 3004,
  FrameLimit: 3005,
} as const;

export const RejectReason = {
  UnsupportedVersion: 1, UnknownSession: 2, InvalidToken: 3, TokenReused: 4,
  Overloaded: 5, ShuttingDown: 6, Unauthorized: 7, BadHello: 8,
} as const;

/** True for the close codes assigned in version 1 (§6.1). */
export function isAssignedCloseCode(c: number): boolean {
  return (c >= 1000 && c <= 1003) || c === 2000 || c === 2001 ||
    (c >= 3000 && c <= 3005) || (c >= 4000 && c <= 4999);
}

export interface Resume { sessionId: Uint8Array; token: Uint8Array; lastReceived: bigint }

/** One protocol frame. Sequence numbers and acks are u64, hence bigint. */
export type Frame =
  | { type: 'hello'; minVersion: number; maxVersion: number; maxFrame: number; idleTimeoutMs: number; resume: Resume | null; auth: Uint8Array }
  | { type: 'welcome'; version: number; resumed: boolean; sessionId: Uint8Array; token: Uint8Array; lastReceived: bigint; maxFrame: number; idleTimeoutMs: number; graceMs: number }
  | { type: 'reject'; reason: number; retryAfterMs: number; minVersion: number; maxVersion: number; message: string }
  | { type: 'data'; seq: bigint; payload: Uint8Array }
  | { type: 'ack'; ack: bigint }
  | { type: 'ping' | 'pong'; nonce: number; ack: bigint; payload: Uint8Array }
  | { type: 'close'; code: number; retryAfterMs: number; reason: string };

export type DecodeErrorKind = 'FrameTooLarge' | 'Empty' | 'UnknownType' | 'Truncated' | 'TrailingBytes' |
  'BadMagic' | 'ReservedBits' | 'TooLong' | 'InvalidUtf8' | 'InvalidValue';

/** Why bytes are not a valid frame; `closeCode` is what the receiver sends (§4.0). */
export class DecodeError extends Error {
  readonly kind: DecodeErrorKind;
  constructor(kind: DecodeErrorKind, detail: string) {
    super(`${kind}: ${detail}`);
    this.name = 'DecodeError';
    this.kind = kind;
  }
  get closeCode(): number { return this.kind === 'FrameTooLarge' ? 2001 : 2000; }
}

const utf8Encoder = new TextEncoder();
// ignoreBOM keeps a leading U+FEFF as text (as Rust's from_utf8 does), so decoding stays canonical.
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Lossy = new TextDecoder('utf-8', { ignoreBOM: true });

/** Reads the fields of one frame in layout order; every shortfall is `Truncated`. */
class Reader {
  private pos = 0;
  private readonly view: DataView;
  constructor(private readonly buf: Uint8Array, private readonly type: number) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  private take(n: number, field: string): number {
    if (this.buf.length - this.pos < n) throw new DecodeError('Truncated', `frame 0x${hex2(this.type)} truncated in field \`${field}\``);
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8(field: string): number { return this.view.getUint8(this.take(1, field)); }
  u16(field: string): number { return this.view.getUint16(this.take(2, field)); }
  u32(field: string): number { return this.view.getUint32(this.take(4, field)); }
  u64(field: string): bigint { return this.view.getBigUint64(this.take(8, field)); }
  bytes(n: number, field: string): Uint8Array { const at = this.take(n, field); return this.buf.slice(at, at + n); }
  /** A u16 length then the bytes; the limit is checked before the bytes are looked for. */
  prefixed(field: string, max: number): Uint8Array {
    const n = this.u16(field);
    if (n > max) throw new DecodeError('TooLong', `frame 0x${hex2(this.type)} field \`${field}\` is ${n} bytes, limit ${max}`);
    return this.bytes(n, field);
  }
  text(field: string): string {
    const raw = this.prefixed(field, MAX_REASON_LEN);
    try { return utf8Strict.decode(raw); } catch {
      throw new DecodeError('InvalidUtf8', `frame 0x${hex2(this.type)} field \`${field}\` is not valid UTF-8`);
    }
  }
  rest(): Uint8Array { const r = this.buf.slice(this.pos); this.pos = this.buf.length; return r; }
  finish(): void {
    const extra = this.buf.length - this.pos;
    if (extra > 0) throw new DecodeError('TrailingBytes', `frame 0x${hex2(this.type)} has ${extra} unexpected trailing bytes`);
  }
  invalid(field: string, reason: string): DecodeError {
    return new DecodeError('InvalidValue', `frame 0x${hex2(this.type)} field \`${field}\`: ${reason}`);
  }
  reserved(value: number): DecodeError {
    return new DecodeError('ReservedBits', `frame 0x${hex2(this.type)} field \`flags\` has reserved bits set (0x${hex2(value)})`);
  }
}

/** Decodes exactly one whole frame (one WebSocket message). Throws DecodeError. */
export function decodeFrame(buf: Uint8Array, maxFrame: number = DEFAULT_MAX_FRAME): Frame {
  // Size first, before even emptiness (§4.0 step 1).
  if (buf.length > maxFrame) throw new DecodeError('FrameTooLarge', `frame of ${buf.length} bytes exceeds the ${maxFrame}-byte limit`);
  if (buf.length === 0) throw new DecodeError('Empty', 'empty frame: every frame starts with a type byte');
  const type = buf[0];
  const r = new Reader(buf.subarray(1), type);
  switch (type) {
    case Kind.HELLO: {
      const magic = r.bytes(4, 'magic');
      if (magic.some((b, i) => b !== MAGIC[i])) throw new DecodeError('BadMagic', 'HELLO does not start with the TTHR magic');
      const minVersion = r.u8('min_version');
      const maxVersion = r.u8('max_version');
      const flags = r.u8('flags');
      if (flags & 0xfe) throw r.reserved(flags);
      const maxFrame = r.u32('max_frame');
      const idleTimeoutMs = r.u32('idle_timeout_ms');
      const resume = flags & 1
        ? { sessionId: r.bytes(16, 'session_id'), token: r.bytes(32, 'resume_token'), lastReceived: r.u64('last_received') }
        : null;
      const auth = r.prefixed('auth', MAX_AUTH_LEN);
      r.finish();
      if (minVersion > maxVersion) throw r.invalid('min_version', 'greater than max_version');
      if (maxFrame < MIN_MAX_FRAME) throw r.invalid('max_frame', 'below the 16384-byte minimum');
      return { type: 'hello', minVersion, maxVersion, maxFrame, idleTimeoutMs, resume, auth };
    }
    case Kind.WELCOME: {
      const version = r.u8('version');
      const flags = r.u8('flags');
      if (flags & 0xfe) throw r.reserved(flags);
      const f: Frame = {
        type: 'welcome', version, resumed: (flags & 1) !== 0,
        sessionId: r.bytes(16, 'session_id'), token: r.bytes(32, 'resume_token'),
        lastReceived: r.u64('last_received'), maxFrame: r.u32('max_frame'),
        idleTimeoutMs: r.u32('idle_timeout_ms'), graceMs: r.u32('grace_ms'),
      };
      r.finish();
      if (f.maxFrame < MIN_MAX_FRAME) throw r.invalid('max_frame', 'below the 16384-byte minimum');
      return f;
    }
    case Kind.REJECT: {
      const reason = r.u8('reason');
      if (reason < 1 || reason > 8) throw r.invalid('reason', 'unknown reject reason');
      const retryAfterMs = r.u32('retry_after_ms');
      const minVersion = r.u8('min_version');
      const maxVersion = r.u8('max_version');
      const message = r.text('message');
      r.finish();
      return { type: 'reject', reason, retryAfterMs, minVersion, maxVersion, message };
    }
    case Kind.DATA: {
      const seq = r.u64('seq');
      if (seq === 0n) throw r.invalid('seq', 'sequence numbers start at 1');
      return { type: 'data', seq, payload: r.rest() };
    }
    case Kind.ACK: {
      const ack = r.u64('ack');
      r.finish();
      return { type: 'ack', ack };
    }
    case Kind.PING:
    case Kind.PONG: {
      const nonce = r.u32('nonce');
      const ack = r.u64('ack');
      const payload = r.rest();
      if (payload.length > MAX_PING_PAYLOAD) {
        throw new DecodeError('TooLong', `frame 0x${hex2(type)} field \`payload\` is ${payload.length} bytes, limit ${MAX_PING_PAYLOAD}`);
      }
      return { type: type === Kind.PING ? 'ping' : 'pong', nonce, ack, payload };
    }
    case Kind.CLOSE: {
      const code = r.u16('code');
      if (!isAssignedCloseCode(code)) throw r.invalid('code', 'unassigned close code');
      const retryAfterMs = r.u32('retry_after_ms');
      const reason = r.text('reason');
      r.finish();
      return { type: 'close', code, retryAfterMs, reason };
    }
    default:
      throw new DecodeError('UnknownType', `unknown frame type 0x${hex2(type)}`);
  }
}

/** Encodes a frame (no length prefix: one WebSocket message). Like the reference, it does not validate limits. */
export function encodeFrame(f: Frame): Uint8Array {
  const text = f.type === 'reject' ? utf8Encoder.encode(f.message) : f.type === 'close' ? utf8Encoder.encode(f.reason) : null;
  const len = 1 + (() => {
    switch (f.type) {
      case 'hello': return 15 + (f.resume ? 56 : 0) + 2 + f.auth.length;
      case 'welcome': return 70;
      case 'reject': return 9 + text!.length;
      case 'data': return 8 + f.payload.length;
      case 'ack': return 8;
      case 'ping': case 'pong': return 12 + f.payload.length;
      case 'close': return 8 + text!.length;
    }
  })();
  const buf = new Uint8Array(len);
  const v = new DataView(buf.buffer);
  let p = 0;
  const u8 = (x: number) => { v.setUint8(p, x); p += 1; };
  const u16 = (x: number) => { v.setUint16(p, x); p += 2; };
  const u32 = (x: number) => { v.setUint32(p, x); p += 4; };
  const u64 = (x: bigint) => { v.setBigUint64(p, x); p += 8; };
  const raw = (b: ArrayLike<number>) => { buf.set(b, p); p += b.length; };
  switch (f.type) {
    case 'hello':
      u8(Kind.HELLO); raw(MAGIC); u8(f.minVersion); u8(f.maxVersion); u8(f.resume ? 1 : 0);
      u32(f.maxFrame); u32(f.idleTimeoutMs);
      if (f.resume) { raw(f.resume.sessionId); raw(f.resume.token); u64(f.resume.lastReceived); }
      u16(f.auth.length); raw(f.auth);
      break;
    case 'welcome':
      u8(Kind.WELCOME); u8(f.version); u8(f.resumed ? 1 : 0); raw(f.sessionId); raw(f.token);
      u64(f.lastReceived); u32(f.maxFrame); u32(f.idleTimeoutMs); u32(f.graceMs);
      break;
    case 'reject':
      u8(Kind.REJECT); u8(f.reason); u32(f.retryAfterMs); u8(f.minVersion); u8(f.maxVersion); u16(text!.length); raw(text!);
      break;
    case 'data': u8(Kind.DATA); u64(f.seq); raw(f.payload); break;
    case 'ack': u8(Kind.ACK); u64(f.ack); break;
    case 'ping': case 'pong':
      u8(f.type === 'ping' ? Kind.PING : Kind.PONG); u32(f.nonce); u64(f.ack); raw(f.payload);
      break;
    case 'close': u8(Kind.CLOSE); u16(f.code); u32(f.retryAfterMs); u16(text!.length); raw(text!); break;
  }
  return buf;
}

/** Cuts a reason to at most 1024 UTF-8 bytes on a character boundary, so the CLOSE always decodes. */
export function clipReason(text: string): string {
  const b = utf8Encoder.encode(text);
  if (b.length <= MAX_REASON_LEN) return text;
  let end = MAX_REASON_LEN;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end -= 1; // back off continuation bytes
  return utf8Lossy.decode(b.subarray(0, end));
}

function hex2(n: number): string { return n.toString(16).padStart(2, '0'); }
export function toHex(b: Uint8Array): string { return Array.from(b, hex2).join(''); }
export function fromHex(s: string): Uint8Array {
  if (!/^([0-9a-f]{2})*$/i.test(s)) throw new Error('not hex');
  return Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
}
function toBase64(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}
function fromBase64(s: string): Uint8Array { return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)); }

// ─────────────────────── settings (§8.5, §9.1, §7.3, §7.4) ───────────────────────

export type Profile = 'default' | 'realtime';

interface Timing { interval: number; probeTimeout: number; probes: number; handshakeTimeout: number }
const PROFILES: Record<Profile, Timing> = {
  default: { interval: 20_000, probeTimeout: 5_000, probes: 3, handshakeTimeout: 5_000 },
  realtime: { interval: 3_000, probeTimeout: 1_500, probes: 3, handshakeTimeout: 3_000 },
};
const BACKOFF = { initial: 500, max: 30_000, resumeMax: 2_000, stableAfter: 10_000 };
const RACE: Race = { delay: 750, minDelay: 500, maxInFlight: 3 };
const ACK_DELAY = 50;
const ACK_EVERY = 32n;
const REPLAY_MAX_BYTES = 1 << 20;
const REPLAY_MAX_MESSAGES = 4096;

// ───────────────────────────── the parts of the machine ─────────────────────────────

/** Our reliable stream: numbered, kept until acknowledged, replayed after a resume (§7). */
class Outbound {
  nextSeq = 1n;
  buf: { seq: bigint; payload: Uint8Array }[] = []; // unacknowledged, oldest first, contiguous seqs
  bytes = 0;
  acked = 0n; // highest seq the server acknowledged
  written = 0n; // highest seq written to the current transport

  push(payload: Uint8Array): bigint | null {
    if (this.buf.length >= REPLAY_MAX_MESSAGES || this.bytes + payload.length > REPLAY_MAX_BYTES) return null;
    const seq = this.nextSeq++;
    this.bytes += payload.length;
    this.buf.push({ seq, payload });
    return seq;
  }
  lastAssigned(): bigint { return this.nextSeq - 1n; }
  longest(): number { return this.buf.reduce((m, e) => Math.max(m, e.payload.length), 0); }

  /** A cumulative ack: an error text when it acknowledges what was never written (§7.2). */
  onAck(ack: bigint): string | null {
    if (ack > this.written) return `ack ${ack} is beyond the last seq written (${this.written})`;
    while (this.buf.length && this.buf[0].seq <= ack) this.bytes -= this.buf.shift()!.payload.length;
    if (ack > this.acked) this.acked = ack; // stale acks are ignored: a resume can overtake them
    return null;
  }
  /** The server said in WELCOME what it has: everything after is written again (§7.5). */
  rewind(peer: bigint): string | null {
    if (peer < this.acked) return `the server's last_received ${peer} went back below its ack ${this.acked}`;
    if (peer > this.lastAssigned()) return `the server's last_received ${peer} is beyond the last seq sent (${this.lastAssigned()})`;
    this.written = peer;
    return this.onAck(peer);
  }
  nextToWrite(): { seq: bigint; payload: Uint8Array } | null {
    if (!this.buf.length) return null;
    const e = this.buf[Number(this.written + 1n - this.buf[0].seq)];
    if (!e) return null;
    this.written = e.seq;
    return e;
  }
  /** The session ended: hand everything back and number the next one from 1. */
  takeUnacked(): Uint8Array[] {
    const out = this.buf.map((e) => e.payload);
    Object.assign(this, new Outbound());
    return out;
  }
}

/** The server's stream: delivered in order exactly once, acks coalesced (§7.1, §7.3). */
class Inbound {
  delivered = 0n;
  acked = 0n;
  ackDue: number | null = null;

  onData(now: number, seq: bigint): 'deliver' | 'duplicate' | 'gap' {
    if (seq <= this.delivered) {
      this.ackDue ??= now + ACK_DELAY; // the server learns it can stop replaying
      return 'duplicate';
    }
    if (seq !== this.delivered + 1n) return 'gap';
    this.delivered = seq;
    if (this.delivered - this.acked >= ACK_EVERY) this.ackDue = now;
    else this.ackDue ??= now + ACK_DELAY;
    return 'deliver';
  }
  /** The ack value goes out (ACK, PING, PONG or HELLO). */
  ackSent(): bigint { this.acked = this.delivered; this.ackDue = null; return this.delivered; }
  reset(): void { this.delivered = 0n; this.acked = 0n; this.ackDue = null; }
}

/** The client prober (§8.2): PING after `interval` of silence, re-probe, declare dead. */
class Heartbeat {
  lastHeard: number;
  probe: { network: boolean; sent: number; deadline: number } | null = null;
  private outstanding: [number, number][] = []; // nonce, sent at: for RTT (§8.8)
  constructor(private readonly t: Timing, now: number, private nextNonce: number) { this.lastHeard = now; }

  reset(now: number): void { this.lastHeard = now; this.probe = null; this.outstanding = []; }
  deadline(): number { return this.probe ? this.probe.deadline : this.lastHeard + this.t.interval; }
  /** Any frame arrived: it ends the probe and forgets the nonces. */
  onHeard(now: number): void { this.lastHeard = now; this.probe = null; this.outstanding = []; }
  rttFor(now: number, nonce: number): number | null {
    const hit = this.outstanding.find(([n]) => n === nonce);
    return hit ? now - hit[1] : null;
  }
  /** A one-shot probe (network change): dead if nothing arrives within probe_timeout. */
  probeNow(now: number): number {
    this.probe = { network: true, sent: this.t.probes, deadline: now + this.t.probeTimeout };
    return this.takeNonce(now);
  }
  private takeNonce(now: number): number {
    const n = this.nextNonce;
    this.nextNonce = (this.nextNonce + 1) >>> 0;
    this.outstanding.push([n, now]);
    if (this.outstanding.length > 8) this.outstanding.shift();
    return n;
  }
  poll(now: number): { ping: number } | { dead: 'idle' | 'network' } | null {
    if (now < this.deadline()) return null;
    const p = this.probe;
    if (p && p.sent >= this.t.probes) {
      this.probe = null;
      return { dead: p.network ? 'network' : 'idle' };
    }
    this.probe = { network: p ? p.network : false, sent: p ? p.sent + 1 : 1, deadline: now + this.t.probeTimeout };
    return { ping: this.takeNonce(now) };
  }
}

/** Exponential backoff with full jitter (§9). */
class Backoff {
  attempt = 0;
  /** The expiry whose one immediate last-moment attempt was given (§9.3). */
  lateUsed: number | null = null;
  reset(): void { this.attempt = 0; }
  ceiling(resumable: boolean): number {
    const cap = resumable ? BACKOFF.resumeMax : BACKOFF.max;
    return Math.min(cap, BACKOFF.initial * 2 ** Math.min(this.attempt, 31));
  }
  next(now: number, random: () => number, resumableUntil: number | null, budget: number, retryAfter: number | null): number {
    let delay = random() * this.ceiling(resumableUntil !== null);
    // Never start so late that the attempt cannot finish before the local
    // expiry (§9.3); past that moment, one attempt at once, then the usual
    // backoff (instantly failing connects must not loop).
    if (resumableUntil !== null) {
      const latest = resumableUntil - budget;
      if (now < latest) delay = Math.min(delay, latest - now);
      else if (this.lateUsed !== resumableUntil) {
        this.lateUsed = resumableUntil;
        delay = 0;
      }
    }
    if (retryAfter !== null) delay = Math.max(delay, retryAfter); // a floor, applied after the caps (§9.4)
    this.attempt += 1;
    return delay;
  }
}

/** What the client drives: a WebSocket, or the HTTP fallback's stand-in for one ({@link HttpSocket}). */
export interface SocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((e: Event) => unknown) | null;
  onmessage: ((e: MessageEvent) => unknown) | null;
  onclose: ((e: CloseEvent) => unknown) | null;
  onerror: ((e: Event) => unknown) | null;
  send(data: Uint8Array): void;
  close(): void;
}

/** How a session is carried: a WebSocket (§2.2), or the HTTP fallback (§2.4). */
export type TransportKind = 'websocket' | 'http';

/** One connection being opened for the current attempt; `ws` is null when it failed before it existed. */
interface Racer { tid: number; started: number; ws: SocketLike | null; kind: TransportKind }

/**
 * The WebSockets being opened for the current attempt, oldest first (§9.7). A connect that does not
 * complete quickly is most often waiting on a lost SYN, retransmitted 1, 3, 7 s later: rather than
 * wait, another starts beside it, and the first to open wins. The client decides when.
 */
class Racers {
  list: Racer[] = [];
  /** When another may start; null once one opened (or with racing off). */
  private next: number | null = null;

  /** A WebSocket starts; another may start `wait` ms later (null: no racing). */
  start(r: Racer, wait: number | null): void {
    this.list.push(r);
    this.next = wait === null ? null : r.started + wait;
  }
  get(tid: number): Racer | undefined { return this.list.find((r) => r.tid === tid); }
  /** One racer, removed (to close). */
  remove(tid: number): Racer | undefined {
    const i = this.list.findIndex((r) => r.tid === tid);
    return i >= 0 ? this.list.splice(i, 1)[0] : undefined;
  }
  /** Every racer, removed (to close, or one to keep); racing stops. */
  takeAll(): Racer[] {
    this.next = null;
    return this.list.splice(0);
  }
  /** Racers started `limit` ms ago or earlier, removed (to close). */
  expired(now: number, limit: number): Racer[] {
    const gone = this.list.filter((r) => now >= r.started + limit);
    this.list = this.list.filter((r) => now < r.started + limit);
    return gone;
  }
  /** True when racing is on and another is due. */
  due(now: number): boolean { return this.next !== null && now >= this.next; }
  /** True while racing is on (none has opened yet). */
  racing(): boolean { return this.next !== null; }
  /** Makes room for one more under `max` opening at once: the oldest, removed (to close). */
  makeRoom(max: number): Racer | null { return this.list.length >= max ? this.list.shift() ?? null : null; }
  /** The next instant something is due: another start, or the oldest reaching `limit`. */
  deadline(limit: number): number | null {
    const oldest = this.list.length ? this.list[0].started + limit : Infinity;
    const at = Math.min(this.next ?? Infinity, oldest);
    return at === Infinity ? null : at;
  }
}

/** The wait before another WebSocket starts: 4 × the last round trip, within [minDelay, delay] (§9.7). */
function raceWait(c: Race, rtt: number | null): number {
  return rtt === null ? c.delay : Math.min(c.delay, Math.max(c.minDelay, 4 * rtt));
}

// ───────────────────────────── the client ─────────────────────────────

export type LinkState = 'connecting' | 'connected' | 'reconnecting' | 'expired' | 'closed';
export type LossReason = 'closed' | 'heartbeat-timeout' | 'network-changed' | 'handshake-timeout' |
  'peer-closed' | 'protocol-error' | 'rejected' | 'offline' | 'token' | 'upgrade';
export type EndReason = 'expired' | 'refused' | 'peer-closed' | 'local-close' | 'sequence-violation' | 'incompatible';

export interface TetherEventMap {
  state: { state: LinkState; previous: LinkState };
  connected: { session: string; transport: TransportKind };
  resumed: { session: string; replayed: number; transport: TransportKind };
  disconnected: { reason: LossReason; message: string };
  /** An attempt failed before the session was (re)established. */
  attemptfailed: { reason: LossReason; message: string };
  reconnecting: { attempt: number; delay: number };
  /** The server has every message this client sent up to `seq` (the number `send` returned): they will not be sent again. */
  acked: { seq: number };
  message: { data: Uint8Array; seq: number; text(): string };
  rtt: { ms: number };
  /** The session ended; `unacked` are our messages the server never acknowledged, oldest first. */
  ended: { session: string | null; reason: EndReason; code: number | null; message: string; unacked: Uint8Array[]; restarting: boolean };
}

/** An Event carrying `detail`, without relying on CustomEvent. */
export class TetherEvent<T> extends Event {
  constructor(type: string, readonly detail: T) { super(type); }
}

/** An EventTarget with typed `on(type, fn(detail))` listeners. */
export class Emitter<M> extends EventTarget {
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof M & string>(type: K, fn: (detail: M[K]) => void): () => void {
    const h = (e: Event) => fn((e as TetherEvent<M[K]>).detail);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }

  /** Like `on`, for the next event of that type only. */
  once<K extends keyof M & string>(type: K, fn: (detail: M[K]) => void): () => void {
    const h = (e: Event) => fn((e as TetherEvent<M[K]>).detail);
    this.addEventListener(type, h, { once: true });
    return () => this.removeEventListener(type, h);
  }
}

export type StorageLike = Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;
export interface Clock {
  now(): number; // monotonic ms
  wall(): number; // epoch ms, only to carry deadlines across a page reload
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Racing a slow connect (§9.7), times in ms. */
export interface RaceOptions {
  /** Longest wait, while no WebSocket of the attempt has opened, before another starts beside them (750). */
  delay?: number;
  /**
   * Shortest such wait (500): the wait is 4 × the last round trip, kept within [minDelay, delay]. (Not the
   * 250 ms of Happy Eyeballs: this racing can last a whole outage, and every client of a server races at once.)
   */
  minDelay?: number;
  /** WebSockets opening at once, 1 to 8 (3); the oldest is closed to make room. 1 turns racing off. */
  maxInFlight?: number;
}
type Race = Required<RaceOptions>;

/** The race settings with defaults filled in; throws on settings that cannot work (as the Rust RaceConfig::validate). */
function raceSettings(o: RaceOptions = {}): Race {
  const c = { delay: o.delay ?? RACE.delay, minDelay: o.minDelay ?? RACE.minDelay, maxInFlight: o.maxInFlight ?? RACE.maxInFlight };
  const ms = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
  if (!ms(c.minDelay) || !ms(c.delay) || !(c.minDelay > 0 && c.delay >= c.minDelay)) {
    throw new Error(`race.delay: delay ${c.delay} ms with minDelay ${c.minDelay} ms cannot work; use 0 < minDelay <= delay, e.g. 500 and 750`);
  }
  if (!Number.isInteger(c.maxInFlight) || c.maxInFlight < 1 || c.maxInFlight > 8) {
    throw new Error(`race.maxInFlight: ${c.maxInFlight} is not a whole number from 1 to 8; use 3 (or 1 to turn racing off)`);
  }
  return c;
}

export interface TetherOptions {
  /** Credential sent as HELLO auth (a JWT for the gateway); empty for anonymous. */
  token?: string;
  /**
   * Called for the credential of each fresh session (not for resumes, which the resume token
   * proves), e.g. to fetch a JWT that has not expired: socket.io's `auth` function, SignalR's
   * `accessTokenFactory`. A rejection or throw fails the attempt (`attemptfailed`, reason
   * `token`) and is retried with backoff. A session refused as Unauthorized asks it once more
   * before giving up. Replaces `token`.
   */
  getToken?: () => string | Promise<string>;
  profile?: Profile;
  /** Racing a slow connect (§9.7): default 750 / 500 ms, 3 at once; `{ maxInFlight: 1 }` turns it off. */
  race?: RaceOptions;
  /** Where the session survives a page reload; default window.sessionStorage, null for none. */
  storage?: StorageLike | null;
  storageKey?: string;
  WebSocketImpl?: typeof WebSocket;
  /**
   * The transports to use: WebSocket, and the HTTP fallback (§2.4: a streaming response and POSTs) for
   * networks that let no WebSocket through. Default both: an attempt whose WebSocket fails before it
   * opens (or, if no WebSocket ever opened here, stalls) tries the fallback at once, and a session on
   * the fallback tries WebSocket again every `upgradeCheck` ms, moving there (a resume) when one opens.
   */
  transports?: TransportKind[];
  /** While the session is on the HTTP fallback, how often a WebSocket is tried (ms, 30000). */
  upgradeCheck?: number;
  /**
   * When the page goes away (`pagehide`: a reload, or the tab closing; a page cannot tell which), the
   * server is asked to keep the session this long only (CLOSE 1001, §6.2) instead of its whole grace:
   * a reload resumes within it, and a closed tab leaves its rooms within seconds (ms, 10000; 0: keep
   * the whole grace).
   */
  leaveGrace?: number;
  /** For tests: the HTTP fallback's socket (default: {@link HttpSocket}, over `fetch`). */
  HttpImpl?: new (url: string) => SocketLike;
  /** For tests: a virtual clock and a deterministic random source. */
  clock?: Clock;
  random?: () => number;
}

/** Thrown by `send` when a message cannot be queued (nothing else throws at the app). */
export class SendError extends Error {
  constructor(readonly kind: 'closed' | 'too-large' | 'buffer-full', message: string) { super(message); this.name = 'SendError'; }
}

type Link =
  | { k: 'waiting'; until: number }
  // The WebSockets being opened are in `racers`; `deadline` ends the attempt budget.
  | { k: 'connecting'; started: number; deadline: number }
  // `helloAt`: when HELLO went out (a round-trip sample at WELCOME).
  | { k: 'handshaking'; tid: number; started: number; deadline: number; helloAt: number }
  | { k: 'established'; tid: number; since: number }
  | { k: 'closed' };

interface SessionCtx { id: Uint8Array; token: Uint8Array; idleMs: number; graceMs: number }

const systemClock: Clock = {
  now: () => performance.now(),
  wall: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

function defaultStorage(): StorageLike | null {
  try { return typeof sessionStorage === 'undefined' ? null : sessionStorage; } catch { return null; }
}

export class TetherClient extends Emitter<TetherEventMap> {
  readonly url: string;
  private readonly t: Timing;
  private readonly raceCfg: Race;
  private auth: Uint8Array;
  private readonly getToken: (() => string | Promise<string>) | null;
  /** A token from `getToken` is held for the next fresh session. */
  private freshToken = false;
  /** A `getToken` call is in flight (its generation: later answers of older calls are ignored). */
  private tokenCall = 0;
  private tokenPending = false;
  /** The fresh session was refused as Unauthorized once already with a token from `getToken`. */
  private tokenRetried = false;
  private readonly storage: StorageLike | null;
  private readonly key: string;
  private readonly WS: typeof WebSocket | null;
  private readonly Http: (new (url: string) => SocketLike) | null;
  private readonly upgradeEvery: number;
  private readonly leaveMs: number;
  /** The kind of the transport carrying (or last carrying) the session. */
  private carrier: TransportKind | null = null;
  /** Attempts start with the HTTP fallback: the last session transport was one. */
  private preferHttp = false;
  /** A WebSocket of this client has opened: a stall is then an outage, not a proxy. */
  private wsOpened = false;
  /** The current attempt has an HTTP fallback racer (or had one). */
  private attemptHttp = false;
  /** While on the fallback: when a WebSocket is tried next, and the one being tried. */
  private upgradeAt: number | null = null;
  private upgradeProbe: WebSocket | null = null;
  private readonly clock: Clock;
  private readonly random: () => number;

  private link: Link;
  private session: SessionCtx | null = null;
  /** Set while a session has no transport: after this the server has surely expired it (§10.2). */
  private resumableUntil: number | null = null;
  private out = new Outbound();
  private inb = new Inbound();
  private hb: Heartbeat;
  private backoff = new Backoff();
  private retryNotBefore: number | null = null;
  private offlineUntil = 0;
  private nextTid = 0;
  /** The connection carrying (or handshaking for) the session. */
  private ws: SocketLike | null = null;
  /** The WebSockets being opened while `connecting`. */
  private racers = new Racers();
  private pingPayload = new Uint8Array(0);
  private peerMaxFrame = MIN_MAX_FRAME; // every server accepts this; the real limit comes in WELCOME
  private lastRtt: number | null = null;
  /** The last round trip measured, by PING → PONG or HELLO → WELCOME: it paces racing (§9.7). */
  private pacingRtt: number | null = null;
  /**
   * A WebSocket reached the server (opened) but got no WELCOME in time or was closed by it, or the
   * server refused for load (REJECT 5 or 6), since the last WELCOME: attempts do not race (§9.7).
   */
  private serverSlow = false;
  private lastEnd: EndReason | null = null;
  private reported: LinkState;
  private queue: Event[] = [];
  private timer: unknown = null;
  private busy = false;
  private dirtyCore = false;
  private dirtyOut = false;
  private unlisten: (() => void) | null = null;

  constructor(url: string, opts: TetherOptions = {}) {
    super();
    this.url = url;
    this.t = PROFILES[opts.profile ?? 'default'];
    this.raceCfg = raceSettings(opts.race ?? {});
    this.auth = utf8Encoder.encode(opts.token ?? '');
    if (this.auth.length > MAX_AUTH_LEN) throw new Error('token is longer than 4096 bytes');
    this.getToken = opts.getToken ?? null;
    this.storage = opts.storage === undefined ? defaultStorage() : opts.storage;
    this.key = opts.storageKey ?? `tether:${url}`;
    const kinds = opts.transports ?? ['websocket', 'http'];
    if (kinds.length === 0 || kinds.some((k) => k !== 'websocket' && k !== 'http')) {
      throw new Error(`transports: ${JSON.stringify(kinds)}; use one or both of "websocket" and "http"`);
    }
    const WS = opts.WebSocketImpl ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket ?? null;
    this.WS = kinds.includes('websocket') ? WS : null;
    const canFetch = typeof (globalThis as { fetch?: unknown }).fetch === 'function';
    this.Http = kinds.includes('http') ? opts.HttpImpl ?? (canFetch ? HttpSocket : null) : null;
    if (!this.WS && !this.Http) {
      throw new Error('no transport: this runtime has neither WebSocket nor fetch; pass opts.WebSocketImpl (e.g. the ws package)');
    }
    this.preferHttp = !this.WS;
    this.upgradeEvery = opts.upgradeCheck ?? 30_000;
    this.leaveMs = Math.max(0, Math.min(opts.leaveGrace ?? 10_000, 0xffff_ffff));
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    const now = this.clock.now();
    this.hb = new Heartbeat(this.t, now, Math.floor(this.random() * 2 ** 32) >>> 0);
    this.link = { k: 'waiting', until: now }; // the first attempt is immediate (§9.5)
    this.restore(now);
    this.reported = this.computeState();
    this.listenToPage();
    this.arm(); // fires on a later tick, so listeners attached after `new` see every event
  }

  // ───── public API ─────

  get state(): LinkState { return this.reported; }
  /** The session id (32 hex digits), or null before the first WELCOME. */
  get sessionId(): string | null { return this.session ? toHex(this.session.id) : null; }
  /** The kind of transport carrying the session (or that last did), null before the first. */
  get transport(): TransportKind | null { return this.carrier; }
  /** The last round-trip time measured by PING/PONG, in ms. */
  get rtt(): number | null { return this.lastRtt; }
  /** Unacknowledged outgoing messages and their payload bytes. */
  get buffered(): { messages: number; bytes: number } { return { messages: this.out.buf.length, bytes: this.out.bytes }; }

  /** Queues a message: written at once if connected, else on the next transport, replayed until acknowledged. */
  send(data: string | Uint8Array): number {
    if (this.link.k === 'closed') throw new SendError('closed', 'the session has ended; create a new client');
    const payload = typeof data === 'string' ? utf8Encoder.encode(data) : data.slice(); // a copy: the app may reuse its buffer
    const max = this.peerMaxFrame - 9;
    if (payload.length > max) throw new SendError('too-large', `message of ${payload.length} bytes exceeds the ${max}-byte limit`);
    const seq = this.out.push(payload);
    if (seq === null) {
      throw new SendError('buffer-full', `${this.out.buf.length} messages (${this.out.bytes} bytes) wait for acknowledgement; retry later`);
    }
    this.dirtyOut = true;
    this.input((now) => this.flush(now));
    return Number(seq);
  }

  /** Ends the session deliberately (CLOSE 3000 or a 4xxx code) and stops for good. */
  close(code: number = CloseCode.Normal, reason = ''): void {
    this.input((now) => {
      if (this.link.k === 'closed') return;
      const c = code >= 3000 && isAssignedCloseCode(code) ? code : CloseCode.Normal;
      if (this.link.k !== 'established') this.dropTransport();
      this.endSession(now, 'local-close', reason, c, true, false);
    });
  }

  /**
   * Starts again after the session ended for good (`close()`, `disconnect()`, a kick or a
   * refusal): a fresh session, the backoff reset. Does nothing while the client is running.
   */
  connect(): void {
    this.input((now) => {
      if (this.link.k !== 'closed') return;
      this.backoff.reset();
      this.retryNotBefore = null;
      this.serverSlow = false;
      this.freshToken = this.tokenRetried = false;
      this.offlineUntil = 0;
      this.link = { k: 'waiting', until: now };
      if (!this.unlisten) this.listenToPage();
    });
  }

  /** Ends the session (as `close()`); `connect()` opens a fresh one later. */
  disconnect(reason = ''): void { this.close(CloseCode.Normal, reason); }

  /**
   * The page is going away (called on `pagehide`, unless the page is kept in the back-forward cache):
   * the server keeps the session `leaveGrace` ms only (CLOSE 1001, §6.2), enough for a reload to
   * resume it. The session is kept here too, for that reload.
   */
  leaving(): void {
    this.input((now) => {
      if (this.link.k !== 'established' || !this.session || this.leaveMs === 0) return;
      this.sendFrame({ type: 'close', code: CloseCode.GoingAway, retryAfterMs: this.leaveMs, reason: 'the page is going away' });
      this.dropTransport();
      this.resumableUntil = now + this.leaveMs; // the server gives up then
      // Should the page live on after all, it resumes shortly.
      this.link = { k: 'waiting', until: now + Math.min(this.leaveMs, 1000) };
      this.dirtyCore = true;
    });
  }

  /** probe_now (§8.7): probe a live link at once (dropped if unanswered), or retry at once while waiting. */
  probe(): void { this.input((now) => this.networkChange(now)); }

  /** Demo aid: drop the WebSocket without a CLOSE, and fail every attempt for `ms` (as a browser that went offline). */
  simulateOffline(ms: number): void {
    this.input((now) => {
      if (this.link.k === 'closed') return;
      this.offlineUntil = now + ms;
      if (this.link.k !== 'waiting') this.lose(now, 'offline', 'simulated offline', false);
      // The network "comes back" like a browser's `online` event.
      this.clock.setTimeout(() => this.probe(), ms);
    });
  }

  // ───── drive loop ─────

  /** Runs one input, then persists, reports and re-arms the timer (the drive contract, §1.1). */
  private input(fn: (now: number) => void): void {
    if (this.busy) { fn(this.clock.now()); return; } // nested (an event handler called us): the outer call finishes
    this.busy = true;
    try {
      fn(this.clock.now());
      const state = this.computeState();
      if (state !== this.reported) {
        this.emit('state', { state, previous: this.reported });
        this.reported = state;
      }
      this.persist();
    } finally {
      this.busy = false;
    }
    while (this.queue.length) this.dispatchEvent(this.queue.shift()!);
    this.arm();
  }

  private emit<K extends keyof TetherEventMap>(type: K, detail: TetherEventMap[K]): void {
    this.queue.push(new TetherEvent(type, detail));
  }

  private arm(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    const at = this.pollTimeout();
    if (at === null) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.input((now) => this.onTimeout(now));
    }, Math.max(0, at - this.clock.now()));
  }

  private pollTimeout(): number | null {
    const l = this.link;
    let at: number | null =
      l.k === 'waiting' ? l.until
        : l.k === 'connecting' ? Math.min(l.deadline, this.racers.deadline(this.t.handshakeTimeout) ?? Infinity)
          : l.k === 'handshaking' ? l.deadline
            : l.k === 'established' ? Math.min(this.hb.deadline(), this.inb.ackDue ?? Infinity, this.upgradeAt ?? Infinity)
              : null;
    if (this.resumableUntil !== null && l.k !== 'established') at = at === null ? this.resumableUntil : Math.min(at, this.resumableUntil);
    return at;
  }

  private computeState(): LinkState {
    if (this.link.k === 'closed') return 'closed';
    if (this.link.k === 'established') return 'connected';
    if (this.session) return 'reconnecting';
    return this.lastEnd === 'expired' ? 'expired' : 'connecting';
  }

  // ───── inputs ─────

  private onTimeout(now: number): void {
    if (this.resumableUntil !== null && this.link.k !== 'established' && now >= this.resumableUntil) {
      // Local expiry (§10.2): the server has certainly given the session up.
      this.dropTransport();
      this.link = { k: 'waiting', until: now };
      this.endSession(now, 'expired', 'no resume succeeded within the grace period', null, false, true);
    }
    const l = this.link;
    if (l.k === 'waiting' && now >= l.until) this.startAttempt(now);
    else if (l.k === 'connecting') this.race(now, l.deadline);
    else if (l.k === 'handshaking' && now >= l.deadline) {
      this.serverSlow = true; // the WebSocket reached the server, which did not answer in time (§9.7)
      this.lose(now, 'handshake-timeout', 'no WELCOME within the handshake timeout', false);
    } else if (l.k === 'established') {
      if (this.upgradeAt !== null && now >= this.upgradeAt) this.tryUpgrade(now);
      const a = this.hb.poll(now);
      if (a && 'ping' in a) this.sendPing(a.ping);
      else if (a) {
        const network = a.dead === 'network';
        // A failed network-change probe reconnects at once; a dead idle link backs off (§8.7, §9.5).
        this.lose(now, network ? 'network-changed' : 'heartbeat-timeout',
          `nothing heard for ${Math.round(now - this.hb.lastHeard)} ms`, network);
      }
      this.flush(now);
    }
  }

  private startAttempt(now: number): void {
    if (this.getToken && !this.session && !this.freshToken) {
      // A fresh session: its credential comes from the application first. The attempt waits
      // (re-checked every handshake timeout; one call at a time).
      this.link = { k: 'waiting', until: now + this.t.handshakeTimeout };
      if (!this.tokenPending) this.fetchToken(); // after: a callback that throws at once schedules the backoff
      return;
    }
    this.link = { k: 'connecting', started: now, deadline: now + this.t.handshakeTimeout };
    this.attemptHttp = false;
    this.openRacer(now, this.preferHttp && this.Http ? 'http' : this.WS ? 'websocket' : 'http');
  }

  /** Asks the application's `getToken` for a credential; the attempt starts when it answers. */
  private fetchToken(): void {
    const call = ++this.tokenCall;
    this.tokenPending = true;
    const failed = (message: string) => this.input((now) => {
      if (call !== this.tokenCall || this.link.k === 'closed') return;
      this.tokenPending = false;
      this.emit('attemptfailed', { reason: 'token', message });
      this.schedule(now, false);
    });
    let answer: Promise<string>;
    try {
      answer = Promise.resolve((this.getToken as () => string | Promise<string>)());
    } catch (e) {
      failed(`getToken() threw: ${String(e)}`);
      return;
    }
    answer.then((token) => {
      if (typeof token !== 'string') return failed(`getToken() gave ${typeof token}, not a string`);
      const auth = utf8Encoder.encode(token);
      if (auth.length > MAX_AUTH_LEN) return failed('getToken() gave a token longer than 4096 bytes');
      this.input((now) => {
        if (call !== this.tokenCall || this.link.k === 'closed') return;
        this.tokenPending = false;
        this.auth = auth;
        this.freshToken = true;
        if (this.link.k === 'waiting' && !this.session) this.startAttempt(now);
      });
    }, (e) => failed(`getToken() failed: ${String(e)}`));
  }

  /** Opens one more connection for the current attempt (§9.7). Every handler checks `tid`: a loser's late events do nothing. */
  private openRacer(now: number, kind: TransportKind): void {
    const tid = ++this.nextTid;
    const c = this.raceCfg;
    const racer: Racer = { tid, started: now, ws: null, kind };
    if (kind === 'http') this.attemptHttp = true;
    // A server that shed an attempt is not raced: one WebSocket at a time until a WELCOME (§9.7).
    this.racers.start(racer, c.maxInFlight > 1 && !this.serverSlow ? raceWait(c, this.pacingRtt) : null);
    const fail = () => this.clock.setTimeout(() => this.input((n) => this.transportClosed(n, tid)), 0);
    if (now < this.offlineUntil) { fail(); return; } // simulated offline: new WebSockets fail at once
    let ws: SocketLike;
    try {
      if (kind === 'http' && this.Http) ws = new this.Http(this.url);
      else if (this.WS) ws = new this.WS(this.url, SUBPROTOCOL) as unknown as SocketLike;
      else { fail(); return; }
    } catch { fail(); return; }
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this.input((n) => this.connected(n, tid));
    ws.onmessage = (e: MessageEvent) => this.input((n) => this.received(n, tid, e.data));
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
  private race(now: number, deadline: number): void {
    const hto = this.t.handshakeTimeout;
    for (const r of this.racers.expired(now, hto)) dropSocket(r.ws);
    if (now >= deadline) {
      const message = 'no WebSocket opened within the handshake timeout';
      if (!(this.racers.racing() && this.resumableUntil !== null)) return this.lose(now, 'handshake-timeout', message, false);
      this.emit('attemptfailed', { reason: 'handshake-timeout', message });
      this.link = { k: 'connecting', started: now, deadline: now + hto };
    }
    if (this.racers.due(now) || this.racers.list.length === 0) {
      const oldest = this.racers.makeRoom(this.raceCfg.maxInFlight);
      if (oldest) dropSocket(oldest.ws);
      // A WebSocket that stalls where none ever opened may be a proxy holding the upgrade: the
      // fallback races beside it (once a WebSocket has opened here, a stall is an outage).
      const last = this.racers.list[this.racers.list.length - 1]?.kind ?? (this.preferHttp ? 'http' : 'websocket');
      const http = this.Http && (last === 'http' || !this.WS || (!this.wsOpened && !this.attemptHttp));
      this.openRacer(now, http ? 'http' : 'websocket');
    }
  }

  /** The open WebSocket carrying (or handshaking for) the session. */
  private currentTid(): number | null { return 'tid' in this.link ? this.link.tid : null; }

  /** A WebSocket of the attempt opened: the first wins, the others are closed, HELLO goes out on it. */
  private connected(now: number, tid: number): void {
    const won = this.racers.get(tid); // racers exist only while connecting
    if (this.link.k !== 'connecting' || !won) return;
    for (const r of this.racers.takeAll()) if (r !== won) dropSocket(r.ws);
    this.ws = won.ws;
    this.carrier = won.kind;
    if (won.kind === 'websocket') this.wsOpened = true;
    if (this.ws && this.ws.protocol !== SUBPROTOCOL) {
      // §2.2: refuse a WebSocket on which tether.v1 was not agreed (browsers already fail those).
      this.lose(now, 'protocol-error', `the server did not agree to ${SUBPROTOCOL} (got "${this.ws.protocol}")`, false);
      return;
    }
    const s = this.session;
    this.sendFrame({
      type: 'hello', minVersion: VERSION, maxVersion: VERSION, maxFrame: DEFAULT_MAX_FRAME,
      idleTimeoutMs: this.t.interval + (this.t.probes + 1) * this.t.probeTimeout, // dead_after + one probe's flight (§8.4)
      resume: s ? { sessionId: s.id, token: s.token, lastReceived: this.inb.delivered } : null,
      auth: this.auth,
    });
    // The winner's own handshake deadline: its creation + the handshake timeout (§5.5).
    this.link = { k: 'handshaking', tid, started: won.started, deadline: won.started + this.t.handshakeTimeout, helloAt: now };
  }

  private transportClosed(now: number, tid: number): void {
    // A WebSocket that fails before it opens, where the fallback has not been tried in this attempt:
    // perhaps a proxy refusing upgrades. The fallback is tried at once, instead of failing the attempt.
    const r = this.racers.get(tid);
    if (r && r.kind === 'websocket' && this.link.k === 'connecting' && this.Http && !this.attemptHttp) {
      this.racers.remove(tid);
      dropSocket(r.ws);
      this.openRacer(now, 'http');
      return;
    }
    // A WebSocket of the attempt that fails before opening means the path answers: racing is
    // pointless, the attempt fails (backoff) and every racer is closed (§9.7).
    if (this.currentTid() === tid || this.racers.get(tid)) {
      // Closed once it had opened, before WELCOME: a server shedding load is not raced (§9.7).
      if (this.link.k === 'handshaking') this.serverSlow = true;
      this.lose(now, 'closed', 'the connection closed or failed', false);
    }
  }

  private received(now: number, tid: number, data: unknown): void {
    // Input from a replaced transport, or one still opening, can deliver nothing (§7.6).
    if (this.currentTid() !== tid) return;
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data instanceof Uint8Array ? data : null;
    if (!bytes) return this.protocolError(now, CloseCode.ProtocolError, 'a text WebSocket message'); // §2.2
    let f: Frame;
    try { f = decodeFrame(bytes, DEFAULT_MAX_FRAME); } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      return this.protocolError(now, e.closeCode, e.message);
    }
    if (this.link.k === 'handshaking') this.onHandshakeFrame(now, tid, f);
    else if (this.link.k === 'established') this.onEstablishedFrame(now, f);
    this.flush(now);
  }

  /** §8.7: called on online/offline/visibility/pageshow and by `probe()`. */
  private networkChange(now: number): void {
    const l = this.link;
    const soon = Math.max(now, this.retryNotBefore ?? now); // a retry-after beats an immediate attempt
    if (l.k === 'established') {
      this.sendPing(this.hb.probeNow(now));
    } else if (l.k === 'waiting' || ((l.k === 'connecting' || l.k === 'handshaking') && now - l.started >= this.t.probeTimeout)) {
      // Waiting, or an attempt old enough to be stuck on the old network: start over at once.
      this.dropTransport();
      this.backoff.reset();
      this.link = { k: 'waiting', until: soon };
      this.emit('reconnecting', { attempt: 0, delay: soon - now });
    }
  }

  // ───── handshake (§5) ─────

  private onHandshakeFrame(now: number, tid: number, f: Frame): void {
    if (f.type === 'welcome') return this.onWelcome(now, tid, f);
    if (f.type === 'close') return this.onClose(now, f);
    if (f.type !== 'reject') return this.protocolError(now, CloseCode.ProtocolError, `frame ${f.type} before WELCOME`);
    this.dropTransport();
    if (f.retryAfterMs > 0) this.retryNotBefore = now + f.retryAfterMs;
    const r = f.reason;
    const gone = r === RejectReason.UnknownSession || r === RejectReason.InvalidToken || r === RejectReason.TokenReused;
    const transient = r === RejectReason.Overloaded || r === RejectReason.ShuttingDown;
    if (transient) this.serverSlow = true; // a server shedding load is not raced until a WELCOME (§9.7)
    if (this.session && (gone || r === RejectReason.BadHello)) {
      // The session cannot be resumed: say why (3 and 4 may mean a stolen token) and start fresh.
      this.link = { k: 'waiting', until: now };
      this.endSession(now, r === RejectReason.UnknownSession ? 'expired' : 'refused', f.message, r, false, true);
    } else if (transient || gone) {
      this.lose(now, 'rejected', `REJECT ${r}: ${f.message}`, false);
    } else if (r === RejectReason.Unauthorized && this.getToken && this.freshToken && !this.tokenRetried) {
      // The token may have expired since getToken gave it: ask once more before giving up.
      this.tokenRetried = true;
      this.freshToken = false;
      this.lose(now, 'rejected', `REJECT ${r}: ${f.message}`, false);
    } else {
      // UnsupportedVersion, Unauthorized, BadHello on a new session: give up until the user changes something.
      this.link = { k: 'waiting', until: now };
      this.endSession(now, 'refused', f.message, r, false, false);
    }
  }

  private onWelcome(now: number, tid: number, w: Extract<Frame, { type: 'welcome' }>): void {
    if (this.link.k === 'handshaking') this.pacingRtt = now - this.link.helloAt;
    if (w.version !== VERSION) return this.protocolError(now, CloseCode.ProtocolError, `WELCOME chose version ${w.version}`);
    const needed = this.t.interval + (this.t.probes + 1) * this.t.probeTimeout;
    if (w.idleTimeoutMs < needed) {
      // The server would drop us while we still probe (§8.4): refuse and stop.
      const msg = `the server drops a silent transport after ${w.idleTimeoutMs} ms but this client needs ${needed} ms: ` +
        `raise the server's idle timeout or shorten the client's interval / probe cycle`;
      this.sendFrame({ type: 'close', code: CloseCode.Normal, retryAfterMs: 0, reason: clipReason(msg) });
      this.dropTransport();
      this.link = { k: 'waiting', until: now };
      return this.endSession(now, 'incompatible', msg, null, false, false);
    }
    this.peerMaxFrame = Math.min(w.maxFrame, MAX_MAX_FRAME);
    // Checked after the WELCOME's last_received released what the server has.
    const beyondFrameLimit = (): boolean => {
      if (this.out.longest() <= this.peerMaxFrame - 9) return false;
      // A queued message can never be delivered to this server: hand everything back rather than loop on 2001 (§3.2).
      const msg = `a ${this.out.longest()}-byte message waits for the server but its max_frame ${this.peerMaxFrame} allows ${this.peerMaxFrame - 9}`;
      this.sendFrame({ type: 'close', code: CloseCode.FrameLimit, retryAfterMs: 0, reason: clipReason(msg) });
      this.dropTransport();
      this.link = { k: 'waiting', until: now };
      this.endSession(now, 'incompatible', msg, null, false, true);
      return true;
    };
    const resuming = this.session;
    if (w.resumed) {
      if (!resuming || toHex(resuming.id) !== toHex(w.sessionId)) {
        return this.protocolError(now, CloseCode.ProtocolError, 'WELCOME resumed a session that was not asked for');
      }
      const before = this.out.lastAssigned();
      const ackedBefore = this.out.acked;
      const err = this.out.rewind(w.lastReceived);
      if (err) {
        this.link = { k: 'established', tid, since: now };
        return this.endSession(now, 'sequence-violation', err, CloseCode.SequenceViolation, true, true);
      }
      if (beyondFrameLimit()) return;
      Object.assign(resuming, { token: w.token, idleMs: w.idleTimeoutMs, graceMs: w.graceMs });
      this.noteAcked(ackedBefore); // the server's last_received acknowledges what it has
      this.emit('resumed', { session: toHex(w.sessionId), replayed: Number(before - w.lastReceived), transport: this.carrier ?? 'websocket' });
    } else {
      // The server opened a new session although we asked to resume: the old one is gone (§5.1).
      if (resuming) this.endSession(now, 'expired', 'the server opened a new session instead of resuming', null, false, true);
      this.out.rewind(0n);
      if (beyondFrameLimit()) return;
      this.inb.reset();
      this.session = { id: w.sessionId, token: w.token, idleMs: w.idleTimeoutMs, graceMs: w.graceMs };
      this.freshToken = this.tokenRetried = false; // the next fresh session asks getToken again
      this.emit('connected', { session: toHex(w.sessionId), transport: this.carrier ?? 'websocket' });
    }
    this.inb.ackSent(); // the handshake carried our delivered count
    this.link = { k: 'established', tid, since: now };
    // On the fallback, attempts start there, and WebSocket is tried again now and then (§2.4).
    this.preferHttp = this.carrier === 'http';
    this.upgradeAt = this.carrier === 'http' && this.WS ? now + this.upgradeEvery : null;
    this.hb.reset(now);
    this.resumableUntil = null;
    this.retryNotBefore = null;
    this.serverSlow = false;
    this.lastEnd = null;
    this.dirtyCore = this.dirtyOut = true; // the rotated token must survive a reload
  }

  // ───── established ─────

  private onEstablishedFrame(now: number, f: Frame): void {
    if (f.type === 'pong') {
      const rtt = this.hb.rttFor(now, f.nonce);
      if (rtt !== null) this.onRtt(rtt);
    }
    this.hb.onHeard(now);
    let ack: bigint | null = null;
    switch (f.type) {
      case 'data': {
        const v = this.inb.onData(now, f.seq);
        if (v === 'gap') {
          const msg = `gap: expected seq ${this.inb.delivered + 1n}, got ${f.seq}`;
          return this.endSession(now, 'sequence-violation', msg, CloseCode.SequenceViolation, true, true);
        }
        if (v === 'deliver') {
          this.dirtyCore = true; // persisted before the app sees it: a reload neither loses nor repeats it
          const data = f.payload;
          this.emit('message', { data, seq: Number(f.seq), text: () => utf8Lossy.decode(data) });
        }
        break;
      }
      case 'ack': ack = f.ack; break;
      case 'ping': {
        // The ack first: a PING acknowledging data never sent ends the session (3003) unanswered (§8.2).
        const acked = this.out.acked;
        const err = this.out.onAck(f.ack);
        if (err) return this.endSession(now, 'sequence-violation', err, CloseCode.SequenceViolation, true, true);
        this.dirtyOut = true;
        this.noteAcked(acked);
        this.sendFrame({ type: 'pong', nonce: f.nonce, ack: this.inb.ackSent(), payload: new Uint8Array(0) });
        break;
      }
      case 'pong': ack = f.ack; break;
      case 'close': return this.onClose(now, f);
      default: return this.protocolError(now, CloseCode.ProtocolError, `frame ${f.type} after WELCOME`);
    }
    if (ack === null) return;
    const before = this.out.buf.length;
    const acked = this.out.acked;
    const err = this.out.onAck(ack);
    if (err) return this.endSession(now, 'sequence-violation', err, CloseCode.SequenceViolation, true, true);
    if (this.out.buf.length !== before) this.dirtyOut = true;
    this.noteAcked(acked);
  }

  /** Reports an ack that moved past `before`. */
  private noteAcked(before: bigint): void {
    if (this.out.acked > before) this.emit('acked', { seq: Number(this.out.acked) });
  }

  private onRtt(ms: number): void {
    this.pacingRtt = ms;
    this.lastRtt = Math.round(ms * 10) / 10;
    // The gateway keeps the last RTT each client measured, carried on its PINGs (GATEWAY.md §1.3).
    this.pingPayload = utf8Encoder.encode(JSON.stringify({ rtt_ms: this.lastRtt }));
    this.emit('rtt', { ms: this.lastRtt });
  }

  private onClose(now: number, c: Extract<Frame, { type: 'close' }>): void {
    this.dropTransport(); // no reply to a CLOSE
    if (c.retryAfterMs > 0) this.retryNotBefore = now + c.retryAfterMs;
    // 1003 (resync): the server deferred messages and asks for a resume at once (§7.8).
    if (c.code < 3000) return this.lose(now, 'peer-closed', `${c.code}: ${c.reason}`, c.code === CloseCode.Resync);
    // The server ended the session: restart only when a fresh session fixes the cause (§6.1).
    const restart = c.code === 3001 || c.code === 3002 || c.code === 3003 || c.code === 3005;
    this.link = { k: 'waiting', until: now };
    this.endSession(now, c.code === 3002 ? 'expired' : 'peer-closed', c.reason, c.code, false, restart);
  }

  private protocolError(now: number, code: number, text: string): void {
    this.sendFrame({ type: 'close', code, retryAfterMs: 0, reason: clipReason(text) });
    this.dropTransport();
    this.loseNoClose(now, 'protocol-error', text, false);
  }

  private sendPing(nonce: number): void {
    this.sendFrame({ type: 'ping', nonce, ack: this.inb.ackSent(), payload: this.pingPayload });
  }

  /** Writes everything owed on an established transport: new DATA, then an ACK if one is due. */
  private flush(now: number): void {
    if (this.link.k !== 'established') return;
    for (let e = this.out.nextToWrite(); e; e = this.out.nextToWrite()) this.sendFrame({ type: 'data', seq: e.seq, payload: e.payload });
    if (this.inb.ackDue !== null && this.inb.ackDue <= now) this.sendFrame({ type: 'ack', ack: this.inb.ackSent() });
  }

  // ───── losing transports and ending sessions ─────

  private lose(now: number, reason: LossReason, message: string, immediate: boolean): void {
    this.dropTransport();
    this.loseNoClose(now, reason, message, immediate);
  }

  private loseNoClose(now: number, reason: LossReason, message: string, immediate: boolean): void {
    const l = this.link;
    if (l.k === 'closed') return;
    if (l.k === 'established') {
      if (now - l.since >= BACKOFF.stableAfter) this.backoff.reset();
      if (this.session) this.resumableUntil = this.hb.lastHeard + this.expiryAfter(this.session);
      this.emit('disconnected', { reason, message });
    } else if (l.k !== 'waiting') {
      this.emit('attemptfailed', { reason, message });
    }
    this.schedule(now, immediate);
  }

  /** last heard + dead_after + (idle if idle > grace) + grace: never before the server gives up (§10.2). */
  private expiryAfter(s: SessionCtx): number {
    const cycle = this.t.interval + this.t.probes * this.t.probeTimeout;
    return cycle + (s.idleMs > s.graceMs ? s.idleMs : 0) + s.graceMs;
  }

  private schedule(now: number, immediate: boolean): void {
    const retryAfter = this.retryNotBefore === null ? null : Math.max(0, this.retryNotBefore - now);
    const attempt = this.backoff.attempt;
    const delay = immediate && retryAfter === null ? 0
      : this.backoff.next(now, this.random, this.resumableUntil, this.t.handshakeTimeout, retryAfter);
    this.emit('reconnecting', { attempt, delay });
    this.link = { k: 'waiting', until: now + delay };
  }

  /** Ends the session: tells the server (if connected and `sendClose`), hands back the unacked, restarts or stops. */
  private endSession(now: number, reason: EndReason, message: string, code: number | null, sendClose: boolean, restart: boolean): void {
    if (sendClose && this.link.k === 'established') {
      this.sendFrame({ type: 'close', code: code ?? CloseCode.Normal, retryAfterMs: 0, reason: clipReason(message) });
      this.dropTransport();
    }
    const session = this.sessionId;
    this.session = null;
    const unacked = this.out.takeUnacked();
    this.inb.reset();
    this.resumableUntil = null;
    this.lastEnd = reason;
    this.dirtyCore = this.dirtyOut = true;
    this.emit('ended', { session, reason, code, message, unacked, restarting: restart });
    if (restart) {
      // The server answered, so the network works: first backoff step, jittered (§9.5).
      this.backoff.reset();
      this.schedule(now, false);
    } else {
      this.dropTransport();
      this.link = { k: 'closed' };
      this.unlisten?.();
    }
  }

  // ───── transport I/O ─────

  private sendFrame(f: Frame): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1 /* OPEN */) return;
    try { ws.send(encodeFrame(f)); } catch { /* the close event that follows reports the loss */ }
  }

  /**
   * On the fallback: tries a WebSocket beside it. One that opens means WebSockets get through now: it
   * is closed, and the session moves to a new WebSocket at once (a resume; nothing is lost).
   */
  private tryUpgrade(now: number): void {
    this.upgradeAt = now + this.upgradeEvery;
    if (!this.WS || this.upgradeProbe) return;
    let probe: WebSocket;
    try { probe = new this.WS(this.url, SUBPROTOCOL); } catch { return; }
    this.upgradeProbe = probe;
    const done = (opened: boolean) => this.input((n) => {
      if (this.upgradeProbe !== probe) return;
      this.upgradeProbe = null;
      dropSocket(probe as unknown as SocketLike);
      if (!opened || this.link.k !== 'established' || this.carrier !== 'http') return;
      this.preferHttp = false;
      this.lose(n, 'upgrade', 'a WebSocket opened: the session moves there from the HTTP fallback', true);
    });
    probe.onopen = () => done(true);
    probe.onclose = probe.onerror = () => done(false);
  }

  /** Abandons the current connection and any still opening, at once: nothing they still carry is read again (§2.3, §7.6). */
  private dropTransport(): void {
    dropSocket(this.ws);
    this.ws = null;
    this.upgradeAt = null;
    if (this.upgradeProbe) dropSocket(this.upgradeProbe as unknown as SocketLike);
    this.upgradeProbe = null;
    for (const r of this.racers.takeAll()) dropSocket(r.ws);
  }

  // ───── page life cycle and persistence ─────

  private listenToPage(): void {
    const g = globalThis as unknown as Window;
    if (typeof g.addEventListener !== 'function' || typeof g.document === 'undefined') return;
    const change = () => this.probe();
    const visible = () => { if (g.document.visibilityState === 'visible') change(); };
    const shown = (e: Event) => { if ((e as PageTransitionEvent).persisted) change(); };
    // The page may be reloaded, or closed: the server keeps the session a few seconds only (a
    // page in the back-forward cache keeps it whole), and the local-expiry deadline is saved.
    const hide = (e: Event) => {
      if (!(e as PageTransitionEvent).persisted) this.leaving();
      this.dirtyCore = true;
      this.persist();
    };
    g.addEventListener('online', change);
    g.addEventListener('offline', change);
    g.document.addEventListener('visibilitychange', visible);
    g.addEventListener('pageshow', shown);
    g.addEventListener('pagehide', hide);
    this.unlisten = () => {
      g.removeEventListener('online', change);
      g.removeEventListener('offline', change);
      g.document.removeEventListener('visibilitychange', visible);
      g.removeEventListener('pageshow', shown);
      g.removeEventListener('pagehide', hide);
      this.unlisten = null;
    };
  }

  /**
   * Two keys: `<key>` holds the session (id, token, last_received, the local expiry as a wall-clock
   * deadline), `<key>:out` our unacknowledged messages, so a reload resumes without a gap either way.
   */
  private persist(): void {
    const st = this.storage;
    if (!st || (!this.dirtyCore && !this.dirtyOut)) return;
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
            v: 1, id: toHex(s.id), token: toHex(s.token), idle: s.idleMs, grace: s.graceMs,
            recv: this.inb.delivered.toString(), expires: this.clock.wall() + (until - now),
          }));
        }
        if (this.dirtyOut) {
          const o = this.out;
          st.setItem(`${this.key}:out`, JSON.stringify({
            next: o.nextSeq.toString(), acked: o.acked.toString(),
            buf: o.buf.map((e) => [e.seq.toString(), toBase64(e.payload)]),
          }));
        }
      }
    } catch { /* quota or privacy mode: the session still works, only not across a reload */ }
    this.dirtyCore = this.dirtyOut = false;
  }

  private restore(now: number): void {
    if (!this.storage) return;
    try {
      const raw = this.storage.getItem(this.key);
      if (!raw) return;
      const c = JSON.parse(raw);
      const id = fromHex(c.id);
      const token = fromHex(c.token);
      if (c.v !== 1 || id.length !== 16 || token.length !== 32) throw new Error('bad stored session');
      const o = JSON.parse(this.storage.getItem(`${this.key}:out`) ?? '{"next":"1","acked":"0","buf":[]}');
      const out = new Outbound();
      out.nextSeq = BigInt(o.next);
      out.acked = out.written = BigInt(o.acked);
      out.buf = (o.buf as [string, string][]).map(([seq, b64]) => ({ seq: BigInt(seq), payload: fromBase64(b64) }));
      out.bytes = out.buf.reduce((n, e) => n + e.payload.length, 0);
      this.out = out;
      this.inb.delivered = this.inb.acked = BigInt(c.recv);
      this.session = { id, token, idleMs: Number(c.idle), graceMs: Number(c.grace) };
      // Keep the deadline the previous page had: reloading must not extend the session's life.
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

/** A POST of the fallback carries at most this many bytes of frames (more frames wait for the next). */
const HTTP_BATCH = 256 * 1024;

/**
 * The HTTP fallback (PROTOCOL §2.4) behind the WebSocket interface the client drives: a streaming
 * `POST ?tether=stream` brings the server's frames, and our frames go out in `POST ?tether=send`
 * requests, one at a time (which keeps them in order). Both are simple cross-origin requests
 * (text/plain), so a page needs no preflight. It "opens" when the stream's 200 arrives.
 */
export class HttpSocket implements SocketLike {
  readyState = 0;
  readonly protocol = SUBPROTOCOL;
  binaryType = 'arraybuffer';
  onopen: ((e: Event) => unknown) | null = null;
  onmessage: ((e: MessageEvent) => unknown) | null = null;
  onclose: ((e: CloseEvent) => unknown) | null = null;
  onerror: ((e: Event) => unknown) | null = null;
  private readonly abort = new AbortController();
  private readonly target: URL;
  private queue: Uint8Array[] = [];
  private posting = false;

  constructor(url: string, private readonly fetchImpl: typeof fetch = (i, o) => fetch(i, o)) {
    this.target = new URL(url);
    this.target.protocol = this.target.protocol === 'wss:' ? 'https:' : 'http:';
    const id = new Uint8Array(16);
    globalThis.crypto.getRandomValues(id);
    this.target.searchParams.set('id', toHex(id));
    void this.stream();
  }

  private request(role: 'stream' | 'send', body: Uint8Array): Promise<Response> {
    const u = new URL(this.target);
    u.searchParams.set('tether', role);
    return this.fetchImpl(u.toString(), {
      method: 'POST', body: body as BodyInit, headers: { 'content-type': 'text/plain' }, signal: this.abort.signal, cache: 'no-store',
    });
  }

  private async stream(): Promise<void> {
    try {
      const res = await this.request('stream', new Uint8Array(0));
      if (res.status !== 200 || !res.body) throw new Error(`the fallback stream was answered ${res.status}`);
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.(new Event('open'));
      const reader = res.body.getReader();
      let buf: Uint8Array = new Uint8Array(0);
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.readyState !== 1) break;
        buf = concatBytes([buf, value]);
        while (buf.length >= 4) {
          const len = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0);
          if (buf.length < 4 + len) break;
          const frame = buf.slice(4, 4 + len);
          buf = buf.slice(4 + len);
          if (this.readyState !== 1) return;
          this.onmessage?.({ data: frame.buffer } as MessageEvent);
        }
      }
    } catch { /* reported as the end below */ }
    this.gone();
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error('the fallback transport is not open');
    const f = new Uint8Array(4 + data.length);
    new DataView(f.buffer).setUint32(0, data.length);
    f.set(data, 4);
    this.queue.push(f);
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.posting || this.queue.length === 0 || this.readyState !== 1) return;
    this.posting = true;
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && (n === 0 || bytes + this.queue[n].length <= HTTP_BATCH)) bytes += this.queue[n++].length;
    const body = concatBytes(this.queue.splice(0, n));
    try {
      const res = await this.request('send', body);
      if (res.status !== 204) throw new Error(`a fallback POST was answered ${res.status}`);
    } catch {
      this.posting = false;
      return this.gone();
    }
    this.posting = false;
    void this.pump();
  }

  close(): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.abort.abort();
  }

  private gone(): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.abort.abort();
    this.onclose?.({ code: 1006 } as CloseEvent);
  }
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** Closes a connection without a word, its handlers detached first so its late events never arrive. */
function dropSocket(ws: SocketLike | null): void {
  if (!ws) return;
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  try { ws.close(); } catch { /* already closing */ }
}

// ───────────────────────────── rooms (GATEWAY.md §1) ─────────────────────────────

export type MemberState = 'active' | 'reconnecting' | 'left' | 'expired';
export interface Member { session: string; user: string; name: string; state: MemberState; rtt_ms: number | null }

/** The gateway's error codes (GATEWAY.md §1.2); `not_json` is the client's own (the gateway sent something unreadable). */
export type RoomErrorCode =
  | 'bad_request' | 'request_too_large' | 'bad_room' | 'bad_name' | 'too_many_rooms' | 'room_full'
  | 'not_member' | 'rate_limited' | 'forbidden' | 'backend_unavailable' | 'too_large_for_members' | 'not_json';

/**
 * An `error` from the gateway: the request's `op` ('' if it could not be read), a `code`, and a `message`
 * for people; `room` when the request named one; `size` and `limit` (bytes) on `request_too_large` and
 * `too_large_for_members`, which also says how many members did not get the `say` (`undelivered`).
 */
export interface RoomError {
  op: string;
  code: RoomErrorCode | string;
  message: string;
  room?: string;
  size?: number;
  limit?: number;
  undelivered?: number;
}

export interface RoomsEventMap {
  /** `count` is the room's exact size; `members` is capped (you first). */
  joined: { room: string; you: Member; members: Member[]; count: number };
  left: { room: string };
  members: { room: string; members: Member[]; count: number };
  presence: { room: string; member: Member };
  roomMessage: { room: string; from: Member; body: unknown };
  publish: { room: string | null; body: unknown };
  /** The answer to an `rpc`: `result`, or `error` (also settles the `rpc()` promise). */
  reply: { id: number; result?: unknown; error?: { code: string; message: string } };
  error: RoomError;
}

/**
 * An `rpc()` that got no result: `code` is the backend's own, or the gateway's (`backend_unavailable`,
 * `no_backend`, `bad_method`, `reply_too_large`), or the client's: `timeout` (no reply in time; the
 * backend may still act on it: the request is in the session, delivered exactly once) and
 * `session_ended` (the session ended before the reply came).
 */
export class RpcError extends Error {
  constructor(readonly code: string, message: string) { super(message); this.name = 'RpcError'; }
}

/** The optional fields of an `error` the client passes on, with their types. */
const ERROR_FIELDS = { room: 'string', undelivered: 'number', size: 'number', limit: 'number' } as const;

function roomError(m: Record<string, any>): RoomError {
  const e: RoomError = { op: m.op ?? '', code: m.code ?? '', message: m.message ?? '' };
  for (const [k, type] of Object.entries(ERROR_FIELDS)) {
    if (typeof m[k] === type) (e as unknown as Record<string, unknown>)[k] = m[k];
  }
  return e;
}

/** A join or leave the gateway refused: its `error` event (`op`, `code`, `message`, …). */
export class RoomRequestError extends Error {
  constructor(readonly detail: RoomError) { super(detail.message); this.name = 'RoomRequestError'; }
}

/** The gateway's room protocol: JSON requests (`op`) and events (`ev`) in DATA payloads. */
export class Rooms extends Emitter<RoomsEventMap> {
  private readonly joinedRooms = new Map<string, string | undefined>();
  private pending: { room: string; resolve(m: Member[]): void; reject(e: Error): void }[] = [];
  /** Joins and leaves waiting for the gateway's answer, oldest first (answers come in request order). */
  private waiting: { op: 'join' | 'leave'; room: string; resolve(v: any): void; reject(e: Error): void }[] = [];
  /** RPCs waiting for their reply, by id. */
  private readonly calls = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: ReturnType<typeof setTimeout> }>();
  private nextId = 1;

  constructor(readonly client: TetherClient) {
    super();
    client.on('message', (m) => this.onMessage(m.text()));
    client.on('ended', (e) => this.onEnded(e));
  }

  /** Rooms this client has joined (they are joined again if the session is replaced). */
  get rooms(): string[] { return [...this.joinedRooms.keys()]; }

  /**
   * Joins `room` (as `name`). Resolves with the gateway's `joined` answer, or rejects with its
   * `error` (a `RoomRequestError`). The membership outlives the session: a fresh session joins
   * again, and a join made while offline is answered once the message gets through.
   */
  join(room: string, name?: string): Promise<RoomsEventMap['joined']> {
    this.joinedRooms.set(room, name);
    return this.ask('join', room, name === undefined ? { op: 'join', room } : { op: 'join', room, name });
  }
  /** Leaves `room`; resolves on the gateway's `left`, rejects with its `error`. */
  leave(room: string): Promise<void> {
    this.joinedRooms.delete(room);
    return this.ask('leave', room, { op: 'leave', room });
  }

  private ask<T>(op: 'join' | 'leave', room: string, msg: object): Promise<T> {
    const p = new Promise<T>((resolve, reject) => {
      this.waiting.push({ op, room, resolve, reject });
      try { this.op(msg); } catch (e) { this.waiting.pop(); reject(e); }
    });
    p.catch(() => {}); // an unawaited join that fails is reported by the `error` event, not as unhandled
    return p;
  }

  /** Settles the oldest request waiting for `op` (on `room`, when given). */
  private answer(op: 'join' | 'leave', room: string | undefined, settle: (w: Rooms['waiting'][number]) => void): void {
    const i = this.waiting.findIndex((w) => w.op === op && (room === undefined || w.room === room));
    if (i >= 0) settle(this.waiting.splice(i, 1)[0]);
  }
  /** Says `body` in `room`; the message's sequence number (`acked` reports when the gateway has it). */
  say(room: string, body: unknown): number { return this.client.send(JSON.stringify({ op: 'say', room, body })); }

  /** Asks for the member list; answers come back in request order, so a FIFO matches them. */
  members(room: string): Promise<Member[]> {
    return new Promise((resolve, reject) => {
      this.pending.push({ room, resolve, reject });
      try { this.op({ op: 'members', room }); } catch (e) { this.pending.pop(); reject(e); }
    });
  }

  /**
   * Asks the application's backend (the gateway's `rpc` hook): resolves with its `result`, or rejects
   * with an `RpcError` (its error, the gateway's, or `timeout` after `timeout` ms, 10 s by default).
   * Sent while offline, it goes out on the resume, like every message.
   */
  rpc(method: string, data?: unknown, opts: { timeout?: number } = {}): Promise<unknown> {
    const id = this.nextId++;
    const timeout = opts.timeout ?? 10_000;
    const p = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id);
        reject(new RpcError('timeout', `no reply to ${method} within ${timeout} ms`));
      }, timeout);
      this.calls.set(id, { resolve, reject, timer });
      try {
        this.op(data === undefined ? { op: 'rpc', id, method } : { op: 'rpc', id, method, data });
      } catch (e) { clearTimeout(timer); this.calls.delete(id); reject(e); }
    });
    return p;
  }

  private op(msg: object): void { this.client.send(JSON.stringify(msg)); }

  private fire<K extends keyof RoomsEventMap>(type: K, detail: RoomsEventMap[K]): void {
    this.dispatchEvent(new TetherEvent(type, detail));
  }

  private onMessage(text: string): void {
    let m: Record<string, any>;
    try { m = JSON.parse(text); } catch { return this.fire('error', { op: '', code: 'not_json', message: 'the gateway sent a message that is not JSON' }); }
    switch (m.ev) {
      case 'joined': {
        const members = m.members ?? [];
        const joined = { room: m.room, you: m.you, members, count: m.count ?? members.length };
        this.answer('join', m.room, (w) => w.resolve(joined));
        return this.fire('joined', joined);
      }
      case 'left':
        this.joinedRooms.delete(m.room);
        this.answer('leave', m.room, (w) => w.resolve(undefined));
        return this.fire('left', { room: m.room });
      case 'presence': return this.fire('presence', { room: m.room, member: m.member });
      case 'message': return this.fire('roomMessage', { room: m.room, from: m.from, body: m.body });
      case 'publish': return this.fire('publish', { room: m.room ?? null, body: m.body });
      case 'reply': {
        const reply: RoomsEventMap['reply'] = { id: m.id };
        if ('result' in m) reply.result = m.result;
        if (m.error !== undefined) reply.error = { code: String(m.error.code ?? ''), message: String(m.error.message ?? '') };
        const call = this.calls.get(m.id);
        if (call) {
          this.calls.delete(m.id);
          clearTimeout(call.timer);
          if (reply.error) call.reject(new RpcError(reply.error.code, reply.error.message));
          else call.resolve(reply.result);
        }
        return this.fire('reply', reply);
      }
      case 'members': {
        const members = m.members ?? [];
        const i = this.pending.findIndex((p) => p.room === m.room);
        if (i >= 0) this.pending.splice(i, 1)[0].resolve(members);
        return this.fire('members', { room: m.room, members, count: m.count ?? members.length });
      }
      case 'error': {
        const e = roomError(m);
        if (e.op === 'members') this.pending.shift()?.reject(new Error(e.message));
        if (e.op === 'join' || e.op === 'leave') {
          if (e.op === 'join' && e.room !== undefined) this.joinedRooms.delete(e.room);
          this.answer(e.op, e.room, (w) => w.reject(new RoomRequestError(e)));
        }
        return this.fire('error', e);
      }
    }
  }

  /** Membership belongs to the session: a fresh session joins the same rooms again. */
  private onEnded(e: TetherEventMap['ended']): void {
    for (const [id, c] of this.calls) {
      clearTimeout(c.timer);
      this.calls.delete(id);
      c.reject(new RpcError('session_ended', `the session ended (${e.reason}) before the reply`));
    }
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) p.reject(new Error(`the session ended (${e.reason})`));
    // Joins waiting for an answer are answered on the fresh session (joined again below); without
    // one, nothing will answer them.
    const waiting = this.waiting;
    this.waiting = [];
    if (!e.restarting) {
      for (const w of waiting) w.reject(new Error(`the session ended (${e.reason})`));
      return;
    }
    for (const w of waiting) {
      if (w.op === 'leave') w.resolve(undefined); // a fresh session is in no room
      else this.waiting.push(w); // answered by the join below
    }
    for (const [room, name] of this.joinedRooms) this.op(name === undefined ? { op: 'join', room } : { op: 'join', room, name });
  }
}
