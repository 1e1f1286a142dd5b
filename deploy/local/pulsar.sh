#!/usr/bin/env bash
# pulsar.sh start|stop|restart|status — Apache Pulsar standalone (broker + one bookie, RocksDB
# metadata, no functions worker, no stream storage) from the distribution install.sh cached in
# $SB_CACHE_DIR. The cache is never written to: conf/ is copied to $SB_STATE_DIR/pulsar/conf and
# every data/log path points under $SB_STATE_DIR/pulsar.
#
#   start    data/ is wiped (a fresh broker: only public/default), unless SB_PULSAR_KEEP_DATA=1:
#            then data/ is kept and the broker comes back with its tenants, namespaces, topics,
#            subscriptions and unacknowledged messages (after a stop or a crash: kill -9).
#   restart  stop, then start keeping data/ (SB_PULSAR_KEEP_DATA=1 implied).
#
#   broker   pulsar://127.0.0.1:${SB_PULSAR_PORT:-16650}
#   web      http://127.0.0.1:${SB_PULSAR_WEB_PORT:-18081}   (admin REST API)
#   bookie   on a fresh start ${SB_PULSAR_BOOKIE_PORT:-0}, 0 meaning a free port Pulsar picks
#            itself. The port is the bookie's identity ("127.0.0.1:PORT" in its cookie and in
#            every ledger's ensemble), so a start keeping data reuses the port recorded in the
#            cookie (data/bookkeeper/current/VERSION); SO_REUSEADDR lets it bind while
#            connections of the previous (crashed) process linger in TIME_WAIT. A port Pulsar
#            picked is in the kernel's ephemeral range, where any client's outgoing connection
#            may take it while the broker is down: to restart reliably on a busy machine, set
#            SB_PULSAR_BOOKIE_PORT (and the two ports above) below ip_local_port_range.
#            4.0.x's embedded BKCluster only honours --bookkeeper-port with
#            allowEphemeralPorts=true, set below.
#
# Ready when the admin API lists public/default. Heap: PULSAR_MEM (default 1 GiB).
set -euo pipefail
SB_COMPONENT=pulsar
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly VERSION="${SB_PULSAR_VERSION:-4.0.8}"
readonly HOME_DIR="${SB_PULSAR_HOME:-$SB_CACHE_DIR/apache-pulsar-$VERSION}"
readonly PORT="${SB_PULSAR_PORT:-16650}"
readonly WEB_PORT="${SB_PULSAR_WEB_PORT:-18081}"
readonly DIR="$SB_STATE_DIR/pulsar"
readonly PIDFILE="$DIR/pulsar.pid"
readonly LOGFILE="$DIR/pulsar.log"
readonly CONF_DIR="$DIR/conf"
readonly MATCH="-Dpulsar.log.dir=$DIR/logs" # unique to this instance's java command line
readonly START_TIMEOUT="${SB_PULSAR_START_TIMEOUT:-180}"
readonly STOP_TIMEOUT="${SB_PULSAR_STOP_TIMEOUT:-60}"
readonly ADMIN_URL="http://127.0.0.1:$WEB_PORT"
KEEP_DATA="${SB_PULSAR_KEEP_DATA:-0}"

admin_ready() {
  curl -sf --max-time 5 "$ADMIN_URL/admin/v2/namespaces/public" 2>/dev/null | grep -qF '"public/default"'
}

# set_conf FILE KEY VALUE sets KEY=VALUE, replacing an existing line or appending one.
set_conf() {
  local file="$1" key="$2" value="$3"
  if grep -q "^${key}=" "$file"; then
    sed -i "s|^${key}=.*|${key}=${value}|" "$file"
  else
    [[ -z "$(tail -c 1 "$file")" ]] || printf '\n' >>"$file" # file may lack a final newline
    printf '%s=%s\n' "$key" "$value" >>"$file"
  fi
}

prepare_conf() {
  rm -rf "$CONF_DIR"
  cp -r "$HOME_DIR/conf" "$CONF_DIR"
  local f="$CONF_DIR/standalone.conf"
  set_conf "$f" brokerServicePort "$PORT"
  set_conf "$f" webServicePort "$WEB_PORT"
  set_conf "$f" bindAddress 127.0.0.1
  set_conf "$f" advertisedAddress 127.0.0.1
  # Dispatch new entries to waiting consumers at once: the default 10 ms check delay adds
  # ~5-7 ms per bus hop (apache/pulsar#10660), and a chat round trip crosses the bus twice.
  set_conf "$f" managedLedgerNewEntriesCheckDelayInMillis 0
  # Key_Shared replay can stall after a consumer dies (apache/pulsar#23845, #24736; seen in
  # edge/cmd/e2e's replica-kill test): let the broker detect and unblock stuck subscriptions.
  set_conf "$f" unblockStuckSubscriptionEnabled true
  # The embedded bookie's configuration is read from the same file (see the header: bookie).
  set_conf "$f" allowEphemeralPorts true
  set_conf "$f" serverSockReuseAddr true
}

# cookie_bookie_port prints the bookie port recorded in the kept data's cookie, if any.
cookie_bookie_port() {
  local f="$DIR/data/bookkeeper/current/VERSION"
  [[ -f "$f" ]] || return 1
  sed -n 's/^bookieHost: *"[^"]*:\([0-9][0-9]*\)".*/\1/p' "$f" | grep -m1 .
}

