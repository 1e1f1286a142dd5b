#!/usr/bin/env bash
# bench-compare: the same wsload scenarios, in one run, against every available target, then
# a report in loadtest/results/<date>/ (README.md with tables, PNG charts, raw JSON).
#
#   loadtest/compare.sh                       # all targets, all scenarios, default sizes
#   loadtest/compare.sh --targets hub,centrifugo --scenarios fanout --fanout-members 2000
#   loadtest/compare.sh --quick               # small, fast smoke run
#   loadtest/compare.sh --scenarios bigroom --big-room 20000 --targets switchboard
#   loadtest/compare.sh --scenarios fanout,danmaku --targets switchboard,switchboard-nocoalesce,centrifugo
#
# Scenarios: idle, fanout, chat, storm, reconnect (the default list), bigroom (opt-in: one
# room of --big-room members, 1 msg/s for 5 s) and danmaku (opt-in: the fanout room at live-
# comment rates, --danmaku-rate msgs/s from --danmaku-publishers users; rows "rate=…" in the
# fanout table). Sizes: --idle-conns, --fanout-members, --danmaku-rate, --danmaku-publishers,
# --publishers, --fanout-rate, --size, --duration, --chat-pairs, --chat-rate, --storm-conns,
# --reconnect-conns, --hold. Arguments after -- go to every wsload run.
#
# Targets (each started fresh per scenario on its own port, measured by pid, then stopped):
#   switchboard          embedded Switchboard: $SWITCHBOARD_CMD, or a binary built from
#                        ./edge/cmd/switchboard (with -pprof: its counters are saved as
#                        raw/<target>-<scenario>.edgestats); listens on $SWITCHBOARD_URL
#                        (ws://127.0.0.1:18080/ws)
#   switchboard-nocoalesce  the same binary with -coalesce 0: one write per delivery
#   switchboard-cluster  an already running `make cluster` (found through its pid files in
#                        .run/cluster; HS256 tokens from its jwt.secret), or the edges given by
#                        $SWITCHBOARD_CLUSTER_URLS and $SWITCHBOARD_CLUSTER_PIDS (comma-separated)
#   centrifugo           Centrifugo v5.4.9, memory engine (built by tools/centrifugo/build.sh)
#   centrifugo-redis     Centrifugo v5.4.9, Redis engine on $SB_REDIS_ADDR (.run/env)
#   hub                  the naive gorilla/websocket hub (cmd/hub)
# A target that is not available is skipped with a message; no figure is ever made up.
set -euo pipefail
# The whole script is one function, parsed before it runs: editing the file mid-run is safe.
main() {

LT="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$LT/.." && pwd)"
BIN="${SB_BIN:-$HOME/.cache/switchboard/bin}"
TARGETS="switchboard,switchboard-cluster,centrifugo,centrifugo-redis,hub"
SCENARIOS="idle,fanout,chat,storm,reconnect"
IDLE_CONNS=5000
FANOUT_MEMBERS=2000
FANOUT_RATE=20
PUBLISHERS=12 # the danmaku plugin limits each user to 2 msgs/s: 20/s needs ≥ 10 publishers
SIZE=100
DURATION=10s
CHAT_PAIRS=500
CHAT_RATE=1000
STORM_CONNS=3000
RECONNECT_CONNS=3000
BIG_ROOM=20000 # the "bigroom" scenario: one room of this many members, 1 msg/s for 5 s
DANMAKU_RATE=200 # the "danmaku" scenario: the fanout room at live-comment rates
DANMAKU_PUBLISHERS=120 # the danmaku plugin allows 2 msgs/s per user (burst 5)
HOLD=15s
OUT=""
EXTRA=()
CLUSTER_ARGS=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) TARGETS="$2"; shift 2 ;;
    --scenarios) SCENARIOS="$2"; shift 2 ;;
    --idle-conns) IDLE_CONNS="$2"; shift 2 ;;
    --fanout-members) FANOUT_MEMBERS="$2"; shift 2 ;;
    --fanout-rate) FANOUT_RATE="$2"; shift 2 ;;
    --publishers) PUBLISHERS="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --chat-pairs) CHAT_PAIRS="$2"; shift 2 ;;
    --chat-rate) CHAT_RATE="$2"; shift 2 ;;
    --storm-conns) STORM_CONNS="$2"; shift 2 ;;
    --reconnect-conns) RECONNECT_CONNS="$2"; shift 2 ;;
    --big-room) BIG_ROOM="$2"; shift 2 ;;
    --danmaku-rate) DANMAKU_RATE="$2"; shift 2 ;;
    --danmaku-publishers) DANMAKU_PUBLISHERS="$2"; shift 2 ;;
    --hold) HOLD="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --quick) IDLE_CONNS=500; FANOUT_MEMBERS=300; CHAT_PAIRS=100; CHAT_RATE=200; STORM_CONNS=500; RECONNECT_CONNS=500
             DURATION=3s; HOLD=3s; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) usage 0 ;;
    *) echo "compare.sh: unknown flag $1" >&2; usage 2 ;;
  esac
