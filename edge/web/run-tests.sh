#!/usr/bin/env bash
# Runs the JS client's tests and the browser test against a real Switchboard.
#
#   edge/web/run-tests.sh            build edge/cmd/switchboard, start it on a free loopback port,
#                                    run the Node tests and the browser test, stop it (by pid)
#   SB_WS_URL=ws://…/ws SB_HTTP_URL=http://…/ edge/web/run-tests.sh
#                                    use a running system instead (e.g. the cluster behind HAProxy;
#                                    SB_AUTH_URL=…/auth/dev-token for token auth, SB_HTTP_URL_B for a
#                                    second address for the browser's second page)
#
# Installs the npm devDependencies (ws, playwright-core) with `npm ci` when they are missing.
# Needs Go, Node >= 20 and /usr/bin/chromium (CHROMIUM overrides). Exit status: 0 when all passed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -z "${SB_WS_URL:-}" || -z "${SB_HTTP_URL:-}" ]]; then
  echo "run-tests: building edge/cmd/switchboard"
  (cd "$root" && go build -o "$tmp/switchboard" ./edge/cmd/switchboard)
  "$tmp/switchboard" -addr 127.0.0.1:0 -id web-test >"$tmp/out.log" 2>"$tmp/err.log" &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q 'ws://' "$tmp/out.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "run-tests: switchboard exited:"; cat "$tmp/err.log"; exit 1; }
    sleep 0.1
  done
  SB_HTTP_URL=$(grep -o 'http://[^ ]*' "$tmp/out.log" | head -1)
  SB_WS_URL=$(grep -o 'ws://[^ ]*' "$tmp/out.log" | head -1)
  [[ -n "$SB_WS_URL" ]] || { echo "run-tests: switchboard printed no address"; cat "$tmp/out.log" "$tmp/err.log"; exit 1; }
  echo "run-tests: switchboard pid $pid at $SB_HTTP_URL"
fi
export SB_WS_URL SB_HTTP_URL

cd "$here"
if [[ ! -d node_modules/ws || ! -d node_modules/playwright-core ]]; then
  echo "run-tests: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

rc=0
echo "run-tests: node --test (SB_WS_URL=$SB_WS_URL)"
node --test --test-reporter=spec test/*.test.mjs 2>&1 | tee "$tmp/node.out" || rc=1
echo "run-tests: browser test (SB_HTTP_URL=$SB_HTTP_URL)"
node test/browser.mjs 2>&1 | tee "$tmp/browser.out" || rc=1
if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
  echo "run-tests: switchboard died during the tests:"; cat "$tmp/err.log"; rc=1
fi
if [[ $rc -ne 0 ]]; then
  # CI shows the end of the output: repeat what failed and why there (no stack frames).
  {
    echo "run-tests: FAILED"
    sed -n '/failing tests:/,$p' "$tmp/node.out" | grep -v -E '^\s+at |^\s*$|^\s*\{|^\s*\}|code:|generatedMessage|operator:' | head -n 30
    grep -E '^(FAIL|not ok)' "$tmp/browser.out" | head -n 10
  } | tee "${SB_TEST_SUMMARY:-/dev/null}"
fi
exit $rc
