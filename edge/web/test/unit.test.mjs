// The client's mechanics against a scripted fake edge (hermetic: no Switchboard server needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Switchboard, States, ErrorCodes, CloseCodes, SwitchboardError } from '../switchboard.js';
import { startFakeEdge, directConv } from './fake-edge.mjs';
import { eventually, next } from './helpers.mjs';

function client(url, user, opts = {}) {
  return new Switchboard(url, { user, WebSocket, backoff: { min: 20, max: 200 }, ackTimeout: 3000, ...opts });
}

async function setup(t, user = 'alice', opts = {}) {
  const edge = await startFakeEdge();
  const sb = client(edge.url, user, opts);
  t.after(async () => { await sb.close(); await edge.close(); });
  return { edge, sb };
}

test('unit: connect offers switchboard.v1.json, sends ?user=, reports states', async (t) => {
  const { edge, sb } = await setup(t);
  const states = [];
  sb.on('state', (s) => states.push(s.state));
  const w = await sb.connect();
  assert.equal(w.user, 'alice');
  assert.equal(edge.connects[0].protocol, 'switchboard.v1.json');
  assert.deepEqual(states, [States.Connecting, States.Online]);
  assert.equal(sb.state, States.Online);
});

test('unit: a token (or a token function) is sent as ?token= and wins over user', async (t) => {
  let calls = 0;
  const { edge, sb } = await setup(t, 'ignored', { token: async () => `t${++calls}` });
  const w = await sb.connect();
  assert.equal(w.user, 'tok:t1');
  const again = next(sb, 'welcome');
  edge.cut();
  assert.equal((await again).user, 'tok:t2', 'the token function runs before every attempt');
});

test('unit: send resolves on ack, rejects with the error code, replies settle by id', async (t) => {
  const { sb } = await setup(t);
  await sb.connect();
  const ack = await sb.send('echo', { a: 1 });
  assert.equal(ack.type, 'ack');
  await assert.rejects(sb.send('nope', {}), (err) => {
    assert.ok(err instanceof SwitchboardError);
    assert.equal(err.code, ErrorCodes.UnknownType);
    assert.equal(err.type, 'nope');
    return true;
  });
  const hist = await sb.send('chat.sync', { conv: 'x', since: 0 });
  assert.equal(hist.type, 'chat.sync', 'a reply delivery carrying the id settles the send');
});

test('unit: no ack within the timeout rejects with ETIMEOUT', async (t) => {
  const { edge, sb } = await setup(t);
  await sb.connect();
  edge.drop = (f) => f.type === 'echo';
  await assert.rejects(sb.send('echo', {}, { timeout: 100 }), (err) => err.code === ErrorCodes.AckTimeout);
});

test('unit: frames sent while offline wait and go out after the welcome', async (t) => {
  const { edge, sb } = await setup(t);
  const p = sb.send('echo', { early: true }); // before connect()
  const q = sb.send('echo', { fire: true }, { ack: false });
  sb.connect();
  assert.equal((await p).type, 'ack');
  await q;
  await eventually(() => edge.received.some((f) => f.data && f.data.fire), 'the fire-and-forget frame');
});

test('unit: unacked frames are resent with the same id after a reconnect', async (t) => {
  const { edge, sb } = await setup(t);
  await sb.connect();
  let dropped = 0;
  edge.drop = (f) => f.type === 'echo' && dropped++ === 0;
  const p = sb.send('echo', { n: 1 });
  await eventually(() => dropped === 1, 'the first copy to be dropped');
  edge.cut();
  const ack = await p;
  const copies = edge.received.filter((f) => f.type === 'echo');
  assert.equal(copies.length, 2);
  assert.equal(copies[0].id, copies[1].id);
  assert.notEqual(copies[0].conn, copies[1].conn, 'resent on the new connection');
  assert.equal(ack.id, copies[0].id);
});

test('unit: {resend:false} rejects with EDROPPED when the connection drops', async (t) => {
  const { edge, sb } = await setup(t);
  await sb.connect();
  edge.drop = (f) => f.type === 'echo';
  const p = sb.send('echo', {}, { resend: false });
  await eventually(() => edge.received.length > 0, 'the frame to arrive');
  edge.cut();
  await assert.rejects(p, (err) => err.code === ErrorCodes.Dropped);
});

