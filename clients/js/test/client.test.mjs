// The session machine against a fake WebSocket on a virtual clock:
// handshake, acks, resume with replay, dedupe, token rotation persisted,
// reload, heartbeat, probes, backoff, expiry, REJECT and CLOSE handling.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, welcome, seqBytes, SID, enc, dec, MemoryStorage, FakeClock } from './harness.mjs';
import { toHex, Rooms } from '../dist/tether.js';

const TOKEN1 = seqBytes(0x20, 32);
const TOKEN2 = seqBytes(0xa0, 32);
const data = (seq, text) => ({ type: 'data', seq: BigInt(seq), payload: enc(text) });
const stored = (h) => JSON.parse(h.storage.getItem('tether:ws://test/'));

test('handshake: HELLO per spec, WELCOME → connected, session stored', () => {
  const h = setup({ client: { token: 'tok' } });
  assert.equal(h.client.state, 'connecting');
  assert.equal(h.sockets().length, 0, 'nothing happens before the first tick: listeners attach first');
  h.clock.advance(0);
  const ws = h.ws();
  assert.equal(ws.protocols, 'tether.v1');
  assert.equal(ws.binaryType, 'arraybuffer');
  assert.equal(ws.sent.length, 0, 'nothing is sent before the WebSocket opens');
  ws.open();
  const [hello] = ws.take('hello');
  assert.deepEqual(hello, {
    type: 'hello', minVersion: 1, maxVersion: 1, maxFrame: 1 << 20, idleTimeoutMs: 40000, resume: null, auth: enc('tok'),
  });
  ws.deliver(welcome());
  assert.equal(h.client.state, 'connected');
  assert.equal(h.client.sessionId, toHex(SID));
  assert.deepEqual(h.of('connected'), [{ session: toHex(SID), transport: 'websocket' }]);
  assert.deepEqual(h.of('state').map((s) => s.state), ['connected']);
  const s = stored(h);
  assert.equal(s.id, toHex(SID));
  assert.equal(s.token, toHex(TOKEN1));
  assert.equal(s.recv, '0');
});