done
[ -n "$OUT" ] || OUT="$LT/results/$(date -u +%Y-%m-%d)"
RAW="$OUT/raw"
mkdir -p "$RAW" "$BIN"
OUT="$(cd "$OUT" && pwd)"; RAW="$OUT/raw" # absolute: wsload runs inside $OUT
WORK="$(mktemp -d)"
LOG="$OUT/run.log"
: > "$LOG"
SKIPPED=()
say() { echo "compare: $*" | tee -a "$LOG" >&2; case "$*" in skip*) SKIPPED+=("${*#skip }") ;; esac; }

# ---- build the tools -------------------------------------------------------------------
say "building wsload, hub, benchreport"
(cd "$LT" && go build -o "$WORK/" ./cmd/wsload ./cmd/hub ./cmd/benchreport ./cmd/pulsarping)
WSLOAD="$WORK/wsload"

[ -f "$ROOT/.run/env" ] && . "$ROOT/.run/env" || true

PID=""
PIDFILE="$WORK/target.pid"
# launch CMD…: starts a target in the background, records its pid in $PIDFILE and writes
# $WORK/restart.sh, which stops it, starts the same command again and prints the new pid
# (the reconnect scenario's -restart-cmd).
launch() {
  "$@" >>"$LOG" 2>&1 &
  PID=$!
  echo "$PID" > "$PIDFILE"
  {
    echo "#!/usr/bin/env bash"
    echo "set -eu"
    echo "old=\$(cat $(printf %q "$PIDFILE")); kill \$old 2>/dev/null || true"
    echo "for _ in \$(seq 100); do kill -0 \$old 2>/dev/null || break; sleep 0.05; done"
    echo "kill -9 \$old 2>/dev/null || true"
    printf '%q ' "$@"; echo ">>$(printf %q "$LOG") 2>&1 </dev/null &"
    echo "echo \$! > $(printf %q "$PIDFILE")"
    echo "echo \$!"
  } > "$WORK/restart.sh"
  chmod +x "$WORK/restart.sh"
}
stop_target() {
  # the reconnect scenario may have replaced the process: the pid file knows the latest one
  if [ -n "$PID" ] && [ -s "$PIDFILE" ]; then PID="$(cat "$PIDFILE")"; fi
  rm -f "$PIDFILE"
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  PID=""
}
trap 'stop_target; rm -rf "$WORK"' EXIT

