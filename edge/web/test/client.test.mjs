// The JS client against a real Switchboard edge: SB_WS_URL=ws://127.0.0.1:8080/ws node --test test/*.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, States } from '../switchboard.js';
import { client, eventually, next, startProxy, uniqueUser, wsURL } from './helpers.mjs';

test('connect: welcome names the user and the connection', async (t) => {
  wsURL();
  const user = uniqueUser('alice');
  const sb = client(user);
  t.after(() => sb.close());
  const states = [];
  sb.on('state', (s) => states.push(s.state));
  const welcome = await sb.connect();
  assert.equal(welcome.user, user, 'welcome.user');
  assert.ok(welcome.conn, 'welcome.conn is set');
  assert.equal(sb.state, States.Online);
  assert.deepEqual(states, [States.Connecting, States.Online]);
});

test('echo: request resolves with the reply carrying the frame id', async (t) => {
  wsURL();
  const sb = client(uniqueUser('req'));
  t.after(() => sb.close());
  await sb.connect();
  const reply = await sb.request('echo', { q: 42 });
  assert.equal(reply.type, 'echo');
  assert.deepEqual(reply.data, { q: 42 });
});

test('echo: round trip with ack', async (t) => {
  wsURL();
  const sb = client(uniqueUser('echo'));
  t.after(() => sb.close());
  await sb.connect();
  const nonce = Math.random().toString(36).slice(2);
  const reply = next(sb, 'echo', (d) => d && d.nonce === nonce);
  const settled = await sb.send('echo', { nonce, text: 'héllo ✓' }, { ack: true });
  assert.ok(settled.type === 'ack' || settled.type === 'echo', `settled by ${settled.type}`);
  assert.ok(settled.id, 'the settling frame carries the id');
  const data = await reply;
  assert.deepEqual(data, { nonce, text: 'héllo ✓' });
});

test('error frame: an unknown type rejects a request with .code 1002 (after the bus ack)', async (t) => {
  wsURL();
  const sb = client(uniqueUser('err'));
  t.after(() => sb.close());
  await sb.connect();
  const errors = [];
  sb.on('error', (e) => errors.push(e)); // before send: the error may arrive with the ack
  const acked = await sb.send('no.such.type', { y: 2 });
  assert.equal(acked.type, 'ack', 'send() settles on the ack: the bus accepted the frame');
  const late = await eventually(() => errors.find((e) => e.id === acked.id), 'the error event');
  assert.equal(late.code, ErrorCodes.UnknownType, 'the plugin error follows as an error event');
  await assert.rejects(sb.request('no.such.type', { x: 1 }), (err) => {
    assert.equal(err.code, ErrorCodes.UnknownType, `code ${err.code}: ${err.message}`);
    assert.equal(err.type, 'no.such.type');
    return true;
  });
  // The connection survives an error frame.
  const nonce = Math.random().toString(36).slice(2);
  const reply = next(sb, 'echo', (d) => d && d.nonce === nonce);
  await sb.send('echo', { nonce });
  await reply;
});

test('reconnect: after the server closes the socket the client comes back and works', async (t) => {
  wsURL();
  const sb = client(uniqueUser('recon'));
  t.after(() => sb.close());
  const first = await sb.connect();
  const closed = next(sb, 'close');
  const welcomed = next(sb, 'welcome', undefined, 10000);
  // Invalid UTF-8 in a text message: the server must close the connection (1007).
  sb.socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
  const ev = await closed;
  assert.equal(ev.byClient, undefined, 'closed by the server');
  assert.equal(ev.willReconnect, true, `reconnects after close code ${ev.code}`);
  assert.notEqual(ev.code, 1000, 'not a normal closure');
  const second = await welcomed;
  assert.notEqual(second.conn, first.conn, 'a new connection');
  assert.equal(sb.state, States.Online);
  const nonce = Math.random().toString(36).slice(2);
  const reply = next(sb, 'echo', (d) => d && d.nonce === nonce);
  await sb.send('echo', { nonce });
  await reply;
});

test('resend: a frame not acked when the connection drops is resent with the same id', async (t) => {
  wsURL();
  const proxy = await startProxy();
  const sb = client(uniqueUser('resend'), { url: proxy.url });
  t.after(async () => { await sb.close(); await proxy.close(); });
  await sb.connect();
  const nonce = Math.random().toString(36).slice(2);
  let swallowed = 0;
  proxy.dropClient = (f) => f.type === 'echo' && swallowed++ === 0; // lose the first copy
  const reply = next(sb, 'echo', (d) => d && d.nonce === nonce, 10000);
  const p = sb.send('echo', { nonce });
  await eventually(() => swallowed === 1, 'the proxy to swallow the frame');
  const welcomed = next(sb, 'welcome', undefined, 10000);
  proxy.cut(); // the connection drops before the frame was acked
  await welcomed;
  const settled = await p;
  await reply;
  const copies = proxy.sent.filter((f) => f.type === 'echo' && f.data && f.data.nonce === nonce);
  assert.equal(copies.length, 2, 'sent twice');
  assert.equal(copies[0].id, copies[1].id, 'same id on resend');
  assert.equal(settled.id, copies[0].id);
});

test('move: the client closes 1000 and reconnects after delay_ms', async (t) => {
  wsURL();
  const proxy = await startProxy();
  const sb = client(uniqueUser('move'), { url: proxy.url });
  t.after(async () => { await sb.close(); await proxy.close(); });
  const first = await sb.connect();
  const states = [];
  sb.on('state', (s) => states.push(s.state));
  const closed = next(sb, 'close');
  const welcomed = next(sb, 'welcome', undefined, 10000);
  const t0 = Date.now();
  proxy.inject({ type: 'move', data: { delay_ms: 400, reason: 'drain' } });
  const ev = await closed;
  assert.equal(ev.moved, true);
  assert.equal(ev.code, 1000);
  assert.equal(ev.willReconnect, true);
  assert.ok(ev.delay >= 400, `delay ${ev.delay} >= delay_ms`);
  const second = await welcomed;
  const took = Date.now() - t0;
  assert.ok(took >= 400, `reconnected after ${took} ms, not before delay_ms`);
  assert.notEqual(second.conn, first.conn);
  assert.deepEqual(states, [States.Moving, States.Online]);
  const nonce = Math.random().toString(36).slice(2);
  const reply = next(sb, 'echo', (d) => d && d.nonce === nonce);
  await sb.send('echo', { nonce });
  await reply;
});
