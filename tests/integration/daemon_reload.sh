#!/usr/bin/env bash
# The daemon end to end: start, hot reload (edit, break, fix, rapid edits, in-flight drain,
# lib change, removal), SIGHUP, and a clean SIGTERM shutdown. Reads the daemon's logfmt
# output; every wait has a deadline.
source "$(dirname "$0")/../harness/integration.sh"
dir=$tmp
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'

mkdir -p "$dir/policies/lib"
cat > "$dir/policies/lib/words.lua" <<'LUA'
return { greeting = "hello" }
LUA
cat > "$dir/policies/greeter.lua" <<'LUA'
local words = require("lib.words")
return {
  name = "greeter",
  match = {},
  every = { say = { interval = "50ms", run = function(ctx) ctx.log.info("greet", { word = words.greeting }) end } },
}
LUA
cat > "$dir/policies/slow.lua" <<'LUA'
return {
  name = "slow",
  match = {},
  every = { work = { interval = "100ms", first = "10ms", run = function(ctx)
    ctx.log.info("work start", { version = "v1" })
    vigil.sleep("600ms")
    ctx.log.info("work end", { version = "v1" })
  end } },
}
LUA
cat > "$dir/vigil.conf.lua" <<LUA
return { listen = "127.0.0.1:0", store = "$dir/vigil.db", repl_socket = "$dir/vigil.sock", drain = "5s",
         reload_debounce = "300ms", log_level = "debug" }
LUA

cd "$dir"
"$VIGIL" run -c vigil.conf.lua --policies policies 2>"$log" &
pid=$!
wait_for 'msg="vigil started"'
grep -q 'policies=2' "$log" || fail "expected 2 policies at start"
wait_for 'msg=greet .*word=hello'

echo "edit: a changed file reloads within a second"
wait_for 'msg="work start" .*version=v1'
sed -i 's/v1/v2/g' policies/slow.lua
start=$SECONDS
wait_for 'msg="policy reloaded" policy=slow .*generation=2' 1 2
echo "in-flight drain: the old version's run finishes after the swap"
wait_for 'msg="work end" .*version=v1' 1 3
wait_for 'msg="work start" .*version=v2' 1 3
wait_for 'msg="old policy version closed"' 1 8

echo "break: a broken file keeps the running version"
before=$(count 'msg="work start" .*version=v2')
echo 'return { name = "slow", match = {' > policies/slow.lua
wait_for 'policy failed to reload: keeping the running version.*slow.lua:2: unexpected symbol near <eof>' 1 3
grep -q 'error="policies/slow.lua:2: ' "$log" || fail "error must say file:line"
sleep 0.5
after=$(count 'msg="work start" .*version=v2')
(( after > before )) || fail "the old version stopped running after a broken edit"

echo "fix: a fixed file loads again"
cat > policies/slow.lua <<'LUA'
return { name = "slow", match = {}, every = { work = { interval = "100ms", run = function(ctx)
  ctx.log.info("work start", { version = "v3" }) end } } }
LUA
wait_for 'msg="policy reloaded" policy=slow .*generation=3' 1 3
wait_for 'msg="work start" .*version=v3' 1 3

echo "unchanged content is a no-op"
gen_lines=$(count 'msg="policy reloaded"')
touch policies/slow.lua policies/greeter.lua
sleep 0.5
[[ $(count 'msg="policy reloaded"') == "$gen_lines" ]] || fail "touching a file reloaded it"

echo "rapid edits are debounced into one reload"
before=$(count 'msg="policies reloaded"')
for i in $(seq 1 10); do
  printf 'return { name = "slow", match = {}, every = { work = { interval = "1s", run = function() end } } } -- %s\n' "$i" > policies/slow.lua
  sleep 0.01
done
sleep 1
n=$(( $(count 'msg="policies reloaded"') - before ))
(( n >= 1 && n <= 2 )) || fail "10 rapid edits caused $n reloads (want 1, at most 2)"

echo "lib change reloads the policies that use it"
echo 'return { greeting = "bonjour" }' > policies/lib/words.lua
wait_for 'msg=greet .*word=bonjour' 1 3

echo "a directory made under lib/ later is watched as well"
mkdir -p policies/lib/net
echo 'return { greeting = "hallo" }' > policies/lib/net/words.lua
sleep 0.8 # the reload that creating it caused has run; lib/net is watched from there on
cat > policies/lib/words.lua <<'LUA'
return require("lib.net.words")
LUA
wait_for 'msg=greet .*word=hallo' 1 3
echo 'return { greeting = "moin" }' > policies/lib/net/words.lua
wait_for 'msg=greet .*word=moin' 1 3

echo "SIGHUP reloads"
echo 'return { name = "third", match = { alertname = "X" }, on_alert = function() end }' > policies/third.lua
kill -HUP "$pid"
wait_for 'msg="policy loaded" policy=third' 1 3

echo "removing a file removes its policy"
rm policies/third.lua
wait_for 'msg="policy removed" policy=third' 1 3

echo "SIGTERM stops cleanly"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
(( rc == 0 )) || fail "daemon exited with $rc on SIGTERM"
grep -q 'msg=stopped' "$log" || fail "no 'stopped' line"
echo "ok"
