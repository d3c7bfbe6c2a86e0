// The tether demo page: one session to the gateway, a room with live
// presence, and a button that cuts the network for 10 s.
// Query: ?ws=<url> (default: the gateway's WebSocket listener, from /config.js), ?token=<jwt>,
//        ?profile=default (the demo uses the realtime profile: a dead link is
//        noticed within 7.5 s instead of 35 s), ?name=, ?room=, ?join=1 (join at once).
import { TetherClient, Rooms } from '/tether.js';

const q = new URLSearchParams(location.search);
// The gateway serving this page says where its WebSocket listener is (/config.js).
const wsPort = window.TETHER_WS_PORT ?? 7401;
const url = q.get('ws') || `${window.TETHER_WS_SECURE ? 'wss' : 'ws'}://${location.hostname || '127.0.0.1'}:${wsPort}/`;
const $ = (id) => document.getElementById(id);

const client = new TetherClient(url, {
  token: q.get('token') || '',
  profile: q.get('profile') === 'default' ? 'default' : 'realtime',
  // While on the HTTP fallback, how often WebSocket is tried again (ms; the client's default 30 s).
  upgradeCheck: Number(q.get('upgradeCheck')) || undefined,
});
const rooms = new Rooms(client);

// Every event of the client and of the rooms (their names do not overlap),
// with its time, for tests and for curious humans (window.tetherLog).
const tetherLog = [];
window.tetherLog = tetherLog;
window.tether = { client, rooms };

function record(type, detail) {
  tetherLog.push({ t: performance.now(), type, detail });
}
const plain = {
  message: (d) => ({ seq: d.seq, text: d.text() }),
  ended: (d) => ({ ...d, unacked: d.unacked.map((b) => new TextDecoder().decode(b)) }),
};
for (const type of ['state', 'connected', 'resumed', 'disconnected', 'attemptfailed', 'reconnecting', 'message', 'rtt', 'ended']) {
  client.on(type, (d) => record(type, plain[type] ? plain[type](d) : d));
}
for (const type of ['joined', 'left', 'members', 'presence', 'roomMessage', 'publish', 'error']) {
  rooms.on(type, (d) => record(type, d));
}

// ───── status line ─────
function renderStatus() {
  const st = $('status');
  st.dataset.state = client.state;
  st.querySelector('.state').textContent = client.state;
  st.querySelector('.sid').textContent = client.sessionId ? client.sessionId.slice(0, 8) : '–';
  st.querySelector('.rtt').textContent = client.rtt === null ? '–' : `${client.rtt} ms`;
  $('session').textContent = client.sessionId || '';
  // While our link is down the member list is what we last heard: show it as such.
  $('members').classList.toggle('stale', client.state !== 'connected');
}
for (const type of ['state', 'connected', 'resumed', 'rtt', 'ended']) client.on(type, renderStatus);
renderStatus();

// ───── retry countdown and reconnect button ─────
let retryAt = null;
let attempt = 0;
client.on('reconnecting', (d) => { retryAt = performance.now() + d.delay; attempt = d.attempt + 1; });
client.on('connected', () => { retryAt = null; });
client.on('resumed', () => { retryAt = null; });
function renderRetry() {
  const el = $('retry');
  const st = client.state;
  if (st === 'connected' || st === 'closed' || retryAt === null) el.textContent = '';
  else {
    const left = retryAt - performance.now();
    el.textContent = left > 50 ? `retry #${attempt} in ${(left / 1000).toFixed(1)} s` : `attempt #${attempt}…`;
  }
  $('reconnect').hidden = st !== 'closed';
}
setInterval(renderRetry, 200);
client.on('state', renderRetry);
$('reconnect').addEventListener('click', () => { retryAt = null; client.connect(); });

