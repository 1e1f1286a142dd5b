// storm: CONNS clients connect at once; each records the time from dial to the server's
// welcome, holds HOLD seconds and leaves.
//   k6 run --no-usage-report -e SB_URL=… -e CONNS=1000 storm.js
import ws from 'k6/ws';
import { check } from 'k6';
import { errors, env, params, userURL, welcomeTime, PREFIX } from './lib.js';

const CONNS = env('CONNS', 500);
const HOLD = env('HOLD', 3);

export const options = {
  scenarios: {
    storm: { executor: 'per-vu-iterations', vus: CONNS, iterations: 1, maxDuration: `${HOLD + 60}s` },
  },
  thresholds: {
    checks: ['rate>0.99'],
    sb_errors: ['count<1'],
    sb_welcome_ms: ['p(99)<3000'],
  },
};

export default function () {
  const url = userURL(`${PREFIX}-s${__VU}`); // a token fetch (SB_TOKEN_URL) is not part of the handshake time
  const t0 = Date.now();
  let welcomed = false;
  const res = ws.connect(url, params, (socket) => {
    socket.on('message', (m) => {
      const f = JSON.parse(m);
      if (f.type === 'welcome' && !welcomed) {
        welcomed = true;
        welcomeTime.add(Date.now() - t0);
      } else if (f.type === 'error') {
        errors.add(1);
      }
    });
    socket.on('error', () => errors.add(1));
    socket.setTimeout(() => socket.close(), HOLD * 1000);
  });
  check(res, { 'status 101': (r) => r && r.status === 101 });
  check(welcomed, { welcomed: (w) => w });
}
