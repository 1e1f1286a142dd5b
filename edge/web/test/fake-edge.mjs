// A scripted stand-in for a Switchboard edge, for the client's hermetic tests (unit.test.mjs).
// It speaks client protocol v1 (JSON) with just enough behaviour to exercise the client:
// welcome, ack, error, echo, a tiny chat (send / sync / convs) and hooks to drop frames, cut
// connections and inject server frames. The interop tests (client.test.mjs, chat.test.mjs) run
// against the real edge instead.
import { WebSocketServer } from 'ws';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json' };

/** The chat plugin's id of the 1:1 conversation of a and b (order does not matter). */
export function directConv(a, b) {
  if (b < a) [a, b] = [b, a];
  return `d:${new TextEncoder().encode(a).length}:${a}:${b}`;
}

/** With {serve: true} the fake edge also serves the demo page (like the embedded binary). */
export async function startFakeEdge({ serve = false, port = 0 } = {}) {
  const server = http.createServer(async (req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    if (!serve) return res.writeHead(404).end();
    if (p === '/config.json') return res.writeHead(200, { 'content-type': TYPES['.json'] }).end('{"ws":"ws","auth":"dev"}');
    const file = p === '/switchboard.js' ? path.join(webDir, 'switchboard.js')
      : path.join(webDir, 'demo', p === '/' ? 'index.html' : path.normalize(p).replace(/^(\.\.[/\\])+/, ''));
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  const wss = new WebSocketServer({
    server,
    path: '/ws',
    handleProtocols: (protocols) => (protocols.has('switchboard.v1.json') ? 'switchboard.v1.json' : false),
  });
  let nextConn = 1;
  const edge = {
    url: `ws://127.0.0.1:${server.address().port}/ws`,
    httpURL: `http://127.0.0.1:${server.address().port}/`,
    conns: new Set(),
    received: [], // every client frame, parsed, with .conn
    connects: [], // {conn, user, token, at}
    /** (frame) => true swallows a client frame (no answer at all). */
    drop: null,
    /** Set to a close code to refuse the next upgrades by closing at once. */
    refuseWith: null,
    // chat, as the chat plugin does it: conv → {members: Set, log: [{conv, seq, id, from, cmid, text, ts}]}
    convs: new Map(),
    acks: new Map(), // user → Map(conv → seq acked)
    inject(frame) {
      for (const c of edge.conns) c.ws.send(JSON.stringify(frame));
    },
    cut() {
      for (const c of edge.conns) c.ws.terminate();
    },
    closeAll(code, reason = '') {
      for (const c of edge.conns) c.ws.close(code, reason);
    },
    /** Appends a message to conv (members: its users) and delivers it to every connection of
     *  every member except `exclude` (the sending connection, which gets the reply). */
    append(conv, members, from, text, cmid, exclude) {
      let cv = edge.convs.get(conv);
      if (!cv) edge.convs.set(conv, (cv = { members: new Set(), log: [] }));
      for (const u of members) cv.members.add(u);
      const seq = cv.log.length + 1;
      const m = { conv, seq, id: `${conv}#${seq}`, from, cmid, text, ts: Date.now() };
      cv.log.push(m);
      for (const c of edge.conns) {
        if (c !== exclude && cv.members.has(c.user)) c.ws.send(JSON.stringify({ type: 'chat.msg', data: m }));
      }
      return m;
    },
    /** A 1:1 message from → to, as if sent from another device of from's. */
    chat(from, to, text) {
      return edge.append(directConv(from, to), [from, to], from, text);
    },
    async close() {
      for (const c of edge.conns) c.ws.terminate();
      await new Promise((r) => wss.close(r));
      await new Promise((r) => server.close(r));
    },
  };

  wss.on('connection', (ws, req) => {
    const q = new URL(req.url, 'http://x').searchParams;
    const c = { ws, conn: String(nextConn++), user: q.get('token') ? `tok:${q.get('token')}` : q.get('user'), rooms: new Set(), groups: new Set() };
    edge.connects.push({ conn: c.conn, user: c.user, token: q.get('token'), at: Date.now(), protocol: ws.protocol });
    if (edge.refuseWith) {
      ws.close(edge.refuseWith, 'refused');
      return;
    }
    edge.conns.add(c);
    ws.on('close', () => {
      edge.conns.delete(c);
      for (const r of c.rooms) counts(r);
    });
    const roomSend = (r, frame) => {
      for (const o of edge.conns) if (o.rooms.has(r)) o.ws.send(JSON.stringify(frame));
    };
    const counts = (r) => roomSend(r, { type: 'room.online', data: { room: r, online: [...edge.conns].filter((o) => o.rooms.has(r)).length } });
    ws.on('error', () => {});
    ws.send(JSON.stringify({ type: 'welcome', data: { conn: c.conn, user: c.user, edge: 'fake' } }));
    ws.on('message', (raw) => {
      let f;
      try {
        f = JSON.parse(raw.toString());
      } catch {
        ws.send(JSON.stringify({ type: 'error', code: 1001, message: 'malformed frame' }));
        return;
      }
      edge.received.push({ ...f, conn: c.conn });
      if (edge.drop && edge.drop(f)) return;
      const send = (frame) => ws.send(JSON.stringify(frame));
      const ack = () => f.id && send({ type: 'ack', id: f.id });
      const d = f.data || {};
      switch (f.type) {
        case 'echo':
          ack();
          send({ type: 'echo', data: d });
          return;
        case 'room.join':
          c.rooms.add(d.room);
          ack();
          send({ type: 'room.join', id: f.id, data: { room: d.room } });
          counts(d.room);
          return;
        case 'danmaku.send':
          ack();
          roomSend(d.room, { type: 'danmaku', data: { room: d.room, user: c.user, text: d.text, paid: d.paid, ts: Date.now() } });
          return;
        case 'chat.join': {
          ack();
          const conv = `g:${d.group}`;
          if (!edge.convs.has(conv)) edge.convs.set(conv, { members: new Set(), log: [] });
          edge.convs.get(conv).members.add(c.user);
          send({ type: 'chat.join', id: f.id, data: { conv } });
          return;
        }
        case 'chat.send': {
          ack();
          const conv = d.group ? `g:${d.group}` : directConv(c.user, d.to);
          const cv = edge.convs.get(conv);
          const dup = cv && cv.log.find((m) => m.from === c.user && d.cmid && m.cmid === d.cmid);
          const m = dup || edge.append(conv, d.group ? [c.user] : [c.user, d.to], c.user, d.text, d.cmid, c);
          send({ type: 'chat.send', id: f.id, data: { conv, seq: m.seq, id: m.id, ts: m.ts, dup: !!dup } });
          return;
        }
        case 'chat.sync': {
          const log = (edge.convs.get(d.conv) || { log: [] }).log;
          const acked = (edge.acks.get(c.user) || new Map()).get(d.conv) || 0;
          const since = d.since == null ? acked : Number(d.since);
          const page = log.filter((m) => m.seq > since).slice(0, 2); // small pages: tests paging
          const more = log.filter((m) => m.seq > since).length > page.length;
          send({ type: 'chat.sync', id: f.id, data: { conv: d.conv, messages: page, more } });
          return;
        }
        case 'chat.convs': {
          const convs = [];
          const acks = edge.acks.get(c.user) || new Map();
          for (const [conv, cv] of edge.convs) {
            if (cv.members.has(c.user)) convs.push({ conv, last: cv.log.length, acked: acks.get(conv) || 0 });
          }
          send({ type: 'chat.convs', id: f.id, data: { convs } });
          return;
        }
        case 'chat.ack': {
          if (!edge.acks.has(c.user)) edge.acks.set(c.user, new Map());
          const acks = edge.acks.get(c.user);
          acks.set(d.conv, Math.max(acks.get(d.conv) || 0, Number(d.seq) || 0));
          return;
        }
        default:
          if (f.id) send({ type: 'error', id: f.id, code: 1002, message: `no plugin handles ${f.type}` });
      }
    });
  });
  return edge;
}

// `node test/fake-edge.mjs [port]` serves the demo page against the fake edge (page development).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const edge = await startFakeEdge({ serve: true, port: Number(process.argv[2] || 0) });
  console.log(`fake edge: page ${edge.httpURL}  websocket ${edge.url}`);
}
