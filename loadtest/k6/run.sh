#!/usr/bin/env bash
# Runs the four k6 scenarios, short and bounded, against one target.
#   loadtest/k6/run.sh ws://127.0.0.1:8080/ws            # make run
#   SB_TOKEN_URL=http://127.0.0.1:8090/auth/dev-token loadtest/k6/run.sh ws://127.0.0.1:8090/ws  # make cluster
#   SB_URL_B=ws://127.0.0.1:9102/ws SB_TOKEN_URL=… loadtest/k6/run.sh ws://127.0.0.1:9101/ws   # chat across two edges
# Sizes: CONNS, MEMBERS, PAIRS, RATE, DURATION (seconds) in the environment override the
# defaults below. Exits non-zero when any threshold fails.
set -euo pipefail
DIR="$(cd "$(dirname "$0")" && pwd)"
URL="${1:-${SB_URL:-ws://127.0.0.1:8080/ws}}"
"$DIR/install.sh" >/dev/null
K6="${SB_BIN:-$HOME/.cache/switchboard/bin}/k6"
export K6_AUTO_EXTENSION_RESOLUTION=false
rc=0
run() { echo "== k6 $*"; "$K6" run --no-usage-report -q -e SB_URL="$URL" ${SB_TOKEN_URL:+-e SB_TOKEN_URL="$SB_TOKEN_URL"} "$@" || rc=1; }
cd "$DIR"
run -e CONNS="${CONNS:-500}" -e HOLD="${DURATION:-10}" idle.js
run -e MEMBERS="${MEMBERS:-500}" -e PUBLISHERS="${PUBLISHERS:-12}" -e RATE="${RATE:-20}" -e DURATION="${DURATION:-10}" fanout.js
run -e PAIRS="${PAIRS:-100}" -e RATE_PER_PAIR=2 -e DURATION="${DURATION:-10}" ${SB_URL_B:+-e SB_URL_B="$SB_URL_B"} chat.js
run -e CONNS="${CONNS:-500}" storm.js
exit $rc
