#!/usr/bin/env bash
# HTTP intake end to end: every endpoint, every status code the server produces, what is
# stored (and only then answered), what reaches the policies, /metrics, and the CLI client.
source "$(dirname "$0")/../harness/integration.sh"
raw() { /usr/bin/python3 "$VIGIL_SOURCE_DIR/tests/harness/rawhttp.py" "$port" "$@"; }
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
cd "$tmp"
mkdir -p policies
cat > policies/seen.lua <<'LUA'
return { name = "seen", match = { team = "sre" }, on_alert = function(alert, ctx)
  ctx.log.info("seen " .. alert.labels.alertname .. " " .. alert.status)
end }
LUA
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
         repl_socket = "$tmp/vigil.sock", token = env "TEST_TOKEN",
         intake = { max_body = "1MB", header_timeout = "1s", body_timeout = "1s",
                    max_connections = 20 } }
LUA
export TEST_TOKEN=s3cret-token
"$VIGIL" run -c vigil.conf.lua 2>"$log" &
pid=$!
wait_for 'msg="vigil started"'
port=$(daemon_port)
[[ -n $port ]] || fail "no port in the start line"
base="http://127.0.0.1:$port"
auth=(-H "Authorization: Bearer $TEST_TOKEN")
json=(-H 'Content-Type: application/json')

# post PATH BODY: sets $code and $body
post() {
  body=$(curl -sS -o - -w '\n%{http_code}' -XPOST "${auth[@]}" "${json[@]}" "$base$1" \
    --data-binary "$2")
  code=${body##*$'\n'}
  body=${body%$'\n'*}
}
get() {
  body=$(curl -sS -o - -w '\n%{http_code}' "${auth[@]}" "$base$1")
  code=${body##*$'\n'}
  body=${body%$'\n'*}
}
expect() { [[ $code == "$1" ]] || fail "$2: got $code, want $1: $body"; }

echo "POST /api/v2/alerts stores, answers, then runs the matching policy"
post /api/v2/alerts '[{"labels":{"alertname":"HighCPU","team":"sre","severity":"critical"},
  "annotations":{"summary":"CPU"}},{"labels":{"alertname":"Other","team":"db"}}]'
expect 200 "v2"
[[ $body == '{"status":"success","accepted":2}' ]] || fail "v2 body: $body"
wait_for 'msg="seen HighCPU firing"' 1 3
(($(count 'msg="seen Other ') == 0)) || fail "a policy ran for an alert it does not match"

echo "a re-delivery is harmless and does not run the policy again (G2)"
post /api/v2/alerts '[{"labels":{"alertname":"HighCPU","team":"sre","severity":"critical"},
  "annotations":{"summary":"CPU"}}]'
expect 200 "duplicate"
sleep 0.2
(($(count 'msg="seen HighCPU ') == 1)) || fail "the duplicate ran the policy"

echo "GET /api/v1/alerts reads what was stored, with filters"
get '/api/v1/alerts?filter=alertname%3D%22HighCPU%22'
expect 200 "alerts"
[[ $body == *'"fingerprint":"'* && $body == *'"name":"HighCPU"'* && $body != *'"Other"'* ]] ||
  fail "alerts: $body"
get '/api/v1/alerts?status=bogus'
expect 400 "bad status filter"

echo "the webhook (version 4) opens an incident; its resolution resolves it"
hook() {
  cat <<JSON
{"version":"4","groupKey":"{}:{alertname=\"DiskFull\"}","status":"$1","receiver":"vigil",
 "groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am",
 "truncatedAlerts":0,"alerts":[{"status":"$1","labels":{"alertname":"DiskFull","team":"sre",
 "service":"db","severity":"warning"},"annotations":{},"startsAt":"2026-01-01T00:00:00Z",
 "endsAt":"$2","generatorURL":"http://prom","fingerprint":"x"}]}
JSON
}
post /api/v1/alertmanager "$(hook firing 0001-01-01T00:00:00Z)"
expect 200 "webhook"
get '/api/v1/incidents?status=active'
expect 200 "incidents"
[[ $body == *'"groupKey":"alertname=DiskFull,service=db"'* ]] || fail "no incident: $body"
id=$(sed -n 's/.*"id":\([0-9]*\),[^}]*"groupKey":"alertname=DiskFull,service=db".*/\1/p' <<<"$body")
[[ -n $id ]] || fail "no incident id in $body"
post /api/v1/alertmanager "$(hook resolved 2026-01-01T00:10:00Z)"
expect 200 "webhook resolved"
wait_for 'msg="seen DiskFull resolved"' 1 3
get "/api/v1/incidents/$id"
expect 200 "incident"
[[ $body == *'"status":"resolved"'* && $body == *'"timeline":['* ]] || fail "incident: $body"

echo "operators act on incidents; impossible transitions are refused"
post "/api/v1/incidents/$id/close" '{"who":"alice","comment":"done"}'
expect 200 "close"
post "/api/v1/incidents/$id/close" '{"who":"alice"}'
expect 409 "close twice"
post /api/v1/incidents/999999/ack '{}'
expect 404 "unknown incident"

echo "a generic event"
post /api/v1/events '{"name":"Backup","severity":"error","labels":{"team":"sre"},"source":"cron"}'
expect 200 "event"
wait_for 'msg="seen Backup ' 1 3

echo "a partly invalid batch keeps its valid alerts and lists the others"
post /api/v2/alerts '[{"labels":{"alertname":"Good","team":"x"}},{"annotations":{}}]'
expect 400 "partial"
[[ $body == *'"accepted":1'* && $body == *'alert 1: labels: required'* ]] || fail "partial: $body"
get '/api/v1/alerts?filter=alertname%3D%22Good%22'
[[ $body == *'"name":"Good"'* ]] || fail "the valid alert of a partial batch was not stored"

