#!/usr/bin/env bash
# Actions end to end, in the daemon, in enforce mode, with the real sandboxed runner. kubectl is
# the recording stand-in tests/fixtures/bin/kubectl (no cluster can run here): it logs its exact
# argv and answers with documented kubectl JSON. Checked:
#   - an alert -> a policy scales +20% (reads spec.replicas first, then scales with the exact
#     argv); the ledger row is done, the audit trail has claimed and done;
#   - asking again with the same key answers "duplicate" and runs nothing;
#   - hostile label values never reach argv (refused with EINVAL, nothing recorded as run);
#   - the guard rails: a rate limit refuses the third restart (ERATELIMIT), counted in /metrics;
#   - the kill switch (API and file) refuses before anything runs, and survives a restart;
#   - approvals: an action waits, is approved through the API, then runs;
#   - the audit log is append-only (the database refuses an UPDATE);
#   - kill -9 while an action runs: after the restart its row is "unknown", surfaced in the
#     API and /metrics, never rerun; an operator reconciles it.
source "$(dirname "$0")/../harness/integration.sh"
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
cd "$tmp"
mkdir -p policies
kubectl="$VIGIL_SOURCE_DIR/tests/fixtures/bin/kubectl"
# the stand-in writes its log and state: under Landlock only the scratch directory is writable
mkdir -p scratch
export KUBECTL_STANDIN_LOG="$tmp/scratch/kubectl.log" KUBECTL_STANDIN_STATE="$tmp/scratch/state.json"
: > "$KUBECTL_STANDIN_LOG"
cat > "$KUBECTL_STANDIN_STATE" <<'JSON'
{"deployments": {"prod/web": {"replicas": 5}, "prod/api": {"replicas": 2},
                 "prod/a": {"replicas": 1}, "prod/b": {"replicas": 1}, "prod/c": {"replicas": 1},
                 "prod/slow": {"replicas": 1}}}
JSON
cat > vigil.conf.lua <<LUA
return {
  listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
  repl_socket = "$tmp/vigil.sock",
  executor = { mode = "enforce", allow = { "$kubectl" }, kill_switch_file = "$tmp/STOP",
               env = { "PATH", "KUBECTL_STANDIN_LOG", "KUBECTL_STANDIN_STATE",
                       "KUBECTL_STANDIN_SLEEP" },
               scratch = "$tmp/scratch", timeout = "20s" },
  guard = { cooldown = 0, types = { restart = { rate = "2/h" } },
            storm_label = "zone", storm_alerts = 5, storm_window = "1m" },
}
LUA
cat > policies/scale.lua <<'LUA'
return {
  name = "scale-on-cpu",
  match = { alertname = "HighCPU" },
  on_alert = function(alert)
    local l = alert.labels
    local function go()
      return vigil.actions.scale{ alert = alert, kind = "deployment", name = l.deployment,
        namespace = l.namespace, replicas = "+20%", max = 10, why = "cpu saturated" }
    end
    local r, err = go()
    vigil.log.info("scale result", { state = r and r.state or "nil",
      error = r and r.error or err or "", replicas = r and r.replicas or "" })
    if r and r.state == "done" then
      local again = go()
      vigil.log.info("scale again", { state = again.state, error = again.error or "" })
    end
  end,
}
LUA
cat > policies/heal.lua <<'LUA'
return {
  name = "heal-web",
  match = { alertname = "Degraded" },
  on_alert = function(alert)
    local l = alert.labels
    local run = vigil.heal.run{ name = "restart-and-check", alert = alert, steps = {
      { name = "restart", run = function()
        return vigil.actions.restart{ alert = alert, kind = "deployment", name = l.deployment,
          namespace = "prod" }
      end },
      { name = "status", run = function()
        return vigil.actions.rollout_status{ kind = "deployment", name = l.deployment,
          namespace = "prod" }
      end },
    }, verify = { within = "5s", every = "1s", query = "up", client = {
      query = function() return { { labels = {}, value = 1 } } end } } }
    vigil.log.info("heal result", { id = run.id, status = run.status, error = run.error or "" })
    local s = vigil.actions.suppress{ alert = alert, by = { "alertname", "deployment" },
      duration = "1h", reason = "healed: give it an hour" }
    vigil.log.info("suppressed", { id = s and s.id or 0 })
  end,
}
LUA
cat > policies/restart.lua <<'LUA'
return {
  name = "restart-on-crash",
  match = { alertname = "CrashLoop" },
  on_alert = function(alert)
    local l = alert.labels
    local r, err = vigil.actions.restart{ alert = alert, kind = "deployment",
      name = l.deployment, namespace = l.namespace, why = "crash looping", scope = l.zone,
      approve = l.approve == "yes", approval_timeout = "1m" }
    vigil.log.info("restart result", { target = l.deployment or "",
      state = r and r.state or "nil", error = r and r.error or err or "" })
  end,
}
LUA

