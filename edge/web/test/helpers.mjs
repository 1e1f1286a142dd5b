// Shared helpers for the client's tests (not a test file itself: run `node --test test/*.test.mjs`).
import WebSocket, { WebSocketServer } from 'ws';
import { Switchboard } from '../switchboard.js';

/** The real server's WebSocket URL, from SB_WS_URL. Throws (failing the test) when unset. */
export function wsURL() {
  const u = process.env.SB_WS_URL;
  if (!u) {
    throw new Error(
      'SB_WS_URL is not set: these tests run against a real Switchboard edge. Start one ' +
        '(e.g. `make run`) and set SB_WS_URL=ws://127.0.0.1:8080/ws (dev mode, ?user=). ' +
        'Optionally SB_AUTH_URL=http://127.0.0.1:8080/auth/dev-token for token mode.',
    );
  }
  return u;
}

export function uniqueUser(name) {
  return `${name}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/** A Switchboard client for user against SB_WS_URL (or url), with fast backoff for tests. */
export function client(user, opts = {}) {
  const url = opts.url || wsURL();
  const authURL = process.env.SB_AUTH_URL;
  const token = authURL
    ? async () => {
        const res = await fetch(`${authURL}?user=${encodeURIComponent(user)}`);
        if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
        return (await res.json()).token;
      }
    : undefined;
  return new Switchboard(url, {
    user,
    token,
    WebSocket,
    backoff: { min: 50, max: 500 },
    ackTimeout: 5000,
    ...opts,
  });
}

/** Resolves with the args of the next `type` event for which pred(...args) is true. */
export function next(sb, type, pred = () => true, timeout = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeout} ms waiting for '${type}'`));
    }, timeout);
    const off = sb.on(type, (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args[0]);
    });
  });
}

/** Polls fn until it returns truthy or the deadline passes. what names the wait in the
 *  timeout's error: a string, or a (possibly async) function called then, to describe the state
 *  at the end. */
export async function eventually(fn, what, timeout = 15000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${typeof what === 'function' ? await what() : what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A WebSocket proxy on 127.0.0.1 in front of the real server, to observe and disturb the
 * traffic: it can drop client frames, inject server frames and cut connections.
 */
export async function startProxy(upstream = wsURL()) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  const port = wss.address().port;
  const up = new URL(upstream);
  const proxy = {
    url: `ws://127.0.0.1:${port}${up.pathname}`,
    conns: new Set(),
    sent: [], // every client → server text frame, parsed
    dropClient: null, // (frame) => true to swallow a client frame
    async close() {
      for (const c of proxy.conns) c.client.terminate();
      await new Promise((r) => wss.close(r));
    },
    /** Sends a server frame to every client. */
    inject(frame) {
      for (const c of proxy.conns) c.client.send(JSON.stringify(frame));
    },
    /** Cuts every connection without a close frame (like a network failure). */
    cut() {
      for (const c of proxy.conns) {
        c.client.terminate();
        c.server.terminate();
      }
    },
  };
  wss.on('connection', (client, req) => {
    const target = new URL(upstream);
    for (const [k, v] of new URL(req.url, 'http://x').searchParams) target.searchParams.set(k, v);
    const server = new WebSocket(target.toString());
    const c = { client, server };
    proxy.conns.add(c);
    const early = [];
    server.on('open', () => {
      for (const [d, b] of early) server.send(d, { binary: b });
      early.length = 0;
    });
    server.on('message', (d, b) => client.readyState === 1 && client.send(d, { binary: b }));
    client.on('message', (d, b) => {
      if (!b) {
        let f = null;
        try { f = JSON.parse(d.toString()); } catch { /* pass through */ }
        if (f) {
          proxy.sent.push(f);
          if (proxy.dropClient && proxy.dropClient(f)) return;
        }
      }
      if (server.readyState === 1) server.send(d, { binary: b });
      else early.push([d, b]);
    });
    const closeOther = (other, code, reason) => {
      if (other.readyState > 1) return;
      if (code >= 3000 || (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)) {
        other.close(code, reason);
      } else {
        other.terminate();
      }
    };
    server.on('close', (code, reason) => { proxy.conns.delete(c); closeOther(client, code, reason); });
    client.on('close', (code, reason) => { proxy.conns.delete(c); closeOther(server, code, reason); });
    server.on('error', () => client.terminate());
    client.on('error', () => server.terminate());
  });
  return proxy;
}

/** What each logic replica's admin API (SB_LOGIC_ADMIN_URLS, comma-separated, e.g. the cluster's)
 *  says of users' connections, for a failure message: {url: {user: [edge/conn…] | error}}. */
export async function presenceOf(users) {
  const out = {};
  for (const base of (process.env.SB_LOGIC_ADMIN_URLS || '').split(',').filter(Boolean)) {
    out[base] = {};
    for (const u of users) {
      try {
        const r = await fetch(`${base.replace(/\/$/, '')}/admin/users/${encodeURIComponent(u)}`, { signal: AbortSignal.timeout(2000) });
        const d = await r.json();
        out[base][u] = r.ok ? (d.connections || []).map((c) => `${c.edge}/${c.conn}`) : `${r.status} ${d.error}`;
      } catch (err) {
        out[base][u] = String(err && err.message);
      }
    }
  }
  return out;
}
