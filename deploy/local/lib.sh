# lib.sh — helpers shared by the deploy/local service scripts. Source it; do not run it.
# Callers set SB_COMPONENT (the prefix of every message) before sourcing.
# shellcheck shell=bash

SB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SB_STATE_DIR="${SB_STATE_DIR:-$SB_ROOT/.run}"
export SB_CACHE_DIR="${SB_CACHE_DIR:-$HOME/.cache/switchboard}"
SB_COMPONENT="${SB_COMPONENT:-local}"

log() { printf '%s: %s\n' "$SB_COMPONENT" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$SB_COMPONENT" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$SB_COMPONENT" "$*" >&2; exit 1; }

need() {
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found; run deploy/local/install.sh"
  done
}

# now_ms prints a monotonic-enough wall clock in milliseconds (for deadlines and timings).
now_ms() { date +%s%3N; }

# elapsed_since START_MS prints the seconds since START_MS with one decimal.
elapsed_since() {
  local d=$(($(now_ms) - $1))
  printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}

# wait_until TIMEOUT_S WHAT CMD... polls CMD (quietly) every 200 ms until it succeeds or the
# deadline passes. Returns 1 on timeout. If SB_WAIT_ALIVE_PID is set and that process dies,
# it gives up at once (returns 2): no point waiting for a dead server.
wait_until() {
  local timeout_s="$1" what="$2"
  shift 2
  local deadline=$(($(now_ms) + timeout_s * 1000))
  while true; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n "${SB_WAIT_ALIVE_PID:-}" ]] && ! kill -0 "$SB_WAIT_ALIVE_PID" 2>/dev/null; then
      warn "process $SB_WAIT_ALIVE_PID exited while waiting for $what"
      return 2
    fi
    if (($(now_ms) >= deadline)); then
      warn "timed out after ${timeout_s}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# port_open PORT succeeds when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_matches PID PATTERN succeeds when PID is alive and its command line contains PATTERN
# (guards against a recycled pid from a stale pid file).
pid_matches() {
  local pid="$1" pattern="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  ! pid_gone "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

# pidfile_pid PIDFILE PATTERN prints the pid in PIDFILE if that process is alive and matches.
pidfile_pid() {
  local file="$1" pattern="$2" pid
  [[ -s "$file" ]] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  pid_matches "$pid" "$pattern" || return 1
  printf '%s\n' "$pid"
}

# pid_gone succeeds when PID no longer exists or is a zombie (exited, not yet reaped by its
# parent — possible when PID 1 of a container does not reap orphans).
pid_gone() {
  kill -0 "$1" 2>/dev/null || return 0
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  stat="${stat##*) }"
  [[ "${stat:0:1}" == "Z" ]]
}

# stop_pidfile PIDFILE PATTERN NAME TIMEOUT_S sends TERM to the process in PIDFILE, waits up to
# TIMEOUT_S for it to exit, then sends KILL. Touches nothing but that one pid.
stop_pidfile() {
  local file="$1" pattern="$2" name="$3" timeout_s="$4" pid
  if ! pid="$(pidfile_pid "$file" "$pattern")"; then
    rm -f "$file"
    log "$name not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  if ! SB_WAIT_ALIVE_PID='' wait_until "$timeout_s" "$name (pid $pid) to exit on TERM" pid_gone "$pid"; then
    warn "$name (pid $pid) still alive after ${timeout_s}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    SB_WAIT_ALIVE_PID='' wait_until 10 "$name (pid $pid) to exit on KILL" pid_gone "$pid" ||
      die "$name (pid $pid) survived KILL"
  fi
  rm -f "$file"
  log "$name stopped (pid $pid)"
}

# CLOSE_FDS is a bash snippet that closes every descriptor above 2 of the shell running it.
# Daemons are launched through it so they never inherit a lock file (which would keep a flock
# held forever) or a pipe of whoever started them (which would keep the pipe's reader waiting).
readonly CLOSE_FDS='for _fd in /proc/$$/fd/*; do _fd=${_fd##*/}; if ((_fd > 2)); then eval "exec $_fd>&-" 2>/dev/null || true; fi; done'

# exec_clean CMD... runs CMD with descriptors above 2 closed (see CLOSE_FDS).
exec_clean() { bash -c "$CLOSE_FDS"'; exec "$@"' exec_clean "$@"; }

# tail_log FILE [N] prints the last N lines of a log to stderr, for start-up failures.
tail_log() {
  local file="$1" n="${2:-60}"
  [[ -f "$file" ]] || return 0
  printf '%s: ---- last %d lines of %s ----\n' "$SB_COMPONENT" "$n" "$file" >&2
  tail -n "$n" "$file" >&2 || true
  printf '%s: ---- end of %s ----\n' "$SB_COMPONENT" "$file" >&2
}
