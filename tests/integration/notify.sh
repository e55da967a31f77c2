#!/usr/bin/env bash
# Notifications and silences as actions, in the daemon in enforce mode. Slack, PagerDuty and the
# signed webhook go to tests/fixtures/receivers.py, a loopback stand-in that validates each
# documented format exactly and answers with the documented errors (no real Slack or PagerDuty
# can be reached from here); silences go to a real Alertmanager from Debian. Checked:
#   - a Slack 429 (with Retry-After) is retried and the message arrives once;
#   - the PagerDuty event carries the incident's dedup_key and passes validation;
#   - a 4xx (Slack's 404 for a disabled webhook) fails at once: it is not retried;
#   - the webhook's HMAC-SHA256 signature verifies at the receiver;
#   - notifications still go out while the kill switch is on;
#   - the silence exists in Alertmanager with the alert's matchers;
#   - secrets (the Slack URL path, the routing key, the signing secret) are not in the ledger.
source "$(dirname "$0")/../harness/integration.sh"
command -v prometheus-alertmanager >/dev/null || fail "prometheus-alertmanager is missing (make test installs it)"
pids=()
on_exit 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done'
cd "$tmp"
mkdir -p policies

/usr/bin/python3 "$VIGIL_SOURCE_DIR/tests/fixtures/receivers.py" --log "$tmp/received.jsonl" \
  --slack-429 1 --retry-after 1 --hook-secret hook-secret-123 > rport.txt 2> receivers.err &
pids+=($!)
until_ok 10 test -s rport.txt
rport=$(head -1 rport.txt)

amport=$(free_port)
cat > am.yml <<'YML'
route: { receiver: none }
receivers: [ { name: none } ]
YML
prometheus-alertmanager --config.file=am.yml --storage.path="$tmp/am" \
  --web.listen-address="127.0.0.1:$amport" --cluster.listen-address="" 2> am.log &
pids+=($!)
until_ok 20 curl -sf "http://127.0.0.1:$amport/-/ready"

routing_key=R0123456789abcdef0123456789abcde
cat > vigil.conf.lua <<LUA
return {
  listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
  repl_socket = "$tmp/vigil.sock",
  executor = { mode = "enforce" },
}
LUA
cat > policies/notify.lua <<LUA
local R = "http://127.0.0.1:$rport"
return {
  name = "notify",
  match = { alertname = "DiskFull" },
  on_alert = function(alert)
    local function report(what, r, err)
      vigil.log.info("sent", { what = what, state = r and r.state or "nil",
        attempts = r and r.attempts or 0, status = r and r.status or 0,
        error = r and r.error or err or "" })
    end
    report("slack", vigil.actions.slack{ alert = alert,
      webhook = R .. "/slack/T000/B000/secretpath", text = "disk full on " .. alert.labels.host,
      title = "DiskFull", severity = "critical", fields = { host = alert.labels.host } })
    report("pagerduty", vigil.actions.pagerduty{ alert = alert, url = R .. "/v2/enqueue",
      routing_key = "$routing_key", action = "trigger",
      dedup_key = vigil.notify.dedup_key({ id = alert.incident }),
      summary = "disk full on " .. alert.labels.host, source = alert.labels.host,
      severity = "critical" })
    report("slack-gone", vigil.actions.slack{ alert = alert, target = "slack-gone",
      webhook = R .. "/slack/disabled/T000/B000", text = "to a disabled webhook" })
    report("webhook", vigil.actions.webhook{ alert = alert, url = R .. "/hook",
      payload = { alert = alert.name, host = alert.labels.host }, secret = "hook-secret-123" })
    report("silence", vigil.actions.silence{ alert = alert, url = "http://127.0.0.1:$amport",
      by = { "alertname", "host" }, duration = "1h", comment = "vigil: known disk issue",
      created_by = "vigil" })
  end,
}
LUA

"$VIGIL" run -c vigil.conf.lua 2> "$log" &
pids+=($!)
wait_for 'msg="vigil started"' 1 30
base="http://127.0.0.1:$(daemon_port)"
curl -sf -XPOST "$base/api/v1/kill-switch" -H 'Content-Type: application/json' -d '{"on": true}' >/dev/null
curl -sf -XPOST "$base/api/v2/alerts" -H 'Content-Type: application/json' \
  -d '[{"labels": {"alertname": "DiskFull", "host": "db-1", "severity": "critical"}}]' >/dev/null
