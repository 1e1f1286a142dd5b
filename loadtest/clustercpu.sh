#!/usr/bin/env bash
# clustercpu.sh — chat through a running `make cluster` (its two edges, as compare.sh dials
# them) and the CPU each process of the topology spent per chat frame: edges, logic replicas,
# router, HAProxy, Pulsar, Redis. A round trip is two chat frames (A → B, B → A).
#
#   loadtest/clustercpu.sh [--pairs 100] [--rate 100] [--duration 20s]
#
# CPU is read from /proc/<pid>/stat (utime+stime) before and after the wsload run, so it
# includes connecting the pairs; at 100 pairs that is a few percent of the total.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAIRS=100 RATE=100 DURATION=20s
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pairs) PAIRS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    *) echo "usage: $0 [--pairs N] [--rate R] [--duration D]" >&2; exit 2 ;;
  esac
done
STATE="${SB_STATE_DIR:-$ROOT/.run}"
DIR="$STATE/cluster"
[[ -f "$STATE/env" ]] && . "$STATE/env"
pid_of() { tr -dc '0-9' <"$DIR/$1.pid" 2>/dev/null; }
for n in edge1 edge2 logic1 logic2 router; do
  p="$(pid_of "$n")"
  [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null || { echo "clustercpu: no running $n: start make cluster first" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$ROOT/loadtest" && go build -o "$WORK/" ./cmd/wsload)

procs() { # name pid, one per line
  local n
  for n in edge1 edge2 logic1 logic2 router haproxy; do echo "$n $(pid_of "$n")"; done
  echo "pulsar $(pgrep -f PulsarStandaloneStarter | head -1)"
  echo "redis $(pgrep -f "redis-server ${SB_REDIS_ADDR:-127.0.0.1:16379}" | head -1)"
}
ticks() { # name ticks
  local n p
  while read -r n p; do
    [[ -n "$p" && -r /proc/$p/stat ]] || continue
    echo "$n $(awk '{print $14 + $15}' "/proc/$p/stat")"
  done < <(procs)
}

base="${SB_EDGE_BASE_PORT:-9100}"
ticks >"$WORK/before"
"$WORK/wsload" -scenario chat -protocol switchboard -label cluster \
  -target "ws://127.0.0.1:$((base + 1))/ws,ws://127.0.0.1:$((base + 2))/ws" \
  -pid "$(pid_of edge1),$(pid_of edge2)" -pairs "$PAIRS" -rate "$RATE" -size 100 -duration "$DURATION" \
  -jwt-secret "$(cat "$DIR/jwt.secret")" -out "$WORK/chat.json" 2>&1 | grep -v '^\[' | grep -E 'sent|latency'
ticks >"$WORK/after"
sent="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$WORK/chat.json")"
python3 -c 'import json,sys; e=json.load(open(sys.argv[1])).get("errors"); e and print("   errors:", e)' "$WORK/chat.json"
[[ "$sent" -gt 0 ]] || { echo "clustercpu: nothing sent" >&2; exit 1; }
# ticks are 1/100 s: µs per frame = ticks × 10,000 / (2 × round trips)
join "$WORK/before" "$WORK/after" | awk -v s="$sent" '
  { d = $3 - $2; t += d; printf "%-8s %6.2f CPU-s  %5.0f µs per chat frame\n", $1, d / 100, d * 10000 / (2 * s) }
  END { printf "%-8s %6.2f CPU-s  %5.0f µs per chat frame (%d round trips)\n", "total", t / 100, t * 10000 / (2 * s), s }'