test('unit: reconnect backoff grows exponentially with full jitter and resets on welcome', async (t) => {
  const { edge, sb } = await setup(t, 'alice', { backoff: { min: 10, max: 80 } });
  await sb.connect();
  const delays = [];
  sb.on('close', (ev) => ev.willReconnect && delays.push(ev.delay));
  edge.refuseWith = 1011;
  edge.cut();
  await eventually(() => delays.length >= 6, '6 reconnect attempts', 10000);
  const caps = [10, 20, 40, 80, 80, 80];
  delays.slice(0, 6).forEach((d, i) => assert.ok(d >= 0 && d < caps[i], `delay ${i} = ${d} < ${caps[i]}`));
  edge.refuseWith = null;
  await next(sb, 'welcome', undefined, 5000);
  assert.equal(sb.attempt, 0);
});

test('unit: move closes 1000 and reconnects only after delay_ms', async (t) => {
  const { edge, sb } = await setup(t);
  await sb.connect();
  const states = [];
  sb.on('state', (s) => states.push(s.state));
  const closed = next(sb, 'close');
  const t0 = Date.now();
  edge.inject({ type: 'move', data: { delay_ms: 300, reason: 'drain' } });
  const ev = await closed;
  assert.equal(ev.code, CloseCodes.Normal);
  assert.equal(ev.moved, true);
  await next(sb, 'welcome');
  assert.ok(Date.now() - t0 >= 300, 'waited delay_ms');
  assert.deepEqual(states, [States.Moving, States.Online]);
  assert.equal(edge.connects.length, 2);
  assert.ok(edge.connects[1].at - edge.connects[0].at >= 300);
});

test('unit: terminal close codes stop reconnecting', async (t) => {
  const { edge, sb } = await setup(t);
  await sb.connect();
  const closed = next(sb, 'close');
  edge.closeAll(CloseCodes.Kicked, 'bye');
  const ev = await closed;
  assert.equal(ev.code, CloseCodes.Kicked);
  assert.equal(ev.willReconnect, false);
  assert.equal(sb.state, States.Offline);
});

test('unit: close() rejects pending sends with ECLOSED', async (t) => {
  const { edge, sb } = await setup(t);
  await sb.connect();
  edge.drop = () => true;
  const p = sb.send('echo', {});
  const rejected = assert.rejects(p, (err) => err.code === ErrorCodes.Closed);
  await eventually(() => edge.received.length > 0, 'the frame to arrive');
  await sb.close();
  await rejected;
  assert.equal(sb.state, States.Offline);
});

test('unit: chat resume fetches exactly the missed messages, paging, without duplicates', async (t) => {
  const edge = await startFakeEdge();
  const a = client(edge.url, 'alice');
  const b = client(edge.url, 'bob');
  t.after(async () => { await a.close(); await b.close(); await edge.close(); });
  await Promise.all([a.connect(), b.connect()]);
  const got = [];
  b.on('chat.msg', (m) => got.push(m));
  const reply = await a.request('chat.send', { to: 'bob', text: 'live' });
  assert.equal(reply.data.seq, 1);
  await eventually(() => got.length === 1, 'the live message');
  const conv = got[0].conv;
  assert.equal(conv, directConv('alice', 'bob'));
  assert.equal(b.chatPositions[conv], 1);
  assert.equal(a.chatPositions[conv], 1, "the sender's position follows its own reply");

  await b.close();
  for (let i = 1; i <= 5; i++) edge.chat('alice', 'bob', `missed ${i}`); // while b is offline
  await b.connect();
  await b.synced();
  assert.deepEqual(got.map((m) => m.text), ['live', 'missed 1', 'missed 2', 'missed 3', 'missed 4', 'missed 5']);
  assert.ok(got.slice(1).every((m) => m.replayed === true));
  assert.equal(b.chatPositions[conv], 6);
  const syncs = edge.received.filter((f) => f.type === 'chat.sync' && f.data.conv === conv);
  assert.deepEqual(syncs.map((f) => f.data.since), [1, 3, 5], 'paged from the last seq seen');

  // A live duplicate (at-least-once redelivery) is swallowed.
  edge.inject({ type: 'chat.msg', data: { conv, seq: 6, from: 'alice', text: 'missed 5' } });
  await sb_roundtrip(b);
  assert.equal(got.length, 6);
  // What b processed is acknowledged to the server (debounced).
  await eventually(() => (edge.acks.get('bob') || new Map()).get(conv) === 6, 'chat.ack up to 6');
});