test('realtime profile asks for a 9 s idle timeout and refuses a server that grants less (CLOSE 3000, stop)', () => {
  const h = setup({ client: { profile: 'realtime' } });
  h.clock.advance(0);
  const ws = h.ws();
  ws.open();
  assert.equal(ws.take('hello')[0].idleTimeoutMs, 9000);
  ws.deliver(welcome({ idleTimeoutMs: 8999 }));
  const [close] = ws.take('close');
  assert.equal(close.code, 3000);
  assert.match(close.reason, /raise the server's idle timeout/);
  assert.equal(h.client.state, 'closed');
  assert.equal(h.of('ended')[0].reason, 'incompatible');
});

test('sending: seq from 1, queued before WELCOME, written after; ACK pacing 50 ms / 32', () => {
  const h = setup();
  h.client.send('early');
  const { ws } = h.connect();
  assert.deepEqual(ws.take('data'), [data(1, 'early')]);
  h.client.send('a');
  h.client.send(new Uint8Array([1, 2, 3]));
  assert.deepEqual(ws.take('data').map((f) => f.seq), [2n, 3n]);

  ws.deliver(data(1, 'x'));
  ws.deliver(data(2, 'y'));
  assert.deepEqual(ws.take('ack'), [], 'acks are coalesced, not one per message');
  h.clock.advance(49);
  assert.deepEqual(ws.take('ack'), []);
  h.clock.advance(1);
  assert.deepEqual(ws.take('ack'), [{ type: 'ack', ack: 2n }]);
  for (let i = 3; i <= 34; i++) ws.deliver(data(i, `m${i}`));
  assert.deepEqual(ws.take('ack'), [{ type: 'ack', ack: 34n }], '32 unacked deliveries: ack at once');
  assert.deepEqual(h.of('message').map((m) => m.text()).slice(0, 2), ['x', 'y']);
  assert.equal(stored(h).recv, '34', 'last_received persisted as messages are delivered');
});

test('resume after a drop: RESUME HELLO, token rotation persisted, exact replay, no duplicates', async () => {
  const h = setup();
  const { ws } = h.connect();
  for (const m of ['a', 'b', 'c']) h.client.send(m);
  ws.deliver({ type: 'ack', ack: 1n });
  ws.deliver(data(1, 'one'));
  ws.deliver(data(2, 'two'));
  h.clear();
  const staleHandler = ws.onmessage; // what a late event of the old socket would run
  ws.drop();
  assert.equal(h.client.state, 'reconnecting');
  assert.deepEqual(h.of('disconnected').map((d) => d.reason), ['closed']);
  const [rec] = h.of('reconnecting');
  assert.equal(rec.attempt, 0);
  assert.ok(rec.delay <= 500, 'first delay ≤ initial (full jitter)');
  assert.deepEqual(h.client.buffered, { messages: 2, bytes: 2 });

  h.client.send('d'); // queued while disconnected
  h.clock.advance(rec.delay);
  const ws2 = h.ws();
  assert.notEqual(ws2, ws);
  ws2.open();
  const [hello] = ws2.take('hello');
  assert.deepEqual(hello.resume, { sessionId: SID, token: TOKEN1, lastReceived: 2n });
  assert.equal(ws2.sent.length, 0, 'nothing but HELLO before WELCOME');

  ws2.deliver(welcome({ resumed: true, token: TOKEN2, lastReceived: 2n }));
  assert.deepEqual(h.of('resumed'), [{ session: toHex(SID), replayed: 2, transport: 'websocket' }]);
  assert.deepEqual(ws2.take('data'), [data(3, 'c'), data(4, 'd')], 'only what the server lacks, in order');
  assert.equal(stored(h).token, toHex(TOKEN2), 'the rotated token is persisted at once');

  // The server replays its tail overlapping what we already delivered.
  ws2.deliver(data(2, 'two'));
  ws2.deliver(data(3, 'three'));
  assert.deepEqual(h.of('message').map((m) => m.text()), ['three']);

  // The old transport can deliver nothing any more (§7.6).
  const late = data(4, 'from the old socket');
  const b = (await import('../dist/tether.js')).encodeFrame(late);
  staleHandler({ data: b.buffer });
  assert.equal(ws.onmessage, null, 'handlers of the abandoned socket are detached');
  assert.equal(h.of('message').length, 1);

  // Next resume uses the new token.
  ws2.drop();
  h.clock.advance(2000);
  h.ws().open();
  assert.deepEqual(h.ws().take('hello')[0].resume.token, TOKEN2);
});

test('a reload resumes the stored session: same token, last_received, unacked messages replayed', () => {
  const storage = new MemoryStorage();
  const clock = new FakeClock();
  const h1 = setup({ storage, clock });
  const { ws } = h1.connect();
  h1.client.send('kept');
  h1.client.send('also');
  ws.deliver({ type: 'ack', ack: 1n });
  ws.deliver(data(1, 'hello'));
  // "Reload": a new client with the same storage; the old one is simply abandoned.
  const h2 = setup({ storage, clock });
  assert.equal(h2.client.state, 'reconnecting');
  assert.equal(h2.client.sessionId, toHex(SID));
  h2.clock.advance(0);
  const ws2 = h2.ws();
  ws2.open();
  assert.deepEqual(ws2.take('hello')[0].resume, { sessionId: SID, token: TOKEN1, lastReceived: 1n });
  ws2.deliver(welcome({ resumed: true, token: TOKEN2, lastReceived: 1n }));
  assert.deepEqual(ws2.take('data'), [data(2, 'also')]);
  ws2.deliver(data(1, 'hello'));
  ws2.deliver(data(2, 'new'));
  assert.deepEqual(h2.of('message').map((m) => m.text()), ['new'], 'no duplicate of what the old page delivered');
  assert.equal(h2.client.send('next'), 3, 'numbering continues');
});

test('a reload keeps the local-expiry deadline instead of extending it', () => {
  const storage = new MemoryStorage();
  const clock = new FakeClock();
  const h1 = setup({ storage, clock });
  const { ws } = h1.connect();
  ws.drop(); // last heard at t0: expiry at t0 + 35 s + 60 s
  clock.advance(90_000);
  const h2 = setup({ storage, clock });
  h2.client.send('late');
  for (const w of h2.sockets()) w.drop?.();
  clock.advance(4_999);
  assert.equal(h2.of('ended').length, 0);
  clock.advance(1);
  const [ended] = h2.of('ended');
  assert.equal(ended.reason, 'expired');
  assert.deepEqual(ended.unacked.map(dec), ['late']);
});

test('heartbeat: PING after 20 s of silence, re-probes every 5 s, dead at 35 s, abandoned at once', () => {
  const h = setup();
  const { ws } = h.connect();
  h.clock.advance(19_999);
  assert.deepEqual(ws.take('ping'), []);
  h.clock.advance(1);
  const [p1] = ws.take('ping');
  assert.equal(p1.payload.length, 0, 'no RTT known yet: empty payload');
  h.clock.advance(40);
  ws.deliver({ type: 'pong', nonce: p1.nonce, ack: 0n, payload: new Uint8Array(0) });
  assert.deepEqual(h.of('rtt'), [{ ms: 40 }]);
  assert.equal(h.client.rtt, 40);
  // Silence again: PINGs at +20, +25, +30 s carry the RTT; dead at +35 s.
  h.clock.advance(20_000);
  const [p2] = ws.take('ping');
  assert.deepEqual(JSON.parse(dec(p2.payload)), { rtt_ms: 40 });
  assert.equal(p2.nonce, (p1.nonce + 1) >>> 0);
  h.clock.advance(5_000);
  h.clock.advance(5_000);
  assert.equal(ws.take('ping').length, 2);
  assert.equal(h.client.state, 'connected');
  h.clock.advance(4_999);
  assert.equal(h.client.state, 'connected');
  h.clock.advance(1);
  assert.ok(ws.closed, 'the dead WebSocket is closed without waiting');
  assert.equal(ws.take('close').length, 0, 'no CLOSE to a dead peer');
  assert.deepEqual(h.of('disconnected').map((d) => d.reason), ['heartbeat-timeout']);
  assert.equal(h.client.state, 'reconnecting');
});

test('any frame heard resets the heartbeat; PING from the server is answered with PONG', () => {
  const h = setup();
  const { ws } = h.connect();
  h.clock.advance(15_000);
  ws.deliver({ type: 'ping', nonce: 99, ack: 0n, payload: new Uint8Array(0) });
  assert.deepEqual(ws.take('pong'), [{ type: 'pong', nonce: 99, ack: 0n, payload: new Uint8Array(0) }]);
  h.clock.advance(19_999);
  assert.deepEqual(ws.take('ping'), []);
  h.clock.advance(1);
  assert.equal(ws.take('ping').length, 1);
});

test('probe(): immediate PING; unanswered within 5 s → dropped and reconnected at once', () => {
  const h = setup();
  const { ws } = h.connect();
  h.clock.advance(3_000);
  h.client.probe();
  assert.equal(ws.take('ping').length, 1);
  h.clock.advance(4_999);
  assert.equal(h.client.state, 'connected');
  h.clear();
  h.clock.advance(1);
  assert.ok(ws.closed);
  assert.deepEqual(h.of('disconnected').map((d) => d.reason), ['network-changed']);
  assert.deepEqual(h.of('reconnecting'), [{ attempt: 0, delay: 0 }]);
  assert.equal(h.sockets().length, 2, 'the new attempt starts at once');
});

test('probe() answered keeps the link', () => {
  const h = setup();
  const { ws } = h.connect();
  h.client.probe();
  const [p] = ws.take('ping');
  h.clock.advance(100);
  ws.deliver({ type: 'pong', nonce: p.nonce, ack: 0n, payload: new Uint8Array(0) });
  h.clock.advance(10_000);
  assert.equal(h.client.state, 'connected');
  assert.deepEqual(h.of('rtt'), [{ ms: 100 }]);
});

test('backoff: full jitter within min(cap, 500·2ⁿ); resume_max 2 s while resumable; probe() retries at once', () => {
  const h = setup();
  h.setRandom(0.999999);
  h.clock.advance(0);
  // No session yet: cap 30 s.
  for (let n = 0; n < 8; n++) h.ws().drop(), h.clock.advance(h.of('reconnecting').at(-1).delay);
  const delays = h.of('reconnecting').map((r) => r.delay);
  delays.forEach((d, n) => assert.ok(d <= Math.min(30_000, 500 * 2 ** n) && d > 0.99 * Math.min(30_000, 500 * 2 ** n), `attempt ${n}: ${d}`));
  assert.deepEqual(h.of('reconnecting').map((r) => r.attempt), [0, 1, 2, 3, 4, 5, 6, 7]);
  // While waiting, a network change resets the backoff and tries at once.
  h.ws().drop();
  const before = h.sockets().length;
  h.client.probe();
  h.clock.advance(0);
  assert.equal(h.sockets().length, before + 1);
  // With a session to resume, delays are capped at 2 s.
  h.ws().open();
  h.ws().deliver(welcome());
  h.clear();
  for (let n = 0; n < 6; n++) h.ws().drop(), h.clock.advance(h.of('reconnecting').at(-1).delay);
  for (const r of h.of('reconnecting')) assert.ok(r.delay <= 2000, String(r.delay));
});

test('a connection stable for 10 s resets the backoff counter; a short one does not', () => {
  const h = setup();
  h.connect();
  for (let i = 0; i < 3; i++) { h.ws().drop(); h.clock.advance(2000); }
  h.ws().open();
  h.ws().deliver(welcome({ resumed: true }));
  h.clear();
  h.clock.advance(9_000);
  h.ws().drop();
  assert.equal(h.of('reconnecting')[0].attempt, 3, 'a 9 s connection keeps the count');
  h.clock.advance(2000);
  h.ws().open();
  h.ws().deliver(welcome({ resumed: true }));
  h.clear();
  h.clock.advance(10_000);
  h.ws().drop();
  assert.equal(h.of('reconnecting')[0].attempt, 0);
});

test('a WebSocket without the tether.v1 subprotocol is refused before HELLO', () => {
  const h = setup();
  h.clock.advance(0);
  const ws = h.ws();
  ws.readyState = 1;
  ws.onopen({}); // opened, but ws.protocol is ''
  assert.equal(ws.sent.length, 0);
  assert.ok(ws.closed);
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['protocol-error']);
});

test('handshake timeout: an attempt that never opens is abandoned after 5 s', () => {
  const h = setup();
  h.clock.advance(0);
  const ws = h.ws();
  h.clock.advance(4_999);
  assert.equal(h.of('attemptfailed').length, 0);
  h.clock.advance(1);
  assert.ok(ws.closed);
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['handshake-timeout']);
});

test('local expiry: no resume within dead_after + grace of the last frame heard → ended "expired", fresh session', () => {
  // Racing off: each hung attempt ends in a backoff, as §9.3 describes. (With racing on, a
  // resumable session races on through the stall instead: see the §9.7 tests.)
  const h = setup({ client: { race: { maxInFlight: 1 } } });
  const { ws } = h.connect();
  h.client.send('pending');
  h.clock.advance(10_000);
  ws.deliver({ type: 'ping', nonce: 1, ack: 0n, payload: new Uint8Array(0) }); // last heard: t0 + 10 s
  const lastHeard = h.clock.t;
  ws.drop();
  // The network is stalled: every attempt hangs until the 5 s handshake timeout.
  h.clock.advance(lastHeard + 95_000 - 1 - h.clock.t);
  assert.ok(h.of('attemptfailed').every((a) => a.reason === 'handshake-timeout'));
  assert.ok(h.of('attemptfailed').length >= 10);
  // §9.3: within the last attempt budget before expiry, attempts start at once.
  const late = h.of('reconnecting').filter((r, i, all) => i > 0);
  assert.equal(late.at(-1).delay, 0);
  assert.equal(h.of('ended').length, 0);
  h.clock.advance(lastHeard + 95_000 - h.clock.t);
  const [ended] = h.of('ended');
  assert.equal(ended.reason, 'expired');
  assert.equal(ended.restarting, true);
  assert.deepEqual(ended.unacked.map(dec), ['pending'], 'unacked messages are handed back');
  assert.equal(h.client.state, 'expired');
  assert.equal(h.client.sessionId, null);
  assert.equal(h.storage.getItem('tether:ws://test/'), null, 'the ended session is forgotten');
  h.clock.advance(500);
  const w = h.ws();
  w.open();
  assert.equal(w.take('hello')[0].resume, null, 'a fresh session, not a resume');
  w.deliver(welcome({ sessionId: seqBytes(0x50, 16) }));
  assert.equal(h.client.state, 'connected');
});