port_of() { local hp="${1#ws://}"; hp="${hp%%/*}"; echo "${hp##*:}"; }
host_of() { local hp="${1#ws://}"; hp="${hp%%/*}"; echo "${hp%:*}"; }
port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_port() { # host port pid
  for _ in $(seq 200); do
    port_busy "$1" "$2" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# start_target NAME: sets URLS, PIDS, PROTO, or returns 1 with a message.
SB_CMD_BUILT=""
start_target() {
  local name="$1" url
  case "$name" in
    hub)
      url="ws://127.0.0.1:18090/ws"; PROTO=naive
      port_busy 127.0.0.1 18090 && { say "skip hub: port 18090 in use"; return 1; }
      launch "$WORK/hub" -addr 127.0.0.1:18090 ;;
    centrifugo|centrifugo-redis)
      url="ws://127.0.0.1:18000/connection/websocket"; PROTO=centrifugo
      if [ ! -x "$BIN/centrifugo" ]; then
        say "building Centrifugo v5.4.9 (tools/centrifugo/build.sh)"
        "$LT/tools/centrifugo/build.sh" >>"$LOG" 2>&1 || { say "skip $name: Centrifugo does not build (see $LOG)"; return 1; }
      fi
      port_busy 127.0.0.1 18000 && { say "skip $name: port 18000 in use"; return 1; }
      local conf="$LT/tools/centrifugo/config-memory.json"
      if [ "$name" = centrifugo-redis ]; then
        if [ -z "${SB_REDIS_ADDR:-}" ]; then say "skip $name: SB_REDIS_ADDR not set (source .run/env)"; return 1; fi
        if ! port_busy "${SB_REDIS_ADDR%:*}" "${SB_REDIS_ADDR##*:}"; then say "skip $name: Redis $SB_REDIS_ADDR unreachable"; return 1; fi
        conf="$WORK/centrifugo-redis.json"
        sed -e "s|redis://127.0.0.1:16379|redis://$SB_REDIS_ADDR|" \
            -e "s|\"engine\": \"redis\",|\"engine\": \"redis\",\n  \"redis_prefix\": \"lt$RANDOM$RANDOM\",|" \
            "$LT/tools/centrifugo/config-redis.json" > "$conf"
      fi
      launch "$BIN/centrifugo" -c "$conf" --port 18000 ;;
    switchboard|switchboard-nocoalesce)
      url="${SWITCHBOARD_URL:-ws://127.0.0.1:18080/ws}"; PROTO=switchboard
      local cmd="${SWITCHBOARD_CMD:-}"
      if [ -z "$cmd" ]; then
        if [ -z "$SB_CMD_BUILT" ]; then
          if [ ! -d "$ROOT/edge/cmd/switchboard" ]; then
            say "skip switchboard: no ./edge/cmd/switchboard yet and SWITCHBOARD_CMD not set"; return 1
          fi
          (cd "$ROOT/edge" && go build -o "$WORK/switchboard" ./cmd/switchboard) >>"$LOG" 2>&1 \
            || { say "skip switchboard: ./edge/cmd/switchboard does not build (see $LOG)"; return 1; }
          SB_CMD_BUILT=1
        fi
        cmd="$WORK/switchboard -addr $(host_of "$url"):$(port_of "$url") -pprof"
      fi
      [ "$name" = switchboard-nocoalesce ] && cmd="$cmd -coalesce 0"
      port_busy "$(host_of "$url")" "$(port_of "$url")" && { say "skip switchboard: $url already in use"; return 1; }
      # shellcheck disable=SC2086
      launch $cmd ;;
    switchboard-cluster)
      URLS="${SWITCHBOARD_CLUSTER_URLS:-}"; PIDS="${SWITCHBOARD_CLUSTER_PIDS:-}"
      CLUSTER_ARGS=()
      local cdir="${SB_STATE_DIR:-$ROOT/.run}/cluster"
      if [ -z "$URLS" ] && ls "$cdir"/edge*.pid >/dev/null 2>&1; then
        # a running `make cluster`: its edges (deploy/local/cluster.sh), measured by pid
        local f i p
        for f in "$cdir"/edge*.pid; do
          i="${f##*/edge}"; i="${i%.pid}"; p="$(tr -dc '0-9' < "$f")"
          [ -n "$p" ] && kill -0 "$p" 2>/dev/null || continue
          URLS="${URLS:+$URLS,}ws://127.0.0.1:$(( ${SB_EDGE_BASE_PORT:-9100} + i ))/ws"
          PIDS="${PIDS:+$PIDS,}$p"
        done
        [ -s "$cdir/jwt.secret" ] && CLUSTER_ARGS=(-jwt-secret "$(cat "$cdir/jwt.secret")")
      fi
      if [ -z "$URLS" ] || [ -z "$PIDS" ]; then
        say "skip switchboard-cluster: no running \`make cluster\` found (or set SWITCHBOARD_CLUSTER_URLS and SWITCHBOARD_CLUSTER_PIDS)"
        return 1
      fi
      PROTO=switchboard; PID=""
      rm -f "$WORK/restart.sh"
      [ -n "${SWITCHBOARD_CLUSTER_RESTART_CMD:-}" ] && printf '#!/bin/sh\n%s\n' "$SWITCHBOARD_CLUSTER_RESTART_CMD" > "$WORK/restart.sh" && chmod +x "$WORK/restart.sh"
      return 0 ;;
    *) say "skip $name: unknown target"; return 1 ;;
  esac
  if ! wait_port "$(host_of "$url")" "$(port_of "$url")" "$PID"; then
    say "skip $name: did not come up on $url (see $LOG)"; stop_target; return 1
  fi
  URLS="$url"; PIDS="$PID"
}