test('unit: a fresh client syncs from the last acknowledged message; a live gap triggers a sync', async (t) => {
  const edge = await startFakeEdge();
  const old = client(edge.url, 'bob');
  t.after(async () => { await old.close(); await edge.close(); });
  await old.connect();
  edge.chat('alice', 'bob', 'one');
  const conv = directConv('alice', 'bob');
  await eventually(() => (edge.acks.get('bob') || new Map()).get(conv) === 1, 'the first device acks 1');
  await old.close();
  edge.chat('alice', 'bob', 'two');
  edge.chat('alice', 'bob', 'three');

  const fresh = client(edge.url, 'bob'); // e.g. a reloaded page: knows no positions
  t.after(() => fresh.close());
  const got = [];
  fresh.on('chat.msg', (m) => got.push(m));
  await fresh.connect();
  await fresh.synced();
  assert.deepEqual(got.map((m) => m.text), ['two', 'three'], 'what no device processed yet');
  const first = edge.received.find((f) => f.type === 'chat.sync' && f.conn === edge.connects.at(-1).conn);
  assert.equal(first.data.since, undefined, 'since omitted: the server starts after the last ack');

  // Seq 4 is lost on the way; 5 arrives live: the client notices the gap and fetches 4.
  const cv = edge.convs.get(conv);
  cv.log.push({ conv, seq: 4, id: `${conv}#4`, from: 'alice', text: 'four (lost)', ts: 0 });
  edge.chat('alice', 'bob', 'five');
  await eventually(() => got.length === 4, 'the lost message fetched');
  assert.deepEqual(got.map((m) => m.text).sort(), ['five', 'four (lost)', 'three', 'two']);
  assert.equal(fresh.chatPositions[conv], 5);
});

async function sb_roundtrip(sb) {
  await sb.send('echo', {}); // the fake edge answers in order: everything before it was handled
}

test('unit: request waits past the ack for the reply or the error', async (t) => {
  const { edge, sb } = await setup(t);
  await sb.connect();
  edge.drop = (f) => {
    if (f.type !== 'slow') return false;
    const c = [...edge.conns][0];
    c.ws.send(JSON.stringify({ type: 'ack', id: f.id }));
    setTimeout(() => c.ws.send(JSON.stringify(f.data.fail
      ? { type: 'error', id: f.id, code: 1006, message: 'nope' }
      : { type: 'slow.reply', id: f.id, data: { ok: 1 } })), 50);
    return true;
  };
  const r = await sb.request('slow', {});
  assert.equal(r.type, 'slow.reply');
  await assert.rejects(sb.request('slow', { fail: true }), (err) => err.code === ErrorCodes.Forbidden);
  const errors = [];
  sb.on('error', (e) => errors.push(e));
  const acked = await sb.send('slow', { fail: true });
  assert.equal(acked.type, 'ack');
  const ev = await eventually(() => errors.find((e) => e.id === acked.id), 'the error event');
  assert.equal(ev.code, ErrorCodes.Forbidden);
});

test('unit: an acked request whose connection drops rejects with EDROPPED', async (t) => {
  const { edge, sb } = await setup(t);
  await sb.connect();
  edge.drop = (f) => {
    if (f.type === 'slow') [...edge.conns][0].ws.send(JSON.stringify({ type: 'ack', id: f.id }));
    return f.type === 'slow';
  };
  const p = sb.request('slow', {});
  const rejected = assert.rejects(p, (err) => err.code === ErrorCodes.Dropped);
  await eventually(() => edge.received.some((f) => f.type === 'slow'), 'the request');
  await eventually(() => [...sb._pending.values()].some((x) => x.acked), 'the ack (internal state)');
  edge.cut();
  await rejected;
});

test('unit: 4001 token expired: a token function is called again and the client reconnects', async (t) => {
  let n = 0;
  const { edge, sb } = await setup(t, 'x', { token: () => `t${++n}` });
  const auth = [];
  sb.on('auth', (e) => auth.push(e.code));
  assert.equal((await sb.connect()).user, 'tok:t1');
  const again = next(sb, 'welcome');
  edge.closeAll(CloseCodes.TokenExpired, 'token expired');
  assert.equal((await again).user, 'tok:t2', 'reconnected with a fresh token');
  assert.deepEqual(auth, [CloseCodes.TokenExpired]);
});

test('unit: 4001 with a fixed token stops; setToken reconnects', async (t) => {
  const { edge, sb } = await setup(t, 'x', { token: 'old' });
  await sb.connect();
  const closed = next(sb, 'close');
  edge.closeAll(CloseCodes.TokenExpired, 'token expired');
  assert.equal((await closed).willReconnect, false);
  assert.equal(sb.state, States.Offline);
  const again = next(sb, 'welcome');
  sb.setToken('new');
  assert.equal((await again).user, 'tok:new');
});