start() {
  need java curl
  [[ -x "$HOME_DIR/bin/pulsar" ]] || die "no Pulsar distribution at $HOME_DIR; run deploy/local/install.sh"
  local pid t0 p
  if pid="$(pidfile_pid "$PIDFILE" "$MATCH")"; then
    SB_WAIT_ALIVE_PID="$pid" wait_until "$START_TIMEOUT" "admin API on $ADMIN_URL" admin_ready ||
      { tail_log "$LOGFILE"; die "running (pid $pid) but not ready"; }
    log "already running (pid $pid): pulsar://127.0.0.1:$PORT, $ADMIN_URL"
    return 0
  fi
  for p in "$PORT" "$WEB_PORT" ${SB_PULSAR_BOOKIE_PORT:+"$SB_PULSAR_BOOKIE_PORT"}; do
    port_open "$p" && die "port $p is already in use by a process this script did not start"
  done
  t0="$(now_ms)"
  local wipe=(--wipe-data) redirect=">" bk_port="${SB_PULSAR_BOOKIE_PORT:-0}"
  if [[ "$KEEP_DATA" == 1 ]]; then
    [[ -d "$DIR/data/metadata" ]] || warn "SB_PULSAR_KEEP_DATA=1 but no data under $DIR/data: starting empty"
    if bk_port="$(cookie_bookie_port)"; then
      port_open "$bk_port" && die "bookie port $bk_port (recorded in the kept data) is in use by another process"
    else
      bk_port="${SB_PULSAR_BOOKIE_PORT:-0}"
    fi
    wipe=()
    redirect=">>" # keep the previous run's log: it tells how the broker went down
    rm -f "$PIDFILE" # a crashed broker's: the wait for the new pid below must not read it
    mkdir -p "$DIR/logs" "$DIR/data"
  else
    rm -rf "$DIR" && mkdir -p "$DIR/logs" "$DIR/data"
  fi
  prepare_conf
  (
    unset PULSAR_STANDALONE_USE_ZOOKEEPER
    export PULSAR_MEM="${PULSAR_MEM:--Xms1g -Xmx1g -XX:MaxDirectMemorySize=1g}"
    export PULSAR_LOG_DIR="$DIR/logs" PULSAR_GC_LOG_DIR="$DIR/logs"
    export PULSAR_STANDALONE_CONF="$CONF_DIR/standalone.conf"
    export PULSAR_LOG_CONF="$CONF_DIR/log4j2.yaml"
    export PULSAR_PID_DIR="$DIR"
    # setsid: own session, so a terminal's ^C or hang-up does not reach the broker; bash writes
    # its own pid, closes inherited descriptors, then execs bin/pulsar, which execs java: the
    # pid stays the broker's.
    if [[ "$redirect" == ">>" ]]; then exec >>"$LOGFILE"; else exec >"$LOGFILE"; fi
    setsid bash -c 'echo $$ >"$0"; '"$CLOSE_FDS"'; exec "$@"' "$PIDFILE" \
      "$HOME_DIR/bin/pulsar" standalone -nfw -nss ${wipe[@]+"${wipe[@]}"} \
      --config "$CONF_DIR/standalone.conf" \
      --advertised-address 127.0.0.1 \
      --bookkeeper-port "$bk_port" \
      --metadata-dir "$DIR/data/metadata" \
      --bookkeeper-dir "$DIR/data/bookkeeper" \
      </dev/null 2>&1 &
  )
  wait_until 10 "pid file $PIDFILE" test -s "$PIDFILE" || die "broker process did not start"
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  log "starting (pid $pid, log $LOGFILE), waiting up to ${START_TIMEOUT}s for $ADMIN_URL"
  local rc=0
  SB_WAIT_ALIVE_PID="$pid" wait_until "$START_TIMEOUT" "admin API on $ADMIN_URL" admin_ready || rc=$?
  if ((rc != 0)); then
    tail_log "$LOGFILE" 80
    stop >/dev/null 2>&1 || true
    ((rc == 2)) && die "broker exited during start-up (see $LOGFILE)"
    die "not ready within ${START_TIMEOUT}s (see $LOGFILE)"
  fi
  port_open "$PORT" || die "admin API is up but broker port $PORT is not accepting connections"
  local kept=""
  [[ "$KEEP_DATA" == 1 ]] && kept=", data kept"
  log "ready on pulsar://127.0.0.1:$PORT, $ADMIN_URL (pid $pid$kept) in $(elapsed_since "$t0")s"
}

stop() { stop_pidfile "$PIDFILE" "$MATCH" "pulsar standalone" "$STOP_TIMEOUT"; }

status() {
  local pid
  if ! pid="$(pidfile_pid "$PIDFILE" "$MATCH")"; then
    log "not running"
    return 1
  fi
  if admin_ready; then
    log "running (pid $pid): pulsar://127.0.0.1:$PORT, $ADMIN_URL"
  else
    log "process running (pid $pid) but admin API not ready"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop && KEEP_DATA=1 && start ;;
  status) status ;;
  *) die "usage: $0 start|stop|restart|status" ;;
esac
