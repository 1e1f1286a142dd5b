#!/usr/bin/env bash
# Builds Centrifugo v5.4.9 (pinned in go.mod of this nested tools module) into
# $HOME/.cache/switchboard/bin/centrifugo. Idempotent. `go install …@v5.4.9` fails on the
# proxy's deprecation lookup, so the module is required here and built with `go build`.
set -euo pipefail
cd "$(dirname "$0")"
BIN="${SB_BIN:-$HOME/.cache/switchboard/bin}"
VERSION=5.4.9
mkdir -p "$BIN"
if [ -x "$BIN/centrifugo" ] && "$BIN/centrifugo" version 2>/dev/null | grep -q "v${VERSION}"; then
  echo "centrifugo v${VERSION} already in $BIN"
  exit 0
fi
echo "building centrifugo v${VERSION} into $BIN…"
GOWORK=off GOFLAGS=-mod=mod go build \
  -ldflags "-X github.com/centrifugal/centrifugo/v5/internal/build.Version=${VERSION}" \
  -o "$BIN/centrifugo" github.com/centrifugal/centrifugo/v5
"$BIN/centrifugo" version