test('REJECT 7 Unauthorized: give up for good with the message', () => {
  const h = setup({ client: { token: 'bad' } });
  h.clock.advance(0);
  h.ws().open();
  h.ws().deliver({ type: 'reject', reason: 7, retryAfterMs: 0, minVersion: 1, maxVersion: 1, message: 'signature does not match' });
  assert.equal(h.client.state, 'closed');
  const [ended] = h.of('ended');
  assert.equal(ended.reason, 'refused');
  assert.equal(ended.code, 7);
  assert.equal(ended.message, 'signature does not match');
  assert.equal(ended.restarting, false);
  h.clock.advance(120_000);
  assert.equal(h.sockets().length, 1, 'no retry without a change by the user');
  assert.throws(() => h.client.send('x'), (e) => e.kind === 'closed');
});

test('REJECT 5 Overloaded: retry-after is a floor; REJECT 2 while resuming restarts fresh', () => {
  const h = setup();
  h.clock.advance(0);
  h.ws().open();
  h.ws().deliver({ type: 'reject', reason: 5, retryAfterMs: 7000, minVersion: 1, maxVersion: 1, message: 'busy' });
  assert.ok(h.of('reconnecting')[0].delay >= 7000);
  h.client.probe(); // even a network change waits for the retry-after
  h.clock.advance(6_999);
  assert.equal(h.sockets().length, 1);
  h.clock.advance(1);
  assert.equal(h.sockets().length, 2);
  h.ws().open();
  h.ws().deliver(welcome());
  h.client.send('lost?');
  h.ws().drop();
  h.clock.advance(2000);
  h.ws().open();
  h.ws().deliver({ type: 'reject', reason: 2, retryAfterMs: 0, minVersion: 1, maxVersion: 1, message: 'unknown session' });
  const [ended] = h.of('ended');
  assert.equal(ended.reason, 'expired');
  assert.equal(ended.restarting, true);
  assert.deepEqual(ended.unacked.map(dec), ['lost?']);
  assert.ok(h.of('reconnecting').at(-1).delay <= 500, 'fresh start after the first backoff step');
});

test('malformed input never throws to the app: CLOSE 2000 (or 2001), transport dropped, session kept', () => {
  const h = setup();
  const { ws } = h.connect();
  ws.raw(new Uint8Array([0x40, 1, 2]).buffer);
  assert.deepEqual(ws.take('close').map((c) => c.code), [2000]);
  assert.ok(ws.closed);
  assert.equal(h.client.state, 'reconnecting');
  h.clock.advance(2000);
  const ws2 = h.ws();
  ws2.open();
  ws2.deliver(welcome({ resumed: true }));
  ws2.raw('a text message');
  assert.deepEqual(ws2.take('close').map((c) => c.code), [2000]);
  h.clock.advance(2000);
  const ws3 = h.ws();
  ws3.open();
  ws3.deliver(welcome({ resumed: true }));
  ws3.raw(new ArrayBuffer((1 << 20) + 1));
  assert.deepEqual(ws3.take('close').map((c) => c.code), [2001]);
  assert.deepEqual(h.of('disconnected').map((d) => d.reason), ['protocol-error', 'protocol-error', 'protocol-error']);
  assert.equal(h.of('ended').length, 0);
});

test('frames out of place and sequence violations', () => {
  const h = setup();
  h.clock.advance(0);
  h.ws().open();
  h.ws().deliver(data(1, 'too early'));
  assert.deepEqual(h.ws().take('close').map((c) => c.code), [2000], 'DATA before WELCOME');
  h.clock.advance(500);
  const { ws } = { ws: h.ws() };
  ws.open();
  ws.deliver(welcome());
  ws.deliver(welcome());
  assert.deepEqual(ws.take('close').map((c) => c.code), [2000], 'WELCOME after the handshake');
  h.clock.advance(2000);
  const ws2 = h.ws();
  ws2.open();
  ws2.deliver(welcome({ resumed: true }));
  ws2.deliver(data(2, 'gap'));
  assert.deepEqual(ws2.take('close').map((c) => c.code), [3003]);
  const [ended] = h.of('ended');
  assert.equal(ended.reason, 'sequence-violation');
  assert.equal(ended.restarting, true);
});

test('CLOSE from the server: 1001 keeps the session (retry-after honoured), 3004 stops, 3002 restarts', () => {
  const h = setup();
  const { ws } = h.connect();
  ws.deliver({ type: 'close', code: 1001, retryAfterMs: 3000, reason: 'restart' });
  assert.ok(ws.closed);
  assert.equal(ws.take('close').length, 0, 'no reply to a CLOSE');
  assert.ok(h.of('reconnecting')[0].delay >= 3000);
  h.clock.advance(3000);
  h.ws().open();
  h.ws().deliver(welcome({ resumed: true }));
  h.ws().deliver({ type: 'close', code: 3002, retryAfterMs: 0, reason: '' });
  assert.equal(h.of('ended')[0].reason, 'expired');
  h.clock.advance(500);
  h.ws().open();
  h.ws().deliver(welcome());
  h.ws().deliver({ type: 'close', code: 3004, retryAfterMs: 0, reason: 'kicked by admin' });
  assert.equal(h.client.state, 'closed');
  assert.deepEqual(h.of('ended').at(-1), { session: toHex(SID), reason: 'peer-closed', code: 3004, message: 'kicked by admin', unacked: [], restarting: false });
});

test('close(): CLOSE 3000 sent, session forgotten, state closed; a resumed WELCOME for another session is refused', () => {
  const h = setup();
  const { ws } = h.connect();
  h.client.close();
  assert.deepEqual(ws.take('close').map((c) => c.code), [3000]);
  assert.ok(ws.closed);
  assert.equal(h.client.state, 'closed');
  assert.equal(h.storage.getItem('tether:ws://test/'), null);

  const h2 = setup();
  h2.clock.advance(0);
  h2.ws().open();
  h2.ws().deliver(welcome({ resumed: true }));
  assert.deepEqual(h2.ws().take('close').map((c) => c.code), [2000], 'a resume that was not asked for');
});

test('an ack for data never sent is a sequence violation (CLOSE 3003)', () => {
  const h = setup();
  const { ws } = h.connect();
  h.client.send('one');
  ws.deliver({ type: 'ack', ack: 2n });
  assert.deepEqual(ws.take('close').map((c) => c.code), [3003]);
  assert.deepEqual(h.of('ended')[0].unacked.map(dec), ['one']);
});

test('simulateOffline: drops without CLOSE, attempts fail until the time is up, then resumes', () => {
  const h = setup();
  const { ws } = h.connect();
  h.client.simulateOffline(10_000);
  assert.ok(ws.closed);
  assert.equal(ws.take('close').length, 0);
  assert.equal(h.client.state, 'reconnecting');
  h.clock.advance(9_999);
  assert.equal(h.sockets().length, 1, 'no WebSocket is opened while offline');
  assert.ok(h.of('attemptfailed').length >= 1);
  h.clock.advance(1);
  assert.equal(h.sockets().length, 2, 'back online: an attempt at once');
  h.ws().open();
  assert.ok(h.ws().take('hello')[0].resume);
});

test('send limits: too large before WELCOME, buffer full', () => {
  const h = setup();
  assert.throws(() => h.client.send(new Uint8Array(16384 - 8)), (e) => e.kind === 'too-large');
  h.client.send(new Uint8Array(16384 - 9));
  for (let i = 0; i < 4095; i++) h.client.send('x');
  assert.throws(() => h.client.send('y'), (e) => e.kind === 'buffer-full');
});

