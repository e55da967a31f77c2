#!/usr/bin/env bash
# The sidecar case: the config declares an analyser with `tail = "<file>"`; the daemon follows
# the file (from its end at start, through a rename + create rotation and a copytruncate) and
# every line it reads reaches the analyser that policies query by name. A bad `tail` stops the
# config with its line; a file that does not exist yet is waited for.
source "$(dirname "$0")/../harness/integration.sh"
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
cd "$tmp"
mkdir -p policies
cat > policies/patterns.lua <<'LUA'
return { name = "patterns", match = { team = "logs" }, on_alert = function(alert, ctx)
  local a = vigil.logs.analyser("checkout")
  local st = a:stats()
  local rate, errors = a:error_rate()
  ctx.log.info(("patterns %s lines=%d templates=%d errors=%d"):format(alert.labels.n, st.lines,
    st.templates, errors))
end }
LUA
conf() {
  cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
         repl_socket = "$tmp/vigil.sock",
         logs = { analysers = { checkout = { tail = $1 } } } }
LUA
}
ask() {
  curl -s -o /dev/null -XPOST -H 'Content-Type: application/json' "$base/api/v2/alerts" \
    --data-binary "[{\"labels\":{\"alertname\":\"Ask\",\"team\":\"logs\",\"n\":\"$1\"}}]"
}
# until_seen N WANT: asks as N until the policy reports WANT (the tail reads within ~1 s)
until_seen() {
  for i in $(seq 1 30); do
    ask "$1.$i"
    sleep 0.2
    if grep -q "msg=\"patterns $1.$i $2\"" "$log"; then return 0; fi
  done
  fail "the analyser never reported '$2' (last: $(grep -o 'msg="patterns [^"]*"' "$log" | tail -1))"
}
stop() {
  kill -TERM "$pid"
  wait "$pid" || fail "the daemon did not stop cleanly"
  pid=
}

echo "a relative or non-string tail stops the config with its line"
conf '"app.log"'
out=$("$VIGIL" check -c vigil.conf.lua 2>&1) && fail "a relative tail was accepted"
[[ $out == *"logs.analysers.checkout.tail must be an absolute file path"* ]] || fail "unclear: $out"
conf '42'
"$VIGIL" check -c vigil.conf.lua >/dev/null 2>&1 && fail "a numeric tail was accepted"

echo "the file is followed from its end; new lines reach the analyser"
printf 'INFO old line before the start 1\nINFO old line before the start 2\n' > app.log
conf "\"$tmp/app.log\""
start_daemon
(($(count 'msg="following a log file" analyser=checkout') == 1)) || fail "no tail started"
printf 'INFO order 1001 paid in 35ms\nERROR payment gateway timeout after 30s\n' >> app.log
until_seen 1 "lines=2 templates=2 errors=1"
printf 'INFO order 1002 paid in 12ms\nINFO order 10' >> app.log
until_seen 2 "lines=3 templates=2 errors=1" # the half line waits for its end
printf '03 paid in 9ms\n' >> app.log
until_seen 3 "lines=4 templates=2 errors=1"

echo "rotation (rename + create): lines written just before it are not lost"
printf 'ERROR payment gateway timeout after 31s\n' >> app.log
mv app.log app.log.1
printf 'INFO order 1004 paid in 3ms\n' > app.log
until_seen 4 "lines=6 templates=2 errors=2"

echo "copytruncate: the file starts over and is read from its start"
cp app.log app.log.2
: > app.log
printf 'WARN cache miss for key user:42\n' >> app.log
until_seen 5 "lines=7 templates=3 errors=2"
stop

echo "a file that does not exist yet is waited for"
rm -f app.log
start_daemon
sleep 0.3
printf 'ERROR disk full on /var\n' > app.log
until_seen 6 "lines=8 templates=4 errors=3" # the analyser came back from its snapshot
stop
echo ok
