// Chat resume against a real Switchboard edge with the chat plugin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client, next, uniqueUser, wsURL } from './helpers.mjs';

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
  const first = next(b, 'chat.message', (m) => m.text === 'hello 0');
  const sent0 = next(a, 'chat.sent');
  await a.send('chat.send', { to: bobID, text: 'hello 0' });
  const m0 = await first;
  const s0 = await sent0;
  assert.equal(m0.from, aliceID);
  assert.equal(m0.conv, s0.conv, 'sender and recipient see the same conversation');
  const conv = m0.conv;

  await b.close();
  const live = [];
  b.on('chat.message', (m) => live.push(m));

  for (let i = 1; i <= 3; i++) {
    const sent = next(a, 'chat.sent', (d) => d.conv === conv);
    await a.send('chat.send', { to: bobID, text: `missed ${i}` });
    const s = await sent;
    assert.equal(s.seq, Number(m0.seq) + i, 'seq grows by one per message');
  }

  await b.connect();
  await b.synced();
  const got = live.filter((m) => m.conv === conv);
  assert.deepEqual(got.map((m) => m.text), ['missed 1', 'missed 2', 'missed 3'], 'exactly the 3 missed ones');
  assert.deepEqual(got.map((m) => Number(m.seq)), [1, 2, 3].map((i) => Number(m0.seq) + i));
  assert.ok(got.every((m) => m.from === aliceID));

  // A second resume (another reconnect) must not deliver them again.
  const welcomed = next(b, 'welcome', undefined, 10000);
  b.socket.terminate();
  await welcomed;
  await b.synced();
  assert.equal(live.filter((m) => m.conv === conv).length, 3, 'no duplicates after another reconnect');
  assert.equal(b.chatPositions[conv], Number(m0.seq) + 3);
});

test('chat: a message to an offline device of the sender comes back on sync as the sender\'s own', async (t) => {
  wsURL();
  const aliceID = uniqueUser('alice');
  const bobID = uniqueUser('bob');
  const phone = client(aliceID);
  const laptop = client(aliceID);
  t.after(() => Promise.all([phone.close(), laptop.close()]));
  await Promise.all([phone.connect(), laptop.connect()]);
  const onLaptop = next(laptop, 'chat.message', (m) => m.text === 'from my phone');
  await phone.send('chat.send', { to: bobID, text: 'from my phone' });
  const m = await onLaptop;
  assert.equal(m.from, aliceID, "the sender's other device gets the message");
});
