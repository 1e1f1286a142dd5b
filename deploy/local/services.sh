#!/usr/bin/env bash
# services.sh up|down|status|env — the external services the integration tests use.
#   up      starts redis, redis-cluster and pulsar in parallel (each waits for its own readiness
#           check), then writes $SB_STATE_DIR/env. Services already running are left as they are.
#   down    stops exactly those three (by their pid files) and removes the env file. Refuses while
#           a with-services.sh run is using them, unless SB_FORCE_DOWN=1.
#   status  reports each service; exit status 1 if any is not ready.
#   env     prints the env file (export lines for SB_REDIS_ADDR, SB_REDIS_CLUSTER_ADDRS,
#           SB_PULSAR_URL, SB_PULSAR_ADMIN_URL).
set -euo pipefail
SB_COMPONENT=services
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

readonly SERVICES=(redis redis-cluster pulsar)
readonly ENV_FILE="$SB_STATE_DIR/env"
# USE_LOCK: with-services.sh holds it shared while its command runs; down needs it exclusively.
readonly USE_LOCK="$SB_STATE_DIR/services.lock"
readonly UP_LOCK="$SB_STATE_DIR/services-up.lock"

# run_parallel ACTION runs "<service>.sh ACTION" for every service at once; fails if any did.
run_parallel() {
  local action="$1" svc failed=() i
  local -a pids=()
  for svc in "${SERVICES[@]}"; do
    "$HERE/$svc.sh" "$action" 9>&- &
    pids+=($!)
  done
  for i in "${!SERVICES[@]}"; do
    wait "${pids[$i]}" || failed+=("${SERVICES[$i]}")
  done
  if ((${#failed[@]} > 0)); then
    warn "$action failed for: ${failed[*]}"
    return 1
  fi
}

write_env() {
  local cluster_addrs="" p tmp="$ENV_FILE.tmp.$$"
  for p in ${SB_REDIS_CLUSTER_PORTS:-17001 17002 17003}; do cluster_addrs+="${cluster_addrs:+,}127.0.0.1:$p"; done
  cat >"$tmp" <<ENV
# written by deploy/local/services.sh up; source it to reach the local services
export SB_REDIS_ADDR=127.0.0.1:${SB_REDIS_PORT:-16379}
export SB_REDIS_CLUSTER_ADDRS=$cluster_addrs
export SB_PULSAR_URL=pulsar://127.0.0.1:${SB_PULSAR_PORT:-16650}
export SB_PULSAR_ADMIN_URL=http://127.0.0.1:${SB_PULSAR_WEB_PORT:-18081}
ENV
  mv -f "$tmp" "$ENV_FILE"
}

up() {
  mkdir -p "$SB_STATE_DIR"
  local t0
  t0="$(now_ms)"
  # Serialise concurrent `up`s (two make test runs in one tree): the second finds all running.
  exec 9>"$UP_LOCK"
  flock -w 600 9 || die "timed out waiting for $UP_LOCK"
  if ! run_parallel start; then
    die "not all services started; logs are under $SB_STATE_DIR; '$0 down' stops the others"
  fi
  write_env
  exec 9>&-
  log "all services ready in $(elapsed_since "$t0")s; env: $ENV_FILE"
}

down() {
  mkdir -p "$SB_STATE_DIR"
  if [[ "${SB_SERVICES_LOCK_HELD:-}" != 1 && "${SB_FORCE_DOWN:-}" != 1 ]]; then
    exec 8>"$USE_LOCK"
    flock -xn 8 || die "services are in use by a running with-services.sh (make test); SB_FORCE_DOWN=1 stops them anyway"
  fi
  rm -f "$ENV_FILE"
  run_parallel stop
}

status() { run_parallel status; }

print_env() {
  [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE; run '$0 up' first"
  cat "$ENV_FILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