test('Rooms: JSON ops out, events in, members() answered in order, rooms re-joined after a fresh session', async () => {
  const h = setup();
  const rooms = new Rooms(h.client);
  const seen = [];
  for (const t of ['joined', 'presence', 'roomMessage', 'publish', 'error', 'left']) rooms.on(t, (d) => seen.push([t, d]));
  const { ws } = h.connect();
  rooms.join('lobby', 'ann');
  rooms.say('lobby', { text: 'hi' });
  const p = rooms.members('lobby');
  const ops = ws.take('data').map((f) => JSON.parse(dec(f.payload)));
  assert.deepEqual(ops, [
    { op: 'join', room: 'lobby', name: 'ann' },
    { op: 'say', room: 'lobby', body: { text: 'hi' } },
    { op: 'members', room: 'lobby' },
  ]);
  const me = { session: toHex(SID), user: 'anon-00010203', name: 'ann', state: 'active', rtt_ms: null };
  const send = (seq, obj) => ws.deliver(data(seq, JSON.stringify(obj)));
  send(1, { ev: 'joined', room: 'lobby', you: me, members: [me] });
  send(2, { ev: 'presence', room: 'lobby', member: me });
  send(3, { ev: 'message', room: 'lobby', from: me, body: { text: 'hi' } });
  send(4, { ev: 'members', room: 'lobby', members: [me] });
  send(5, { ev: 'publish', room: null, body: 'note' });
  assert.deepEqual(await p, [me]);
  assert.deepEqual(seen.map(([t]) => t), ['joined', 'presence', 'roomMessage', 'publish']);
  assert.deepEqual(seen[2][1], { room: 'lobby', from: me, body: { text: 'hi' } });

  const p2 = rooms.members('lobby');
  ws.deliver({ type: 'close', code: 3001, retryAfterMs: 0, reason: 'overflow' });
  await assert.rejects(p2);
  h.clock.advance(500);
  h.ws().open();
  h.ws().deliver(welcome({ sessionId: seqBytes(0x60, 16) }));
  const rejoin = h.ws().take('data').map((f) => [f.seq, JSON.parse(dec(f.payload))]);
  assert.deepEqual(rejoin, [[1n, { op: 'join', room: 'lobby', name: 'ann' }]]);
});

test('§9.3: past the last moment to start, one attempt at once, then the usual backoff (refused connects never loop)', () => {
  const h = setup();
  const { ws } = h.connect();
  ws.drop();
  // Every attempt is refused the moment it is made, as on a local network
  // whose server is gone. Step 1 ms at a time until the session expires.
  const starts = [];
  let seen = h.sockets().length;
  while (h.of('ended').length === 0) {
    h.clock.advance(1);
    for (const s of h.sockets().slice(seen)) {
      starts.push(h.clock.t);
      s.drop();
    }
    seen = h.sockets().length;
    assert.ok(starts.length < 1000, 'attempts are looping');
  }
  const expiredAt = h.clock.t;
  // The attempt budget is the 5 s handshake timeout: in that last window,
  // only the one immediate attempt plus jittered ones at most 2 s apart.
  const last = starts.filter((t) => t >= expiredAt - 5_000);
  assert.ok(last.length >= 1 && last.length <= 8, `${last.length} attempts in the last 5 s`);
});

test('CLOSE 1003 (resync) reconnects at once and resumes; CLOSE 3005 ends the session and restarts fresh', () => {
  const h = setup();
  const { ws } = h.connect();
  ws.deliver({ type: 'close', code: 1003, retryAfterMs: 0, reason: 'resync' });
  assert.ok(ws.closed);
  assert.equal(h.of('reconnecting').at(-1).delay, 0, 'a resync asks for the resume now');
  assert.equal(h.client.sessionId, toHex(SID), 'the session is kept');
  h.clock.advance(0);
  h.ws().open();
  assert.ok(h.ws().take('hello')[0].resume, 'a resume, not a fresh session');
  h.ws().deliver(welcome({ resumed: true }));
  h.client.send('queued');
  h.ws().deliver({ type: 'close', code: 3005, retryAfterMs: 0, reason: 'a message exceeds your max_frame' });
  const ended = h.of('ended').at(-1);
  assert.equal(ended.code, 3005);
  assert.equal(ended.restarting, true);
  assert.deepEqual(ended.unacked.map(dec), ['queued']);
});

test('a WELCOME whose max_frame cannot carry a queued message: CLOSE 3005, everything handed back, fresh start', () => {
  const h = setup();
  const { ws } = h.connect();
  ws.take('hello');
  h.client.send(new Uint8Array(20000));
  ws.deliver({ type: 'close', code: 1001, retryAfterMs: 0, reason: 'restart' });
  h.clock.advance(3000);
  h.ws().open();
  h.ws().deliver(welcome({ resumed: true, maxFrame: 16384 }));
  const [close] = h.ws().take('close');
  assert.equal(close.code, 3005);
  assert.match(close.reason, /20000-byte message/);
  const ended = h.of('ended').at(-1);
  assert.equal(ended.reason, 'incompatible');
  assert.equal(ended.unacked[0].length, 20000);
  assert.equal(ended.restarting, true);
});

test('a PING acknowledging data never sent ends the session (3003) and is not answered', () => {
  const h = setup();
  const { ws } = h.connect();
  ws.deliver({ type: 'ping', nonce: 5, ack: 7n, payload: new Uint8Array(0) });
  assert.equal(ws.take('pong').length, 0, 'no PONG');
  assert.deepEqual(ws.take('close').map((c) => c.code), [3003]);
});

test('a message the server already has (WELCOME last_received) does not trip the frame limit', () => {
  const h = setup();
  const { ws } = h.connect();
  ws.take('hello');
  h.client.send(new Uint8Array(20000));
  ws.deliver({ type: 'close', code: 1001, retryAfterMs: 0, reason: 'restart' });
  h.clock.advance(3000);
  h.ws().open();
  h.ws().deliver(welcome({ resumed: true, maxFrame: 16384, lastReceived: 1n }));
  assert.equal(h.ws().take('close').length, 0);
  assert.equal(h.client.state, 'connected');
});

// ───── §9.7 racing a slow connect ─────

/** Steps the clock `ms` in 10 ms steps, checking after each that at most `max` sockets are live. */
function stepChecking(h, ms, max = 3) {
  for (let left = ms; left > 0; left -= 10) {
    h.clock.advance(Math.min(10, left));
    assert.ok(h.live().length <= max, `${h.live().length} WebSockets live at t=${h.clock.t}`);
  }
}

test('§9.7 racing: a second WebSocket 750 ms beside a hung first, a third 750 ms later; never more than 3 opening, the oldest closed for a 4th', () => {
  const h = setup();
  h.clock.advance(0);
  const start = h.clock.t;
  h.clock.advance(749);
  assert.equal(h.sockets().length, 1, 'no RTT measured yet: the wait is race.delay, 750 ms');
  h.clock.advance(1);
  assert.equal(h.sockets().length, 2);
  assert.equal(h.live().length, 2, 'the first keeps opening beside the second');
  h.clock.advance(750);
  assert.equal(h.sockets().length, 3);
  assert.equal(h.live().length, 3);
  h.clock.advance(749);
  assert.equal(h.sockets().length, 3);
  h.clock.advance(1);
  const [w1, w2, w3, w4] = h.sockets();
  assert.ok(w4, 'a fourth starts 750 ms after the third');
  assert.ok(w1.closed, 'the oldest is closed to make room');
  assert.deepEqual([w2, w3, w4].map((w) => w.closed), [false, false, false]);
  assert.equal(w1.sent.length, 0, 'nothing is said on a socket that never opened');
  // No session to resume: the attempt budget (5 s) ends the attempt, and every racer with it.
  stepChecking(h, start + 4_990 - h.clock.t);
  assert.equal(h.of('attemptfailed').length, 0);
  assert.deepEqual(h.sockets().map((w) => w.createdAt - start), [0, 750, 1500, 2250, 3000, 3750, 4500]);
  h.clock.advance(10);
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['handshake-timeout']);
  assert.equal(h.live().length, 0, 'every racer is closed when the attempt fails');
  assert.equal(h.of('reconnecting').length, 1, 'then a backoff');
});