start() { start_daemon; }
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }
post() {
  curl -sf -XPOST "$base/api/v2/alerts" -H 'Content-Type: application/json' -d "$1" > /dev/null ||
    fail "posting $1"
}
api() { curl -sf "$base$1"; }
# grep -q on a pipe would close it early (SIGPIPE for curl under pipefail): read it all first
grep_q() { local in; in=$(cat); grep -q -- "$1" <<< "$in"; }
argv_lines() { grep -c -- "$1" "$KUBECTL_STANDIN_LOG" || true; }
# has MSG PATTERN...: a log line with msg="MSG" matches every pattern (fields come in any order)
has() {
  local lines
  lines=$(grep -F "msg=\"$1\"" "$log" || true)
  shift
  local p
  for p in "$@"; do lines=$(grep -E -- "$p" <<< "$lines" || true); done
  [[ -n $lines ]]
}
wait_has() {
  local deadline=$((SECONDS + 20))
  until has "$@"; do
    ((SECONDS < deadline)) || fail "timed out waiting for a '$1' line with: ${*:2}"
    sleep 0.05
  done
}

start
grep -q 'msg="executor sandbox"' "$log" || fail "the executor did not log its sandbox tiers"
api /metrics | grep_q 'vigil_executor_sandbox{tier="seccomp"} 1' || fail "sandbox tiers are not in /metrics"

echo "an alert scales a deployment +20%: get, then scale with the exact argv"
post '[{"labels": {"alertname": "HighCPU", "deployment": "web", "namespace": "prod"}}]'
wait_for 'msg="scale again"' 1 20
has "scale result" state=done replicas=6 || fail "scale did not run: $(grep 'scale result' "$log")"
has "scale again" state=duplicate EDUPLICATE || fail "the same key ran twice"
grep -qF '["get", "deployment", "web", "-n", "prod", "-o", "json"]' "$KUBECTL_STANDIN_LOG" ||
  fail "no kubectl get: $(cat "$KUBECTL_STANDIN_LOG")"
grep -qF '["scale", "deployment/web", "--replicas=6", "-n", "prod", "--current-replicas=5"]' \
  "$KUBECTL_STANDIN_LOG" || fail "wrong scale argv: $(cat "$KUBECTL_STANDIN_LOG")"
[[ $(argv_lines '"scale"') == 1 ]] || fail "scale ran $(argv_lines '"scale"') times"
actions=$(api '/api/v1/actions?policy=scale-on-cpu')
echo "$actions" | grep -q '"state":"done"' || fail "no done row: $actions"
id=$(echo "$actions" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["actions"][0]["id"])')
one=$(api "/api/v1/actions/$id")
for ev in claimed done; do
  echo "$one" | grep -q "\"event\":\"$ev\"" || fail "audit lacks $ev: $one"
done
echo "$one" | grep -q '"why":"cpu saturated"' || fail "why is not recorded: $one"

echo "hostile label values are refused before any argv is built"
n0=$(wc -l < "$KUBECTL_STANDIN_LOG")
post '[{"labels": {"alertname": "HighCPU", "deployment": "--kubeconfig=/tmp/x", "namespace": "prod"}},
       {"labels": {"alertname": "HighCPU", "deployment": "web; rm -rf /", "namespace": "prod"}},
       {"labels": {"alertname": "HighCPU", "deployment": "$(id)", "namespace": "prod"}}]'
wait_for 'msg="scale result".*EINVAL' 3 20
[[ $(wc -l < "$KUBECTL_STANDIN_LOG") == "$n0" ]] || fail "kubectl ran for a hostile label"

