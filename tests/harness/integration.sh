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
#   start_alerting VIGIL_URL GROUP_BY PROMPORT [SCRAPE]
#                                        Alertmanager (every alert to VIGIL_URL's webhook,
#                                        grouped by GROUP_BY, e.g. "alertname, pod"), a
#                                        Pushgateway and Prometheus on PROMPORT (rules.yml of the
#                                        current directory; also scrapes SCRAPE, host:port), all
#                                        on loopback; sets amport and pgport, adds to pids
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

start_alerting() {
  local vigil_url=$1 group_by=$2 prom_port=$3 scrape=${4:-}
  amport=$(free_port) pgport=$(free_port)
  cat > am.yml <<YML
route:
  receiver: vigil
  group_by: [$group_by]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: vigil
    webhook_configs:
      - url: $vigil_url/api/v1/alertmanager
        send_resolved: true
YML
  prometheus-alertmanager --config.file=am.yml --storage.path="$tmp/am" \
    --web.listen-address="127.0.0.1:$amport" --cluster.listen-address="" 2>am.log &
  pids+=($!)
  prometheus-pushgateway --web.listen-address="127.0.0.1:$pgport" 2>pg.log &
  pids+=($!)
  cat > prom.yml <<YML
global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: [rules.yml]
alerting:
  alertmanagers: [{ static_configs: [{ targets: ["127.0.0.1:$amport"] }] }]
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs: [{ targets: ["127.0.0.1:$pgport"] }]
YML
  if [[ -n $scrape ]]; then
    printf '  - job_name: extra\n    static_configs: [{ targets: ["%s"] }]\n' "$scrape" >> prom.yml
  fi
  # Alertmanager first, and a short resend delay: otherwise the first notification is dropped
  # and the next comes a minute later.
  until_ok 20 curl -sf "http://127.0.0.1:$amport/-/ready"
  until_ok 20 curl -sf "http://127.0.0.1:$pgport/-/ready"
  prometheus --config.file=prom.yml --storage.tsdb.path="$tmp/prom" \
    --web.listen-address="127.0.0.1:$prom_port" --rules.alert.resend-delay=1s 2>prom.log &
  pids+=($!)
  until_ok 30 curl -sf "http://127.0.0.1:$prom_port/-/ready"
}
