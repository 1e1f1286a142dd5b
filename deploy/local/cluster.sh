#!/usr/bin/env bash
# cluster.sh up|down|status — the real topology on one machine, all on loopback:
#   Redis + Redis Cluster + Pulsar standalone (services.sh), one router, two logic replicas,
#   SB_EDGES (default 2) edges and HAProxy in front of the edges.
#
#   up      builds the binaries into $SB_STATE_DIR/cluster/bin, starts everything in order, each
#           after the one before it is ready, and prints the addresses. Fails (and stops what it
#           started) when a part is not ready in time.
#   down    stops exactly what up started, by pid file, in reverse order, then the services.
#   status  one line per process; exit status 1 if any is not running.
#
# Ports: HAProxy ${SB_CLUSTER_PORT:-8090} (demo page + /ws), HAProxy stats +1; router gRPC 7070,
# admin 7071; edges 9101, 9102, …; logic admin 7081, 7082. Auth: HS256 JWTs; the edges issue dev
# tokens at /auth/dev-token?user=<id> (demo only), the secret is in $SB_STATE_DIR/cluster/jwt.secret.
set -euo pipefail
SB_COMPONENT=cluster
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

readonly DIR="$SB_STATE_DIR/cluster"
readonly BIN="$DIR/bin"
readonly FRONT_PORT="${SB_CLUSTER_PORT:-8090}"
readonly STATS_PORT="$((FRONT_PORT + 1))"
readonly ROUTER_ADDR="127.0.0.1:${SB_ROUTER_PORT:-7070}"
readonly ROUTER_ADMIN="127.0.0.1:${SB_ROUTER_ADMIN_PORT:-7071}"
readonly EDGES="${SB_EDGES:-2}"
readonly LOGICS="${SB_LOGICS:-2}"
readonly EDGE_BASE_PORT="${SB_EDGE_BASE_PORT:-9100}"
readonly LOGIC_BASE_PORT="${SB_LOGIC_BASE_PORT:-7080}"
readonly READY_TIMEOUT="${SB_CLUSTER_READY_TIMEOUT:-60}"

# pattern_of NAME: a string unique to NAME's command line (guards against recycled pids).
pattern_of() {
  case "$1" in
    haproxy) printf '%s' "$DIR/haproxy.cfg" ;;
    prometheus) printf '%s' "$DIR/prometheus.yml" ;;
    *) printf '%s' "$BIN/" ;;
  esac
}

http_ok() { curl -sf --max-time 2 "$1" >/dev/null 2>&1; }

# all_edges_up: HAProxy's stats (CSV: field 18 is the status) show every edge server UP.
all_edges_up() {
  local csv
  csv="$(curl -sf --max-time 2 "http://127.0.0.1:$STATS_PORT/stats;csv")" || return 1
  [[ "$(awk -F, '$1 == "edges" && $2 ~ /^edge[0-9]+$/ && $18 == "UP"' <<<"$csv" | wc -l)" -eq "$EDGES" ]]
}

# start_proc NAME CMD... starts CMD in its own session, stdout+stderr to NAME.log, pid in NAME.pid.
start_proc() {
  local name="$1"
  shift
  if pidfile_pid "$DIR/$name.pid" "$(pattern_of "$name")" >/dev/null; then
    log "$name already running"
    return 0
  fi
  rm -f "$DIR/$name.pid"
  setsid bash -c 'echo $$ >"$0"; '"$CLOSE_FDS"'; exec "$@"' "$DIR/$name.pid" "$@" \
    </dev/null >"$DIR/$name.log" 2>&1 &
  wait_until 10 "$name pid file" test -s "$DIR/$name.pid" || die "$name did not start"
}

