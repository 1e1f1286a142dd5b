// fanout: MEMBERS connections join one room; PUBLISHERS VUs publish RATE messages/s of SIZE bytes for
// DURATION seconds once everyone had SETUP seconds to join. Members record delivery latency
// from the timestamp in each message. Loss = 1 - sb_deliveries / (sb_sent × MEMBERS).
//   k6 run --no-usage-report -e SB_URL=… -e MEMBERS=500 -e RATE=20 -e DURATION=10 fanout.js
import ws from 'k6/ws';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import {
  checkSession, errors, env, frame, onceEach, paced, params, parseStamp, stamp, texts, userURL, JOIN, PREFIX, ROOM, SEND,
} from './lib.js';

const MEMBERS = env('MEMBERS', 200);
// PUBLISHERS VUs share the RATE (a per-user rate limit, e.g. the danmaku plugin's 2/s, must
// not cap it); they are not counted as members.
const PUBLISHERS = env('PUBLISHERS', 1);
const RATE = env('RATE', 20);
const SIZE = env('SIZE', 100);
const DURATION = env('DURATION', 10);
const SETUP = env('SETUP', 5);
const GRACE = env('GRACE', 3);

const latency = new Trend('sb_fanout_latency_ms', true);
const deliveries = new Counter('sb_deliveries');
const sent = new Counter('sb_sent');

export const options = onceEach('fanout', MEMBERS + PUBLISHERS, SETUP + DURATION + GRACE, {
  sb_fanout_latency_ms: ['p(99)<250'],
  sb_deliveries: ['count>0'],
});

export default function () {
  const publisher = exec.vu.idInTest <= PUBLISHERS;
  let joined = false;
  const res = ws.connect(userURL(`${PREFIX}-m${__VU}`), params, (socket) => {
    socket.on('message', (m) => {
      const f = JSON.parse(m);
      if (f.type === 'welcome') {
        socket.send(frame(JOIN, { room: ROOM }, 1));
      } else if (f.type === 'ack' && f.id === '1') {
        joined = true;
      } else if (f.type === 'error') {
        errors.add(1);
      } else if (!publisher) {
        const now = Date.now();
        for (const t of texts(f)) {
          const s = parseStamp(t);
          if (s && s.kind === 'F') {
            deliveries.add(1);
            latency.add(now - s.at);
          }
        }
      }
    });
    socket.on('error', () => errors.add(1));
    if (publisher) {
      const rate = RATE / PUBLISHERS;
      paced(socket, rate, Math.floor(rate * DURATION), SETUP, (seq) => {
        socket.send(frame(SEND, { room: ROOM, text: stamp('F', seq, SIZE) }));
        sent.add(1);
      });
    }
    socket.setTimeout(() => socket.close(), (SETUP + DURATION + GRACE) * 1000);
  });
  checkSession(res, 'joined', joined);
}
