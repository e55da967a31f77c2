#!/usr/bin/env bash
# What detectors and log analysers learn survives restarts (DESIGN.md §4): a named series fed
# by a policy and a log analyser fed through POST /api/v1/logs are written to the store's
# snapshots (every snapshot_interval and at a clean stop) and restored before the policies
# load, so the next start goes on from where it stopped: the series keeps counting, a log
# pattern seen before the restart is not new after it, and a named isolation forest fitted
# before the restart scores the same after it, without a fit. After a kill -9, what was written at the
# last interval comes back. A blob the engine refuses is logged and that object starts afresh;
# nothing else is lost.
source "$(dirname "$0")/../harness/integration.sh"
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
cd "$tmp"
mkdir -p policies
cat > policies/learn.lua <<'LUA'
return { name = "learn", match = { team = "persist" }, on_alert = function(alert, ctx)
  local s = vigil.detect.series("checkout-latency", { kind = "ewma" })
  s:update(tonumber(alert.labels.v))
  local st = s:state()
  ctx.log.info(("learned n=%d updates=%d"):format(st.n, st.updates))
end }
LUA
cat > policies/patterns.lua <<'LUA'
return { name = "patterns", match = { team = "logs" }, on_alert = function(alert, ctx)
  local a = vigil.logs.analyser("checkout")
  ctx.log.info(("patterns %s templates=%d new=%d"):format(alert.labels.n, a:stats().templates,
    #a:new_templates({ since = 0 })))
end }
LUA
cat > policies/forest.lua <<'LUA'
return { name = "forest", match = { team = "forest" }, on_alert = function(alert, ctx)
  local f = vigil.detect.iforest({ name = "checkout", n_estimators = 50, random_state = 3 })
  if alert.labels.phase == "fit" then
    local rows, seed = {}, 17 -- 300 rows of 2 features in [0, 1), the same every run
    for i = 1, 300 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      local x = seed / 2147483648
      seed = (seed * 1103515245 + 12345) % 2147483648
      rows[i] = { x, seed / 2147483648 }
    end
    f:fit(rows)
  end
  local info = f:info()
  ctx.log.info(("forest %s fitted=%s fits=%d trees=%d features=%d score=%.6f"):format(
    alert.labels.phase, tostring(info.fitted), info.fits, info.n_estimators, info.n_features,
    f:score({ { 4, -3 } })[1]))
end }
LUA
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
         repl_socket = "$tmp/vigil.sock", snapshot_interval = "1s" }
LUA
# feed FROM TO: one alert per value, each a new alert (its own fingerprint)
feed() {
  local batch
  batch=$(for n in $(seq "$1" "$2"); do
    printf '{"labels":{"alertname":"Latency","team":"persist","n":"%s","v":"%s"}}\n' "$n" "$((100 + n % 7))"
  done | paste -sd, -)
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "$base/api/v2/alerts" --data-binary "[$batch]")
  [[ $code == 200 ]] || fail "POST answered $code"
}
# ask N: the patterns policy reports what the checkout analyser knows
ask() {
  curl -s -o /dev/null -XPOST -H 'Content-Type: application/json' "$base/api/v2/alerts" \
    --data-binary "[{\"labels\":{\"alertname\":\"Ask\",\"team\":\"logs\",\"n\":\"$1\"}}]"
}
logs() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Content-Type: application/x-ndjson' \
    "$base/api/v1/logs?analyser=checkout" --data-binary "$1")
  [[ $code == 202 ]] || fail "POST /api/v1/logs answered $code"
}
now=$(date +%s)
stop() {
  kill -TERM "$pid"
  wait "$pid" || fail "the daemon did not stop cleanly"
  pid=
}
# forest PHASE: the forest policy fits (PHASE=fit) or only scores the outlier
forest() {
  curl -s -o /dev/null -XPOST -H 'Content-Type: application/json' "$base/api/v2/alerts" \
    --data-binary "[{\"labels\":{\"alertname\":\"Forest\",\"team\":\"forest\",\"phase\":\"$1\"}}]"
}
stored() { sqlite3 vigil.db "SELECT count(*) FROM snapshots WHERE kind = 'series' AND name = 'checkout-latency'"; }

echo "first start: nothing to restore; 40 points learned, a forest fitted, written at the clean stop"
start_daemon
(($(count 'msg="learned state restored" objects=0 refused=0') == 1)) || fail "no empty restore line"
feed 1 40
wait_for 'msg="learned n=40 updates=40"' 1 10
logs "{\"line\": \"payment gateway timeout after 30s\", \"ts\": $now, \"level\": \"error\"}
{\"line\": \"order 1001 paid in 35ms\", \"ts\": $now}
{\"line\": \"order 1002 paid in 12ms\", \"ts\": $now}"
ask 1
wait_for 'msg="patterns 1 templates=2 new=2"' 1 10
forest fit
wait_for 'msg="forest fit fitted=true fits=1 trees=50 features=2 score=' 1 10
score=$(grep -o 'msg="forest fit fitted=true fits=1 [^"]*' "$log" | grep -o 'score=[0-9.]*')
[[ $score =~ ^score=0\.[0-9]{6}$ ]] || fail "no score logged: '$score'"
stop
[[ $(stored) == 1 ]] || fail "the series was not written at the stop"
[[ $(sqlite3 vigil.db "SELECT count(*) FROM snapshots WHERE kind = 'logs' AND name = 'checkout'") == 1 ]] ||
  fail "the analyser was not written at the stop"
[[ $(sqlite3 vigil.db "SELECT count(*) FROM snapshots WHERE kind = 'forests' AND name = 'checkout'") == 1 ]] ||
  fail "the named forest was not written at the stop"

echo "second start: the series comes back and goes on from 40; the forest scores as before"
start_daemon
(($(count 'msg="learned state restored" objects=3 refused=0') == 1)) ||
  fail "the series, the analyser and the forest were not restored"
restored_at=$(grep -n 'msg="learned state restored"' "$log" | cut -d: -f1)
loaded_at=$(grep -n 'msg="vigil started"' "$log" | cut -d: -f1)
((restored_at < loaded_at)) || fail "restored after the start, when a policy may have run"
feed 41 41
wait_for 'msg="learned n=41 updates=41"' 1 10
ask 2
wait_for 'msg="patterns 2 templates=2 new=2"' 1 10
logs "{\"line\": \"order 1003 paid in 8ms\", \"ts\": $((now + 1))}"
ask 3
wait_for 'msg="patterns 3 templates=2 new=2"' 1 10 # a known pattern is not new again
forest score # no fit in this run: the restored model
wait_for "msg=\"forest score fitted=true fits=0 trees=50 features=2 $score\"" 1 10

echo "kill -9: what the last interval wrote comes back"
feed 42 45
wait_for 'msg="learned n=45 updates=45"' 1 10
sleep 2.5 # two intervals: the change of 41..45 is written
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
pid=
start_daemon
feed 46 46
wait_for 'msg="learned n=46 updates=46"' 1 10
stop

echo "a blob the engine refuses: logged, the series starts afresh, the daemon runs"
sqlite3 vigil.db "UPDATE snapshots SET blob = x'00010203' WHERE name = 'checkout-latency'"
start_daemon
(($(count 'msg="a stored snapshot was refused; it starts afresh" kind=series name=checkout-latency') == 1)) ||
  fail "no refusal logged"
(($(count 'msg="learned state restored" objects=2 refused=1') == 1)) || fail "no refusal counted"
feed 47 47
wait_for 'msg="learned n=1 updates=1"' 1 10
stop
[[ $(stored) == 1 ]] || fail "the fresh series was not written"
echo "ok"