# ---- methodology ------------------------------------------------------------------------
META="$OUT/methodology.md"
CF_VER="$([ -x "$BIN/centrifugo" ] && "$BIN/centrifugo" version 2>/dev/null | head -1 || echo 'not built')"
{
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -sr), $(nproc) cores, $(go version | cut -d' ' -f3),"
  dirty="$(cd "$ROOT" && git status --porcelain -- edge logic router protocol 2>/dev/null | wc -l)"
  echo "commit \`$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')\` ($dirty uncommitted files under edge, logic, router, protocol were built in). Command: \`loadtest/compare.sh --targets $TARGETS --scenarios $SCENARIOS\`."
  echo
  echo "## Methodology"
  echo
  echo "- Generator: \`wsload\` (loadtest/cmd/wsload) on the same machine as the target; connections"
  echo "  from 127.0.0.2–127.0.0.17, a worker process per ≤ 18,000 connections. Every target is"
  echo "  started fresh for each scenario and measured from the outside by pid (/proc/<pid>/stat"
  echo "  utime+stime, /proc/<pid>/status VmRSS), so the generator's own CPU is never counted."
  echo "- Systems: Switchboard embedded (\`edge/cmd/switchboard\`, in-memory bus and presence);"
  echo "  Switchboard cluster (Pulsar + Redis, edges measured); Centrifugo ($CF_VER, insecure client"
  echo "  mode, memory engine / Redis engine, configs in loadtest/tools/centrifugo/); the naive hub"
  echo "  (gorilla/websocket v1.5.3, two goroutines per connection, loadtest/cmd/hub)."
  echo "- idle: $IDLE_CONNS connections, client ping every 25 s, 3 s settle then a $HOLD window."
  echo "  *RSS per conn* = (RSS at the end − RSS before the first connection) / connections;"
  echo "  *CPU-s/s per 100k conns* = target CPU over the window ÷ window ÷ connections × 100,000."
  echo "- fanout: $FANOUT_MEMBERS members in one room plus $PUBLISHERS publishers (distinct users, round-robin:"
  echo "  Switchboard's danmaku plugin allows 2 msgs/s per user); $FANOUT_RATE msgs/s in all of $SIZE B for"
  echo "  $DURATION. *Deliveries* are messages received by members (timestamp in the payload gives"
  echo "  latency, HdrHistogram); *expected* = sent × members; *deliveries per CPU-s* = deliveries ÷"
  echo "  target CPU from \"go\" until every expected delivery arrived (≤ 5 s after the last send)."
  echo "  One delivery = one message reaching one member, whatever the framing (Switchboard's edge"
  echo "  may write several room messages to a connection in one writev, see -coalesce below)."
  echo "- chat: $CHAT_PAIRS pairs, A → B direct message, B answers, A measures the round trip; $CHAT_RATE"
  echo "  msgs/s over all pairs for $DURATION. *Messages per CPU-s* counts both directions."
  echo "- storm: $STORM_CONNS clients dial at once (≤ 2,000 dials in flight per worker); *handshake* ="
  echo "  dial → the server's welcome (Centrifugo: connect reply); *handshakes per CPU-s* ="
  echo "  connections ÷ target CPU over the storm."
  echo "- reconnect: $RECONNECT_CONNS idle clients, then the target is restarted (SIGTERM, same"
  echo "  command); clients redial with exponential backoff (50 ms doubling to 2 s, full jitter)."
  echo "  *all connected* = the slowest client's drop → welcome; *failed* = failed redials;"
  echo "  *handshakes per CPU-s* = reconnections ÷ CPU of the new process since it started."
  case ",$SCENARIOS," in *,bigroom,*)
    echo "- bigroom: one room of $BIG_ROOM members, 1 msg/s for 5 s (the 20,000-member p99 goal); rows"
    echo "  labelled \"room=$BIG_ROOM\" in the fanout table." ;;
  esac
  case ",$SCENARIOS," in *,danmaku,*)
    echo "- danmaku: the fanout room ($FANOUT_MEMBERS members) at live-comment rates: $DANMAKU_RATE msgs/s of $SIZE B"
    echo "  from $DANMAKU_PUBLISHERS publishers for $DURATION; rows labelled \"rate=$DANMAKU_RATE\" in the fanout table." ;;
  esac
  echo "- Switchboard's room chatter is paced by the edge (-coalesce, default 300 ms, Nagle-like:"
  echo "  a lone message goes at once, the ones following within 300 ms of a flush leave together in"
  echo "  one writev per connection); \"switchboard-nocoalesce\" is the same binary with -coalesce 0."
  echo "  Centrifugo runs with its defaults." 
  echo "- Shared 2-core box: absolute rates are modest and vary between runs; compare systems within"
  echo "  one run. Figures of a skipped target are absent, never estimated."
  echo
  echo "## Commands"
  echo
} > "$META"

