#!/usr/bin/env bash
# with-services.sh CMD... — starts the local services (services.sh up), exports their addresses
# (SB_REDIS_ADDR, SB_REDIS_CLUSTER_ADDRS, SB_PULSAR_URL, SB_PULSAR_ADMIN_URL), runs CMD, and on
# exit — success, failure or signal — stops them again (services.sh down). Exits with CMD's status.
#
# Concurrent runs in the same tree share the services: each holds $SB_STATE_DIR/services.lock
# shared while it runs, and only the last one out stops them.
# SB_KEEP_SERVICES=1 leaves the services running afterwards (for quick re-runs).
set -euo pipefail
SB_COMPONENT=with-services
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

(($# > 0)) || die "usage: $0 CMD [ARGS...]"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ "${SB_KEEP_SERVICES:-}" == 1 ]]; then
    log "SB_KEEP_SERVICES=1: leaving services running ('$HERE/services.sh down' stops them)"
  elif cluster_up; then
    # `make cluster` runs on these services (make bench-compare measures it): stopping them
    # would leave its edges and logic without Pulsar and Redis.
    log "a make cluster is running on the services; leaving them up (make cluster-down stops both)"
  elif flock -xn 8; then
    SB_SERVICES_LOCK_HELD=1 "$HERE/services.sh" down 8>&- || { warn "services.sh down failed"; ((rc != 0)) || rc=1; }
  else
    log "services still in use by another with-services.sh run; leaving them up"
  fi
  exit "$rc"
}

# cluster_up: a process of `make cluster` (deploy/local/cluster.sh) is alive in this state dir.
cluster_up() {
  local f p
  for f in "$SB_STATE_DIR"/cluster/*.pid; do
    [[ -f "$f" ]] || continue
    p="$(tr -dc '0-9' <"$f")"
    [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null && return 0
  done
  return 1
}

main() {
  mkdir -p "$SB_STATE_DIR"
  exec 8>"$SB_STATE_DIR/services.lock"
  # Blocks only while another run is stopping the services.
  flock -s -w 600 8 || die "timed out waiting for $SB_STATE_DIR/services.lock"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  "$HERE/services.sh" up 8>&-
  # shellcheck source=/dev/null
  source "$SB_STATE_DIR/env"
  log "SB_REDIS_ADDR=$SB_REDIS_ADDR SB_REDIS_CLUSTER_ADDRS=$SB_REDIS_CLUSTER_ADDRS"
  log "SB_PULSAR_URL=$SB_PULSAR_URL SB_PULSAR_ADMIN_URL=$SB_PULSAR_ADMIN_URL"
  log "running: $*"
  local rc=0
  "$@" 8>&- || rc=$?
  log "command exited with status $rc"
  exit "$rc"
}

main "$@"