test('§9.7 racing: the first to open wins; the others are closed, HELLO only on the winner, the losers\' late events ignored', async () => {
  const { encodeFrame } = await import('../dist/tether.js');
  const h = setup();
  h.clock.advance(0);
  const start = h.clock.t;
  h.clock.advance(1_500);
  const [w1, w2, w3] = h.sockets();
  assert.equal(h.sockets().length, 3);
  // What late events of the losers would run (their handlers as the client set them).
  const stale = [w1, w3].map((w) => ({ open: w.onopen, message: w.onmessage, close: w.onclose, error: w.onerror }));
  h.clock.advance(100);
  w2.open();
  assert.deepEqual([w1.closed, w2.closed, w3.closed], [true, false, true], 'the losers are closed');
  assert.equal(w2.take('hello').length, 1);
  assert.equal(w2.sent.length, 0);
  assert.deepEqual([w1.sent, w3.sent], [[], []], 'HELLO goes out on the winner only');
  assert.equal(w1.onopen, null, 'the losers\' handlers are detached');

  const b = encodeFrame(welcome());
  for (const s of stale) {
    s.open({});
    s.message({ data: b.buffer });
    s.error({});
    s.close({});
  }
  assert.equal(h.client.state, 'connecting', 'no loser\'s WELCOME was taken');
  assert.equal(h.of('attemptfailed').length, 0, 'no loser\'s close failed the attempt');
  assert.equal(w2.closed, false);
  assert.equal(h.sockets().length, 3, 'no more racing once one opened');

  // The winner's handshake deadline is its own creation + 5 s, not the attempt's start + 5 s.
  h.clock.advance(start + 750 + 4_999 - h.clock.t);
  assert.equal(h.sockets().length, 3);
  assert.equal(h.of('attemptfailed').length, 0);
  h.clock.advance(1);
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['handshake-timeout']);
  assert.ok(w2.closed);
});

test('§9.7 racing: a resumable session races on through a silent outage past the handshake timeout, and resumes within 1 s of the path returning', () => {
  const h = setup();
  // The harness plays the network. Path up: a new WebSocket opens 100 ms after it is created and
  // the server answers HELLO 100 ms later. Path down: it hangs (its SYNs are lost) — even after
  // the path returns, as a lost SYN is only retransmitted seconds later.
  let pathUp = true;
  h.onSocket((ws) => {
    if (!pathUp) return;
    h.clock.setTimeout(() => {
      if (ws.closed) return;
      ws.open();
      const [hello] = ws.take('hello');
      if (!hello) return;
      h.clock.setTimeout(() => { if (!ws.closed) ws.deliver(welcome({ resumed: hello.resume !== null })); }, 100);
    }, 100);
  });
  h.clock.advance(200);
  assert.equal(h.client.state, 'connected');
  assert.equal(h.sockets().length, 1);

  // A silent outage: the link dies by heartbeat (35 s), then attempts hang for 30 s.
  pathUp = false;
  h.clear();
  h.clock.advance(35_000);
  assert.deepEqual(h.of('disconnected').map((d) => d.reason), ['heartbeat-timeout']);
  const lostAt = h.clock.t;
  stepChecking(h, 30_000);
  assert.equal(h.client.state, 'reconnecting');
  assert.equal(h.of('reconnecting').length, 1, 'one backoff after the loss, then racing without backoff');
  const failed = h.of('attemptfailed');
  assert.ok(failed.length >= 5, `${failed.length} attempt budgets reported`);
  assert.ok(failed.every((a) => a.reason === 'handshake-timeout'));
  const created = h.sockets().slice(1).map((w) => w.createdAt);
  assert.ok(created[0] - lostAt <= 500, 'the first attempt after the first backoff step');
  const gaps = created.slice(1).map((t, i) => t - created[i]);
  // HELLO → WELCOME took 100 ms: the wait is clamp(4 × 100, 500, 750) = 500 ms.
  assert.ok(gaps.every((g) => g === 500), `a new WebSocket every 500 ms (gaps ${[...new Set(gaps)]})`);
  assert.ok(h.clock.t - created.at(-1) <= 500, 'still racing at the end of the outage');

  // The path returns: the sockets in flight stay hung, the next one gets through.
  pathUp = true;
  const back = h.clock.t;
  stepChecking(h, 1_000);
  const [resumed] = h.of('resumed');
  assert.ok(resumed, 'resumed within 1 s of the path returning');
  const at = h.events.find((e) => e.type === 'resumed').t;
  assert.ok(at - back <= 1_000, `resumed ${at - back} ms after the path returned`);
  assert.equal(h.client.state, 'connected');
  assert.equal(h.live().length, 1, 'only the winner is left');
});

test('§9.7 racing: { maxInFlight: 1 } is the old one-at-a-time behaviour: a hung attempt fails at the handshake timeout, then backoff', () => {
  const h = setup({ client: { race: { maxInFlight: 1 } } });
  const { ws } = h.connect();
  ws.drop(); // a session to resume: with racing on, it would race on past the deadline
  const [rec] = h.of('reconnecting');
  h.clock.advance(rec.delay);
  const start = h.clock.t;
  assert.equal(h.sockets().length, 2);
  stepChecking(h, 4_990, 1);
  h.clock.advance(9);
  assert.equal(h.sockets().length, 2, 'no WebSocket beside the hung one');
  assert.equal(h.of('attemptfailed').length, 0);
  h.clock.advance(1);
  assert.equal(h.clock.t, start + 5_000);
  assert.ok(h.sockets()[1].closed);
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['handshake-timeout']);
  const next = h.of('reconnecting')[1];
  assert.ok(next && next.delay > 0, 'the attempt ends in a backoff');
  h.clock.advance(next.delay - 1);
  assert.equal(h.sockets().length, 2);
  h.clock.advance(1);
  assert.equal(h.sockets().length, 3);
});

test('§9.7 racing: a racer that fails (error, then close) means the path answers: every racer closed, the attempt fails once, backoff', () => {
  const h = setup();
  const { ws } = h.connect(); // HELLO → WELCOME in 0 ms: the wait is min_delay, 500 ms
  ws.drop();
  h.clock.advance(h.of('reconnecting')[0].delay);
  h.clock.advance(500);
  h.clock.advance(500);
  const [, w2, w3, w4] = h.sockets();
  assert.ok(w4 && h.live().length === 3);
  h.clear();
  w3.fail(); // neither the oldest nor the newest
  assert.deepEqual([w2.closed, w4.closed], [true, true]);
  assert.equal(h.live().length, 0);
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['closed'], 'error and close count as one failure');
  const [rec] = h.of('reconnecting');
  assert.ok(rec.delay > 0, 'a backoff, not an immediate retry');
  h.clock.advance(rec.delay - 1);
  assert.equal(h.sockets().length, 4, 'no racing while backing off');
  h.clock.advance(1);
  assert.equal(h.sockets().length, 5);
});

test('§9.7 racing: the wait is 4 × the last round trip (HELLO → WELCOME, PING → PONG) within [minDelay, delay]', () => {
  const h = setup();
  h.clock.advance(0);
  h.ws().open();
  h.clock.advance(150);
  h.ws().deliver(welcome()); // HELLO → WELCOME: 150 ms
  h.ws().drop();
  h.clock.advance(h.of('reconnecting')[0].delay);
  h.clock.advance(599);
  assert.equal(h.sockets().length, 2);
  h.clock.advance(1);
  assert.equal(h.sockets().length, 3, '4 × 150 ms');
  h.ws().open();
  h.ws().deliver(welcome({ resumed: true }));
  h.clock.advance(20_000);
  const [p] = h.ws().take('ping');
  h.clock.advance(30);
  h.ws().deliver({ type: 'pong', nonce: p.nonce, ack: 0n, payload: new Uint8Array(0) }); // PING → PONG: 30 ms
  h.ws().drop();
  h.clock.advance(h.of('reconnecting')[1].delay);
  const n = h.sockets().length;
  h.clock.advance(499);
  assert.equal(h.sockets().length, n);
  h.clock.advance(1);
  assert.equal(h.sockets().length, n + 1, '4 × 30 ms is below minDelay: 500 ms');
});

