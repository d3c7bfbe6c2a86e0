// The browser client in real Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; never a downloaded browser) against a real
// `tether serve`, through the demo page it serves:
// - offline 20 s (CDP offline emulation, which stalls the open WebSocket)
//   then online: the same session, nothing lost or duplicated either way,
//   resumed within 1 s of going online;
// - a page reload resumes the same session (token in sessionStorage);
// - the gateway killed: the page shows reconnecting, then expired after grace;
// - a page of another site cannot open a WebSocket session (403 at the upgrade);
// - a login token that expired is replaced through getToken() for a fresh session;
// - screenshots of the demo page, saved under target/browser-screenshots.
//
// Run: node --test clients/js/browser-tests/ (TETHER_BIN overrides the
// gateway binary, default target/debug/tether).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { KEY, shots, startGateway, admin, until, launch } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** Opens the demo page, joins `room` as `name`; resolves when joined. */
async function openDemo(context, g, name, room = 'lobby', query = '') {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error: ${e.message}`));
  // When each PING left the page (a tether frame whose first byte is 0x20),
  // in this process's clock: the witness of a probe, whatever else arrives.
  page.tetherPings = [];
  page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => {
    if (typeof payload !== 'string' && payload[0] === 0x20) page.tetherPings.push(Date.now());
  }));
  await page.goto(`${g.demo}?ws=${encodeURIComponent(g.ws)}${query}`);
  await page.waitForFunction(() => window.tether?.client?.state === 'connected', null, { timeout: 15000 });
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join');
  await page.waitForSelector(`#members li[data-state="active"]`, { timeout: 15000 });
  return page;
}

const eventsOf = (page, type) => page.evaluate((t) => window.tetherLog.filter((e) => e.type === t), type);

