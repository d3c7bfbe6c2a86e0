// What the browser tests share: the gateway binary started on ephemeral
// ports, its admin API, polling, and Debian's Chromium through playwright-core.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdirSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const bin = process.env.TETHER_BIN ?? join(root, 'target/debug/tether');
export const shots = join(root, 'target/browser-screenshots');
export const KEY = 'browser-test-admin-key-0123456789';
mkdirSync(shots, { recursive: true });

/** Starts `tether serve` on ephemeral ports; resolves with its addresses. */
export function startGateway(grace, extra = '') {
  const dir = mkdtempSync(join(tmpdir(), 'tether-browser-'));
  const cfg = join(dir, 'gw.toml');
  writeFileSync(cfg, `
[listen]
tcp = "off"
ws = "127.0.0.1:0"
[session]
grace = "${grace}"
[admin]
listen = "127.0.0.1:0"
key = "${KEY}"
[demo]
listen = "127.0.0.1:0"
${extra}`);
  const child = spawn(bin, ['serve', '--config', cfg], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((ok, fail) => {
    const g = { child, ws: null, admin: null, demo: null };
    const timer = setTimeout(() => fail(new Error(`${bin} serve did not start within 20 s`)), 20000);
    child.on('exit', (code) => fail(new Error(`${bin} serve exited with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const l = line.trim();
      if (l.startsWith('sessions on ws://')) g.ws = l.slice('sessions on '.length);
      if (l.startsWith('admin API on http://')) g.admin = l.split(' ')[3];
      if (l.startsWith('demo page on http://')) g.demo = l.split(' ')[3];
      if (l.includes('Ctrl-C')) {
        clearTimeout(timer);
        ok(g);
      }
    });
  });
}

export async function admin(g, method, path, body) {
  const r = await fetch(`${g.admin}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

/** Polls `f` (async) until it returns a truthy value, or fails after `ms`. */
export async function until(what, ms, f) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Debian's Chromium, headless (never a downloaded browser). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

