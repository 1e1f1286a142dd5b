// storm: CONNS clients connect at once; each records the time from dial to the server's
// welcome, holds HOLD seconds and leaves.
//   k6 run --no-usage-report -e SB_URL=… -e CONNS=1000 storm.js
import { env, hold, onceEach, PREFIX } from './lib.js';

const CONNS = env('CONNS', 500);
const HOLD = env('HOLD', 3);

export const options = onceEach('storm', CONNS, HOLD, { sb_welcome_ms: ['p(99)<3000'] });

export default function () {
  hold(`${PREFIX}-s${__VU}`, HOLD);
}
