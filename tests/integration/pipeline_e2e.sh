#!/usr/bin/env bash
# The AIOps pipeline end to end, with the real Prometheus, Pushgateway and Alertmanager from
# Debian's packages on loopback. kubectl is the recording stand-in tests/fixtures/bin/kubectl
# and PagerDuty the loopback stand-in tests/fixtures/receivers.py (no cluster and no PagerDuty
# can run here; both speak the documented formats). Checked:
#   1. the test raises a saturation series -> a real rule fires -> Alertmanager -> vigil; the
#      bundled resource-exhaustion policy enriches from the same Prometheus, classifies
#      resource_exhaustion, scales the Deployment +20% in enforce mode (exact kubectl argv); the
#      series drops -> resolved -> incident resolved, healing verified; the whole timeline,
#      the incident report (API and `vigil report`) are asserted;
#   2. known issue: the plan that worked is now a known fix; the same alert again is classified
#      known_issue and the fix is applied; its success rate goes up;
#   3. escalation: a critical alert nobody acknowledges pages (PagerDuty v2 event) after the
#      configured delay; vigil is killed with -9 before the timer is due and restarted after:
#      the page is sent exactly once, late; an acknowledged incident never pages.
source "$(dirname "$0")/../harness/integration.sh"
for bin in prometheus prometheus-alertmanager prometheus-pushgateway; do
  command -v "$bin" >/dev/null || fail "$bin is missing (make test installs it)"
done
pids=()
pid=
on_exit 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
cd "$tmp"

# ---- the world: receivers, a cluster, vigil ----
/usr/bin/python3 "$VIGIL_SOURCE_DIR/tests/fixtures/receivers.py" --log "$tmp/received.jsonl" \
  > rport.txt 2> receivers.err &
pids+=($!)
until_ok 10 test -s rport.txt
rport=$(head -1 rport.txt)

kubectl="$VIGIL_SOURCE_DIR/tests/fixtures/bin/kubectl"
mkdir -p scratch policies
export KUBECTL_STANDIN_LOG="$tmp/scratch/kubectl.log" KUBECTL_STANDIN_STATE="$tmp/scratch/state.json"
: > "$KUBECTL_STANDIN_LOG"
echo '{"deployments": {"shop/api": {"replicas": 2}}}' > "$KUBECTL_STANDIN_STATE"
export PIPELINE_PD_KEY=Pipe1ineKey0123456789abcdef01234

cp "$VIGIL_SOURCE_DIR/policies/resource_exhaustion.lua" policies/
# the default escalation, with delays a test can wait for
sed -e 's/after = "5m"/after = "8s"/' -e 's/after = "25m"/after = "1h"/' \
  "$VIGIL_SOURCE_DIR/policies/default_escalation.lua" > policies/default_escalation.lua
grep -q 'after = "8s"' policies/default_escalation.lua || fail "the escalation delay was not set"

promport=$(free_port)
cat > vigil.conf.lua <<LUA
return {
  listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
  repl_socket = "$tmp/vigil.sock",
  sources = { prom = { kind = "prometheus", url = "http://127.0.0.1:$promport", timeout = "5s" } },
  notifiers = { oncall = { kind = "pagerduty", routing_key = env "PIPELINE_PD_KEY",
                           url = "http://127.0.0.1:$rport/v2/enqueue" } },
  executor = { mode = "enforce", allow = { "$kubectl" }, scratch = "$tmp/scratch",
               env = { "PATH", "KUBECTL_STANDIN_LOG", "KUBECTL_STANDIN_STATE" } },
  guard = { cooldown = 0 },
  retention = { reopen_grace = "1s" },
}
LUA
start_daemon
vigil=$base

cat > rules.yml <<'YML'
groups:
  - name: saturation
    interval: 1s
    rules:
      - alert: PodCPUSaturation
        expr: vigil:pod_saturation:ratio{resource="cpu"} > 0.9
        labels: { severity: warning }
        annotations: { summary: "{{ $labels.pod }} CPU at {{ $value }}" }
YML
start_alerting "$vigil" "alertname, pod" "$promport"

