// chat: PAIRS pairs of users; A sends a direct message (chat.send) to B every 1000/RATE_PER_PAIR
// ms for DURATION seconds, B answers, A records the round trip. Loss = 1 - sb_replies / sb_sent.
//   k6 run --no-usage-report -e SB_URL=… -e PAIRS=100 -e RATE_PER_PAIR=2 chat.js
// SB_URL_B (optional) puts the B sides on another edge (cluster: A and B on different edges).
import ws from 'k6/ws';
import { Counter, Trend } from 'k6/metrics';
import { checkSession, errors, env, frame, onceEach, paced, params, parseStamp, stamp, texts, userURL } from './lib.js';

const PAIRS = env('PAIRS', 100);
const RATE = env('RATE_PER_PAIR', 2);
const SIZE = env('SIZE', 100);
const DURATION = env('DURATION', 10);
const SETUP = env('SETUP', 3);
const GRACE = env('GRACE', 3);
const URL_A = __ENV.SB_URL || 'ws://127.0.0.1:8080/ws';
const URL_B = __ENV.SB_URL_B || URL_A;

const rtt = new Trend('sb_chat_rtt_ms', true);
const sent = new Counter('sb_sent');
const replies = new Counter('sb_replies');

export const options = onceEach('chat', 2 * PAIRS, SETUP + DURATION + GRACE, {
  sb_chat_rtt_ms: ['p(50)<50', 'p(99)<250'],
  sb_replies: ['count>0'],
});

// setup runs once: every VU must agree on the user names of a pair (the init context runs per
// VU, so a random prefix there would differ between A and B).
export function setup() {
  return { prefix: __ENV.SB_USER_PREFIX || `k6-${Date.now().toString(36)}` };
}

export default function (data) {
  const PREFIX = data.prefix;
  const pair = Math.floor((__VU - 1) / 2);
  const isA = (__VU - 1) % 2 === 0;
  const me = `${PREFIX}-${isA ? 'a' : 'b'}${pair}`;
  const peer = `${PREFIX}-${isA ? 'b' : 'a'}${pair}`;
  let welcomed = false;
  const res = ws.connect(userURL(me, isA ? URL_A : URL_B), params, (socket) => {
    socket.on('message', (m) => {
      const f = JSON.parse(m);
      if (f.type === 'welcome') {
        welcomed = true;
        return;
      }
      if (f.type === 'error') {
        errors.add(1);
        return;
      }
      if ((f.type !== 'chat.msg' && f.type !== 'chat.message') || (f.data && f.data.from === me)) return;
      for (const t of texts(f)) {
        const s = parseStamp(t);
        if (!s) continue;
        if (!isA && s.kind === 'C') {
          let reply = `R|${s.seq}|${s.at}|`;
          while (reply.length < SIZE) reply += 'x';
          socket.send(frame('chat.send', { to: peer, text: reply, cmid: `${me}-r${s.seq}` }));
        } else if (isA && s.kind === 'R') {
          replies.add(1);
          rtt.add(Date.now() - s.at);
        }
      }
    });
    socket.on('error', () => errors.add(1));
    if (isA) {
      paced(socket, RATE, Math.floor(RATE * DURATION), SETUP, (seq) => {
        socket.send(frame('chat.send', { to: peer, text: stamp('C', seq, SIZE), cmid: `${me}-${seq}` }));
        sent.add(1);
      });
    }
    socket.setTimeout(() => socket.close(), (SETUP + DURATION + GRACE) * 1000);
  });
  checkSession(res, 'welcomed', welcomed);
}