# ---- Pulsar's own publish → consume latency (the floor under the cluster's chat) ---------
case ",$SCENARIOS," in *,chat,*)
  if [ -n "${SB_PULSAR_URL:-}" ]; then
    hp="${SB_PULSAR_URL#pulsar://}"
    if port_busy "${hp%:*}" "${hp##*:}"; then
      say "pulsarping -n 2000 -rate 500 -size $SIZE (Pulsar baseline on $SB_PULSAR_URL)"
      echo "    pulsarping -url $SB_PULSAR_URL -n 2000 -rate 500 -size $SIZE -out raw/pulsar-baseline.json" >> "$META.cmds"
      (cd "$OUT" && "$WORK/pulsarping" -url "$SB_PULSAR_URL" -admin "${SB_PULSAR_ADMIN_URL:-}" -n 2000 -rate 500 \
        -size "$SIZE" -out raw/pulsar-baseline.json 2>&1 | tee -a "$LOG" >&2) || say "pulsar baseline failed (see $LOG)"
    else
      say "skip pulsar baseline: $SB_PULSAR_URL unreachable"
    fi
  else
    say "skip pulsar baseline: SB_PULSAR_URL not set (source .run/env)"
  fi ;;
esac
[ -f "$META.cmds" ] && cat "$META.cmds" >> "$META" && rm -f "$META.cmds"

