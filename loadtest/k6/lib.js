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
