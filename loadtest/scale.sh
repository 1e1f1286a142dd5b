#!/usr/bin/env bash
# scale.sh: how many idle connections this box holds across several edge processes, and what
# each connection costs an edge. Starts --edges embedded Switchboard processes (each ≤ 19,000
# connections: a process may hold 20,000 fds here), opens --conns idle connections spread over
# them from wsload worker processes and several 127.0.0.x source addresses, holds them, reports
# summed edge RSS per connection and CPU, stops everything.
#
#   loadtest/scale.sh --edges 11 --conns 200000          # the 200k goal
#   loadtest/scale.sh --edges 1 --conns 19000            # RSS per connection on one edge
#   loadtest/scale.sh --edges 2 --conns 4000 --hold 5s   # smoke
#
# SWITCHBOARD_CMD overrides the edge command (it gets "-addr 127.0.0.1:<port>" appended).
# Writes loadtest/results/<date>/raw/scale-<conns>.json (wsload JSON) and prints the summary.
set -euo pipefail
main() {
LT="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LT/.." && pwd)"
EDGES=11
CONNS=200000
HOLD=20s
RATE=6000
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --edges) EDGES="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --hold) HOLD="$2"; shift 2 ;;
    --connect-rate) RATE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scale.sh: unknown flag $1" >&2; exit 2 ;;
  esac
done
per_edge=$(( (CONNS + EDGES - 1) / EDGES ))
if [ "$per_edge" -gt 19000 ]; then
  echo "scale.sh: $per_edge connections per edge is over the 19,000 fd budget; use more --edges" >&2; exit 2
fi
[ -n "$OUT" ] || OUT="$LT/results/$(date -u +%Y-%m-%d)"
mkdir -p "$OUT/raw"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$LT" && go build -o "$WORK/" ./cmd/wsload)
CMD="${SWITCHBOARD_CMD:-}"
if [ -z "$CMD" ]; then
  (cd "$ROOT/edge" && go build -o "$WORK/switchboard" ./cmd/switchboard)
  CMD="$WORK/switchboard"
fi
urls=""
for ((i = 1; i <= EDGES; i++)); do
  port=$((18200 + i))
  # shellcheck disable=SC2086
  $CMD -addr "127.0.0.1:$port" >"$WORK/edge$i.log" 2>&1 &
  PIDS+=("$!")
  urls="${urls:+$urls,}ws://127.0.0.1:$port/ws"
done
for ((i = 1; i <= EDGES; i++)); do
  port=$((18200 + i))
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
pids="$(IFS=,; echo "${PIDS[*]}")"
echo "scale: $EDGES edges ($pids), $CONNS connections, $per_edge per edge" >&2
"$WORK/wsload" -scenario idle -protocol switchboard -label "switchboard ×$EDGES" -target "$urls" -pid "$pids" \
  -conns "$CONNS" -per-worker 18000 -fork -connect-rate "$RATE" -retries 3 -settle 3s -hold "$HOLD" \
  -dial-timeout 30s -max-duration 10m -out "$OUT/raw/scale-$CONNS.json"
}
main "$@"; exit $? # one line: read before main runs, so editing the file mid-run is safe
