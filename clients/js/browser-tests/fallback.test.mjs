// The HTTP fallback (PROTOCOL.md §2.4) in real Chromium against a real
// `tether serve`, behind a proxy that refuses WebSocket upgrades (as some
// corporate proxies do) and passes plain HTTP: the demo page connects over
// the fallback, keeps its session through a 10 s outage (CDP offline
// emulation) with nothing lost or duplicated either way, and moves to
// WebSocket (the same session) once the proxy lets upgrades through.
//
// Run: node --test clients/js/browser-tests/ (TETHER_BIN overrides the
// gateway binary, default target/debug/tether).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import { startGateway, admin, until, launch } from './helpers.mjs';

/** A TCP proxy to `target` reading each connection's request head: WebSocket upgrades are refused with 403 while `blockUpgrades`. */
function startProxy(target) {
  const [host, port] = target.replace(/^ws:\/\//, '').replace(/\/.*$/, '').split(':');
  const p = { blockUpgrades: true, refused: 0, passed: 0, server: null, addr: null };
  p.server = createServer((down) => {
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      down.off('data', onData);
      const text = head.subarray(0, end).toString('latin1');
      if (p.blockUpgrades && /^upgrade:\s*websocket/im.test(text)) {
        p.refused += 1;
        down.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 25\r\nConnection: close\r\n\r\nWebSockets are not allowed');
        return;
      }
      p.passed += 1;
      const up = connect(Number(port), host, () => {
        up.write(head);
        down.pipe(up);
        up.pipe(down);
      });
      const end2 = () => { down.destroy(); up.destroy(); };
      up.on('error', end2);
      down.on('error', end2);
      up.on('close', end2);
      down.on('close', end2);
    };
    down.on('data', onData);
    down.on('error', () => down.destroy());
  });
  return new Promise((ok) => p.server.listen(0, '127.0.0.1', () => {
    p.addr = `ws://127.0.0.1:${p.server.address().port}/`;
    ok(p);
  }));
}

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const eventsOf = (page, type) => page.evaluate((t) => window.tetherLog.filter((e) => e.type === t), type);

test('behind a proxy refusing WebSocket: the HTTP fallback carries the session through an outage, 0 lost, 0 duplicated, then moves to WebSocket', async () => {
  const g = await startGateway('60s');
  const proxy = await startProxy(g.ws);
  try {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
    await page.goto(`${g.demo}?ws=${encodeURIComponent(proxy.addr)}&upgradeCheck=2000`);
    await page.waitForFunction(() => window.tether?.client?.state === 'connected', null, { timeout: 15000 });
    assert.equal(await page.evaluate(() => window.tether.client.transport), 'http', 'connected over the fallback');
    assert.ok(proxy.refused >= 1, 'the page tried WebSocket first');
    const session = await page.evaluate(() => window.tether.client.sessionId);
    await page.fill('#name', 'Ann');
    await page.fill('#room', 'lobby');
    await page.click('#join');
    await page.waitForSelector('#members li[data-state="active"]', { timeout: 15000 });

    // Streams both ways: Ann says a numbered message every 100 ms; the
    // gateway publishes one to the room every 100 ms.
    await page.evaluate(() => {
      window.sent = 0;
      window.sayTimer = setInterval(() => {
        window.sent += 1;
        window.tether.rooms.say('lobby', { n: window.sent });
      }, 100);
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
    await ctx.setOffline(true);
    await new Promise((r) => setTimeout(r, 10000));
    await ctx.setOffline(false);
    await until('the session resumed over the fallback', 20000, async () =>
      (await eventsOf(page, 'resumed')).some((e) => e.detail.transport === 'http'));
    await new Promise((r) => setTimeout(r, 1000));
    await page.evaluate(() => clearInterval(window.sayTimer));
    publishing = false;
    await publisher;
    const sent = await page.evaluate(() => window.sent);
    const mine = () => page.evaluate(() => window.tetherLog.filter((e) => e.type === 'roomMessage' && e.detail?.body?.n)
      .map((e) => e.detail.body.n));
    const pubs = () => page.evaluate(() => window.tetherLog.filter((e) => e.type === 'publish' && e.detail?.body?.p)
      .map((e) => e.detail.body.p));
    await until('every say came back', 20000, async () => (await mine()).length >= sent);
    await until('every publish arrived', 20000, async () => (await pubs()).length >= published);
    await new Promise((r) => setTimeout(r, 500)); // a duplicate would arrive now
    assert.deepEqual(await mine(), Array.from({ length: sent }, (_, i) => i + 1), 'Ann → room: lost, duplicated or reordered');
    assert.deepEqual(await pubs(), Array.from({ length: published }, (_, i) => i + 1), 'gateway → Ann: lost, duplicated or reordered');
    assert.equal(await page.evaluate(() => window.tether.client.sessionId), session, 'the same session throughout');
    assert.equal(await page.evaluate(() => window.tether.client.transport), 'http');
    console.log(`${sent} messages up, ${published} down over the HTTP fallback, across a 10 s outage`);

    // The proxy lets upgrades through now: within a couple of upgrade
    // checks the session moves to a WebSocket, still the same session.
    proxy.blockUpgrades = false;
    await until('the session moved to WebSocket', 15000, async () =>
      (await page.evaluate(() => window.tether.client.transport)) === 'websocket');
    const last = (await eventsOf(page, 'resumed')).at(-1);
    assert.equal(last.detail.transport, 'websocket');
    assert.equal(await page.evaluate(() => window.tether.client.sessionId), session);
    assert.equal((await eventsOf(page, 'connected')).length, 1, 'never a new session');
    const upgrades = (await eventsOf(page, 'disconnected')).filter((e) => e.detail.reason === 'upgrade');
    assert.equal(upgrades.length, 1);
    // Still carrying messages.
    await page.evaluate(() => window.tether.rooms.say('lobby', { n: 'after' }));
    await until('a say over WebSocket', 10000, async () =>
      page.evaluate(() => window.tetherLog.some((e) => e.type === 'roomMessage' && e.detail?.body?.n === 'after')));
    await ctx.close();
  } finally {
    proxy.server.close();
    g.child.kill('SIGKILL');
  }
});
