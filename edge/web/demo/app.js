// Switchboard demo page: danmaku over a video-like stage, 1:1 and group chat, online counts.
// Everything goes through the public client (../switchboard.js, served as /switchboard.js).
import { Switchboard, States } from './switchboard.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const ROOMS = [
  { id: 'lobby', title: 'Lobby', hue: 330 },
  { id: 'music', title: 'Late-night music', hue: 200 },
  { id: 'gaming', title: 'Speedrun', hue: 120 },
];
const GROUP = 'general'; // the group chat everyone joins
const COLORS = ['#ffffff', '#ffd166', '#06d6a0', '#4cc9f0', '#ff4f81', '#c77dff'];

// ---- identity ---------------------------------------------------------------------------------
const ANIMALS = ['fox', 'owl', 'otter', 'lynx', 'panda', 'koala', 'heron', 'yak', 'gecko', 'orca'];
function randomName() {
  return `${ANIMALS[Math.floor(Math.random() * ANIMALS.length)]}-${Math.floor(100 + Math.random() * 900)}`;
}
const me = params.get('user') || sessionStorage.getItem('sb-user') || randomName();
sessionStorage.setItem('sb-user', me);
$('me').textContent = me;
document.title = `${me} · Switchboard`;
const secondURL = new URL(location.href);
secondURL.search = '';
secondURL.searchParams.set('user', randomName());
secondURL.searchParams.set('dm', me);
$('second').href = secondURL.toString();

// ---- connection -------------------------------------------------------------------------------
// /config.json (served by the binaries) says how to authenticate: {"auth":"dev"} sends ?user=,
// {"auth":"token","token_url":"/auth/dev-token"} fetches a JWT for the user first.
async function loadConfig() {
  try {
    const res = await fetch('config.json', { cache: 'no-store' });
    if (res.ok) return await res.json();
  } catch { /* defaults */ }
  return {};
}
const cfg = await loadConfig();
const wsURL = new URL(cfg.ws || 'ws', location.href);
wsURL.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
const token = cfg.auth === 'token'
  ? async () => {
      const res = await fetch(`${cfg.token_url || 'auth/dev-token'}?user=${encodeURIComponent(me)}`);
      if (!res.ok) throw new Error(`token: HTTP ${res.status}`);
      return (await res.json()).token;
    }
  : undefined;
const sb = new Switchboard(wsURL.toString(), { user: me, token, backoff: { min: 300, max: 10000 } });
window.sb = sb; // for the console and the browser test

const stats = { sent: 0, danmaku: 0, chat: 0, reconnects: 0 };
sb.on('state', ({ state, attempt }) => {
  const el = $('state');
  el.dataset.state = state;
  el.textContent = state === States.Reconnecting && attempt ? `reconnecting (#${attempt})` : state;
  if (state === States.Reconnecting || state === States.Moving) stats.reconnects++;
  renderStats();
});
sb.on('welcome', (w) => {
  $('edge').textContent = `${w.edge || 'edge'} · conn ${w.conn}`;
  // Rooms and groups are per connection: join them again on every (re)connection.
  // Memberships live on the connection: join the room we watch again on every connection.
  joinRoom(room);
  sb.request('chat.join', { group: GROUP }).catch(toastErr('join #' + GROUP));
});
sb.on('move', (d) => toast(`edge asked us to move (${d.reason || 'drain'}); reconnecting in ${d.delay_ms} ms`));
sb.on('close', (ev) => {
  if (ev.terminal) toast(`disconnected for good: ${ev.code} ${ev.reason || ''}`, true);
});
sb.on('error', (err) => toast(err.message, true));
$('drop').onclick = () => sb.socket && sb.socket.close(4999, 'simulated drop');

