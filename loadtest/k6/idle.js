// idle: CONNS connections that each hold HOLD seconds with a ping every PING seconds.
//   k6 run --no-usage-report -e SB_URL=ws://127.0.0.1:8080/ws -e CONNS=500 idle.js
import { env, hold, onceEach, PREFIX } from './lib.js';

const CONNS = env('CONNS', 200);
const HOLD = env('HOLD', 20);
const PING = env('PING', 5);

export const options = onceEach('idle', CONNS, HOLD, { sb_welcome_ms: ['p(99)<1000'] });

export default function () {
  hold(`${PREFIX}-i${__VU}`, HOLD, PING);
}