# wait_ready NAME URL waits for URL to answer 2xx while NAME's process is alive.
wait_ready() {
  local name="$1" url="$2" pid
  pid="$(tr -dc '0-9' <"$DIR/$name.pid")"
  if ! SB_WAIT_ALIVE_PID="$pid" wait_until "$READY_TIMEOUT" "$name at $url" http_ok "$url"; then
    tail_log "$DIR/$name.log" 40
    die "$name not ready; '$0 down' stops the rest"
  fi
  log "$name ready (pid $pid) $url"
}

build() {
  mkdir -p "$BIN"
  log "building router, logic, edge into $BIN"
  (cd "$SB_ROOT" && go build -o "$BIN/router" ./router/cmd/router &&
    go build -o "$BIN/logic" ./logic/cmd/logic &&
    go build -o "$BIN/edge" ./edge/cmd/edge)
}

render_haproxy() {
  local servers="" i
  for ((i = 1; i <= EDGES; i++)); do
    servers+="    server edge$i 127.0.0.1:$((EDGE_BASE_PORT + i)) check"$'\n'
  done
  sed -e "s|@FRONT@|127.0.0.1:$FRONT_PORT|" -e "s|@STATS@|127.0.0.1:$STATS_PORT|" \
    "$SB_ROOT/deploy/haproxy/haproxy.cfg.tmpl" | awk -v s="$servers" '{ if ($0 == "@SERVERS@") printf "%s", s; else print }' \
    >"$DIR/haproxy.cfg"
  haproxy -c -q -f "$DIR/haproxy.cfg" || die "haproxy rejected $DIR/haproxy.cfg"
}

up() {
  need go curl haproxy
  mkdir -p "$DIR"
  "$HERE/services.sh" up
  # shellcheck source=/dev/null
  source "$SB_STATE_DIR/env"
  build
  [[ -s "$DIR/jwt.secret" ]] || head -c 32 /dev/urandom | base64 >"$DIR/jwt.secret"
  local i

  start_proc router "$BIN/router" -listen "$ROUTER_ADDR" -admin "$ROUTER_ADMIN" -redis "$SB_REDIS_ADDR"
  wait_ready router "http://$ROUTER_ADMIN/readyz"

  for ((i = 1; i <= LOGICS; i++)); do
    start_proc "logic$i" "$BIN/logic" -admin "127.0.0.1:$((LOGIC_BASE_PORT + i))" \
      -pulsar "$SB_PULSAR_URL" -router "$ROUTER_ADDR" -redis "$SB_REDIS_ADDR"
    wait_ready "logic$i" "http://127.0.0.1:$((LOGIC_BASE_PORT + i))/healthz"
  done

  for ((i = 1; i <= EDGES; i++)); do
    start_proc "edge$i" "$BIN/edge" -id "edge$i" -addr "127.0.0.1:$((EDGE_BASE_PORT + i))" \
      -pulsar "$SB_PULSAR_URL" -router "$ROUTER_ADDR" -jwt-secret-file "$DIR/jwt.secret" \
      -demo -dev-tokens
    wait_ready "edge$i" "http://127.0.0.1:$((EDGE_BASE_PORT + i))/healthz"
  done

  render_haproxy
  start_proc haproxy haproxy -db -f "$DIR/haproxy.cfg"
  wait_ready haproxy "http://127.0.0.1:$STATS_PORT/healthz"
  # HAProxy marks the edges up after its first health checks (rise 2): until then it sends
  # every connection to the edges it already has.
  wait_until 20 "every edge up behind HAProxy" all_edges_up ||
    die "HAProxy does not have all $EDGES edges up: $(curl -sf --max-time 2 "http://127.0.0.1:$STATS_PORT/stats;csv" | awk -F, '$1 == "edges" { printf "%s %s; ", $2, $18 }')"

  if [[ "${SB_OBSERVE:-}" == 1 ]]; then
    start_prometheus
  fi

  log "up: demo http://127.0.0.1:$FRONT_PORT/  websocket ws://127.0.0.1:$FRONT_PORT/ws"
  log "    dev tokens http://127.0.0.1:$FRONT_PORT/auth/dev-token?user=<id>  HAProxy stats http://127.0.0.1:$STATS_PORT/stats"
  log "    router $ROUTER_ADDR  logs $DIR/*.log  stop: make cluster-down"
}

