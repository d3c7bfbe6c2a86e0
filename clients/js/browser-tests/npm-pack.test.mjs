// The published package, as a user gets it: `npm pack` of clients/js holds
// the builds (ESM, CommonJS, minified, types) and the license texts, and no
// demo or sources; installed into a fresh Node project, it is imported (ESM)
// and required (CommonJS) and used with no options against a real
// `tether serve`: a session, a join and a say that comes back. On Node 20,
// which has fetch but no WebSocket, that is the HTTP fallback.
//
// Run: node --test clients/js/browser-tests/ (TETHER_BIN overrides the
// gateway binary, default target/debug/tether).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root, startGateway } from './helpers.mjs';

const pkgDir = join(root, 'clients/js');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));

const app = (imp) => `${imp}
const url = process.argv[2];
const client = new TetherClient(url); // no options at all
const rooms = new Rooms(client);
const timer = setTimeout(() => { console.error('no echo within 15 s; state ' + client.state); process.exit(1); }, 15000);
client.once('connected', () => {
  rooms.join('lobby').then(() => rooms.say('lobby', { hi: 'from node' }), (e) => { console.error(e); process.exit(1); });
});
rooms.on('roomMessage', ({ body }) => {
  console.log(JSON.stringify({ transport: client.transport, body }));
  clearTimeout(timer);
  client.close();
});
`;

test('npm pack: an installable package that a fresh Node project imports and uses against a gateway', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tether-pack-'));
  const g = await startGateway('60s');
  try {
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: pkgDir, encoding: 'utf8' });
    const [info] = JSON.parse(out.slice(out.indexOf('[')));
    assert.equal(info.name, pkg.name);
    const files = info.files.map((f) => f.path).sort();
    assert.deepEqual(files, ['LICENSE-APACHE', 'LICENSE-MIT', 'README.md', 'dist/tether.cjs', 'dist/tether.d.cts',
      'dist/tether.d.ts', 'dist/tether.js', 'dist/tether.min.js', 'package.json'], 'the package holds the builds and texts only');

    const project = join(tmp, 'app');
    execFileSync('mkdir', ['-p', project]);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(tmp, info.filename)],
      { cwd: project, stdio: 'pipe' });
    writeFileSync(join(project, 'esm.mjs'), app(`import { TetherClient, Rooms } from '${pkg.name}';`));
    writeFileSync(join(project, 'cjs.cjs'), app(`const { TetherClient, Rooms } = require('${pkg.name}');`));
    writeFileSync(join(project, 'min.mjs'), app(`import { TetherClient, Rooms } from '${pkg.name}/min';`));
    const expected = typeof WebSocket === 'undefined' ? 'http' : 'websocket';
    for (const script of ['esm.mjs', 'cjs.cjs', 'min.mjs']) {
      const r = spawnSync(process.execPath, [script, g.ws], { cwd: project, encoding: 'utf8', timeout: 30000 });
      assert.equal(r.status, 0, `${script}: ${r.stderr}`);
      const line = JSON.parse(r.stdout.trim().split('\n').at(-1));
      assert.deepEqual(line, { transport: expected, body: { hi: 'from node' } }, script);
    }
  } finally {
    g.child.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  }
});
