#!/usr/bin/env bash
# The watchdog: a policy that stalls the loop in Lua is stopped and quarantined; one that
# stalls it inside C (where no hook reaches) makes the daemon record it and exit 70; after a
# restart the quarantined policy stays off until its file changes.
source "$(dirname "$0")/../harness/integration.sh"
dir=$tmp
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
start() {
  : > "$log"
  "$VIGIL" run -c "$dir/vigil.conf.lua" 2>"$log" &
  pid=$!
  wait_for 'msg="vigil started"'
}

mkdir -p "$dir/policies"
# Generous budgets so that only the watchdog can stop these loops.
cat > "$dir/vigil.conf.lua" <<LUA
return { listen = "127.0.0.1:0", store = "$dir/vigil.db", repl_socket = "$dir/vigil.sock", policies = "$dir/policies",
         watchdog = "300ms", limits = { instructions = 100000000000, slice = "1h",
         memory = "1GB" } }
LUA
cat > "$dir/policies/spin.lua" <<'LUA'
return { name = "spin", match = {}, every = { loop = { interval = "50ms", run = function()
  while true do end
end } } }
LUA
cat > "$dir/policies/fine.lua" <<'LUA'
return { name = "fine", match = {}, every = { tick = { interval = "100ms", run = function(ctx)
  ctx.log.info("fine tick")
end } } }
LUA
cd "$dir"

echo "a Lua loop that stalls the loop is stopped and its policy quarantined"
start
wait_for 'msg="event loop stalled by policy code: stopping it" vm=spin' 1 5
wait_for 'msg="task killed" vm=spin .*stopped by the watchdog' 1 3
wait_for 'msg="policy disabled" policy=spin reason="quarantined' 1 3
grep -q ' spin$' vigil.db.quarantine || fail "quarantine file does not list spin"
: > "$log.mark"
sleep 0.5
grep -q 'msg="fine tick"' "$log" || fail "the other policy stopped running"
kill -TERM "$pid"; wait "$pid" || true; pid=

echo "after a restart the quarantined policy stays off"
start
wait_for 'policy quarantined by the watchdog: not loaded.*spin.lua' 1 3
grep -q 'msg="policy loaded" policy=fine' "$log" || fail "fine did not load"

echo "editing the file lifts the quarantine"
cat > policies/spin.lua <<'LUA'
return { name = "spin", match = {}, every = { loop = { interval = "1s", run = function() end } } }
LUA
wait_for 'msg="policy loaded" policy=spin' 1 3
kill -TERM "$pid"; wait "$pid" || true; pid=

echo "a stall inside C past the hard limit ends the process with 70 and quarantines"
rm -f vigil.db.quarantine
# Build a 2^23-element table in short slices, then sort it in one C call that takes seconds
# and never reaches a hook. The soft limit sits above the longest slice (the last table
# rehash, ~0.3 s, slower under ASan); the hard limit well below the sort (~5 s).
cat > "$dir/vigil.conf.lua" <<CONF
return { listen = "127.0.0.1:0", store = "$dir/vigil.db", policies = "$dir/policies", watchdog = "1200ms",
         watchdog_hard = "2500ms", limits = { instructions = 100000000000, slice = "1h",
         memory = "1GB" } }
CONF
cat > policies/sorter.lua <<'LUA'
return { name = "sorter", match = {}, every = { sort = { interval = "50ms", run = function()
  local t = {}
  for i = 1, 8388608 do
    t[i] = (i * 7919) % 1000003
    if i % 20000 == 0 then vigil.sleep(0) end
  end
  table.sort(t)
end } } }
LUA
rm -f policies/fine.lua policies/spin.lua
: > "$log"
rc=0
timeout 60 "$VIGIL" run -c "$dir/vigil.conf.lua" 2>"$log" || rc=$?
[[ $rc == 70 ]] || fail "expected exit status 70, got $rc"
grep -q 'event loop stuck in C code past the hard limit' "$log" || fail "no hard-limit log line"
grep -q ' sorter$' vigil.db.quarantine || fail "sorter not quarantined"
echo "ok"
