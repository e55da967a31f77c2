#!/usr/bin/env bash
# POST /api/v1/logs end to end: JSON lines and JSON arrays into named analysers, the per-line
# errors (a bad line loses no good one), the status codes, the registry's cap, analysers
# declared in the config (logs.analysers), what a policy then sees through
# vigil.logs.analyser (the same C state), and the metric.
source "$(dirname "$0")/../harness/integration.sh"
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
cd "$tmp"
mkdir -p policies
cat > policies/logcheck.lua <<'LUA'
return { name = "logcheck", match = { alertname = "LogCheck" }, on_alert = function(_, ctx)
  local a = vigil.logs.analyser("checkout")
  local _, errors, lines = a:error_rate()
  local new = a:new_templates()
  local top = a:top_errors(1)[1]
  ctx.log.info(("checkout lines=%d errors=%d new=%d window=%d top=%s"):format(
    lines, errors, #new, a:options().window, top and top.template or "-"))
  local ok = pcall(vigil.logs.analyser, "checkout", { window = "1h" })
  ctx.log.info("other options " .. (ok and "accepted" or "refused"))
end }
LUA
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
         repl_socket = "$tmp/vigil.sock", token = env "TEST_TOKEN",
         logs = { analysers = { checkout = { window = "30m", spike_min = 2 } } } }
LUA
export TEST_TOKEN=s3cret-token

echo "a bad logs.analysers option is refused by vigil check, naming it"
cat > bad.conf.lua <<'LUA'
return { logs = { analysers = { checkout = { spike_factr = 3 } } } }
LUA
rc=0
out=$("$VIGIL" check -c bad.conf.lua 2>&1) || rc=$?
[[ $rc != 0 && $out == *"unknown key 'logs.analysers.checkout.spike_factr'"* ]] ||
  fail "bad option: rc=$rc $out"
cat > bad.conf.lua <<'LUA'
return { logs = { analysers = { checkout = { window = "10s" } } } }
LUA
rc=0
out=$("$VIGIL" check -c bad.conf.lua 2>&1) || rc=$?
[[ $rc != 0 && $out == *"logs.analysers.checkout: option 'window' must be 1 minute to 1 day"* ]] ||
  fail "bad window: rc=$rc $out"

start_daemon
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
auth=(-H "Authorization: Bearer $TEST_TOKEN")

# post TYPE PATH BODY: sets $code and $body
post() {
  body=$(curl -sS -o - -w '\n%{http_code}' -XPOST "${auth[@]}" -H "Content-Type: $1" "$base$2" \
    --data-binary "$3")
  code=${body##*$'\n'}
  body=${body%$'\n'*}
}
expect() { [[ $code == "$1" ]] || fail "$2: got $code, want $1: $body"; }

echo "JSON lines: the good lines are taken, the bad ones listed with their line numbers"
post application/x-ndjson /api/v1/logs '{"analyser":"checkout","line":"ERROR payment gateway timeout after 30s","level":"error"}
{"analyser":"checkout","line":
{"analyser":"checkout","line":"INFO order 1001 paid in 35ms","ts":"2026-01-01T00:00:00Z"}

{"analyser":"checkout"}
{"analyser":"checkout","line":"ERROR payment gateway timeout after 31s","ts":"soon"}
[1,2]
{"analyser":"checkout","line":"ERROR payment gateway timeout after 32s","service":"pay"}'
expect 202 "ndjson"
[[ $body == '{"status":"accepted","accepted":3,"rejected":4,"errors":["line 2: malformed JSON'*'","line 5: line: a string is required","line 6: ts: not RFC 3339 or unix seconds","line 7: not a JSON object"]}' ]] ||
  fail "ndjson body: $body"

echo "a JSON array, with the analyser in the query; ts as unix seconds"
now=$(date +%s)
post application/json '/api/v1/logs?analyser=checkout' "[
  {\"line\": \"INFO order 1002 paid in 12ms\", \"ts\": $now},
  {\"line\": \"INFO order 1003 paid in 14ms\", \"ts\": \"$now\"},
  {\"line\": \"   \"}]"
expect 202 "array"
[[ $body == '{"status":"accepted","accepted":3,"rejected":0,"errors":[]}' ]] ||
  fail "array body: $body"

echo "nothing valid: 400 with the reasons; other shapes, types, methods and no token"
post application/x-ndjson /api/v1/logs '{"line":"no analyser named anywhere"}'
expect 400 "no analyser"
[[ $body == '{"status":"error","error":"no valid log line","accepted":0,"rejected":1,"errors":["line 1: analyser: required (in the line or ?analyser=)"]}' ]] ||
  fail "no analyser body: $body"
post application/x-ndjson /api/v1/logs ''
expect 400 "empty"
[[ $body == *'"error":"no log lines in the request"'* ]] || fail "empty body: $body"
post application/json /api/v1/logs '{"analyser":"checkout","line":"x"}'
expect 400 "object"
[[ $body == '{"status":"error","error":"the body must be a JSON array of log lines"}' ]] ||
  fail "object body: $body"
post application/json '/api/v1/logs?analyzer=x' '[]'
expect 400 "unknown parameter"
post text/plain /api/v1/logs 'ERROR plain text'
expect 415 "text/plain"
code=$(curl -sS -o /dev/null -w '%{http_code}' -XPOST -H 'Content-Type: application/x-ndjson' \
  "$base/api/v1/logs" --data-binary '{"analyser":"checkout","line":"x"}')
[[ $code == 401 ]] || fail "no token: $code"
code=$(curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" "$base/api/v1/logs")
[[ $code == 405 ]] || fail "GET: $code"

echo "the registry's cap: lines past it are refused one by one with a clear error"
python3 - > many.ndjson <<'PY'
import json
for i in range(300):
    print(json.dumps({"analyser": "svc-%03d" % i, "line": "INFO started worker %d" % i}))
PY
post application/x-ndjson /api/v1/logs "$(cat many.ndjson)"
expect 202 "many analysers"
# checkout (from the config) and 255 of these fill the 256 places
[[ $body == '{"status":"accepted","accepted":255,"rejected":45,"errors":["line 256: analyser \"svc-255\" cannot be created: full: at most 256 log analysers",'* ]] ||
  fail "cap body: ${body:0:300}"
post application/x-ndjson /api/v1/logs '{"analyser":"svc-001","line":"INFO still there"}'
expect 202 "existing analyser past the cap"

echo "a policy sees the same analyser, with the options of the config"
post application/json /api/v2/alerts '[{"labels":{"alertname":"LogCheck"}}]'
expect 200 "alert"
wait_for 'msg="checkout lines=4 errors=2 new=1 window=1800 top=ERROR payment gateway timeout after <\*>"' 1 10
wait_for 'msg="other options refused"' 1 5

echo "/metrics counts the lines"
body=$(curl -sS "${auth[@]}" "$base/metrics")
grep -q '^vigil_log_lines_total{outcome="accepted"} 262$' <<<"$body" ||
  fail "metrics: $(grep log_lines <<<"$body")"
grep -q '^vigil_log_lines_total{outcome="rejected"} 50$' <<<"$body" ||
  fail "metrics: $(grep log_lines <<<"$body")"

kill -TERM "$pid"
wait "$pid" || fail "the daemon did not stop cleanly"
pid=
echo "ok"