push() { # push VALUE: the saturation of shop/api-7d9f5c-x2x1z
  printf 'vigil:pod_saturation:ratio{resource="cpu",namespace="shop",pod="api-7d9f5c-x2x1z"} %s\n' "$1" |
    curl -sf --data-binary @- "http://127.0.0.1:$pgport/metrics/job/saturation" ||
    fail "cannot push to the pushgateway"
}
# the jq-free way to read one field: python, as the other tests do
field() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
timeline_of() { curl -sf "$vigil/api/v1/incidents/$1"; }
scales() { grep -c '"scale"' "$KUBECTL_STANDIN_LOG" || true; }

# ---- 1. resource exhaustion, from the rule to the healing ----
echo "1. a saturated pod: confirmed from Prometheus, scaled out 20%, healing verified"
push 0.97
until_ok 90 bash -c "[[ \$(grep -c '\"scale\"' '$KUBECTL_STANDIN_LOG') -ge 1 ]]"
grep -q '"scale", "deployment/api", "--replicas=3"\|"scale","deployment/api","--replicas=3"' \
  "$KUBECTL_STANDIN_LOG" || fail "kubectl was not asked to scale api to 3: $(cat "$KUBECTL_STANDIN_LOG")"
inc1=$(curl -sf "$vigil/api/v1/alerts?filter=alertname%3D%22PodCPUSaturation%22" |
  field 'd[0]["incidentId"]')
[[ $inc1 =~ ^[0-9]+$ ]] || fail "no incident for the alert: $inc1"
until_ok 20 bash -c "curl -sf '$vigil/api/v1/incidents/$inc1' | grep -q '\"event\":\"pipeline\"'"
doc=$(timeline_of "$inc1")
pipeline=$(echo "$doc" | field '[e for e in d["timeline"] if e["event"] == "pipeline"][0]["detail"]')
for want in "'class': 'resource_exhaustion'" "'plan': 'resource_exhaustion'" "'auto': True" \
  "'step': 'enrich'" "'step': 'analyse'" "'step': 'act'" "'step': 'learn'" "'state': 'done'"; do
  [[ $pipeline == *"$want"* ]] || fail "the pipeline entry lacks $want: $pipeline"
done
actions=$(curl -sf "$vigil/api/v1/actions?policy=resource-exhaustion")
[[ $actions == *'"state":"done"'* && $actions == *'"target":"shop/deployment/api"'* &&
   $actions == *"\"incidentId\":$inc1,"* ]] ||
  fail "the scale action is not done in the ledger: $actions"

push 0.2
until_ok 90 bash -c "curl -sf '$vigil/api/v1/incidents/$inc1' | grep -q '\"event\":\"pipeline resolved\"'"
doc=$(timeline_of "$inc1")
[[ $(echo "$doc" | field 'd["status"]') == resolved ]] || fail "incident $inc1 is not resolved"
[[ $doc == *"healing verified"* ]] || fail "no healing verification on the timeline: $doc"
report=$(curl -sf "$vigil/api/v1/incidents/$inc1/report")
for key in '"timeline"' '"actions"' '"durationMs"' '"kb"' '"similar"'; do
  [[ $report == *$key* ]] || fail "the report has no $key: $report"
done
"$VIGIL" report "$inc1" --url "$vigil" > report.md || fail "vigil report failed"
grep -q "^# " report.md && grep -qi "timeline" report.md && grep -q "resource_exhaustion" report.md ||
  fail "the Markdown report is incomplete: $(cat report.md)"

# ---- 2. the known issue, learnt ----
echo "2. the fix that worked is known: the same alert again applies it"
fixes=$(curl -sf "$vigil/api/v1/kb/fixes?key=PodCPUSaturation")
[[ $fixes == *'"name":"resource_exhaustion"'* && $fixes == *'"successes":1'* ]] ||
  fail "the plan was not learnt as a known fix: $fixes"
sleep 2 # past retention.reopen_grace: this is a new incident, not the old one reopened
push 0.98
until_ok 90 bash -c "[[ \$(grep -c '\"scale\"' '$KUBECTL_STANDIN_LOG') -ge 2 ]]"
grep -q -- '--replicas=4' "$KUBECTL_STANDIN_LOG" || fail "the known fix did not scale 3 -> 4"
inc2=$(curl -sf "$vigil/api/v1/incidents?status=open" | field '[i["id"] for i in d["incidents"]][0]')
[[ $inc2 != "$inc1" ]] || fail "the second firing reused incident $inc1"
until_ok 20 bash -c "curl -sf '$vigil/api/v1/incidents/$inc2' | grep -q 'known_issue'"
pipeline=$(timeline_of "$inc2" | field '[e for e in d["timeline"] if e["event"] == "pipeline"][0]["detail"]')
[[ $pipeline == *"'class': 'known_issue'"* && $pipeline == *"'plan': 'kb:resource_exhaustion'"* ]] ||
  fail "the second run did not apply the known fix: $pipeline"
