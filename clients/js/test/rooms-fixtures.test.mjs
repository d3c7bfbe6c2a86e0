// The Rooms layer against the shared room-protocol examples
// (fixtures/room-protocol.json, also read by the gateway's Rust test in
// crates/tether-gateway/src/protocol.rs): every request the gateway
// understands is one the client sends exactly so, and every event the
// gateway sends is surfaced with every one of its fields under the same
// name. A new op, ev, error code or field on either side fails one of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setup, enc, dec } from './harness.mjs';
import { Rooms } from '../dist/tether.js';

const fixtures = JSON.parse(readFileSync(new URL('../../../fixtures/room-protocol.json', import.meta.url), 'utf8'));

/** How the client sends each op. */
const send = {
  join: (rooms, m) => (m.name === undefined ? rooms.join(m.room) : rooms.join(m.room, m.name)),
  leave: (rooms, m) => rooms.leave(m.room),
  say: (rooms, m) => rooms.say(m.room, m.body),
  members: (rooms, m) => { rooms.members(m.room).catch(() => {}); },
  // The id is the client's to choose: start its counter at the example's.
  rpc: (rooms, m) => { rooms.nextId = m.id; rooms.rpc(m.method, m.data, { timeout: 1 }).catch(() => {}); },
};

/** The Rooms event each gateway event becomes. */
const eventOf = {
  joined: 'joined', left: 'left', members: 'members', presence: 'presence',
  message: 'roomMessage', publish: 'publish', reply: 'reply', error: 'error',
};

function connected() {
  const h = setup();
  const rooms = new Rooms(h.client);
  const fired = [];
  for (const type of new Set(Object.values(eventOf))) rooms.on(type, (detail) => fired.push({ type, detail }));
  const { ws } = h.connect();
  return { rooms, ws, fired };
}

test('fixtures: every op has an example, every example is one the client sends exactly so', () => {
  assert.ok(fixtures.requests.length > 0);
  assert.deepEqual(new Set(fixtures.requests.map((r) => r.message.op)), new Set(Object.keys(send)),
    'the ops in the fixtures are the ones the client can send');
  for (const { name, message } of fixtures.requests) {
    const { rooms, ws } = connected();
    send[message.op](rooms, message);
    const sent = ws.take('data').map((f) => JSON.parse(dec(f.payload)));
    assert.deepEqual(sent, [message], name);
  }
});

test('fixtures: every event is surfaced once, with every field the gateway sends, under its name', () => {
  assert.ok(fixtures.events.length > 0);
  assert.deepEqual(new Set(fixtures.events.map((e) => e.message.ev)), new Set(Object.keys(eventOf)),
    'the evs in the fixtures are the ones the client handles');
  let seq = 0;
  const { ws, fired } = connected();
  for (const { name, message } of fixtures.events) {
    fired.length = 0;
    ws.deliver({ type: 'data', seq: BigInt(++seq), payload: enc(JSON.stringify(message)) });
    assert.equal(fired.length, 1, `${name}: ${JSON.stringify(fired)}`);
    const [{ type, detail }] = fired;
    assert.equal(type, eventOf[message.ev], name);
    const { ev, ...fields } = message;
    assert.deepEqual(detail, fields, `${name}: the client's event differs from the gateway's message`);
  }
});

test('fixtures: an error code the client does not know yet still reaches the application', () => {
  const { ws, fired } = connected();
  const future = { ev: 'error', op: 'say', code: 'some_new_code', message: 'm', room: 'r', extra: [1] };
  ws.deliver({ type: 'data', seq: 1n, payload: enc(JSON.stringify(future)) });
  assert.deepEqual(fired, [{ type: 'error', detail: { op: 'say', code: 'some_new_code', message: 'm', room: 'r' } }]);
});