test('§9.7 racing: close(), local expiry and a network change abandon every racer', () => {
  // close()
  let h = setup();
  h.clock.advance(1_500);
  assert.equal(h.live().length, 3);
  h.client.close();
  assert.equal(h.live().length, 0);
  h.clock.advance(60_000);
  assert.equal(h.sockets().length, 3, 'closed for good');

  // local expiry of a session that never gets its path back
  h = setup();
  const { ws } = h.connect();
  ws.drop(); // last heard now: expiry 35 s + 60 s later
  const expiry = h.clock.t + 95_000;
  stepChecking(h, 95_000 - 10);
  assert.equal(h.of('ended').length, 0);
  assert.ok(h.live().length >= 2, 'racing until the end');
  h.clock.advance(10);
  assert.equal(h.clock.t, expiry);
  assert.equal(h.of('ended')[0]?.reason, 'expired');
  assert.equal(h.live().length, 0, 'every racer is closed at expiry');

  // a network change while an attempt has been racing for the probe timeout (realtime: 1.5 s)
  h = setup({ client: { profile: 'realtime' } });
  h.clock.advance(1_499);
  h.client.probe();
  assert.equal(h.live().length, 2, 'a younger attempt is left alone');
  h.clock.advance(1);
  const before = h.sockets().length;
  assert.equal(h.live().length, 3);
  h.client.probe();
  assert.equal(h.live().length, 0);
  h.clock.advance(0);
  assert.equal(h.sockets().length, before + 1, 'a new attempt at once');
  assert.equal(h.live().length, 1);
});

test('§9.7 racing: settings that cannot work are refused, naming the option', () => {
  const make = (race) => () => setup({ client: { race } });
  assert.throws(make({ maxInFlight: 0 }), /race\.maxInFlight: 0 .* 1 to 8/);
  assert.throws(make({ maxInFlight: 9 }), /race\.maxInFlight/);
  assert.throws(make({ maxInFlight: 2.5 }), /race\.maxInFlight/);
  assert.throws(make({ delay: 400 }), /race\.delay: delay 400 ms with minDelay 500 ms .*e\.g\. 500 and 750/);
  assert.throws(make({ minDelay: 0 }), /race\.delay/);
  assert.throws(make({ delay: NaN }), /race\.delay/);
  make({ delay: 250, minDelay: 250, maxInFlight: 8 })();
  make({ maxInFlight: 1 })();
});

// ───── §9.7 a server that shed the attempt is not raced ─────

const reject = (reason, retryAfterMs = 0) => ({ type: 'reject', reason, retryAfterMs, minVersion: 1, maxVersion: 1, message: 'busy' });

/**
 * The attempt just started hangs: checks that no WebSocket starts beside it through its whole handshake
 * timeout (one live at a time), then that it fails at that timeout with a backoff, not racing on.
 */
function hangsUnraced(h) {
  const n = h.sockets().length;
  const ws = h.ws();
  const failed = h.of('attemptfailed').length;
  stepChecking(h, ws.createdAt + 4_990 - h.clock.t, 1);
  h.clock.advance(9);
  assert.equal(h.sockets().length, n, `raced a server that shed the attempt (${h.sockets().length - n} more WebSockets)`);
  assert.equal(h.of('attemptfailed').length, failed);
  h.clock.advance(1);
  assert.ok(ws.closed);
  assert.equal(h.of('attemptfailed').at(-1).reason, 'handshake-timeout');
  assert.equal(h.of('attemptfailed').length, failed + 1);
  const next = h.of('reconnecting').at(-1);
  assert.ok(next.delay > 0, 'the unraced attempt ends in a backoff, even for a resumable session');
  assert.equal(h.sockets().length, n);
  return next;
}

/** The attempt just started hangs: a second WebSocket starts `wait` ms later, a third as much after. */
function hangsRaced(h, wait) {
  const n = h.sockets().length;
  h.clock.advance(wait - 1);
  assert.equal(h.sockets().length, n, 'raced before the wait');
  h.clock.advance(1);
  assert.equal(h.sockets().length, n + 1, 'not raced');
  h.clock.advance(wait);
  assert.equal(h.live().length, 3);
}

test('§9.7 a server that shed the attempt: after REJECT 5 Overloaded (and 6 ShuttingDown) one WebSocket at a time, through whole handshake timeouts, until a WELCOME; after it, a later loss is raced again', () => {
  for (const reason of [5, 6]) {
    const h = setup();
    const { ws } = h.connect(); // HELLO → WELCOME in 0 ms: the racing wait is minDelay, 500 ms
    ws.drop(); // a session to resume: with racing on, its attempts would race on past each budget
    h.clock.advance(h.of('reconnecting')[0].delay);
    const w2 = h.ws();
    w2.open();
    assert.equal(w2.take('hello').length, 1);
    h.clear();
    w2.deliver(reject(reason, 1000));
    assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['rejected'], `REJECT ${reason}`);
    const [rec] = h.of('reconnecting');
    assert.ok(rec.delay >= 1000, 'retry-after honoured');
    h.clock.advance(rec.delay);
    assert.equal(h.sockets().length, 3, 'the next attempt');
    const next = hangsUnraced(h);
    // A handshake timeout before any WebSocket opened does not clear it: only a WELCOME does.
    h.clock.advance(next.delay);
    assert.equal(h.sockets().length, 4);
    stepChecking(h, 2_000, 1);
    assert.equal(h.sockets().length, 4, `REJECT ${reason}: raced before a WELCOME`);
    h.ws().open();
    h.ws().take('hello');
    h.ws().deliver(welcome({ resumed: true }));
    assert.equal(h.client.state, 'connected');
    // A later loss: racing is back.
    h.ws().drop();
    h.clock.advance(h.of('reconnecting').at(-1).delay);
    assert.equal(h.sockets().length, 5);
    hangsRaced(h, 500);
  }
});

test('§9.7 a server that shed the attempt: a handshake timeout after the WebSocket opened (HELLO unanswered) disables racing for the next attempt', () => {
  const h = setup();
  const { ws } = h.connect();
  ws.drop();
  h.clock.advance(h.of('reconnecting')[0].delay);
  const w2 = h.ws();
  w2.open(); // reached the server, which never answers the HELLO
  assert.equal(w2.take('hello').length, 1);
  h.clear();
  h.clock.advance(w2.createdAt + 5_000 - h.clock.t);
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['handshake-timeout']);
  assert.equal(h.sockets().length, 2);
  h.clock.advance(h.of('reconnecting')[0].delay);
  assert.equal(h.sockets().length, 3, 'the next attempt');
  hangsUnraced(h);
});

test('§9.7 a server that shed the attempt: an opened WebSocket closed before WELCOME disables racing; a hung or failed connect, or REJECT 4, does not', () => {
  // Opened, then closed by the server before WELCOME.
  let h = setup();
  h.connect().ws.drop();
  h.clock.advance(h.of('reconnecting')[0].delay);
  h.ws().open();
  h.clear();
  h.ws().drop();
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['closed']);
  h.clock.advance(h.of('reconnecting')[0].delay);
  hangsUnraced(h);

  // A WebSocket that fails before opening: the path answers, but the server was not reached.
  h = setup();
  h.connect().ws.drop();
  h.clock.advance(h.of('reconnecting')[0].delay);
  h.ws().fail();
  h.clock.advance(h.of('reconnecting').at(-1).delay);
  hangsRaced(h, 500);

  // No session, an attempt that hung until its deadline (never reached the server).
  h = setup();
  h.clock.advance(5_000);
  assert.deepEqual(h.of('attemptfailed').map((a) => a.reason), ['handshake-timeout']);
  h.clock.advance(h.of('reconnecting')[0].delay);
  hangsRaced(h, 750); // no round trip measured yet: race.delay

  // REJECT 4 while resuming ends the session (a fresh one follows): the server is not shedding load.
  h = setup();
  h.connect().ws.drop();
  h.clock.advance(h.of('reconnecting')[0].delay);
  h.ws().open();
  h.ws().deliver(reject(4));
  assert.equal(h.of('ended')[0]?.code, 4);
  h.clock.advance(h.of('reconnecting').at(-1).delay);
  hangsRaced(h, 500);
});

