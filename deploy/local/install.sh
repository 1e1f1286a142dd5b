#!/usr/bin/env bash
# install.sh — installs everything `make test` needs, idempotently.
#
#   * Debian packages (apt-get update runs only when something is missing)
#   * the Apache Pulsar server distribution, downloaded once with Maven into
#     $SB_CACHE_DIR (default ~/.cache/switchboard) and extracted there once
#   * pinned Go tools into $(go env GOPATH)/bin (default ~/go/bin)
#
# Safe on a fresh CI machine (CI=true, no stdin); fast (~1 s) when everything is present.
# Prints one line per component: "install: <component> ok (<detail>)".
set -euo pipefail

# Pinned versions. PULSAR_VERSION: newest 4.0.x that resolves from Maven Central here.
readonly PULSAR_VERSION="${SB_PULSAR_VERSION:-4.0.8}"
readonly CACHE_DIR="${SB_CACHE_DIR:-$HOME/.cache/switchboard}"
readonly MVN_DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
readonly GO_TOOLS=(
  "golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da"
  "google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
  "google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
)
APT_PACKAGES=(redis-server redis-tools haproxy chromium chromium-driver protobuf-compiler curl jq)

export DEBIAN_FRONTEND=noninteractive

log() { printf 'install: %s\n' "$*"; }
die() { printf 'install: ERROR: %s\n' "$*" >&2; exit 1; }

# as_root runs a command as root (directly when we are root, else through sudo -n).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }

# systemd_active is true only when systemd is PID 1 (not in containers such as this CI).
systemd_active() { [[ -d /run/systemd/system ]]; }

install_apt_packages() {
  # Toolchain prerequisites are expected on the image; install them too if a machine lacks them.
  command -v java >/dev/null 2>&1 || APT_PACKAGES+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || APT_PACKAGES+=(maven)
  # The JS client's and the browser tests (edge/web) need Node.js and npm.
  command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs)
  command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)

  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} > 0)); then
    local redis_was_missing=false
    pkg_installed redis-server || redis_was_missing=true
    log "apt-get install ${missing[*]}"
    # Other tools (or another checkout) may be running apt at the same time: wait for the lock.
    local lock=(-o DPkg::Lock::Timeout=900)
    as_root apt-get "${lock[@]}" update -qq
    as_root apt-get "${lock[@]}" install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" </dev/null >/dev/null
    # We run our own redis-server instances (deploy/local/redis*.sh) on other ports; the
    # Debian service is not used by anything here, so do not leave it running on 6379.
    if $redis_was_missing && systemd_active; then
      as_root systemctl disable --now redis-server.service >/dev/null 2>&1 || true
    fi
  fi
  for p in "${APT_PACKAGES[@]}"; do
    pkg_installed "$p" || die "$p is still not installed"
    log "$p ok ($(pkg_version "$p"))"
  done
}

# install_pulsar downloads the distribution tarball with Maven (cached) and extracts it once.
# The extracted tree is treated as read-only by pulsar.sh (it copies conf/ to its state dir).
install_pulsar() {
  local dist="$CACHE_DIR/apache-pulsar-$PULSAR_VERSION"
  local tarball="$CACHE_DIR/pulsar-server-distribution-$PULSAR_VERSION-bin.tar.gz"
  local marker="$dist/.switchboard-extracted"
  if [[ -f "$marker" && -x "$dist/bin/pulsar" ]]; then
    log "pulsar $PULSAR_VERSION ok ($dist)"
    return
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed to download Pulsar)"
  mkdir -p "$CACHE_DIR"
  if [[ ! -s "$tarball" ]] || ! gzip -t "$tarball" 2>/dev/null; then
    log "downloading org.apache.pulsar:pulsar-server-distribution:$PULSAR_VERSION (tar.gz, bin)"
    local dl="$CACHE_DIR/.download.$$"
    rm -rf "$dl" && mkdir -p "$dl"
    # Run outside any project so Maven does not pick up a pom.xml from the working directory.
    (cd "$dl" && mvn -q -B -Dstyle.color=never "$MVN_DEPENDENCY_PLUGIN:copy" \
      -Dartifact="org.apache.pulsar:pulsar-server-distribution:$PULSAR_VERSION:tar.gz:bin" \
      -DoutputDirectory="$dl" -Dmdep.overWriteReleases=true </dev/null) \
      || { rm -rf "$dl"; die "maven could not fetch pulsar-server-distribution $PULSAR_VERSION"; }
    mv -f "$dl/pulsar-server-distribution-$PULSAR_VERSION-bin.tar.gz" "$tarball"
    rm -rf "$dl"
  fi
  local tmp="$CACHE_DIR/.extract.$$"
  rm -rf "$tmp" "$dist" && mkdir -p "$tmp"
  tar -xzf "$tarball" -C "$tmp"
  [[ -x "$tmp/apache-pulsar-$PULSAR_VERSION/bin/pulsar" ]] || die "unexpected tarball layout in $tarball"
  mv "$tmp/apache-pulsar-$PULSAR_VERSION" "$dist"
  rm -rf "$tmp"
  date -u +%FT%TZ >"$marker"
  log "pulsar $PULSAR_VERSION ok ($dist, freshly extracted)"
}

# go_tool_ok reports whether bin was built from module path at version (go version -m).
go_tool_ok() {
  local bin="$1" pkg="$2" version="$3"
  [[ -x "$bin" ]] || return 1
  go version -m "$bin" 2>/dev/null | awk -v p="$pkg" -v v="$version" \
    '$1 == "path" && $2 == p { path = 1 } $1 == "mod" && $3 == v { mod = 1 } END { exit !(path && mod) }'
}

install_go_tools() {
  command -v go >/dev/null 2>&1 || die "go not found"
  local gobin spec pkg version name
  gobin="$(go env GOBIN)"
  [[ -n "$gobin" ]] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
  for spec in "${GO_TOOLS[@]}"; do
    pkg="${spec%@*}" version="${spec##*@}" name="${pkg##*/}"
    if ! go_tool_ok "$gobin/$name" "$pkg" "$version"; then
      log "go install $spec"
      (cd / && GOWORK=off GOFLAGS= GOBIN="$gobin" go install "$spec" </dev/null) \
        || die "go install $spec failed"
      go_tool_ok "$gobin/$name" "$pkg" "$version" || die "$gobin/$name is not $spec after go install"
    fi
    log "$name ok ($version, $gobin/$name)"
  done
}

main() {
  mkdir -p "$CACHE_DIR"
  # Serialise concurrent runs (e.g. two checkouts on one machine) around the shared cache.
  exec 9>"$CACHE_DIR/.install.lock"
  flock -w 1800 9 || die "timed out waiting for $CACHE_DIR/.install.lock"
  install_apt_packages
  install_pulsar
  install_go_tools
}

main "$@"