echo "the guard rails: a third restart in the hour is refused (ERATELIMIT)"
for d in a b c; do
  post "[{\"labels\": {\"alertname\": \"CrashLoop\", \"deployment\": \"$d\", \"namespace\": \"prod\"}}]"
  wait_has "restart result" "target=$d( |$)"
done
has "restart result" "target=a( |$)" state=done || fail "restart a did not run"
has "restart result" "target=b( |$)" state=done || fail "restart b did not run"
has "restart result" "target=c( |$)" state=refused ERATELIMIT || fail "restart c was not refused"
[[ $(argv_lines '"rollout", "restart"') == 2 ]] || fail "restart ran $(argv_lines '"rollout", "restart"') times"
api /metrics | grep_q 'vigil_actions_total{type="restart",state="done"} 2' ||
  fail "per-type outcomes are not in /metrics"
api /metrics | grep_q 'vigil_guard_refusals_total{rule="rate_type"} 1' ||
  fail "refusal not in /metrics"

echo "the audit log is append-only"
if sqlite3 vigil.db "UPDATE audit SET who = 'x'" 2>/dev/null; then fail "audit rows can be changed"; fi

echo "the kill switch: set through the API, refuses, survives a restart, then off"
curl -sf -XPOST "$base/api/v1/kill-switch" -H 'Content-Type: application/json' \
  -d '{"on": true, "who": "sre", "comment": "incident 42"}' > /dev/null || fail "kill switch"
api /api/v1/kill-switch | grep_q '"on":true' || fail "kill switch not on"
stop
start
api /api/v1/kill-switch | grep_q '"on":true' || fail "the kill switch did not survive a restart"
post '[{"labels": {"alertname": "HighCPU", "deployment": "api", "namespace": "prod"}}]'
wait_has "scale result" EKILLSWITCH
curl -sf -XPOST "$base/api/v1/kill-switch" -H 'Content-Type: application/json' \
  -d '{"on": false, "who": "sre"}' > /dev/null
echo "... and the file flag works on its own"
touch STOP
post '[{"labels": {"alertname": "CrashLoop", "deployment": "slow", "namespace": "prod", "try": "1"}}]'
wait_has "restart result" "target=slow( |$)" EKILLSWITCH
rm STOP
api /metrics | grep_q 'vigil_kill_switch 0' || fail "the kill switch metric"

echo "approvals: the action waits, an operator approves, it runs"
stop
sqlite3 vigil.db "DELETE FROM guard_state" # fresh budgets: only approval is under test here
start
post '[{"labels": {"alertname": "CrashLoop", "deployment": "api", "namespace": "prod", "approve": "yes"}}]'
until_ok 10 sh -c "curl -sf '$base/api/v1/actions?state=awaiting_approval' | grep -q '\"id\"'"
aid=$(api '/api/v1/actions?state=awaiting_approval' |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["actions"][0]["id"])')
[[ $(argv_lines 'deployment/api') == 0 ]] || fail "ran before approval"
curl -sf -XPOST "$base/api/v1/actions/$aid/approve" -H 'Content-Type: application/json' \
  -d '{"who": "alice"}' > /dev/null || fail "approve"
wait_has "restart result" "target=api( |$)" state=done
[[ $(argv_lines 'deployment/api') == 1 ]] || fail "approved restart did not run once"
api "/api/v1/actions/$aid" | grep_q '"event":"approved","who":"alice"' || fail "approval not audited"
echo "... and approved while the kill switch is on, it is refused, not run"
post '[{"labels": {"alertname": "CrashLoop", "deployment": "d", "namespace": "prod", "approve": "yes"}}]'
until_ok 10 sh -c "curl -sf '$base/api/v1/actions?state=awaiting_approval' | grep -q '\"id\"'"
bid=$(api '/api/v1/actions?state=awaiting_approval' |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["actions"][0]["id"])')
"$VIGIL" kill-switch on --url "$base" --who sre > /dev/null || fail "vigil kill-switch on"
"$VIGIL" approve "$bid" --url "$base" --who alice > /dev/null || fail "vigil approve"
wait_has "restart result" "target=d( |$)" state=refused EKILLSWITCH
api "/api/v1/actions/$bid" | grep_q '"state":"refused"' || fail "the approved row was not refused"
"$VIGIL" kill-switch off --url "$base" > /dev/null
"$VIGIL" actions --url "$base" --state refused | grep -q 'deployment/d' || fail "vigil actions"