const flush = () => new Promise((r) => setImmediate(r));

test('getToken: asked for each fresh session (not for resumes); Unauthorized asks once more, then gives up; a failing callback is retried with backoff', async () => {
  const given = [];
  let next = ['t1', 't2', 't3', 't4'];
  const h = setup({ client: { getToken: async () => { const t = next.shift(); given.push(t); return t; } } });
  h.clock.advance(0);
  assert.equal(h.sockets().length, 0, 'no WebSocket before the token');
  await flush();
  h.clock.advance(0);
  h.ws().open();
  assert.deepEqual(h.ws().take('hello')[0].auth, enc('t1'));
  h.ws().deliver(welcome());
  assert.equal(h.client.state, 'connected');
  // A resume carries the resume token and asks nothing.
  h.ws().drop();
  h.clock.advance(h.of('reconnecting').at(-1).delay);
  h.ws().open();
  const resume = h.ws().take('hello')[0];
  assert.ok(resume.resume !== null);
  assert.deepEqual(given, ['t1']);
  // The session is gone on the server: a fresh one, with a fresh token.
  h.ws().deliver({ type: 'reject', reason: 2, retryAfterMs: 0, minVersion: 1, maxVersion: 1, message: 'unknown session' });
  h.clock.advance(h.of('reconnecting').at(-1).delay);
  await flush();
  h.clock.advance(0);
  h.ws().open();
  assert.deepEqual(h.ws().take('hello')[0].auth, enc('t2'));
  // Refused as Unauthorized (expired since): asked once more...
  h.ws().deliver({ type: 'reject', reason: 7, retryAfterMs: 0, minVersion: 1, maxVersion: 1, message: 'the token has expired' });
  assert.notEqual(h.client.state, 'closed');
  h.clock.advance(h.of('reconnecting').at(-1).delay);
  await flush();
  h.clock.advance(0);
  h.ws().open();
  assert.deepEqual(h.ws().take('hello')[0].auth, enc('t3'));
  // ...and refused again: given up, as with a fixed token.
  h.ws().deliver({ type: 'reject', reason: 7, retryAfterMs: 0, minVersion: 1, maxVersion: 1, message: 'the token has expired' });
  assert.equal(h.client.state, 'closed');
  assert.equal(h.of('ended').at(-1).reason, 'refused');
  assert.deepEqual(given, ['t1', 't2', 't3']);

  // A callback that fails: the attempt fails with reason `token`, and is retried after a backoff.
  let calls = 0;
  const g = setup({ client: { getToken: () => { calls += 1; if (calls === 1) throw new Error('offline'); return 'ok'; } } });
  g.clock.advance(0);
  await flush();
  assert.deepEqual(g.of('attemptfailed').map((a) => a.reason), ['token']);
  assert.match(g.of('attemptfailed')[0].message, /offline/);
  g.clock.advance(g.of('reconnecting').at(-1).delay);
  await flush();
  g.clock.advance(0);
  g.ws().open();
  assert.deepEqual(g.ws().take('hello')[0].auth, enc('ok'));
});

test('Rooms: join() and leave() resolve with the gateway\'s answer or reject with its error; a join pending through a fresh session is answered there; once()', async () => {
  const h = setup();
  const rooms = new Rooms(h.client);
  const { ws } = h.connect();
  const send = (seq, obj) => ws.deliver(data(seq, JSON.stringify(obj)));
  const me = { session: toHex(SID), user: 'anon-00010203', name: 'ann', state: 'active', rtt_ms: null };
  let onceCalls = 0;
  rooms.once('joined', () => { onceCalls += 1; });
  const lobby = rooms.join('lobby', 'ann');
  const vip = rooms.join('vip');
  send(1, { ev: 'joined', room: 'lobby', you: me, members: [me], count: 1 });
  send(2, { ev: 'error', op: 'join', code: 'forbidden', room: 'vip', message: 'not allowed in vip' });
  assert.deepEqual(await lobby, { room: 'lobby', you: me, members: [me], count: 1 });
  await assert.rejects(vip, (e) => e.name === 'RoomRequestError' && e.message === 'not allowed in vip' && e.detail.code === 'forbidden');
  assert.deepEqual(rooms.rooms, ['lobby'], 'a refused join is not kept');
  assert.equal(onceCalls, 1);
  const left = rooms.leave('lobby');
  send(3, { ev: 'left', room: 'lobby' });
  assert.equal(await left, undefined);
  // A join whose answer has not come when the session is replaced is answered by the fresh one.
  const later = rooms.join('lobby');
  ws.deliver({ type: 'close', code: 3001, retryAfterMs: 0, reason: 'overflow' });
  h.clock.advance(500);
  const w2 = h.ws();
  w2.open();
  w2.deliver(welcome({ sessionId: seqBytes(0x60, 16) }));
  assert.deepEqual(w2.take('data').map((f) => JSON.parse(dec(f.payload))), [{ op: 'join', room: 'lobby' }]);
  w2.deliver(data(1, JSON.stringify({ ev: 'joined', room: 'lobby', you: me, members: [me] })));
  assert.equal((await later).room, 'lobby');
  // A session that ends for good rejects what is still waiting.
  const never = rooms.join('x');
  h.client.close();
  await assert.rejects(never, /session ended/);
});

test('disconnect() ends the session; connect() opens a fresh one later (also after a refusal); connect() while running does nothing', async () => {
  const h = setup();
  const { ws } = h.connect();
  h.client.disconnect('bye');
  assert.equal(h.client.state, 'closed');
  assert.deepEqual(ws.take('close').map((c) => c.code), [3000]);
  assert.equal(h.of('ended').at(-1).reason, 'local-close');
  h.clock.advance(60_000);
  const n = h.sockets().length;
  assert.equal(n, 1, 'closed stays closed');
  h.client.connect();
  h.clock.advance(0);
  assert.equal(h.sockets().length, 2, 'a new attempt at once');
  h.ws().open();
  const hello = h.ws().take('hello')[0];
  assert.equal(hello.resume, null, 'a fresh session');
  h.ws().deliver(welcome({ sessionId: seqBytes(0x60, 16) }));
  assert.equal(h.client.state, 'connected');
  h.client.connect(); // running: nothing
  h.clock.advance(1000);
  assert.equal(h.sockets().length, 2);
  // After a refusal (REJECT 7 on the fresh session), connect() tries again.
  h.ws().deliver({ type: 'close', code: 3001, retryAfterMs: 0, reason: 'overflow' });
  h.clock.advance(h.of('reconnecting').at(-1).delay);
  h.ws().open();
  h.ws().deliver({ type: 'reject', reason: 7, retryAfterMs: 0, minVersion: 1, maxVersion: 1, message: 'no' });
  assert.equal(h.client.state, 'closed');
  h.client.connect();
  h.clock.advance(0);
  assert.equal(h.sockets().length, 4);
});