# start_prometheus (make cluster OBSERVE=1): Debian's prometheus scraping the edges, logic and
# router (deploy/prometheus), on 127.0.0.1:9090, data under $DIR/prometheus.
start_prometheus() {
  if ! command -v prometheus >/dev/null 2>&1; then
    log "installing Debian's prometheus (OBSERVE=1)"
    if [[ $(id -u) -eq 0 ]]; then apt_get=(apt-get); else apt_get=(sudo -n apt-get); fi
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" -o DPkg::Lock::Timeout=600 install -y -qq prometheus </dev/null >/dev/null ||
      die "apt-get install prometheus failed"
  fi
  # The package starts its own service on :9090 where systemd runs; ours is a separate process.
  local port="${SB_PROMETHEUS_PORT:-9090}"
  port_open "$port" && die "port $port is in use (another prometheus?); set SB_PROMETHEUS_PORT"
  local cfg="$DIR/prometheus.yml"
  sed -e "s|127.0.0.1:9101\", \"127.0.0.1:9102|$(edge_targets)|" \
    -e "s|127.0.0.1:7081\", \"127.0.0.1:7082|$(logic_targets)|" -e "s|127.0.0.1:7071|$ROUTER_ADMIN|" \
    "$SB_ROOT/deploy/prometheus/prometheus.yml" >"$cfg"
  cp "$SB_ROOT/deploy/prometheus/alerts.yml" "$DIR/alerts.yml"
  start_proc prometheus prometheus --config.file="$cfg" --storage.tsdb.path="$DIR/prometheus" \
    --web.listen-address="127.0.0.1:$port"
  wait_ready prometheus "http://127.0.0.1:$port/-/ready"
  log "prometheus http://127.0.0.1:$port/ (alerts: http://127.0.0.1:$port/alerts)"
}

edge_targets() {
  local i out=""
  for ((i = 1; i <= EDGES; i++)); do out+="${out:+\", \"}127.0.0.1:$((EDGE_BASE_PORT + i))"; done
  printf '%s' "$out"
}

logic_targets() {
  local i out=""
  for ((i = 1; i <= LOGICS; i++)); do out+="${out:+\", \"}127.0.0.1:$((LOGIC_BASE_PORT + i))"; done
  printf '%s' "$out"
}

procs() {
  local i
  printf '%s\n' prometheus
  printf '%s\n' haproxy
  for ((i = EDGES; i >= 1; i--)); do printf 'edge%s\n' "$i"; done
  for ((i = LOGICS; i >= 1; i--)); do printf 'logic%s\n' "$i"; done
  printf '%s\n' router
}

down() {
  local name pattern
  mkdir -p "$DIR"
  for name in $(procs); do
    pattern="$(pattern_of "$name")"
    stop_pidfile "$DIR/$name.pid" "$pattern" "$name" 30
  done
  # SB_CLUSTER_KEEP_SERVICES=1 (test-cluster.sh inside make test): the services belong to the
  # with-services.sh run around it.
  [[ "${SB_CLUSTER_KEEP_SERVICES:-}" == 1 ]] || "$HERE/services.sh" down
}

status() {
  local name pattern pid rc=0
  for name in $(procs); do
    pattern="$(pattern_of "$name")"
    [[ "$name" == prometheus && ! -e "$DIR/$name.pid" ]] && continue # only with OBSERVE=1
    if pid="$(pidfile_pid "$DIR/$name.pid" "$pattern")"; then
      log "$name running (pid $pid)"
    else
      log "$name not running"
      rc=1
    fi
  done
  "$HERE/services.sh" status || rc=1
  return "$rc"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