echo "kill -9 while an action runs: unknown after the restart, never rerun"
export KUBECTL_STANDIN_SLEEP=30
stop
sqlite3 vigil.db "DELETE FROM guard_state" # fresh budgets: the second ask must meet the claim
start
post '[{"labels": {"alertname": "CrashLoop", "deployment": "slow", "namespace": "prod", "try": "2"}}]'
until_ok 10 grep -q 'deployment/slow' "$KUBECTL_STANDIN_LOG"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
pid=
unset KUBECTL_STANDIN_SLEEP
start
wait_for 'actions with an unknown outcome' 1 10
unknown=$(api '/api/v1/actions?state=unknown')
echo "$unknown" | grep -q 'deployment/slow' || fail "no unknown row: $unknown"
api /metrics | grep_q 'vigil_actions_unknown_at_start 1' || fail "unknown not in /metrics"
uid=$(echo "$unknown" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["actions"][0]["id"])')
# the same alert again, changed: the policy asks for the same restart (same incident, same key)
post '[{"labels": {"alertname": "CrashLoop", "deployment": "slow", "namespace": "prod", "try": "2"},
        "annotations": {"summary": "still crashing"}}]'
wait_has "restart result" "target=slow( |$)" EDUPLICATE
[[ $(argv_lines 'deployment/slow') == 1 ]] || fail "the unknown action ran again"
curl -sf -XPOST "$base/api/v1/actions/$uid/reconcile" -H 'Content-Type: application/json' \
  -d '{"outcome": "done", "who": "bob", "comment": "rollout seen in the cluster"}' > /dev/null ||
  fail "reconcile"
api "/api/v1/actions/$uid" | grep_q '"state":"done"' || fail "not reconciled"
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$base/api/v1/actions/$uid/reconcile" \
  -H 'Content-Type: application/json' -d '{"outcome": "failed"}')
[[ $code == 409 ]] || fail "reconciling twice answered $code"
stop

echo "a healing run: ordered steps, verification, recorded; then a suppression stops further action"
sqlite3 vigil.db "DELETE FROM guard_state"
start
post '[{"labels": {"alertname": "Degraded", "deployment": "web", "namespace": "prod"}}]'
wait_for 'msg=suppressed' 1 20
has "heal result" status=succeeded || fail "healing: $(grep 'heal result' "$log")"
hid=$(api /api/v1/healings | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["healings"][0]["id"])')
h=$(api "/api/v1/healings/$hid")
/usr/bin/python3 - "$h" <<'PY' || fail "the healing record: $h"
import json, sys
h = json.loads(sys.argv[1])
assert h["status"] == "succeeded" and h["name"] == "restart-and-check", h
assert [s["name"] for s in h["steps"]] == ["restart", "status", "verify"], h["steps"]
assert all(s["state"] == "done" for s in h["steps"]), h["steps"]
PY
# the same alertname and deployment on another pod: stored, not acted on
post '[{"labels": {"alertname": "Degraded", "deployment": "web", "namespace": "prod", "pod": "web-2"}}]'
until_ok 10 sh -c "curl -sf '$base/metrics' | grep -q 'vigil_alerts_suppressed_total 1'"
stop
start
api /metrics | grep_q 'vigil_suppressions_active 1' || fail "the suppression did not survive a restart"
[[ $(count 'msg="heal result"') == 0 ]] || fail "a suppressed alert was acted on"

echo "an alert storm in a scope refuses actions there (ESTORM), counted"
post '[{"labels": {"alertname": "Noise", "zone": "eu-1", "n": "1"}}, {"labels": {"alertname": "Noise", "zone": "eu-1", "n": "2"}},
       {"labels": {"alertname": "Noise", "zone": "eu-1", "n": "3"}}, {"labels": {"alertname": "Noise", "zone": "eu-1", "n": "4"}},
       {"labels": {"alertname": "Noise", "zone": "eu-1", "n": "5"}}, {"labels": {"alertname": "Noise", "zone": "eu-1", "n": "6"}}]'
post '[{"labels": {"alertname": "CrashLoop", "deployment": "b", "namespace": "prod", "zone": "eu-1"}}]'
wait_has "restart result" "target=b( |$)" ESTORM
api /metrics | grep_q 'vigil_actions_storm_refused_total 1' || fail "storm refusal not in /metrics"
stop
echo "ok"