// ───── log ─────
function log(text, cls = '', who = '') {
  const li = document.createElement('li');
  if (cls) li.className = cls;
  if (who) {
    const b = document.createElement('span');
    b.className = 'who';
    b.textContent = `${who}: `;
    li.append(b);
  }
  li.append(text);
  const el = $('log');
  const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
  el.append(li);
  if (atBottom) el.scrollTop = el.scrollHeight;
}
const sid8 = (s) => (s || '').slice(0, 8);
const over = (d) => (d.transport === 'http' ? ' over the HTTP fallback' : '');
client.on('connected', (d) => log(`connected: new session ${sid8(d.session)}${over(d)}`, 'sys'));
client.on('resumed', (d) => log(`resumed session ${sid8(d.session)} (${d.replayed} replayed)${over(d)}`, 'sys'));
client.on('disconnected', (d) => log(`link lost (${d.reason}); the session waits for a resume`, 'sys'));
client.on('ended', (d) => {
  const lost = d.unacked.length ? `; ${d.unacked.length} unsent message(s) handed back` : '';
  log(`session ended: ${d.reason}${d.message ? ` – ${d.message}` : ''}${lost}${d.restarting ? '; starting a new one' : ''}`, 'sys');
});

// ───── room and members ─────
let room = null;
const members = new Map(); // session → member
const nameOf = (m) => m.name || m.user || sid8(m.session);
const bodyText = (b) => (typeof b === 'string' ? b : b && typeof b.text === 'string' ? b.text : JSON.stringify(b));

function renderMembers() {
  const ul = $('members');
  ul.replaceChildren(...[...members.values()].map((m) => {
    const li = document.createElement('li');
    li.dataset.session = m.session;
    li.dataset.state = m.state;
    const name = document.createElement('span');
    name.textContent = nameOf(m) + (m.session === client.sessionId ? ' (you)' : '');
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.innerHTML = '<span class="st"></span> · <span class="rtt"></span>';
    meta.querySelector('.st').textContent = m.state;
    meta.querySelector('.rtt').textContent = m.rtt_ms == null ? 'RTT –' : `RTT ${m.rtt_ms} ms`;
    li.append(name, meta);
    return li;
  }));
}
function setMembers(list) {
  members.clear();
  for (const m of list) members.set(m.session, m);
  renderMembers();
}

rooms.on('joined', (d) => { if (d.room === room) { setMembers(d.members); log(`joined #${d.room}`, 'sys'); } });
rooms.on('left', (d) => { if (d.room === room) { room = null; setMembers([]); log(`left #${d.room}`, 'sys'); } });
rooms.on('presence', (d) => {
  if (d.room !== room) return;
  const before = members.get(d.member.session);
  members.set(d.member.session, d.member);
  if (!before || before.state !== d.member.state) log(`${nameOf(d.member)} is ${d.member.state}`, 'sys');
  renderMembers();
});
rooms.on('roomMessage', (d) => { if (d.room === room) log(bodyText(d.body), '', nameOf(d.from)); });
rooms.on('publish', (d) => log(bodyText(d.body), '', d.room ? `publish to #${d.room}` : 'publish'));
rooms.on('error', (d) => log(`error${d.op ? ` (${d.op})` : ''}: ${d.message}`, 'sys'));

// The member list (states and RTTs) is refreshed every 5 s while connected.
// Not more often: heartbeats (and so RTT samples) only flow when the link is
// idle for the profile's interval (3 s), and polling would keep it busy.
setInterval(() => {
  if (!room || client.state !== 'connected') return;
  const asked = room;
  rooms.members(asked).then((list) => { if (asked === room) setMembers(list); }, () => {});
}, 5000);

// ───── controls ─────
$('name').value = q.get('name') || '';
if (q.get('room')) $('room').value = q.get('room');