# ---- run --------------------------------------------------------------------------------
IFS=, read -r -a TLIST <<< "$TARGETS"
IFS=, read -r -a SLIST <<< "$SCENARIOS"
# One report, one run: results an earlier run left for these targets and scenarios go, so a
# target skipped now cannot appear with old figures (scale.sh's scale-*.json are left alone).
for t in "${TLIST[@]}"; do for s in "${SLIST[@]}"; do rm -f "$RAW/$t-$s.json" "$RAW/$t-$s.edgestats"; done; done
for t in "${TLIST[@]}"; do
  for s in "${SLIST[@]}"; do
    URLS=""; PIDS=""; PROTO=""
    start_target "$t" || break
    case "$s" in
      idle)   args=(-conns "$IDLE_CONNS" -hold "$HOLD") ;;
      fanout) args=(-conns "$FANOUT_MEMBERS" -publishers "$PUBLISHERS" -rate "$FANOUT_RATE" -size "$SIZE" -duration "$DURATION") ;;
      chat)   args=(-pairs "$CHAT_PAIRS" -rate "$CHAT_RATE" -size "$SIZE" -duration "$DURATION") ;;
      storm)  args=(-conns "$STORM_CONNS") ;;
      bigroom) # not in the default list: $BIG_ROOM connections at once is a load of its own
        args=(-conns "$BIG_ROOM" -publishers 1 -rate 1 -size "$SIZE" -duration 5s -retries 2 -connect-rate 2000) ;;
      danmaku) args=(-conns "$FANOUT_MEMBERS" -publishers "$DANMAKU_PUBLISHERS" -rate "$DANMAKU_RATE" -size "$SIZE" -duration "$DURATION") ;;
      reconnect)
        if [ ! -x "$WORK/restart.sh" ]; then
          say "skip $t/reconnect: no way to restart it (cluster: set SWITCHBOARD_CLUSTER_RESTART_CMD)"; stop_target; continue
        fi
        args=(-conns "$RECONNECT_CONNS" -hold 30s -restart-cmd "$WORK/restart.sh") ;;
      *) say "unknown scenario $s"; stop_target; continue ;;
    esac
    [ "$t" = switchboard-cluster ] && args+=("${CLUSTER_ARGS[@]}")
    sc="$s"; label="$t"
    [ "$s" = bigroom ] && sc=fanout && label="$t room=$BIG_ROOM"
    [ "$s" = danmaku ] && sc=fanout && label="$t rate=$DANMAKU_RATE"
    cmdline=(wsload -scenario "$sc" -protocol "$PROTO" -label "$label" -target "$URLS" -pid "$PIDS" "${args[@]}" "${EXTRA[@]}" -out "raw/$t-$s.json")
    shown="$(echo "${cmdline[*]}" | sed 's/-jwt-secret [^ ]*/-jwt-secret <cluster secret>/')"
    say "$shown"
    echo "    $shown" >> "$META"
    if ! (cd "$OUT" && "$WSLOAD" "${cmdline[@]:1}" 2>&1 | tee -a "$LOG" | grep -v '^\[' >&2); then
      say "$t/$s failed (see $LOG)"
    fi
    [ -s "$RAW/$t-$s.json" ] || say "$t/$s: no result"
    case "$t" in switchboard*)
      if [ -n "$PID" ]; then # the embedded binary's own counters (-pprof), for the report
        curl -sf -m 5 "http://$(host_of "$URLS"):$(port_of "$URLS")/debug/edge" > "$RAW/$t-$s.edgestats" 2>/dev/null \
          || rm -f "$RAW/$t-$s.edgestats"
      fi ;;
    esac
    stop_target
  done
done
echo >> "$META"
if [ ${#SKIPPED[@]} -gt 0 ]; then
  { echo "## Skipped targets"; echo; for m in "${SKIPPED[@]}"; do echo "- $m"; done; echo; } >> "$META"
fi

"$WORK/benchreport" -raw "$RAW" -out "$OUT" -meta "$META"
say "report: $OUT/README.md"
}
main "$@"; exit $? # one line: read before main runs, so editing the file mid-run is safe