// ---- rooms, stage and danmaku -----------------------------------------------------------------
let room = params.get('room') || ROOMS[0].id;
const counts = new Map();
function renderRooms() {
  const nav = $('rooms');
  nav.replaceChildren(...ROOMS.map((r) => {
    const b = document.createElement('button');
    b.className = r.id === room ? 'room active' : 'room';
    b.dataset.room = r.id;
    b.innerHTML = `<span></span><em></em>`;
    b.firstChild.textContent = r.title;
    // The count of the room we watch is live; others show what we saw last, if anything.
    b.lastChild.textContent = counts.has(r.id) ? `${counts.get(r.id)} online` : 'join to see';
    if (r.id !== room) b.lastChild.classList.add('stale');
    b.onclick = () => switchRoom(r.id);
    return b;
  }));
  const cur = ROOMS.find((r) => r.id === room) || ROOMS[0];
  $('room-title').textContent = `· ${cur.title}`;
  $('viewers').textContent = counts.get(room) ?? 0;
  scene.hue = cur.hue;
}
function joinRoom(r) {
  return sb.request('room.join', { room: r }).catch(toastErr('join ' + r));
}
function switchRoom(r) {
  if (r === room) return;
  const old = room;
  room = r;
  $('danmaku').replaceChildren();
  lanes.length = 0;
  renderRooms();
  sb.request('room.leave', { room: old }).catch(() => {});
  joinRoom(r);
  const u = new URL(location.href);
  u.searchParams.set('room', r);
  history.replaceState(null, '', u);
}
function onCount(d) {
  if (!d) return;
  if (d.counts && typeof d.counts === 'object') {
    for (const [r, n] of Object.entries(d.counts)) counts.set(r, Number(n));
  } else if (d.room != null) {
    counts.set(String(d.room), Number(d.online ?? d.count ?? d.members ?? 0));
  }
  renderRooms();
}
sb.on('room.online', onCount);

// Lanes: a new danmaku takes the first lane whose last item has cleared the right edge.
const lanes = [];
function fly(item) {
  if (item.room != null && String(item.room) !== room) return;
  const layer = $('danmaku');
  const el = document.createElement('div');
  el.className = 'bullet';
  if (item.user === me || item.from === me) el.classList.add('mine');
  if (item.paid > 0) el.classList.add('paid');
  if (item.mod) el.classList.add('mod');
  el.textContent = item.text;
  el.dataset.user = item.user || item.from || '';
  el.style.color = colorOf(el.dataset.user);
  layer.appendChild(el);
  const W = layer.clientWidth;
  const w = el.offsetWidth;
  const laneH = 34;
  const top = 50; // below the LIVE and viewers badges
  const nLanes = Math.max(1, Math.floor((layer.clientHeight * 0.72 - top) / laneH)); // keep the hills clear
  const now = performance.now();
  const speed = W / 8000; // px per ms, the same for all: a later bullet never catches up
  let lane = 0;
  for (; lane < nLanes; lane++) if (!lanes[lane] || lanes[lane] <= now) break;
  if (lane === nLanes) lane = Math.floor(Math.random() * nLanes);
  lanes[lane] = now + (w + 24) / speed;
  el.style.top = `${top + lane * laneH}px`;
  const anim = el.animate([{ transform: `translateX(${W}px)` }, { transform: `translateX(${-w - 10}px)` }],
    { duration: (W + w) / speed, easing: 'linear' });
  anim.onfinish = () => el.remove();
  $('stage-hint').classList.add('gone');
  stats.danmaku++;
  renderStats();
}
function onDanmaku(d) {
  if (!d) return;
  const items = d.items || d.messages || d.batch;
  if (Array.isArray(items)) for (const it of items) fly({ room: d.room, ...it });
  else fly(d);
}
sb.on('danmaku', onDanmaku);

