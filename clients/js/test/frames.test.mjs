// Frame encoding/decoding against docs/PROTOCOL.md: every §12 example is read
// from the spec itself, so the test follows the document.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decodeFrame, encodeFrame, DecodeError, clipReason, toHex, fromHex } from '../dist/tether.js';

const spec = readFileSync(new URL('../../../docs/PROTOCOL.md', import.meta.url), 'utf8');

/** Every ```hex <label>``` / ```hex-invalid <label>``` block of §12, as bytes. */
function examples(kind) {
  const re = new RegExp('```' + kind + ' ([\\w-]+)\\n([\\s\\S]*?)```', 'g');
  const out = new Map();
  for (const m of spec.matchAll(re)) out.set(m[1], fromHex(m[2].replace(/\s+/g, '')));
  return out;
}
const valid = examples('hex');
const invalid = examples('hex-invalid');

const seq = (from, n) => Uint8Array.from({ length: n }, (_, i) => from + i);
const SID = seq(0x00, 16);
const TOKEN = seq(0x20, 32);
const ROTATED = seq(0xa0, 32);
const bytes = (s) => new TextEncoder().encode(s);

// What each §12.1 example must decode to (the prose above each block).
const expected = {
  'hello-new': { type: 'hello', minVersion: 1, maxVersion: 1, maxFrame: 1048576, idleTimeoutMs: 40000, resume: null, auth: bytes('tok') },
  'hello-resume': {
    type: 'hello', minVersion: 1, maxVersion: 1, maxFrame: 1048576, idleTimeoutMs: 40000,
    resume: { sessionId: SID, token: TOKEN, lastReceived: 5n }, auth: new Uint8Array(0),
  },
  welcome: { type: 'welcome', version: 1, resumed: false, sessionId: SID, token: TOKEN, lastReceived: 0n, maxFrame: 1048576, idleTimeoutMs: 40000, graceMs: 60000 },
  'welcome-resumed': { type: 'welcome', version: 1, resumed: true, sessionId: SID, token: ROTATED, lastReceived: 3n, maxFrame: 1048576, idleTimeoutMs: 40000, graceMs: 60000 },
  reject: { type: 'reject', reason: 5, retryAfterMs: 2000, minVersion: 1, maxVersion: 1, message: 'busy' },
  data: { type: 'data', seq: 1n, payload: bytes('hello') },
  ack: { type: 'ack', ack: 5n },
  ping: { type: 'ping', nonce: 7, ack: 5n, payload: bytes('hi') },
  pong: { type: 'pong', nonce: 7, ack: 3n, payload: new Uint8Array(0) },
  close: { type: 'close', code: 3000, retryAfterMs: 0, reason: 'bye' },
  'close-going-away': { type: 'close', code: 1001, retryAfterMs: 5000, reason: '' },
};

// §12.2: the error each invalid example must give (all close with 2000).
const expectedErrors = {
  'unknown-type': 'UnknownType', 'http-request': 'UnknownType', 'truncated-ack': 'Truncated',
  'trailing-ack': 'TrailingBytes', 'data-truncated-seq': 'Truncated', 'data-seq-zero': 'InvalidValue',
  'bad-magic': 'BadMagic', 'hello-reserved-flag': 'ReservedBits', 'hello-resume-truncated': 'Truncated',
  'hello-min-above-max': 'InvalidValue', 'hello-max-frame-too-small': 'InvalidValue', 'hello-auth-too-long': 'TooLong',
  'welcome-reserved-flag': 'ReservedBits', 'reject-unknown-reason': 'InvalidValue', 'close-unassigned-code': 'InvalidValue',
  'close-code-5000': 'InvalidValue', 'close-bad-utf8': 'InvalidUtf8', 'close-reason-overrun': 'Truncated',
};

test('the spec has every example this test knows about', () => {
  for (const label of Object.keys(expected)) assert.ok(valid.has(label), `missing hex ${label}`);
  for (const label of Object.keys(expectedErrors)) assert.ok(invalid.has(label), `missing hex-invalid ${label}`);
  assert.ok(valid.has('tcp-data'));
});

test('§12.1 valid examples decode to the documented fields and re-encode to the same bytes', () => {
  for (const [label, want] of Object.entries(expected)) {
    const buf = valid.get(label);
    const f = decodeFrame(buf);
    assert.deepEqual(f, want, label);
    assert.equal(toHex(encodeFrame(want)), toHex(buf), `${label}: encoding is canonical`);
  }
});

test('§12.1 tcp-data: the 4-byte prefix is the frame length, and the frame is a DATA', () => {
  const buf = valid.get('tcp-data');
  const len = new DataView(buf.buffer).getUint32(0);
  assert.equal(len, buf.length - 4);
  assert.deepEqual(decodeFrame(buf.subarray(4)), { type: 'data', seq: 2n, payload: bytes('hi') });
});

