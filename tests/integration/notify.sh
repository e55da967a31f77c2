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
#   - notifiers named in the config: vigil.actions.notify{ to = ... } sends a PagerDuty v2
#     event with the configured routing key (from env), a Slack message with the configured
#     channel and username, a signed webhook with the configured headers; a caller's own
#     routing_key is refused, an unknown notifier is ENONOTIFIER; vigil.core.notifier in the
#     REPL gives the notifier's fields;
#   - secrets (the Slack URL path, the routing key, the signing secret, the notifiers') are not
#     in the ledger, the log or the /api/v1/actions answers.
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
# the notifiers' credentials reach vigil from its environment only
export NOTIFY_PD_KEY=N0tifierKey0123456789abcdef01234 NOTIFY_SLACK_PATH=teamslackpath0042
export NOTIFY_SLACK="http://127.0.0.1:$rport/slack/T111/B111/$NOTIFY_SLACK_PATH"
export NOTIFY_HOOK_SECRET=hook-secret-123
[[ ${#NOTIFY_PD_KEY} == 32 ]] || fail "the test's routing key is not 32 characters"
cat > notifiers.lua <<LUA
  notifiers = {
    oncall = { kind = "pagerduty", routing_key = env "NOTIFY_PD_KEY",
               url = "http://127.0.0.1:$rport/v2/enqueue" },
    team = { kind = "slack", webhook = env "NOTIFY_SLACK", channel = "#sre", username = "vigil" },
    hook = { kind = "webhook", url = "http://127.0.0.1:$rport/hook/notifier",
             secret = env "NOTIFY_HOOK_SECRET", headers = { ["X-Team"] = "sre" } },
  },
LUA
cat > vigil.conf.lua <<LUA
return {
  listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
  repl_socket = "$tmp/vigil.sock",
  executor = { mode = "enforce" },
$(cat notifiers.lua)
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
    local host = alert.labels.host
    report("notify-oncall", vigil.actions.notify{ to = "oncall", alert = alert,
      summary = "disk full on " .. host, severity = "critical", why = "paging on-call" })
    report("notify-team", vigil.actions.notify{ to = "team", alert = alert,
      text = "disk full on " .. host, title = "DiskFull", severity = "critical" })
    report("notify-hook", vigil.actions.notify{ to = "hook", alert = alert,
      text = "disk full on " .. host, severity = "critical" })
    report("notify-override", vigil.actions.notify{ to = "oncall", alert = alert,
      summary = "elsewhere", routing_key = "$routing_key" })
    report("notify-nobody", vigil.actions.notify{ to = "nobody", alert = alert, summary = "x" })
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
n=$(grep '"receiver": "slack"' received.jsonl | grep -c '/slack/T000/B000/secretpath' || true)
[[ $n == 1 ]] || fail "slack received $n messages"

echo "PagerDuty: a valid event with the incident's dedup_key"
line 'pagerduty' | grep -q 'state=done' || fail "pagerduty: $(line pagerduty)"
/usr/bin/python3 - "$tmp/received.jsonl" <<'PY' || fail "the PagerDuty event is not as documented"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if '"pagerduty"' in l]
events = [e for e in events if e["json"]["routing_key"] != "N0tifierKey0123456789abcdef01234"]
assert len(events) == 1, events
e = events[0]["json"]
assert e["event_action"] == "trigger"
assert e["dedup_key"].startswith("vigil-incident-"), e["dedup_key"]
assert e["payload"]["severity"] == "critical" and e["payload"]["source"] == "db-1"
PY
echo "notifiers: notify{ to = ... } sends with the config's credentials and settings"
for what in notify-oncall notify-team notify-hook; do
  line "$what" | grep -q 'state=done' || fail "$what: $(line "$what")"
done
line notify-override | grep -q 'state=nil' || fail "a caller's routing_key: $(line notify-override)"
line notify-override | grep -qF "EINVAL: routing_key: is the notifier's (notifiers.oncall" \
  || fail "a caller's routing_key was not refused: $(line notify-override)"
line notify-nobody | grep -q 'state=nil' || fail "an unknown notifier: $(line notify-nobody)"
line notify-nobody | grep -qF "ENONOTIFIER: no notifier 'nobody' in the config" \
  || fail "an unknown notifier: $(line notify-nobody)"
/usr/bin/python3 - "$tmp/received.jsonl" <<'PY' || fail "the notifiers' requests are not as configured"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
pd = [l for l in lines if l["receiver"] == "pagerduty"
      and l["json"]["routing_key"] == "N0tifierKey0123456789abcdef01234"]
assert len(pd) == 1, pd  # the refused override sent nothing
e = pd[0]["json"]
assert e["event_action"] == "trigger", e
assert e["dedup_key"].startswith("vigil-incident-"), e  # defaulted from the incident
p = e["payload"]
assert p["summary"] == "disk full on db-1" and p["severity"] == "critical", p
assert p["source"] == "vigil", p
slack = [l for l in lines if l["receiver"] == "slack" and "/T111/B111/" in l["path"]]
assert len(slack) == 1, slack
m = slack[0]["json"]
assert m["channel"] == "#sre" and m["username"] == "vigil", m
assert "disk full on db-1" in m["text"] and "DiskFull" in m["text"], m
hook = [l for l in lines if l["receiver"] == "hook" and l["path"] == "/hook/notifier"]
assert len(hook) == 1, hook
h = hook[0]
assert h["headers"]["x-team"] == "sre", h["headers"]
assert h["headers"]["x-vigil-signature"].startswith("sha256="), h["headers"]  # verified by the receiver
assert h["json"]["notifier"] == "hook" and h["json"]["text"] == "disk full on db-1", h["json"]
assert h["json"]["labels"]["host"] == "db-1", h["json"]
PY
actions=$(curl -sf "$base/api/v1/actions?limit=100")
echo "$actions" > api.txt
oncall_id=$(/usr/bin/python3 - "$actions" <<'PY'
import json, sys
rows = json.loads(sys.argv[1])["actions"]
mine = {r["target"]: r for r in rows
        if r["type"] == "notify" and r["target"] in ("oncall", "team", "hook")}
assert sorted(mine) == ["hook", "oncall", "team"], rows
assert all(r["state"] == "done" for r in mine.values()), mine
assert mine["oncall"]["why"] == "paging on-call", mine["oncall"]
assert mine["oncall"]["key"].endswith("/notify/oncall"), mine["oncall"]
print(mine["oncall"]["id"])
PY
) || fail "the notifier actions are not in the ledger as expected: $actions"
curl -sf "$base/api/v1/actions/$oncall_id" >> api.txt || fail "GET /api/v1/actions/$oncall_id"
grep -q '"event":"done"' api.txt || fail "no audit of the notifier's action: $(cat api.txt)"

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

echo "vigil.core.notifier in the REPL: the config's fields, or nil"
mkdir -p empty
cat > repl.conf.lua <<LUA
return {
  listen = "127.0.0.1:0", store = "$tmp/repl.db", policies = "$tmp/empty",
  repl_socket = "$tmp/repl.sock",
$(cat notifiers.lua)
}
LUA
cat > notifier.lua <<'LUA'
core = require("vigil.core") -- globals: each chunk of a REPL script has its own locals
n = core.notifier("oncall")
print(n.name, n.kind, n.url, #n.routing_key)
t = core.notifier("team")
print(t.kind, t.channel, t.username, t.webhook:match("^http://127%.0%.0%.1:%d+/slack/") ~= nil)
h = core.notifier("hook")
print(h.kind, h.url:match("/hook/notifier$"), h.headers["X-Team"], #h.secret, h.routing_key)
print(core.notifier("nobody"))
LUA
"$VIGIL" repl -c repl.conf.lua < notifier.lua > repl.out 2> repl.err \
  || fail "repl: $(cat repl.out repl.err)"
want="oncall	pagerduty	http://127.0.0.1:$rport/v2/enqueue	32
slack	#sre	vigil	true
webhook	/hook/notifier	sre	15	nil
nil"
[[ $(cat repl.out) == "$want" ]] || fail "vigil.core.notifier: got $(cat repl.out), want $want"

echo "secrets are not in the ledger, nor in the log, nor in the API's answers"
sqlite3 vigil.db "SELECT command || coalesce(output, '') || coalesce(error, '') FROM actions" > ledger.txt
sqlite3 vigil.db "SELECT coalesce(detail, '') FROM audit" >> ledger.txt
curl -sf "$base/api/v1/actions?limit=100" >> api.txt
for secret in secretpath "$routing_key" hook-secret-123 "$NOTIFY_PD_KEY" "$NOTIFY_SLACK_PATH"; do
  if grep -q -- "$secret" ledger.txt; then fail "'$secret' is in the ledger"; fi
  if grep -q -- "$secret" "$log"; then fail "'$secret' is in the log"; fi
  if grep -q -- "$secret" api.txt; then fail "'$secret' is in the /api/v1/actions answers"; fi
done
echo ok