echo "bad input: every status code"
post /api/v2/alerts '[{"labels":'
expect 400 "malformed JSON"
post /api/v2/alerts $'[{"labels":{"a":"\xff"}}]'
expect 400 "invalid UTF-8"
post /api/v2/alerts "$(printf '%0.s[' {1..5000})"
expect 400 "deep nesting"
/usr/bin/python3 -c 'print("[" + ",".join(["{}"] * 60000) + "]")' > many.json
post /api/v2/alerts @many.json
expect 413 "too many alerts"
head -c 2000000 /dev/zero | tr '\0' 'x' | sed 's/^/[{"labels":{"a":"/; s/$/"}}]/' > big.json
post /api/v2/alerts @big.json
expect 413 "body over max_body"
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "${json[@]}" "$base/api/v2/alerts" -d '[]')
[[ $code == 401 ]] || fail "no token: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "${json[@]}" -H 'Authorization: Bearer wrong' \
  "$base/api/v2/alerts" -d '[]')
[[ $code == 401 ]] || fail "wrong token: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "${auth[@]}" "$base/api/v2/alerts" -d '[]')
[[ $code == 415 ]] || fail "form content type: $code"
get /api/v2/nope
expect 404 "unknown path"
code=$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$base/api/v2/alerts")
[[ $code == 405 ]] || fail "GET on a POST endpoint: $code"
[[ $(printf 'POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\n\r\n' | raw send -) == "HTTP/1.1 411 "* ]] ||
  fail "411"
[[ $(printf 'GET /%09000d HTTP/1.1\r\nHost: x\r\n\r\n' 0 | raw send -) == "HTTP/1.1 414 "* ]] ||
  fail "414"
{ printf 'GET /healthz HTTP/1.1\r\n'; for i in $(seq 101); do printf 'X-H%d: v\r\n' "$i"; done
  printf '\r\n'; } > many_headers.txt
[[ $(raw send many_headers.txt) == "HTTP/1.1 431 "* ]] || fail "431"
[[ $(printf 'POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n' |
  raw send -) == "HTTP/1.1 501 "* || $(printf 'POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n' |
  raw send -) == "HTTP/1.1 501 "* ]] || fail "501"
[[ $(printf 'POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n[]' |
  raw send -) == "HTTP/1.1 400 "* ]] || fail "CL+TE smuggling"
[[ $(printf 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n' | raw send -) == "HTTP/1.1 400 "* ]] ||
  fail "obs-fold"
[[ $(printf 'GET /healthz HTTP/1.1\r\nHost: x\rX: y\r\n\r\n' | raw send -) == "HTTP/1.1 400 "* ]] ||
  fail "bare CR"
[[ $(raw slow 5) == "HTTP/1.1 408 "* ]] || fail "slowloris was not cut off"
[[ $(raw flood 40) -ge 15 ]] || fail "connection flood: fewer than 15 of 40 got 503"
kill -0 "$pid" || fail "the daemon died under bad input"

echo "a v2 alert nobody re-sends resolves by itself at its endsAt"
ends=$(date -u -d '+2 seconds' +%Y-%m-%dT%H:%M:%SZ)
post /api/v2/alerts "[{\"labels\":{\"alertname\":\"Expiring\",\"team\":\"sre\"},\"endsAt\":\"$ends\"}]"
expect 200 "expiring alert"
wait_for 'msg="seen Expiring firing"' 1 3
wait_for 'msg="seen Expiring resolved"' 1 8
get '/api/v1/alerts?filter=alertname%3D%22Expiring%22'
[[ $body == *'"status":"resolved"'* ]] || fail "expired alert: $body"

echo "health, readiness, reload, metrics"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/healthz")
[[ $code == 200 ]] || fail "healthz $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")
[[ $code == 200 ]] || fail "readyz $code"
post /-/reload ''
expect 200 "reload"
get /metrics
expect 200 "metrics"
grep -q '^vigil_intake_alerts_total{endpoint="alerts_v2",outcome="new"} [3-9]' <<<"$body" ||
  fail "metrics: new v2 alerts: $(grep alerts_total <<<"$body")"
grep -q '^vigil_intake_alerts_total{endpoint="alerts_v2",outcome="duplicate"} 1$' <<<"$body" ||
  fail "metrics: duplicates"
grep -q '^vigil_http_rejected_total{code="431"} 1$' <<<"$body" || fail "metrics: 431"
grep -q '^vigil_policy_runs_total{policy="seen"} [1-9]' <<<"$body" || fail "metrics: policy runs"
grep -q '^vigil_store_commit_duration_seconds_count [1-9]' <<<"$body" || fail "metrics: commits"
grep -q '^vigil_alerts_expired_total 1$' <<<"$body" || fail "metrics: expired"

echo "the CLI client"
export VIGIL_URL=$base VIGIL_TOKEN=$TEST_TOKEN
out=$("$VIGIL" alerts --status firing) || fail "vigil alerts"
[[ $out == *FINGERPRINT*HighCPU* ]] || fail "vigil alerts: $out"
out=$("$VIGIL" incidents) || fail "vigil incidents"
[[ $out == *"ID"*"closed"* ]] || fail "vigil incidents: $out"
out=$("$VIGIL" incident "$id") || fail "vigil incident"
[[ $out == *timeline:*alice* ]] || fail "vigil incident: $out"
rc=0
"$VIGIL" ack "$id" 2>err.txt || rc=$?
[[ $rc == 1 && $(cat err.txt) == *409* ]] || fail "acking a closed incident: rc=$rc $(cat err.txt)"

kill -TERM "$pid"
wait "$pid" || fail "the daemon did not stop cleanly"
pid=
echo "ok"
