#!/usr/bin/env bash
# Builds k6 v1.8.1 into $HOME/.cache/switchboard/bin (idempotent: does nothing when that
# version is already there). Takes ~3 minutes the first time.
set -euo pipefail
K6_VERSION="${K6_VERSION:-v1.8.1}"
BIN="${SB_BIN:-$HOME/.cache/switchboard/bin}"
mkdir -p "$BIN"
if [ -x "$BIN/k6" ] && "$BIN/k6" version 2>/dev/null | grep -q "k6 ${K6_VERSION}"; then
  echo "k6 ${K6_VERSION} already in $BIN"
  exit 0
fi
echo "building k6 ${K6_VERSION} into $BIN (a few minutes)…"
GOWORK=off GOFLAGS=-mod=mod GOBIN="$BIN" go install "go.k6.io/k6@${K6_VERSION}"
"$BIN/k6" version