// Every viewer gets a colour of their own (a hash of the name), the same on every screen.
function colorOf(user) {
  let h = 0;
  for (const ch of String(user)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}
{
  const dot = document.createElement('span');
  dot.className = 'swatch on';
  dot.style.background = colorOf(me);
  dot.title = 'your colour on every screen';
  $('colors').replaceChildren(dot);
}
function sendDanmaku(text) {
  stats.sent++;
  const paid = $('paid').checked ? 500 : undefined; // demo: paid amounts are trusted
  return sb.send('danmaku.send', { room, text, paid }).catch(toastErr('danmaku'));
}
$('danmaku-form').onsubmit = (e) => {
  e.preventDefault();
  const text = $('danmaku-text').value.trim();
  if (!text) return;
  $('danmaku-text').value = '';
  sendDanmaku(text);
};
const CHEERS = ['666', 'gg!', 'so good', '🔥🔥🔥', 'again!', 'hello from ' + me, 'clutch!', 'clip it'];
$('cheer').onclick = async () => {
  for (let i = 0; i < 5; i++) {
    sendDanmaku(CHEERS[Math.floor(Math.random() * CHEERS.length)]);
    await new Promise((r) => setTimeout(r, 180));
  }
};

// ---- chat ----------------------------------------------------------------------------------------
// Conversations are keyed by the chat plugin's ids: "g:<group>" and "d:<len(a)>:<a>:<b>".
// conv → {conv, title, kind:'group'|'dm', peer, group, messages[], unread}
const convs = new Map();
let current = null;
function directConv(a, b) {
  if (b < a) [a, b] = [b, a];
  return `d:${new TextEncoder().encode(a).length}:${a}:${b}`;
}
function peerOf(conv) {
  const m = /^d:(\d+):/.exec(conv);
  if (!m) return null;
  const rest = conv.slice(m[0].length);
  const n = Number(m[1]);
  const bytes = new TextEncoder().encode(rest);
  const a = new TextDecoder().decode(bytes.slice(0, n));
  const b = new TextDecoder().decode(bytes.slice(n + 1));
  return a === me ? b : a;
}
function convFor(conv) {
  conv = String(conv);
  if (conv.startsWith('g:')) return ensureConv(conv, { kind: 'group', group: conv.slice(2), title: `# ${conv.slice(2)}` });
  const peer = peerOf(conv) || conv;
  return ensureConv(conv, { kind: 'dm', peer, title: peer });
}
function dmWith(peer) {
  return ensureConv(directConv(me, peer), { kind: 'dm', peer, title: peer });
}
function ensureConv(conv, init) {
  let c = convs.get(conv);
  if (!c) {
    c = { conv, messages: [], unread: 0, ...init };
    convs.set(conv, c);
    renderConvs();
  }
  return c;
}
function renderConvs() {
  $('convs').replaceChildren(...[...convs.values()].map((c) => {
    const li = document.createElement('li');
    li.className = c === current ? 'active' : '';
    li.dataset.conv = c.conv;
    if (c.peer) li.dataset.peer = c.peer;
    li.textContent = c.title;
    if (c.unread) {
      const b = document.createElement('b');
      b.textContent = c.unread;
      li.appendChild(b);
    }
    li.onclick = () => select(c);
    return li;
  }));
}
function select(c) {
  current = c;
  c.unread = 0;
  $('thread-head').textContent = c.kind === 'group' ? `${c.title} — everyone in the demo` : `1:1 with ${c.title}`;
  renderConvs();
  renderMessages();
  $('chat-text').focus();
}
function renderMessages() {
  const ol = $('messages');
  ol.replaceChildren(...(current ? current.messages : []).map(messageEl));
  ol.scrollTop = ol.scrollHeight;
}
function messageEl(m) {
  const li = document.createElement('li');
  li.className = m.from === me ? 'msg mine' : 'msg';
  if (m.pending) li.classList.add('pending');
  if (m.failed) li.classList.add('failed');
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = m.from === me ? 'you' : m.from;
  const body = document.createElement('span');
  body.className = 'body';
  body.textContent = m.text;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = m.failed ? 'not sent' : m.pending ? 'sending…' : `#${m.seq ?? '?'}${m.replayed ? ' · synced' : ''}`;
  li.append(who, body, meta);
  return li;
}
function addMessage(m) {
  const c = convFor(m.conv);
  // Our own message from another tab of ours, or the server's copy of a pending bubble.
  const i = c.messages.findIndex((x) => (m.cmid && x.cmid === m.cmid && x.from === m.from) || (m.seq != null && x.seq === m.seq));
  if (i >= 0) c.messages[i] = { ...c.messages[i], ...m, pending: false };
  else c.messages.push(m);
  c.messages.sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
  if (c !== current && m.from !== me) c.unread++;
  if (c === current) renderMessages();
  else renderConvs();
  stats.chat++;
  renderStats();
}
sb.on('chat.msg', addMessage);

function sendChat(c, text) {
  const cmid = Math.random().toString(36).slice(2) + Date.now().toString(36);
  const m = { conv: c.conv, from: me, text, cmid, pending: true };
  c.messages.push(m);
  renderMessages();
  const data = c.kind === 'group' ? { group: c.group, text, cmid } : { to: c.peer, text, cmid };
  sb.request('chat.send', data).then(
    (reply) => {
      const d = reply.data || {};
      Object.assign(m, { pending: false, seq: d.seq, id: d.id, ts: d.ts });
      c.messages.sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
      if (c === current) renderMessages();
    },
    (err) => { m.pending = false; m.failed = true; toast(`message not sent: ${err.message}`, true); renderMessages(); },
  );
}
$('compose').onsubmit = (e) => {
  e.preventDefault();
  const text = $('chat-text').value.trim();
  if (!text || !current) return;
  $('chat-text').value = '';
  sendChat(current, text);
};
$('new-dm').onsubmit = (e) => {
  e.preventDefault();
  const peer = $('dm-to').value.trim();
  if (!peer || peer === me) return;
  $('dm-to').value = '';
  select(dmWith(peer));
};

// ---- status line and toasts --------------------------------------------------------------------
function renderStats() {
  $('stats').textContent = `danmaku seen ${stats.danmaku} · chat messages ${stats.chat} · sent ${stats.sent} · reconnects ${stats.reconnects}`;
}
function toast(text, bad) {
  const el = document.createElement('div');
  el.className = bad ? 'toast bad' : 'toast';
  el.textContent = text;
  $('toasts').appendChild(el);
  setTimeout(() => el.remove(), 4500);
}
function toastErr(what) {
  return (err) => toast(`${what}: ${err.message}${err.code ? ` (${err.code})` : ''}`, true);
}

// ---- the "video": a slow generative scene on a canvas ----------------------------------------
const scene = { hue: 330 };
(function animate() {
  const cv = $('scene');
  const ctx = cv.getContext('2d');
  const stars = Array.from({ length: 90 }, () => [Math.random(), Math.random() * 0.6, Math.random() * 1.5 + 0.3]);
  function frame(t) {
    const W = (cv.width = cv.clientWidth * devicePixelRatio);
    const H = (cv.height = cv.clientHeight * devicePixelRatio);
    const h = scene.hue;
    const g = ctx.createLinearGradient(0, 0, 0, H);
    g.addColorStop(0, `hsl(${h + 200}, 55%, 9%)`);
    g.addColorStop(0.55, `hsl(${h + 240}, 45%, 22%)`);
    g.addColorStop(1, `hsl(${h}, 70%, 45%)`);
    ctx.fillStyle = g;
    ctx.fillRect(0, 0, W, H);
    for (const [x, y, r] of stars) {
      ctx.globalAlpha = 0.4 + 0.6 * Math.abs(Math.sin(t / 900 + x * 40));
      ctx.fillStyle = '#fff';
      ctx.beginPath();
      ctx.arc(((x * W + t * 0.004 * r * W / 100) % W), y * H, r * devicePixelRatio, 0, 7);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    // the sun
    const sy = H * 0.62 + Math.sin(t / 4000) * H * 0.03;
    const sun = ctx.createRadialGradient(W / 2, sy, 0, W / 2, sy, H * 0.3);
    sun.addColorStop(0, `hsla(${h + 40}, 100%, 75%, 1)`);
    sun.addColorStop(0.35, `hsla(${h + 20}, 100%, 60%, 0.9)`);
    sun.addColorStop(1, `hsla(${h}, 100%, 50%, 0)`);
    ctx.fillStyle = sun;
    ctx.fillRect(0, 0, W, H);
    // rolling hills, three layers of parallax
    for (let layer = 0; layer < 3; layer++) {
      ctx.fillStyle = `hsla(${h + 250 + layer * 15}, 40%, ${8 + layer * 5}%, 0.95)`;
      ctx.beginPath();
      ctx.moveTo(0, H);
      const base = H * (0.72 + layer * 0.09);
      for (let x = 0; x < W + 8; x += 8) {
        const p = x / W * 6 + t / (9000 - layer * 2500) + layer * 2;
        ctx.lineTo(x, base - Math.sin(p) * H * 0.05 - Math.sin(p * 2.3) * H * 0.025);
      }
      ctx.lineTo(W, H);
      ctx.fill();
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
})();

// ---- start ---------------------------------------------------------------------------------------
renderRooms();
renderStats();
convFor(`g:${GROUP}`);
const dm = params.get('dm');
if (dm && dm !== me) {
  select(dmWith(dm));
  toast(`you are ${me}; say hi to ${dm} →`);
} else {
  select(convs.get(`g:${GROUP}`));
}
sb.connect();
