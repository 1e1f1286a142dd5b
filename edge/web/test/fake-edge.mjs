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
    // chat: conv → [{conv, seq, from, to, text, mid}]
    convs: new Map(),
    inject(frame) {
      for (const c of edge.conns) c.ws.send(JSON.stringify(frame));
    },
    cut() {
      for (const c of edge.conns) c.ws.terminate();
    },
    closeAll(code, reason = '') {
      for (const c of edge.conns) c.ws.close(code, reason);
    },
    /** Appends a message to a 1:1 conversation and delivers it to the online members. */
    chat(from, to, text) {
      const conv = [from, to].sort().join('|');
      let log = edge.convs.get(conv);
      if (!log) edge.convs.set(conv, (log = []));
      const m = { conv, seq: log.length + 1, from, to, text };
      log.push(m);
      for (const c of edge.conns) {
        if (c.user === to || c.user === from) c.ws.send(JSON.stringify({ type: 'chat.message', data: m }));
      }
      return m;
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
        case 'chat.join':
          c.groups.add(d.group);
          ack();
          return;
        case 'chat.send': {
          ack();
          if (d.group) {
            const conv = `g:${d.group}`;
            let log = edge.convs.get(conv);
            if (!log) edge.convs.set(conv, (log = []));
            const m = { conv, seq: log.length + 1, from: c.user, group: d.group, text: d.text, mid: d.mid };
            log.push(m);
            for (const o of edge.conns) if (o.groups.has(d.group)) o.ws.send(JSON.stringify({ type: 'chat.message', data: m }));
            send({ type: 'chat.sent', id: f.id, data: { conv, seq: m.seq, mid: d.mid } });
            return;
          }
          const m = edge.chat(c.user, d.to, d.text);
          send({ type: 'chat.sent', id: f.id, data: { conv: m.conv, seq: m.seq, mid: d.mid } });
          return;
        }
        case 'chat.sync': {
          const log = edge.convs.get(d.conv) || [];
          const after = Number(d.after) || 0;
          const page = log.filter((m) => m.seq > after).slice(0, 2); // small pages: tests paging
          const more = log.filter((m) => m.seq > after).length > page.length;
          send({ type: 'chat.history', id: f.id, data: { conv: d.conv, after, messages: page, more } });
          return;
        }
        case 'chat.convs': {
          const convs = [];
          for (const [conv, log] of edge.convs) {
            if (log.some((m) => m.from === c.user || m.to === c.user)) convs.push({ conv, seq: log.length });
          }
          send({ type: 'chat.convs', id: f.id, data: { convs } });
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