test('§12.2 invalid examples are refused with the documented error and close code 2000', () => {
  for (const [label, kind] of Object.entries(expectedErrors)) {
    assert.throws(() => decodeFrame(invalid.get(label)), (e) => {
      assert.ok(e instanceof DecodeError, label);
      assert.equal(e.kind, kind, label);
      assert.equal(e.closeCode, 2000, label);
      return true;
    });
  }
});

test('size is checked before anything else: oversize gives FrameTooLarge (2001), empty gives Empty', () => {
  assert.throws(() => decodeFrame(new Uint8Array(16385), 16384), (e) => e.kind === 'FrameTooLarge' && e.closeCode === 2001);
  assert.throws(() => decodeFrame(new Uint8Array(0), 16384), (e) => e.kind === 'Empty' && e.closeCode === 2000);
  // A frame exactly at the limit is fine.
  const big = encodeFrame({ type: 'data', seq: 1n, payload: new Uint8Array(16384 - 9) });
  assert.equal(decodeFrame(big, 16384).payload.length, 16375);
});

test('limits: ping payload, reason and auth lengths', () => {
  const ping = (n) => encodeFrame({ type: 'ping', nonce: 1, ack: 0n, payload: new Uint8Array(n) });
  assert.equal(decodeFrame(ping(1024)).payload.length, 1024);
  assert.throws(() => decodeFrame(ping(1025)), (e) => e.kind === 'TooLong');
  const close = (s) => encodeFrame({ type: 'close', code: 3000, retryAfterMs: 0, reason: s });
  assert.equal(decodeFrame(close('x'.repeat(1024))).reason.length, 1024);
  assert.throws(() => decodeFrame(close('x'.repeat(1025))), (e) => e.kind === 'TooLong');
  const hello = (n) => encodeFrame({ type: 'hello', minVersion: 1, maxVersion: 1, maxFrame: 16384, idleTimeoutMs: 0, resume: null, auth: new Uint8Array(n) });
  assert.equal(decodeFrame(hello(4096)).auth.length, 4096);
  assert.throws(() => decodeFrame(hello(4097)), (e) => e.kind === 'TooLong');
  // WELCOME announcing a max_frame below 16384 is invalid; the u64 fields keep full precision.
  const w = { type: 'welcome', version: 1, resumed: false, sessionId: SID, token: TOKEN, lastReceived: 2n ** 64n - 1n, maxFrame: 16383, idleTimeoutMs: 1, graceMs: 1 };
  assert.throws(() => decodeFrame(encodeFrame(w)), (e) => e.kind === 'InvalidValue');
  assert.equal(decodeFrame(encodeFrame({ ...w, maxFrame: 16384 })).lastReceived, 2n ** 64n - 1n);
});

test('round trips for every frame type', () => {
  const frames = [
    ...Object.values(expected),
    { type: 'data', seq: 2n ** 53n + 1n, payload: new Uint8Array(0) },
    { type: 'close', code: 4999, retryAfterMs: 0xffffffff, reason: 'ünïcødé ✓' },
    { type: 'close', code: 3000, retryAfterMs: 0, reason: '\ufeffstarts with a BOM' },
    { type: 'reject', reason: 8, retryAfterMs: 0, minVersion: 2, maxVersion: 1, message: '' },
    { type: 'pong', nonce: 0xffffffff, ack: 0n, payload: bytes('{"x":1}') },
  ];
  for (const f of frames) assert.deepEqual(decodeFrame(encodeFrame(f)), f);
});

test('text fields must be strict UTF-8: overlong forms and surrogates are refused', () => {
  for (const bad of [[0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xff]]) {
    const frame = Uint8Array.from([0x30, 0x0b, 0xb8, 0, 0, 0, 0, 0, bad.length, ...bad]);
    assert.throws(() => decodeFrame(frame), (e) => e.kind === 'InvalidUtf8', bad.join(','));
  }
});

test('every assigned close code decodes, unassigned ones do not', () => {
  const ok = [1000, 1001, 1002, 1003, 2000, 2001, 3000, 3001, 3002, 3003, 3004, 3005, 4000, 4999];
  const bad = [0, 999, 1004, 1999, 2002, 2999, 3006, 3999, 5000, 65535];
  const close = (code) => encodeFrame({ type: 'close', code, retryAfterMs: 0, reason: '' });
  for (const c of ok) assert.equal(decodeFrame(close(c)).code, c);
  for (const c of bad) assert.throws(() => decodeFrame(close(c)), (e) => e.kind === 'InvalidValue', String(c));
});

test('clipReason cuts at 1024 bytes on a character boundary', () => {
  const clipped = clipReason('é'.repeat(600)); // 1200 bytes of 2-byte characters
  assert.equal(new TextEncoder().encode(clipped).length, 1024);
  const odd = clipReason('a' + 'é'.repeat(600)); // the boundary falls inside a character
  assert.equal(new TextEncoder().encode(odd).length, 1023);
  assert.ok(!odd.includes('\ufffd'));
  assert.equal(clipReason('short'), 'short');
});
