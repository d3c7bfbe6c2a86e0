// A chat application's backend for the tether gateway: the gateway's hooks
// (docs/GATEWAY.md §10) decide who logs in, who joins which room and what is
// said, and every chat message is stored exactly once, by its idempotency
// key, in an append-only file, across the gateway's retries, the clients'
// reconnects and the death of a gateway node. Node's standard library only.
//
//   PORT=8080 DATA_DIR=./data HOOK_SECRET=… node server.mjs
//
// and in the gateway's config:
//
//   [auth]
//   anonymous = false
//   [hooks]
//   url = "http://127.0.0.1:8080/tether"
//   headers_env = { authorization = "HOOK_AUTH" }   # HOOK_AUTH="Bearer <HOOK_SECRET>"
//
// Clients log in with the credential "user:password" (the accounts below).
// It prints "listening on http://HOST:PORT" once it accepts calls.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

/** Demo accounts: the password and the rooms each user may join. */
const USERS = {
  alice: { password: 'wonderland', name: 'Alice', rooms: ['general', 'random', 'team:*'] },
  bob: { password: 'builder', name: 'Bob', rooms: ['general', 'random'] },
};
const MAX_TEXT = 500;

const port = Number(process.env.PORT ?? 8080);
const host = process.env.HOST ?? '127.0.0.1';
const dataDir = process.env.DATA_DIR ?? './data';
const secret = process.env.HOOK_SECRET ?? '';

// The messages, and the idempotency keys already stored (read back at start:
// a key stored before a restart is still known).
fs.mkdirSync(dataDir, { recursive: true });
const file = path.join(dataDir, 'messages.jsonl');
const messages = fs.existsSync(file)
  ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
  : [];
const stored = new Set(messages.map((m) => m.key));
/** Who is away (their link dropped, their session kept): user → since. */
const away = new Map();

const hooks = {
  connect({ credential }) {
    const [user, password] = credential.split(':');
    const account = USERS[user];
    if (!account || account.password !== password) return { allow: false, reason: 'wrong user name or password' };
    return { allow: true, user, name: account.name, rooms: account.rooms };
  },

  join({ user, room }) {
    if (!user) return { allow: false, reason: 'log in first' };
    return { allow: true };
  },

  say({ user, room, body }, key) {
    const text = typeof body?.text === 'string' ? body.text.trim() : '';
    if (!text) return { allow: false, reason: 'say something: {"text": "…"}' };
    const clean = text.slice(0, MAX_TEXT);
    if (!stored.has(key)) {
      // Once per key: a message handed over again (a gateway retry, or a
      // node that died before answering) is not stored twice.
      const m = { key, room, user, text: clean, at: Date.now() };
      fs.appendFileSync(file, JSON.stringify(m) + '\n');
      messages.push(m);
      stored.add(key);
    }
    return clean === text ? { allow: true } : { allow: true, body: { ...body, text: clean } };
  },

  rpc({ user, method, data }) {
    switch (method) {
      case 'history': {
        const room = String(data?.room ?? '');
        const account = USERS[user];
        if (!account || !account.rooms.some((r) => (r.endsWith('*') ? room.startsWith(r.slice(0, -1)) : r === room))) {
          return { error: { code: 'forbidden', message: `no history of ${room} for you` } };
        }
        const limit = Math.min(Number(data?.limit ?? 50), 500);
        return { result: messages.filter((m) => m.room === room).slice(-limit).map(({ user, text, at }) => ({ user, text, at })) };
      }
      case 'away':
        return { result: [...away.keys()] };
      default:
        return { error: { code: 'unknown_method', message: `no method ${method}` } };
    }
  },

  lifecycle({ event, user, at }) {
    if (!user) return {};
    if (event === 'detached') away.set(user, at);
    else away.delete(user);
    return {};
  },
};

const server = http.createServer((req, res) => {
  const answer = (status, obj) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(obj));
  };
  const hook = req.url?.match(/^\/tether\/(\w+)$/)?.[1];
  if (req.method !== 'POST' || !hook || !Object.hasOwn(hooks, hook)) return answer(404, { error: 'no such hook' });
  if (secret && req.headers.authorization !== `Bearer ${secret}`) return answer(401, { error: 'bad secret' });
  let raw = '';
  req.setEncoding('utf8');
  req.on('data', (c) => { raw += c; });
  req.on('end', () => {
    let body;
    try { body = JSON.parse(raw); } catch { return answer(400, { error: 'not JSON' }); }
    try {
      answer(200, hooks[hook](body, req.headers['idempotency-key'] ?? ''));
    } catch (e) {
      console.error(`${hook}: ${e.stack}`);
      answer(500, { error: 'the backend failed' }); // the gateway retries
    }
  });
});
server.listen(port, host, () => {
  const a = server.address();
  console.log(`listening on http://${a.address}:${a.port}`);
});
