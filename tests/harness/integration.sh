# Shared helpers for tests/integration/*.sh (sourced, not run).
#   VIGIL      the binary under test (absolute path after sourcing)
#   $tmp       a private temporary directory, removed on exit
#   $log       where start_daemon sends the daemon's stderr
#   wait_for PATTERN [COUNT] [SECONDS]   until the log has COUNT lines matching PATTERN
#   count PATTERN                        lines of the log matching PATTERN
#   fail MESSAGE                         prints the message and the log's tail, exits 1
#   on_exit CMD                          runs CMD at exit (before the directory goes)
#   until_ok SECONDS CMD...              until CMD succeeds, or fail
#   free_port                            a loopback port nobody listens on now
#   daemon_port                          the HTTP port of the daemon whose log is $log
#   start_daemon [CONFIG]                vigil run -c CONFIG (vigil.conf.lua) in the background,
#                                        logging to $log; sets pid, port and base (its URL)
set -euo pipefail
VIGIL=$(realpath "${VIGIL:-build/dev/vigil}")
tmp=$(mktemp -d)
log="$tmp/daemon.log"
: > "$log"
_exit_cmds=()
on_exit() { _exit_cmds+=("$1"); }
_cleanup() {
  local c
  for c in "${_exit_cmds[@]}"; do eval "$c" || true; done
  rm -rf "$tmp"
}
trap _cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "---- daemon log (last 30 lines) ----" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

count() { grep -c -- "$1" "$log" 2>/dev/null || true; }

wait_for() {
  local pattern=$1 want=${2:-1} secs=${3:-10}
  local deadline=$((SECONDS + secs))
  while (( SECONDS < deadline )); do
    (( $(count "$pattern") >= want )) && return 0
    sleep 0.05
  done
  fail "timed out after ${secs}s waiting for $want x '$pattern'"
}

until_ok() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "gave up waiting for: $*"
    sleep 0.2
  done
}

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

daemon_port() { sed -n 's/.*msg="vigil started".* port=\([0-9]*\).*/\1/p' "$log"; }

start_daemon() {
  : > "$log"
  "$VIGIL" run -c "${1:-vigil.conf.lua}" 2>"$log" &
  pid=$!
  wait_for 'msg="vigil started"' 1 30
  port=$(daemon_port)
  base="http://127.0.0.1:$port"
}
