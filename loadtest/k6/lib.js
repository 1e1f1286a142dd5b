// Shared helpers of the k6 scenarios. Everything is configured by environment variables:
//
//   SB_URL      target WebSocket URL (default ws://127.0.0.1:8080/ws); ?user=<id> is appended
//   SB_USER_PREFIX  prefix of the user ids (default k6-<random>)
//   SB_JOIN     frame type that joins a room (default room.join)
//   SB_SEND     frame type that sends to a room (default danmaku.send)
//   SB_ROOM     room name (default k6-room)
//   SB_TOKEN_URL  when set (make cluster: http://127.0.0.1:8090/auth/dev-token), each VU fetches
//               a token for its user there ({"token":…}) and connects with ?token= instead of
//               the dev ?user= (the cluster's edges require tokens)
//
// Frames follow Switchboard's client protocol v1, JSON form (protocol/doc.go). Room deliveries
// are accepted both merged ("danmaku.batch" {items:[{text}]}) and one per frame (any type whose
// data has "text"), so the same scripts run against Switchboard and the naive hub.
import http from 'k6/http';
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

export const URL = __ENV.SB_URL || 'ws://127.0.0.1:8080/ws';
export const JOIN = __ENV.SB_JOIN || 'room.join';
export const SEND = __ENV.SB_SEND || 'danmaku.send';
export const ROOM = __ENV.SB_ROOM || 'k6-room';
export const PREFIX = __ENV.SB_USER_PREFIX || `k6-${Math.floor(Math.random() * 1e6).toString(36)}`;

export const errors = new Counter('sb_errors');
export const welcomeTime = new Trend('sb_welcome_ms', true);

export function env(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : Number(v);
}

const TOKEN_URL = __ENV.SB_TOKEN_URL || '';

// userURL is the URL user connects to on base (default SB_URL): ?user= in dev mode, ?token=
// (fetched from SB_TOKEN_URL) when tokens are required.
export function userURL(user, base) {
  const b = base || URL;
  const sep = b.includes('?') ? '&' : '?';
  if (!TOKEN_URL) return `${b}${sep}user=${encodeURIComponent(user)}`;
  const res = http.get(`${TOKEN_URL}${TOKEN_URL.includes('?') ? '&' : '?'}user=${encodeURIComponent(user)}`);
  const token = res.status === 200 ? res.json('token') : '';
  if (!token) errors.add(1);
  return `${b}${sep}token=${encodeURIComponent(token)}`;
}

export const params = { headers: { 'Sec-WebSocket-Protocol': 'switchboard.v1.json' } };

export function frame(type, data, id) {
  const f = { type, data };
  if (id !== undefined) f.id = String(id);
  return JSON.stringify(f);
}

// stamp builds a text carrying its send time (ms) padded to size bytes: K|seq|ms|xxx…
export function stamp(kind, seq, size) {
  let s = `${kind}|${seq}|${Date.now()}|`;
  while (s.length < size) s += 'x';
  return s;
}

export function parseStamp(text) {
  if (typeof text !== 'string') return null;
  const p = text.split('|');
  if (p.length < 4) return null;
  return { kind: p[0], seq: Number(p[1]), at: Number(p[2]) };
}

// texts returns the message texts a server frame delivers (room or direct), or [].
export function texts(f) {
  const d = f.data;
  if (!d || typeof d !== 'object') return [];
  if (Array.isArray(d.items)) return d.items.map((it) => it.text);
  if (typeof d.text === 'string') return [d.text];
  return [];
}

// onceEach is the options of a scenario name in which each of vus VUs runs one iteration,
// bounded to secs + 60 s, with the common thresholds (checks pass, no error frames) and extra.
export function onceEach(name, vus, secs, extra) {
  return {
    scenarios: {
      [name]: { executor: 'per-vu-iterations', vus, iterations: 1, maxDuration: `${secs + 60}s` },
    },
    thresholds: Object.assign({ checks: ['rate>0.99'], sb_errors: ['count<1'] }, extra),
  };
}

// checkSession checks that the WebSocket upgrade succeeded (res of ws.connect) and that the
// session reached its goal (ok, named what).
export function checkSession(res, what, ok) {
  check(res, { 'status 101': (r) => r && r.status === 101 });
  check(ok, { [what]: (v) => v });
}

// paced calls send(seq) for seq = 0 … total-1 on socket, every 1000/rate ms, starting delay
// seconds from now.
export function paced(socket, rate, total, delay, send) {
  let seq = 0;
  socket.setTimeout(() => {
    socket.setInterval(() => {
      if (seq >= total) return;
      send(seq++);
    }, 1000 / rate);
  }, delay * 1000);
}

// hold connects user, records the time from dial to the server's welcome in sb_welcome_ms,
// counts error frames, pings every ping seconds (undefined: never) and closes after holdSecs.
export function hold(user, holdSecs, ping) {
  const url = userURL(user); // a token fetch (SB_TOKEN_URL) is not part of the handshake time
  const t0 = Date.now();
  let welcomed = false;
  const res = ws.connect(url, params, (socket) => {
    socket.on('message', (m) => {
      const f = JSON.parse(m);
      if (f.type === 'welcome' && !welcomed) {
        welcomed = true;
        welcomeTime.add(Date.now() - t0);
      } else if (f.type === 'error') {
        errors.add(1);
      }
    });
    socket.on('error', () => errors.add(1));
    if (ping !== undefined) socket.setInterval(() => socket.ping(), ping * 1000);
    socket.setTimeout(() => socket.close(), holdSecs * 1000);
  });
  checkSession(res, 'welcomed', welcomed);
}
