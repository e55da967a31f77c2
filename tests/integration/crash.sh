#!/usr/bin/env bash
# G1 under fire: vigil is killed with SIGKILL at random moments while a client posts alerts,
# 30 rounds (VIGIL_CRASH_ROUNDS to change); afterwards every alert that was answered 2xx is in
# the store and the database passes PRAGMA integrity_check. Then write errors are injected on
# every fsync/fdatasync (strace): the client gets 503s, never a 2xx for an alert that is not
# stored.
source "$(dirname "$0")/../harness/integration.sh"
rounds=${VIGIL_CRASH_ROUNDS:-30}
pid=
# under strace, $pid is strace's and the daemon is its child: both must go, or the daemon
# outlives the test holding its output open
on_exit '[[ -n "$pid" ]] && kill -9 $(pgrep -P "$pid") "$pid" 2>/dev/null'
cd "$tmp"
mkdir -p policies
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
         repl_socket = "$tmp/vigil.sock" }
LUA
loadgen() { /usr/bin/python3 "$VIGIL_SOURCE_DIR/tests/harness/loadgen.py" "$@"; }
start() {
  : > "$log"
  "$@" "$VIGIL" run -c vigil.conf.lua 2>"$log" &
  pid=$!
  wait_for 'msg="vigil started"' 1 30
  port=$(daemon_port)
}

echo "kill -9 at random moments under load, $rounds rounds"
seq=0
: > acked.txt
for ((r = 1; r <= rounds; r++)); do
  start
  loadgen "$port" acked.txt "$seq" 10 30 > load.out &
  lg=$!
  sleep "0.$((RANDOM % 8 + 2))"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
  wait "$lg" || true
  seq=$(sed -n 's/^next=//p' load.out)
  [[ -n $seq ]] || fail "round $r: the load generator failed: $(cat load.out)"
done
acked=$(LC_ALL=C sort -u acked.txt | wc -l)
((acked > 0)) || fail "no alert was ever acknowledged"

echo "every acknowledged alert is in the store ($acked of them)"
[[ $(sqlite3 vigil.db 'PRAGMA integrity_check') == ok ]] || fail "integrity_check failed"
start
curl -sf "http://127.0.0.1:$port/api/v1/alerts?filter=alertname%3D%22Load%22&limit=100000" |
  grep -o '"seq":"[0-9]*"' | grep -o '[0-9]*' | LC_ALL=C sort -u > stored.txt
missing=$(comm -23 <(LC_ALL=C sort -u acked.txt) stored.txt | wc -l)
((missing == 0)) || fail "$missing acknowledged alerts are missing, e.g. $(comm -23 <(LC_ALL=C sort -u acked.txt) stored.txt | head -3 | tr '\n' ' ')"
kill -TERM "$pid"
wait "$pid" || true
pid=

echo "write errors on fsync give 503s, never a 2xx for an alert that is not stored"
command -v strace >/dev/null || fail "strace is missing (make test installs it)"
: > acked_io.txt
# Let the start-up commits through, then fail every sync from the 20th on.
start strace -f -qq -o /dev/null -e trace=fsync,fdatasync \
  -e inject=fsync,fdatasync:error=EIO:when=20+
loadgen "$port" acked_io.txt 1000000 10 4 > load_io.out &
lg=$!
# while commits fail, /readyz says so (it turns 200 again after any commit that succeeds)
unready=0
for _ in $(seq 40); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz") == 503 ]] &&
    unready=1 && break
  sleep 0.1
done
wait "$lg" || true
grep -q '503=' load_io.out || fail "no 503 under injected I/O errors: $(cat load_io.out)"
((unready)) || fail "readyz never said 503 while the store could not commit"
kill -9 $(pgrep -P "$pid") "$pid" # the traced daemon, then strace
wait "$pid" 2>/dev/null || true
pid=
start
curl -sf "http://127.0.0.1:$port/api/v1/alerts?filter=alertname%3D%22Load%22&limit=100000" |
  grep -o '"seq":"[0-9]*"' | grep -o '[0-9]*' | LC_ALL=C sort -u > stored_io.txt
missing=$(comm -23 <(LC_ALL=C sort -u acked_io.txt) stored_io.txt | wc -l)
((missing == 0)) || fail "$missing alerts answered 2xx under I/O errors are not stored"
[[ $(sqlite3 vigil.db 'PRAGMA integrity_check') == ok ]] || fail "integrity_check after I/O errors"
kill -TERM "$pid"
wait "$pid" || true
pid=
echo "ok ($(cat load_io.out | head -1))"