push 0.1
until_ok 90 bash -c "curl -sf '$vigil/api/v1/kb/fixes?key=PodCPUSaturation' | grep -q '\"successes\":2'"

# ---- 3. escalation, across a kill -9 ----
echo "3. a critical alert nobody acknowledges pages once, even across kill -9"
post_critical() { # post_critical NAME
  curl -sf -H 'Content-Type: application/json' "$vigil/api/v2/alerts" -d \
    "[{\"labels\":{\"alertname\":\"$1\",\"severity\":\"critical\",\"service\":\"db\"}}]" >/dev/null ||
    fail "cannot post $1"
}
pages() { if [[ -f received.jsonl ]]; then grep -c '"/v2/enqueue"' received.jsonl || true; else echo 0; fi; }
post_critical DatabaseDown
post_critical QueueStuck
until_ok 10 bash -c "curl -sf '$vigil/api/v1/incidents?status=open' | grep -q QueueStuck"
ackid=$(curl -sf "$vigil/api/v1/incidents?status=open" |
  field '[i["id"] for i in d["incidents"] if "QueueStuck" in i["title"]][0]')
"$VIGIL" ack "$ackid" --url "$vigil" --who alice >/dev/null || fail "vigil ack failed"
# what is tested is the timer surviving kill -9: wait until the run has stored it (a run cut
# short by the crash would run again at the next start: crash_replay.sh tests that)
until_ok 10 bash -c "curl -sf '$vigil/api/v1/incidents?status=open' | grep -q DatabaseDown"
dbid=$(curl -sf "$vigil/api/v1/incidents?status=open" |
  field '[i["id"] for i in d["incidents"] if "DatabaseDown" in i["title"]][0]')
until_ok 10 bash -c "curl -sf '$vigil/api/v1/incidents/$dbid/report' | grep -q '\"state\": *\"pending\"'"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
pid=
sleep 12 # the timer falls due while vigil is down
[[ $(pages) == 0 ]] || fail "paged before the timer was due: $(cat received.jsonl)"
start_daemon
vigil=$base
until_ok 15 bash -c "[[ \$(grep -c '\"/v2/enqueue\"' '$tmp/received.jsonl') -ge 1 ]]"
sleep 3 # more ticks: nothing fires twice
[[ $(pages) == 1 ]] || fail "expected exactly one page, got $(pages): $(cat received.jsonl)"
grep '"/v2/enqueue"' received.jsonl | grep -q 'DatabaseDown' || fail "the page is not about DatabaseDown"
grep '"/v2/enqueue"' received.jsonl | grep -q "$PIPELINE_PD_KEY" || fail "the page lacks the routing key"
dbid=$(curl -sf "$vigil/api/v1/incidents?status=open" |
  field '[i["id"] for i in d["incidents"] if "DatabaseDown" in i["title"]][0]')
esc=$(curl -sf "$vigil/api/v1/incidents/$dbid/report" | field 'd["escalations"]')
[[ $esc == *"'state': 'fired'"* && $esc == *"late"* ]] || fail "the escalation is not fired late: $esc"
timeline_of "$dbid" | grep -q '"event":"escalation fired: on-call"' ||
  fail "the escalation is not on the incident's timeline: $(timeline_of "$dbid")"
curl -sf "$vigil/metrics" | grep -q '^vigil_escalations_total{state="fired"} 1$' ||
  fail "/metrics does not count the escalation: $(curl -sf "$vigil/metrics" | grep escalations)"
esc=$(curl -sf "$vigil/api/v1/incidents/$ackid/report" | field 'd["escalations"]')
[[ $esc == *"'state': 'cancelled'"* ]] || fail "the acknowledged incident's timer is not cancelled: $esc"
if grep -q "$PIPELINE_PD_KEY" "$log" vigil.db 2>/dev/null; then
  fail "the routing key reached the log or the store"
fi
echo "ok"