wait_for 'what=silence' 1 30

line() { grep 'msg=sent' "$log" | grep -E "what=$1( |\$)"; }
echo "Slack: a 429 is retried; the message arrives once"
line slack | grep -q 'state=done' || fail "slack: $(line slack)"
line slack | grep -q 'attempts=2' || fail "slack was not retried after the 429: $(line slack)"
n=$(grep -c '"receiver": "slack"' received.jsonl || true)
[[ $n == 1 ]] || fail "slack received $n messages"

echo "PagerDuty: a valid event with the incident's dedup_key"
line 'pagerduty' | grep -q 'state=done' || fail "pagerduty: $(line pagerduty)"
/usr/bin/python3 - "$tmp/received.jsonl" <<'PY' || fail "the PagerDuty event is not as documented"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if '"pagerduty"' in l]
assert len(events) == 1, events
e = events[0]["json"]
assert e["event_action"] == "trigger"
assert e["dedup_key"].startswith("vigil-incident-"), e["dedup_key"]
assert e["payload"]["severity"] == "critical" and e["payload"]["source"] == "db-1"
PY
echo "a 4xx (Slack's 404 no_service for a disabled webhook) fails at once: not retried"
line slack-gone | grep -q 'state=failed' || fail "a disabled webhook did not fail: $(line slack-gone)"
line slack-gone | grep -q 'attempts=1' || fail "a 404 was retried: $(line slack-gone)"
line slack-gone | grep -q 'status=404' || fail "no 404: $(line slack-gone)"

echo "webhook: the HMAC signature verifies"
line webhook | grep -q 'state=done' || fail "webhook: $(line webhook)"
grep '"receiver": "hook"' received.jsonl | grep -q 'x-vigil-signature' || fail "unsigned webhook"

echo "notifications went out with the kill switch on (it stops actions, not pages)"
curl -sf "$base/api/v1/kill-switch" | grep -q '"on":true' || fail "the kill switch was not on"

echo "the silence exists in Alertmanager, and the kill switch did stop it (it is an action)"
line silence | grep -q 'EKILLSWITCH' || fail "the silence ran under the kill switch: $(line silence)"
curl -sf -XPOST "$base/api/v1/kill-switch" -H 'Content-Type: application/json' -d '{"on": false}' >/dev/null
curl -sf -XPOST "$base/api/v2/alerts" -H 'Content-Type: application/json' \
  -d '[{"labels": {"alertname": "DiskFull", "host": "db-2", "severity": "critical"}}]' >/dev/null
wait_for 'what=silence' 2 30
grep 'what=silence' "$log" | tail -1 | grep -q 'state=done' || fail "silence: $(grep 'what=silence' "$log" | tail -1)"
silences=$(curl -sf "http://127.0.0.1:$amport/api/v2/silences")
/usr/bin/python3 - "$silences" <<'PY' || fail "no such silence in Alertmanager: $silences"
import json, sys
ss = [s for s in json.loads(sys.argv[1]) if s["status"]["state"] == "active"]
assert len(ss) == 1, ss
m = {x["name"]: x["value"] for x in ss[0]["matchers"]}
assert m == {"alertname": "DiskFull", "host": "db-2"}, m
assert ss[0]["createdBy"] == "vigil" and ss[0]["comment"] == "vigil: known disk issue"
PY

echo "secrets are not in the ledger, nor in the log"
sqlite3 vigil.db "SELECT command || coalesce(output, '') || coalesce(error, '') FROM actions" > ledger.txt
sqlite3 vigil.db "SELECT coalesce(detail, '') FROM audit" >> ledger.txt
for secret in secretpath "$routing_key" hook-secret-123; do
  if grep -q -- "$secret" ledger.txt; then fail "'$secret' is in the ledger"; fi
  if grep -q -- "$secret" "$log"; then fail "'$secret' is in the log"; fi
done
echo ok
