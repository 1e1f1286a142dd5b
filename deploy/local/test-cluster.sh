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

cleanup() {
  local rc=$?
  "$HERE/cluster.sh" down || rc=1
  exit "$rc"
}
trap cleanup EXIT
"$HERE/cluster.sh" up
SB_WS_URL="ws://127.0.0.1:$port/ws" SB_HTTP_URL="http://127.0.0.1:$port/" \
  SB_AUTH_URL="http://127.0.0.1:$port/auth/dev-token" SB_REQUIRE_TWO_EDGES=1 \
  "$SB_ROOT/edge/web/run-tests.sh"