function join() {
  const r = $('room').value.trim() || 'lobby';
  const name = $('name').value.trim();
  try {
    if (room && room !== r) rooms.leave(room);
    rooms.join(r, name || undefined);
    room = r;
  } catch (err) {
    log(`cannot join: ${err.message}`, 'sys');
  }
}
$('join-form').addEventListener('submit', (e) => { e.preventDefault(); join(); });
$('leave').addEventListener('click', () => {
  try { if (room) rooms.leave(room); } catch (err) { log(`cannot leave: ${err.message}`, 'sys'); }
});
// ───── outbox: what the gateway has not acknowledged yet ─────
const outbox = new Map(); // seq → li
function markOutbox() {
  const label = client.state === 'connected' ? 'sending…' : 'queued (offline)';
  for (const li of outbox.values()) if (li.dataset.state !== 'lost') li.querySelector('.mark').textContent = label;
}
client.on('acked', ({ seq }) => {
  for (const [s, li] of outbox) if (s <= seq) { li.remove(); outbox.delete(s); }
});
client.on('state', markOutbox);
client.on('ended', () => {
  // Handed back unacknowledged: they will not be delivered.
  for (const li of outbox.values()) { li.dataset.state = 'lost'; li.querySelector('.mark').textContent = 'not delivered'; }
  outbox.clear();
});

$('send-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('msg').value;
  if (!text) return;
  if (!room) { log('join a room first: messages go to the members of a room', 'sys'); return; }
  try {
    const seq = rooms.say(room, { text });
    const li = document.createElement('li');
    li.dataset.seq = String(seq);
    li.innerHTML = '<span class="mark"></span> ';
    li.append(text);
    $('outbox').append(li);
    outbox.set(seq, li);
    markOutbox();
    $('msg').value = '';
  } catch (err) {
    log(`not sent: ${err.message}`, 'sys');
  }
});

// ───── timeline: link state, RTT and resumes over the last minute ─────
const WINDOW = 60_000;
const samples = []; // {t, state, rtt}
const resumes = []; // t
client.on('resumed', () => resumes.push(performance.now()));
function renderTimeline() {
  const now = performance.now();
  samples.push({ t: now, state: client.state, rtt: client.state === 'connected' ? client.rtt : null });
  while (samples.length && samples[0].t < now - WINDOW) samples.shift();
  while (resumes.length && resumes[0] < now - WINDOW) resumes.shift();
  const x = (t) => ((t - (now - WINDOW)) / WINDOW) * 600;
  const color = { connected: '#1f8a4c', connecting: '#e0a43a', reconnecting: '#e0a43a', expired: '#c53030', closed: '#c53030' };
  const parts = [];
  let down = 0;
  // One bar per run of the same state.
  for (let i = 0; i < samples.length;) {
    const a = samples[i];
    let j = i + 1;
    while (j < samples.length && samples[j].state === a.state) j++;
    const end = samples[j]?.t ?? now;
    if (a.state !== 'connected') down += end - a.t;
    parts.push(`<rect x="${x(a.t).toFixed(1)}" y="40" width="${Math.max(0.5, x(end) - x(a.t)).toFixed(1)}" height="20" fill="${color[a.state]}"/>`);
    i = j;
  }
  const pts = samples.filter((p) => p.rtt !== null).map((p) => `${x(p.t).toFixed(1)},${(36 - Math.min(p.rtt, 500) / 500 * 32).toFixed(1)}`);
  if (pts.length > 1) parts.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="#6b7380" stroke-width="1.5"/>`);
  for (const t of resumes) parts.push(`<line x1="${x(t).toFixed(1)}" x2="${x(t).toFixed(1)}" y1="2" y2="62" stroke="#2b6cb0" stroke-width="2"/>`);
  const svg = $('timeline');
  svg.innerHTML = parts.join('');
  svg.dataset.downMs = String(Math.round(down));
  svg.dataset.resumes = String(resumes.length);
}
setInterval(renderTimeline, 500);
renderTimeline();
$('offline').addEventListener('click', () => {
  const button = $('offline');
  log('offline for 10 s (simulated)', 'sys');
  client.simulateOffline(10_000);
  button.disabled = true;
  setTimeout(() => { button.disabled = false; }, 10_000);
});
if (q.get('join') === '1') join();
