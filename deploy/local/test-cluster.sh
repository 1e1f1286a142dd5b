#!/usr/bin/env bash
# test-cluster.sh — the cluster test inside `make test`: brings the real topology up (cluster.sh:
# router, 2 logic replicas, 2 edges, HAProxy, on the services with-services.sh started), runs the
# JS client's interop tests and the browser test through HAProxy with JWT auth (dev tokens) on
# two different edges, then stops the cluster's processes (the services stay for with-services.sh).
set -euo pipefail
SB_COMPONENT=test-cluster
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
export SB_CLUSTER_KEEP_SERVICES=1
port="${SB_CLUSTER_PORT:-8090}"

summary="$(mktemp)"
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    # A failure here is read from CI's output alone, which shows its end: first what each
    # component logged (its warnings and errors, then its last lines), then the failed tests.
    local f
    for f in "$SB_STATE_DIR"/cluster/*.log; do
      [[ -s "$f" && "$f" -nt "$summary" ]] || continue # this run's logs only
      echo "---- test-cluster: $(basename "$f"): warnings and errors (last 15), then the last 10 lines"
      grep -E 'level=(WARN|ERROR)|"level":"(warn|error)"|panic|reaping' "$f" | tail -n 15 || true
      tail -n 10 "$f"
    done
    echo "---- test-cluster: failed"
    cat "$summary"
  fi
  rm -f "$summary"
  "$HERE/cluster.sh" down || rc=1
  exit "$rc"
}
trap cleanup EXIT
"$HERE/cluster.sh" up
SB_WS_URL="ws://127.0.0.1:$port/ws" SB_HTTP_URL="http://127.0.0.1:$port/" \
  SB_AUTH_URL="http://127.0.0.1:$port/auth/dev-token" SB_REQUIRE_TWO_EDGES=1 SB_TEST_SUMMARY="$summary" \
  SB_LOGIC_ADMIN_URLS="$(for ((i = 1; i <= ${SB_LOGICS:-2}; i++)); do printf 'http://127.0.0.1:%d,' "$((${SB_LOGIC_BASE_PORT:-7080} + i))"; done)" \
  "$SB_ROOT/edge/web/run-tests.sh"
