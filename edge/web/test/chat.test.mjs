// Chat through a real Switchboard edge with the chat plugin (SB_WS_URL).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client, eventually, next, presenceOf, uniqueUser, wsURL } from './helpers.mjs';

test('chat resume: B misses 3 messages while offline and gets exactly those once', async (t) => {
  wsURL();
  const aliceID = uniqueUser('alice');
  const bobID = uniqueUser('bob');
  const a = client(aliceID);
  const b = client(bobID);
  t.after(() => Promise.all([a.close(), b.close()]));
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.synced(), b.synced()]);

  // One live message so both sides know the conversation.
  const first = next(b, 'chat.msg', (m) => m.text === 'hello 0');
  const r0 = await a.request('chat.send', { to: bobID, text: 'hello 0' });
  const m0 = await first;
  assert.equal(m0.from, aliceID);
  assert.equal(m0.conv, r0.data.conv, 'sender and recipient see the same conversation');
  assert.equal(m0.seq, r0.data.seq);
  const conv = m0.conv;

  await b.close();
  const live = [];
  b.on('chat.msg', (m) => live.push(m));

  for (let i = 1; i <= 3; i++) {
    const r = await a.request('chat.send', { to: bobID, text: `missed ${i}` });
    assert.equal(r.data.conv, conv);
    assert.equal(r.data.seq, m0.seq + i, 'seq grows by one per message');
  }

  await b.connect();
  await b.synced();
  const got = live.filter((m) => m.conv === conv);
  assert.deepEqual(got.map((m) => m.text), ['missed 1', 'missed 2', 'missed 3'], 'exactly the 3 missed ones');
  assert.deepEqual(got.map((m) => m.seq), [1, 2, 3].map((i) => m0.seq + i));
  assert.ok(got.every((m) => m.from === aliceID && m.replayed === true));

  // Another reconnect must not deliver them again.
  const welcomed = next(b, 'welcome', undefined, 10000);
  b.socket.terminate();
  await welcomed;
  await b.synced();
  assert.equal(live.filter((m) => m.conv === conv).length, 3, 'no duplicates after another reconnect');
  assert.equal(b.chatPositions[conv], m0.seq + 3);
});

test('chat: the sender\'s other device gets the message; a resend with the same cmid is not a new message', async (t) => {
  wsURL();
  const aliceID = uniqueUser('alice');
  const bobID = uniqueUser('bob');
  const phone = client(aliceID);
  const laptop = client(aliceID);
  t.after(() => Promise.all([phone.close(), laptop.close()]));
  await Promise.all([phone.connect(), laptop.connect()]);
  const onLaptop = next(laptop, 'chat.msg', (m) => m.text === 'from my phone');
  const r1 = await phone.request('chat.send', { to: bobID, text: 'from my phone', cmid: 'c-1' });
  const m = await onLaptop;
  assert.equal(m.from, aliceID, "the sender's other device gets the message");
  assert.equal(m.cmid, 'c-1');
  const r2 = await phone.request('chat.send', { to: bobID, text: 'from my phone', cmid: 'c-1' });
  assert.equal(r2.data.seq, r1.data.seq, 'the retry maps to the same message');
  assert.equal(r2.data.dup, true);
});

test('chat: a group message reaches every member', async (t) => {
  wsURL();
  const group = uniqueUser('g').replace(/[^a-zA-Z0-9_-]/g, '');
  const users = [uniqueUser('ann'), uniqueUser('ben'), uniqueUser('cat')];
  const cs = users.map((u) => client(u));
  t.after(() => Promise.all(cs.map((c) => c.close())));
  await Promise.all(cs.map((c) => c.connect()));
  for (const c of cs) {
    const r = await c.request('chat.join', { group });
    assert.equal(r.data.conv, `g:${group}`);
  }
  const got = [[], [], []];
  const welcomes = cs.map((c) => [c.welcome]);
  cs.forEach((c, i) => {
    c.on('chat.msg', (m) => got[i].push(m));
    c.on('welcome', (w) => welcomes[i].push(w)); // a reconnect in between would show here
  });
  const sent = await cs[0].request('chat.send', { group, text: 'hi all' });
  // On a timeout, say who missed it, where everyone was connected and what the sender got.
  const state = async () => JSON.stringify({ sent: sent.data, got: got.map((g) => g.length),
    welcomes: welcomes.map((ws, i) => ({ user: users[i], at: ws.map((w) => w && `${w.edge}/${w.conn}`) })),
    presence: await presenceOf(users) });
  await eventually(() => got[1].length === 1 && got[2].length === 1, async () => `ben and cat to get it: ${await state()}`);
  assert.equal(got[1][0].text, 'hi all');
  assert.equal(got[0].length, 0, 'the sending connection has the reply, not a copy');
});