test('Rooms: rpc() sends op rpc with a fresh id, resolves with the result, rejects with an RpcError (the backend\'s, a timeout, the session ending)', async () => {
  const h = setup();
  const rooms = new Rooms(h.client);
  const { ws } = h.connect();
  const send = (seq, obj) => ws.deliver(data(seq, JSON.stringify(obj)));
  const a = rooms.rpc('echo', { x: 1 });
  const b = rooms.rpc('fail');
  assert.deepEqual(ws.take('data').map((f) => JSON.parse(dec(f.payload))),
    [{ op: 'rpc', id: 1, method: 'echo', data: { x: 1 } }, { op: 'rpc', id: 2, method: 'fail' }]);
  const replies = [];
  rooms.on('reply', (r) => replies.push(r));
  // Replies settle by id, whatever their order.
  send(1, { ev: 'reply', id: 2, error: { code: 'nope', message: 'failed on purpose' } });
  send(2, { ev: 'reply', id: 1, result: { x: 1 } });
  assert.deepEqual(await a, { x: 1 });
  await assert.rejects(b, (e) => e.name === 'RpcError' && e.code === 'nope' && e.message === 'failed on purpose');
  assert.deepEqual(replies, [{ id: 2, error: { code: 'nope', message: 'failed on purpose' } }, { id: 1, result: { x: 1 } }]);
  // A null result is a result.
  const c = rooms.rpc('nothing');
  send(3, { ev: 'reply', id: 3, result: null });
  assert.equal(await c, null);
  // No reply in time: a timeout; a late reply is then only an event.
  const late = rooms.rpc('slow', null, { timeout: 20 });
  await assert.rejects(late, (e) => e.code === 'timeout');
  send(4, { ev: 'reply', id: 4, result: 1 });
  assert.deepEqual(replies.at(-1), { id: 4, result: 1 });
  // The session ends: what waits is rejected.
  const never = rooms.rpc('x');
  h.client.close();
  await assert.rejects(never, (e) => e.code === 'session_ended');
});

test('HTTP fallback: a WebSocket refused before it opens tries the fallback at once; the session runs there, starts there again, and moves back to WebSocket once one opens', async () => {
  const { FakeHttpSocket } = await import('./harness.mjs');
  // upgradeCheck well inside the heartbeat's idle interval: the fake server never answers PINGs.
  const h = setup({ client: { transports: ['websocket', 'http'], HttpImpl: FakeHttpSocket, upgradeCheck: 5_000 } });
  const kinds = () => h.sockets().map((s) => s.kind ?? 'websocket');
  h.clock.advance(0);
  h.ws().fail(); // a proxy refusing the upgrade
  assert.deepEqual(kinds(), ['websocket', 'http'], 'the fallback at once, no backoff');
  assert.equal(h.of('attemptfailed').length, 0);
  const http = h.ws();
  assert.ok(http.url === 'ws://test/', 'the fallback socket gets the same URL');
  http.open();
  assert.equal(http.take('hello').length, 1, 'HELLO goes out on the fallback');
  http.deliver(welcome());
  assert.equal(h.client.transport, 'http');
  assert.deepEqual(h.of('connected'), [{ session: toHex(SID), transport: 'http' }]);
  // Messages flow on it.
  h.client.send('over http');
  assert.deepEqual(http.take('data').map((f) => dec(f.payload)), ['over http']);
  // Lost: the next attempt starts on the fallback (the proxy is still there).
  http.drop();
  h.clock.advance(h.of('reconnecting').at(-1).delay);
  assert.equal(h.ws().kind, 'http');
  const http2 = h.ws();
  http2.open();
  http2.take('hello');
  http2.deliver(welcome({ resumed: true, token: seqBytes(0x40, 32) }));
  assert.equal(h.of('resumed').at(-1).transport, 'http');
  // Every upgradeCheck a WebSocket is tried beside it; one refused changes nothing.
  h.clock.advance(5_000);
  const probe = h.ws();
  assert.equal(probe.kind, undefined, 'a WebSocket probe');
  probe.fail();
  assert.equal(h.client.transport, 'http');
  assert.equal(http2.closed, false);
  // One that opens: the probe is closed, the session moves to a WebSocket at once (a resume).
  h.clock.advance(5_000);
  const probe2 = h.ws();
  probe2.open();
  assert.ok(probe2.closed && http2.closed, 'the probe and the fallback closed');
  assert.equal(h.of('disconnected').at(-1).reason, 'upgrade');
  h.clock.advance(0);
  const ws = h.ws();
  assert.equal(ws.kind, undefined);
  ws.open();
  assert.ok(ws.take('hello')[0].resume, 'a resume');
  ws.deliver(welcome({ resumed: true, token: seqBytes(0x60, 32) }));
  assert.equal(h.client.transport, 'websocket');
  assert.equal(h.of('resumed').at(-1).transport, 'websocket');
  h.clock.advance(15_000);
  assert.equal(h.sockets().length, 6, 'no more probes once on WebSocket');
});

test('HTTP fallback: a WebSocket that stalls where none ever opened races the fallback; once a WebSocket opened here, a stall races WebSockets only', async () => {
  const { FakeHttpSocket } = await import('./harness.mjs');
  const h = setup({ client: { transports: ['websocket', 'http'], HttpImpl: FakeHttpSocket } });
  const kinds = () => h.sockets().map((s) => s.kind ?? 'websocket');
  h.clock.advance(0);
  h.clock.advance(750);
  assert.deepEqual(kinds(), ['websocket', 'http'], 'the fallback beside a stalled first WebSocket');
  h.ws().open();
  assert.equal(h.sockets()[0].closed, true, 'the stalled WebSocket is closed when the fallback wins');
  h.ws().take('hello');
  h.ws().deliver(welcome());
  assert.equal(h.client.transport, 'http');
  // A client whose WebSocket has opened before: stalls race WebSockets.
  const h2 = setup({ client: { transports: ['websocket', 'http'], HttpImpl: FakeHttpSocket } });
  const { ws } = h2.connect();
  ws.drop();
  h2.clock.advance(h2.of('reconnecting').at(-1).delay);
  h2.clock.advance(750);
  assert.deepEqual(h2.sockets().slice(1).map((s) => s.kind ?? 'websocket'), ['websocket', 'websocket']);
});

test('HTTP fallback: transports ["http"] uses the fallback only; an empty or unknown list is refused', async () => {
  const { FakeHttpSocket } = await import('./harness.mjs');
  const h = setup({ client: { transports: ['http'], HttpImpl: FakeHttpSocket } });
  h.clock.advance(0);
  assert.equal(h.ws().kind, 'http');
  h.ws().fail();
  assert.equal(h.sockets().length, 1, 'no WebSocket is tried');
  assert.throws(() => setup({ client: { transports: [] } }), /transports/);
  assert.throws(() => setup({ client: { transports: ['carrier-pigeon'] } }), /transports/);
});

test('acked: reported as the server acknowledges (ACK, PONG, PING, and a resume\'s last_received), once per advance', () => {
  const h = setup();
  const acked = [];
  h.client.on('acked', (d) => acked.push(d.seq));
  const { ws } = h.connect();
  for (const m of ['a', 'b', 'c', 'd']) h.client.send(m);
  ws.deliver({ type: 'ack', ack: 1n });
  ws.deliver({ type: 'ack', ack: 1n }); // no advance: nothing
  ws.deliver({ type: 'ping', nonce: 1, ack: 2n, payload: new Uint8Array(0) });
  assert.deepEqual(acked, [1, 2]);
  ws.drop();
  h.clock.advance(h.of('reconnecting').at(-1).delay);
  const w2 = h.ws();
  w2.open();
  w2.take('hello');
  w2.deliver(welcome({ resumed: true, lastReceived: 3n, token: seqBytes(0x40, 32) }));
  assert.deepEqual(acked, [1, 2, 3], 'the resume acknowledged the third');
  assert.deepEqual(w2.take('data').map((f) => dec(f.payload)), ['d'], 'only the fourth is sent again');
});

test('leaving() (pagehide): CLOSE 1001 asking the server to keep the session leaveGrace only; the session is kept here for a reload; leaveGrace 0 does nothing', () => {
  const h = setup();
  const { ws } = h.connect();
  h.client.leaving();
  const [close] = ws.take('close');
  assert.deepEqual([close.code, close.retryAfterMs], [1001, 10000]);
  assert.equal(ws.closed, true);
  assert.equal(h.client.state, 'reconnecting');
  assert.ok(stored(h).id, 'the session is kept for the reload');
  h.clock.advance(1000);
  const w2 = h.ws();
  w2.open();
  assert.ok(w2.take('hello')[0].resume, 'a page that lives on resumes');
  const h2 = setup({ client: { leaveGrace: 0 } });
  const { ws: ws2 } = h2.connect();
  h2.client.leaving();
  assert.deepEqual(ws2.take('close'), []);
  assert.equal(h2.client.state, 'connected');
});