test('offline 20 s then online: the same session, nothing lost or duplicated, resumed within 1 s', async () => {
  const g = await startGateway('60s');
  try {
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    const a = await openDemo(ctxA, g, 'Ann');
    const b = await openDemo(ctxB, g, 'Ben');
    const session = await a.evaluate(() => window.tether.client.sessionId);
    await until('both members listed', 10000, async () =>
      (await a.$$eval('#members li', (l) => l.length)) === 2);
    await a.screenshot({ path: join(shots, 'demo-two-members.png') });

    // Streams both ways throughout: Ann says a numbered message every 100 ms
    // (her client queues them while offline); the gateway publishes a
    // numbered message to the room every 100 ms (queued for her session).
    await a.evaluate(() => {
      window.sent = 0;
      window.sayTimer = setInterval(() => {
        window.sent += 1;
        window.tether.rooms.say('lobby', { n: window.sent });
      }, 100);
      window.onlineAt = null;
      addEventListener('online', () => { window.onlineAt = performance.now(); });
    });
    let published = 0;
    let publishing = true;
    const publisher = (async () => {
      while (publishing) {
        published += 1;
        await admin(g, 'POST', '/v1/rooms/lobby/publish', { body: { p: published } });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    await new Promise((r) => setTimeout(r, 1000));
    await ctxA.setOffline(true);
    await new Promise((r) => setTimeout(r, 10000));
    // What the page shows offline: a message typed now is marked queued,
    // and the next retry counts down.
    await a.fill('#msg', 'typed while offline');
    await a.click('#send');
    assert.match(await a.textContent('#outbox li'), /queued \(offline\)\s*typed while offline/);
    await until('a retry countdown', 10000, async () => /retry #\d+ in \d+\.\d s/.test(await a.textContent('#retry')));
    await new Promise((r) => setTimeout(r, 10000));
    await a.screenshot({ path: join(shots, 'demo-offline.png') });
    await ctxA.setOffline(false);
    // Back: resumed (or, if the stalled socket survived, still connected).
    await until('Ann resumed', 15000, async () => (await eventsOf(a, 'resumed')).length > 0);
    const onlineAt = await a.evaluate(() => window.onlineAt);
    const resumed = (await eventsOf(a, 'resumed')).at(-1);
    assert.ok(onlineAt !== null, 'the page never saw the online event');
    const after = resumed.t - onlineAt;
    console.log(`resumed ${after.toFixed(0)} ms after online`);
    assert.ok(after >= 0 && after <= 1000, `resumed ${after} ms after online (bound 1000 ms)`);
    assert.equal(await a.evaluate(() => window.tether.client.sessionId), session, 'a new session was opened');
    assert.equal((await eventsOf(a, 'connected')).length, 1, 'connected more than once: not the same session');
    // The queued mark clears once the gateway has the message; the timeline shows the outage and the resume.
    await until('the outbox emptied', 10000, async () => (await a.$$eval('#outbox li', (l) => l.length)) === 0);
    assert.equal(await a.textContent('#retry'), '');
    await until('the timeline drew the outage', 5000, async () => Number(await a.getAttribute('#timeline', 'data-resumes')) >= 1);
    const down = Number(await a.getAttribute('#timeline', 'data-down-ms'));
    assert.ok(down >= 15000 && down <= 40000, `the timeline shows ${down} ms down for a 20 s outage`);
    await a.screenshot({ path: join(shots, 'demo-after-outage.png') });

    // Stop both streams, let them drain, and account for every message.
    await a.evaluate(() => clearInterval(window.sayTimer));
    publishing = false;
    await publisher;
    const sent = await a.evaluate(() => window.sent);
    const count = (page, pred) => page.evaluate(pred);
    await until('Ben has all of Ann\'s messages', 15000, async () =>
      (await count(b, () => window.tetherLog.filter((e) => e.type === 'roomMessage' && e.detail?.body?.n).length)) >= sent);
    await until('Ann has every publish', 15000, async () =>
      (await count(a, () => window.tetherLog.filter((e) => e.type === 'publish' && e.detail?.body?.p).length)) >= published);
    await new Promise((r) => setTimeout(r, 500)); // anything extra (a duplicate) would arrive now
    const got = await b.evaluate(() => window.tetherLog.filter((e) => e.type === 'roomMessage' && e.detail?.body?.n)
      .map((e) => e.detail.body.n));
    assert.deepEqual(got, Array.from({ length: sent }, (_, i) => i + 1), 'Ann → room: lost, duplicated or reordered');
    const pubs = await a.evaluate(() => window.tetherLog.filter((e) => e.type === 'publish' && e.detail?.body?.p)
      .map((e) => e.detail.body.p));
    assert.deepEqual(pubs, Array.from({ length: published }, (_, i) => i + 1), 'gateway → Ann: lost, duplicated or reordered');
    console.log(`${sent} messages up, ${published} down, across a 20 s outage`);
    await ctxA.close();
    await ctxB.close();
  } finally {
    g.child.kill('SIGKILL');
  }
});

test('a session ended by the gateway (kicked): the page says closed and offers Reconnect, which opens a fresh session; a say before any join is explained', async () => {
  const g = await startGateway('60s');
  try {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${g.demo}?ws=${encodeURIComponent(g.ws)}`);
    await page.waitForFunction(() => window.tether?.client?.state === 'connected', null, { timeout: 15000 });
    await page.fill('#msg', 'hello?');
    await page.click('#send');
    await until('the page explains', 5000, async () => (await page.textContent('#log')).includes('join a room first'));
    const first = await page.evaluate(() => window.tether.client.sessionId);
    assert.equal(await page.isVisible('#reconnect'), false);
    await admin(g, 'DELETE', `/v1/sessions/${first}?reason=test`);
    await page.waitForFunction(() => window.tether.client.state === 'closed', null, { timeout: 15000 });
    await until('the Reconnect button', 5000, () => page.isVisible('#reconnect'));
    await page.screenshot({ path: join(shots, 'demo-closed.png') });
    await page.click('#reconnect');
    await page.waitForFunction(() => window.tether.client.state === 'connected', null, { timeout: 15000 });
    assert.notEqual(await page.evaluate(() => window.tether.client.sessionId), first, 'a fresh session');
    assert.equal(await page.isVisible('#reconnect'), false);
    await ctx.close();
  } finally {
    g.child.kill('SIGKILL');
  }
});

test('a page that goes away leaves its room within seconds, not at the end of the grace (CLOSE 1001 on pagehide)', async () => {
  const g = await startGateway('60s');
  try {
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    const a = await openDemo(ctxA, g, 'Ann');
    const b = await openDemo(ctxB, g, 'Ben');
    const ben = await b.evaluate(() => window.tether.client.sessionId);
    await until('Ann sees Ben', 10000, async () => (await a.$$eval('#members li', (l) => l.length)) === 2);
    const left = Date.now();
    await b.goto('about:blank'); // the tab moves on (as closing it): pagehide, not persisted
    await until('Ben expired in Ann\'s room', 20000, async () =>
      (await eventsOf(a, 'presence')).some((e) => e.detail.member.session === ben && e.detail.member.state === 'expired'));
    const after = Date.now() - left;
    console.log(`Ben's session expired ${after} ms after his page went away (grace 60 s, leaveGrace 10 s)`);
    assert.ok(after < 20000, `${after} ms`);
    await ctxA.close();
    await ctxB.close();
  } finally {
    g.child.kill('SIGKILL');
  }
});

test('a page reload resumes the same session; the room sees a blip, not a leave', async () => {
  const g = await startGateway('60s');
  try {
    const ctx = await browser.newContext();
    const watcher = await openDemo(await browser.newContext(), g, 'Watcher');
    const a = await openDemo(ctx, g, 'Reloader');
    const session = await a.evaluate(() => window.tether.client.sessionId);
    await a.reload();
    await a.waitForFunction(() => window.tether?.client?.state === 'connected', null, { timeout: 15000 });
    assert.equal(await a.evaluate(() => window.tether.client.sessionId), session);
    assert.equal((await eventsOf(a, 'resumed')).length, 1, 'the reloaded page did not resume');
    assert.equal((await eventsOf(a, 'connected')).length, 0, 'the reloaded page opened a fresh session');
    assert.equal(await a.textContent('#session'), session);
    // Still a member: the room never saw it leave.
    const room = await admin(g, 'GET', '/v1/rooms/lobby');
    assert.ok(room.members.some((m) => m.session === session && m.state !== 'left'), JSON.stringify(room));
    const left = await watcher.evaluate((s) => window.tetherLog.filter((e) => e.type === 'presence'
      && e.detail?.member?.session === s && ['left', 'expired'].includes(e.detail.member.state)).length, session);
    assert.equal(left, 0, 'the room was told the reloading member left');

    // The demo's offline button: the other member sees "reconnecting".
    await a.click('#offline');
    await watcher.waitForSelector(`#members li[data-session="${session}"][data-state="reconnecting"]`, { timeout: 10000 });
    await watcher.screenshot({ path: join(shots, 'demo-member-reconnecting.png') });
    await watcher.waitForSelector(`#members li[data-session="${session}"][data-state="active"]`, { timeout: 20000 });

    // RTT rides on the heartbeat: the watcher's client measures it on a
    // PING/PONG and reports it on the next PING; the gateway lists it and
    // the room shows it (realtime profile: a PING after 3 s of silence).
    const watcherId = await watcher.evaluate(() => window.tether.client.sessionId);
    const rtt = await until('the watcher\'s RTT in the admin API', 20000, async () => {
      const s = await admin(g, 'GET', `/v1/sessions/${watcherId}`);
      return s.rtt_ms ?? null;
    });
    assert.ok(rtt >= 0 && rtt < 1000, `rtt ${rtt}`);
    await watcher.waitForFunction((id) => /RTT [0-9.]+ ms/.test(
      document.querySelector(`#members li[data-session="${id}"]`)?.textContent ?? ''), watcherId, { timeout: 10000 });
    const metrics = await (await fetch(`${g.admin}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
    assert.match(metrics, /tether_rtt_seconds_count [1-9]/);
    await watcher.screenshot({ path: join(shots, 'demo-rtt.png') });
  } finally {
    g.child.kill('SIGKILL');
  }
});

test('online, offline, visibilitychange and pageshow each probe the link at once', async () => {
  const g = await startGateway('60s');
  try {
    // The default profile pings only after 20 s of silence, and the demo's
    // member poll (every 5 s) keeps the link busier than that: any PING
    // seen here was asked for by a page event.
    const page = await openDemo(await browser.newContext(), g, 'Prober', 'lobby', '&profile=default');
    const events = {
      online: () => window.dispatchEvent(new Event('online')),
      offline: () => window.dispatchEvent(new Event('offline')),
      visibilitychange: () => document.dispatchEvent(new Event('visibilitychange')),
      pageshow: () => window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true })),
    };
    // The witness is the PING frame itself: an RTT sample needs the PONG to
    // be the first frame heard after the PING (PROTOCOL §8.8), which a
    // member-poll answer or an ACK crossing it can prevent.
    for (const [name, fire] of Object.entries(events)) {
      const before = page.tetherPings.length;
      const firedAt = Date.now();
      await page.evaluate(`(${fire.toString()})()`);
      await until(`a probe after ${name}`, 2000, async () => page.tetherPings.length > before);
      const sentAt = page.tetherPings[before];
      assert.ok(sentAt - firedAt < 1000, `${name}: PING ${sentAt - firedAt} ms after the event`);
      // The probe is answered: no drop follows (checked below, after all four).
    }
    // A page shown from the back/forward cache counts; a fresh load does not.
    const before = page.tetherPings.length;
    await page.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: false })));
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(page.tetherPings.length, before, 'a non-persisted pageshow probed');
    assert.equal((await eventsOf(page, 'disconnected')).length, 0, 'a probe on a live link dropped it');
  } finally {
    g.child.kill('SIGKILL');
  }
});

test('a page of another site gets 403 at the WebSocket upgrade; the gateway\'s own page connects', async () => {
  const g = await startGateway('60s');
  // "Another site": a page served from 127.0.0.2 (loopback, but not a host
  // the gateway's upgrade is addressed to).
  const site = createServer((_, res) => res.end('<!doctype html><title>another site</title>'));
  await new Promise((ok) => site.listen(0, '127.0.0.2', ok));
  try {
    const page = await (await browser.newContext()).newPage();
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(`http://127.0.0.2:${site.address().port}/`);
    const open = (url) => new Promise((ok) => {
      const ws = new WebSocket(url, 'tether.v1');
      ws.onopen = () => { ws.close(); ok('open'); };
      ws.onerror = () => ok('refused');
    });
    assert.equal(await page.evaluate(open, g.ws), 'refused');
    await until('the 403 in the console', 5000, () => errors.some((e) => e.includes('403')));
    // The gateway's own demo page (same host) opens its session as usual.
    const own = await openDemo(await browser.newContext(), g, 'Own');
    assert.equal(await own.evaluate(() => window.tether.client.state), 'connected');
    assert.equal(await own.evaluate(open, g.ws), 'open');
  } finally {
    site.close();
    g.child.kill('SIGKILL');
  }
});

const SECRET = 'browser-test-jwt-secret-0123456789abcdef';

/** An HS256 JWT for `sub` expiring `exp` seconds from now (negative: already expired). */
function mint(sub, exp) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + exp })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

test('an expired login token is replaced through getToken(): once when refused, and for each fresh session', async () => {
  const g = await startGateway('2s', `[auth]\nanonymous = false\njwt_secret = "${SECRET}"\nleeway = "0s"\n`);
  try {
    const page = await (await browser.newContext()).newPage();
    page.on('pageerror', (e) => console.error(`[token] page error: ${e.message}`));
    // The first token handed out has expired already; the later ones are good.
    let minted = 0;
    await page.exposeFunction('mintToken', () => (++minted === 1 ? mint('alice', -3600) : mint('alice', 600)));
    await page.goto(`${g.demo}tether.js`);
    await page.evaluate(async (ws) => {
      const { TetherClient } = await import('/tether.js');
      window.sessions = [];
      window.ended = [];
      const c = new TetherClient(ws, { storage: null, profile: 'realtime', getToken: () => window.mintToken() });
      c.on('connected', (d) => window.sessions.push(d.session));
      c.on('ended', (d) => window.ended.push(d));
      window.c = c;
    }, g.ws);
    // Refused as expired, asked once more, in.
    await page.waitForFunction(() => window.sessions.length === 1, null, { timeout: 15000 });
    assert.equal(minted, 2);
    // Offline for longer than the grace: the session expires; the fresh one asks for a token again.
    await page.evaluate(() => window.c.simulateOffline(4000));
    await page.waitForFunction(() => window.sessions.length === 2, null, { timeout: 20000 });
    const [sessions, ended] = await page.evaluate(() => [window.sessions, window.ended]);
    assert.notEqual(sessions[0], sessions[1]);
    assert.deepEqual(ended.map((e) => e.reason), ['expired']);
    assert.equal(minted, 3);
  } finally {
    g.child.kill('SIGKILL');
  }
});

test('gateway killed: the page shows reconnecting, then expired after grace', async () => {
  const grace = 5;
  const g = await startGateway(`${grace}s`);
  const ctx = await browser.newContext();
  const a = await openDemo(ctx, g, 'Orphan');
  g.child.kill('SIGKILL');
  // The status line shows each state as it comes (window.tetherLog keeps
  // them all: after expiry the client goes on trying to start afresh).
  const stateAt = async (state) => (await eventsOf(a, 'state')).find((e) => e.detail === state || e.detail?.state === state);
  await a.waitForFunction(() => document.querySelector('#status').textContent.includes('reconnecting'), null,
    { timeout: 10000 });
  await a.screenshot({ path: join(shots, 'demo-server-gone-reconnecting.png') });
  const lostAt = (await stateAt('reconnecting')).t;
  await until('the page shows expired', 40000, () => stateAt('expired'));
  const expiredAt = (await stateAt('expired')).t;
  await a.screenshot({ path: join(shots, 'demo-server-gone-expired.png') });
  const took = (expiredAt - lostAt) / 1000;
  // PROTOCOL.md §10.2: the client never gives up before the server could
  // have: last heard + its probe cycle (realtime: 3 + 3 × 1.5 = 7.5 s) +
  // the server's idle timeout when longer than grace (9 s) + grace.
  const bound = 7.5 + 9 + grace;
  console.log(`expired ${took.toFixed(1)} s after the link was lost (grace ${grace} s, §10.2 bound ${bound} s)`);
  assert.ok(took >= grace && took <= bound + 2, `expired ${took} s after the loss; grace ${grace} s, bound ${bound} s`);
  const ended = await eventsOf(a, 'ended');
  assert.ok(ended.some((e) => e.detail?.reason === 'expired'), JSON.stringify(ended));
  await ctx.close();
});
