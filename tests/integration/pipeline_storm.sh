#!/usr/bin/env bash
# The AIOps pipeline under an alert storm (the issue's end-to-end test 4): 5,000 alerts across
# 500 services in a few seconds -> intake stays responsive, the guard rails hold, no action
# runs twice, every incident is recorded.
#
# vigil runs in enforce mode with every bundled policy, the default guard rails and the
# recording kubectl stand-in (tests/fixtures/bin/kubectl; a Deployment per service, 2
# replicas). The resource-exhaustion policy confirms each alert from its `prom` source: here the
# loopback stand-in tests/fixtures/pipeline/prom_saturated.py, which answers every range query
# with a valid matrix at 0.97 (over the policy's 0.9). It stands in for Prometheus because the
# point here is load, not the query (pipeline_e2e.sh runs the real Prometheus). The storm
# (tests/fixtures/pipeline/alert_storm.py): 5,000 PodCPUSaturation alerts, 10 pods of each of
# 500 services in 10 namespaces, POSTed to /api/v2/alerts in batches of 50 from 8 connections,
# paced to take 3 s. Checked:
#   a. intake stays responsive: every POST is answered 2xx (or 503 with Retry-After, then sent
#      again and counted, as Alertmanager retries a 5xx), none times out (30 s); GET /healthz,
#      polled every 50 ms on a new connection from the first POST until the pipelines have
#      drained, answers each time within 1 s (2 s under AddressSanitizer, which CI runs). The
#      1 s bound is the default timeoutSeconds of a Kubernetes liveness probe: slower, and the
#      kubelet counts vigil as failing in the middle of the storm. /healthz is answered on the event loop, so the bound says that nothing the
#      storm sets off (commits, thousands of policy tasks, sandboxed kubectl runs) holds the
#      loop for long: with the loop free, the worst answer measured here is under 100 ms.
#   b. every alert is stored (5,000 distinct pods; intake counted 5,000 new) and they make
#      exactly 500 incidents (the store groups by alertname + service), 10 alerts each;
#   c. the guard rails hold: kubectl scale ran at most min(guard.rate 30/h per type: its burst
#      plus what refilled while the test ran, guard.blast_targets 5 per namespace per 30 min x
#      10 namespaces) times, and at most 5 times in any namespace; every other scale that a
#      pipeline asked for is a `refused` row whose audit entry names a rail (ESTORM, ERATELIMIT,
#      EBLASTRADIUS, EBUSY, ECOOLDOWN), ESTORM among them (each namespace gets ~500 alerts in
#      seconds; guard.storm_alerts is 100 a minute); the ledger agrees with
#      vigil_actions_storm_refused_total, vigil_guard_refusals_total and vigil_actions_total;
#   d. no action twice: no deployment is scaled twice (the policy's subject is the pod, so the 10
#      pods of a service ask with 10 keys: the per-target cooldown and concurrency hold them),
#      no key has two done rows, and the runs in kubectl's log are exactly the done rows;
#   e. every alert's pipeline ran or was counted as dropped (intake.max_policy_tasks, 256): for
#      each policy vigil_policy_runs_total + vigil_policy_dropped_alerts_total ==
#      vigil_policy_matched_total (5,000 for resource-exhaustion), no run failed, and each
#      resource-exhaustion run left one "pipeline" entry on its incident's timeline: classified
#      resource_exhaustion from the stand-in's data, or (its query timed out) unclassified and
#      no action.
# Printed: the storm's rate, healthz latency, the scale runs, refusals by code, the time taken.
source "$(dirname "$0")/../harness/integration.sh"
# Under AddressSanitizer (the CI build), which makes every instruction several times slower and
# shares two cores with another test, the bound is 2 s; the dev build's is 1 s.
bound_ms=1000
if grep -qa __asan_init "$VIGIL"; then bound_ms=2000; fi
export LC_ALL=C
total=5000 services=500 namespaces=10 per_service=10
type_rate=30 blast=5 # the defaults: guard.rate 30/h, guard.blast_targets 5 per 30 min
pid= prom= storm=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
on_exit '[[ -n "$prom" ]] && kill "$prom" 2>/dev/null'
on_exit '[[ -n "$storm" ]] && kill "$storm" 2>/dev/null'
t_start=$SECONDS
cd "$tmp"
mkdir -p policies scratch

/usr/bin/python3 "$VIGIL_SOURCE_DIR/tests/fixtures/pipeline/prom_saturated.py" 0.97 \
  > promport.txt 2> prom.err &
prom=$!
until_ok 10 test -s promport.txt
promport=$(head -1 promport.txt)

kubectl="$VIGIL_SOURCE_DIR/tests/fixtures/bin/kubectl"
export KUBECTL_STANDIN_LOG="$tmp/scratch/kubectl.log" KUBECTL_STANDIN_STATE="$tmp/scratch/state.json"
: > "$KUBECTL_STANDIN_LOG"
/usr/bin/python3 - "$services" "$namespaces" > "$KUBECTL_STANDIN_STATE" <<'PY'
import json, sys
n, ns = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps({"deployments": {"ns-%d/svc-%03d" % (i % ns, i): {"replicas": 2}
                                  for i in range(n)}}))
PY
for f in "$VIGIL_SOURCE_DIR"/policies/*.lua; do
  [[ $f == *_spec.lua ]] || cp "$f" policies/
done
if [[ -d "$VIGIL_SOURCE_DIR/policies/lib" ]]; then cp -r "$VIGIL_SOURCE_DIR/policies/lib" policies/; fi
[[ -f policies/resource_exhaustion.lua ]] || fail "no bundled resource_exhaustion policy"

cat > vigil.conf.lua <<LUA
return {
  listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
  repl_socket = "$tmp/vigil.sock",
  sources = { prom = { kind = "prometheus", url = "http://127.0.0.1:$promport", timeout = "5s" } },
  executor = { mode = "enforce", allow = { "$kubectl" }, scratch = "$tmp/scratch",
               env = { "PATH", "KUBECTL_STANDIN_LOG", "KUBECTL_STANDIN_STATE" } },
  -- no guard = { ... }: the defaults are what must hold
}
LUA
start_daemon
m0=$(curl -sf "$base/metrics") || fail "GET /metrics"
[[ $m0 == *'vigil_policy_enabled{policy="resource-exhaustion"} 1'* ]] ||
  fail "the resource-exhaustion policy is not loaded: $(grep vigil_policy_enabled <<< "$m0")"

metrics() { curl -sf "$base/metrics" || fail "GET /metrics"; }
series() { awk -v s="$1" '$1 == s { print $2 }' <<< "$2"; }
val() { sed -n "s/^$1=//p" storm.out | tail -1; }
q() { sqlite3 vigil.db "$1"; }

echo "$total alerts ($per_service pods x $services services, $namespaces namespaces) in ~3 s"
t0=$SECONDS
/usr/bin/python3 "$VIGIL_SOURCE_DIR/tests/fixtures/pipeline/alert_storm.py" "$port" storm.out \
  "$total" "$services" "$namespaces" 50 8 3 "$tmp/stop-probing" 2> storm.err &
storm=$!
until_ok 120 grep -q '^posting_done=1' storm.out
post_secs=$((SECONDS - t0))
# the pipelines drain: no policy task and no action left
until_ok 120 sh -c "curl -sf '$base/metrics' | grep -qx 'vigil_tasks_running 0'"
until_ok 30 sh -c "curl -sf '$base/metrics' | grep -qx 'vigil_actions_running 0'"
drain_secs=$((SECONDS - t0))
touch "$tmp/stop-probing"
wait "$storm" || fail "the storm client failed: $(cat storm.err)"
storm=
grep -q '^probe_done=1' storm.out || fail "the prober did not finish: $(cat storm.out)"
m=$(metrics)
stored=$(curl -sf "$base/api/v1/alerts?filter=alertname%3D%22PodCPUSaturation%22&limit=100000" |
  /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(len({a["labels"]["pod"] for a in d}), len(d))') ||
  fail "GET /api/v1/alerts"
queries=$(curl -sf "http://127.0.0.1:$promport/_count" |
  /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')
kill -TERM "$pid"
rc=0
wait "$pid" 2>/dev/null || rc=$?
pid=
((rc == 0)) || fail "the daemon exited with status $rc after SIGTERM"
[[ $(q 'PRAGMA integrity_check') == ok ]] || fail "integrity_check failed"

echo "a. every POST was answered, none timed out"
(($(val errors) == 0)) || fail "$(val errors) POSTs were answered neither 2xx nor 503: $(val error)"
(($(val acked) == total)) || fail "only $(val acked) of $total alerts were acknowledged: $(cat storm.out)"
(($(val no_retry_after) == 0)) || fail "$(val no_retry_after) 503 answers had no Retry-After"

echo "b. every alert stored, every incident recorded"
read -r distinct listed <<< "$stored"
((distinct == total && listed == total)) ||
  fail "the API lists $listed alerts ($distinct distinct pods), not $total"
new=$(series 'vigil_intake_alerts_total{endpoint="alerts_v2",outcome="new"}' "$m")
((new == total)) || fail "intake counted ${new:-0} new alerts, not $total: $(grep '^vigil_intake_alerts_total' <<< "$m")"
rows=$(q "SELECT count(*), count(DISTINCT fingerprint) FROM alerts WHERE name = 'PodCPUSaturation'")
[[ $rows == "$total|$total" ]] || fail "the store holds $rows (rows|fingerprints), not $total"
incidents=$(q "SELECT count(*), count(DISTINCT group_key) FROM incidents")
[[ $incidents == "$services|$services" ]] ||
  fail "$incidents (incidents|group keys), not $services: one per service"
sizes=$(q "SELECT group_concat(n) FROM (SELECT DISTINCT count(*) n FROM alerts GROUP BY incident_id)")
[[ $sizes == "$per_service" ]] || fail "incidents hold $sizes alerts, not $per_service each"
mixed=$(q "SELECT count(*) FROM (SELECT incident_id FROM alerts
           GROUP BY incident_id HAVING count(DISTINCT json_extract(labels, '$.service')) != 1)")
((mixed == 0)) || fail "$mixed incidents mix services"

echo "c. the guard rails held"
runs=$(grep -c '"scale"' "$KUBECTL_STANDIN_LOG" || true)
elapsed=$((SECONDS - t0))
# a token of the type's bucket comes back every 3600/30 s: the test's length earns that many
cap=$((type_rate + elapsed * type_rate / 3600))
((cap > namespaces * blast)) && cap=$((namespaces * blast))
((runs <= cap)) || fail "kubectl scale ran $runs times: the rails allow $cap"
per_ns=$(grep '"scale"' "$KUBECTL_STANDIN_LOG" | grep -o '"ns-[0-9]*"' | sort | uniq -c |
  awk -v b="$blast" '$1 > b { print $2 "=" $1 }')
[[ -z $per_ns ]] || fail "more than $blast deployments scaled in a namespace: $per_ns"
done_rows=$(q "SELECT count(*) FROM actions WHERE type = 'scale' AND state = 'done'")
((done_rows == runs)) || fail "$runs kubectl scale runs but $done_rows done rows"
other=$(q "SELECT group_concat(state || ':' || n) FROM (SELECT state, count(*) n FROM actions
           WHERE type = 'scale' AND state NOT IN ('done', 'refused') GROUP BY state)")
[[ -z $other ]] || fail "scale rows in other states: $other"
refused=$(q "SELECT count(*) FROM actions WHERE type = 'scale' AND state = 'refused'")
# a refusal's reason is its row's entry in the audit log: "ECODE: sentence"
codes="SELECT substr(u.detail, 1, instr(u.detail, ':') - 1) code FROM actions a
       JOIN audit u ON u.action_id = a.id AND u.event = 'refused'
       WHERE a.type = 'scale' AND a.state = 'refused'"
by_code=$(q "SELECT group_concat(code || '=' || n, ' ') FROM
             (SELECT code, count(*) n FROM ($codes) GROUP BY code ORDER BY n DESC)")
reasons=$(q "SELECT count(*) FROM ($codes)")
((reasons == refused)) || fail "$refused refused rows but $reasons refusals in the audit log"
bad=$(q "SELECT count(*) FROM ($codes)
         WHERE code NOT IN ('ESTORM', 'ERATELIMIT', 'EBLASTRADIUS', 'EBUSY', 'ECOOLDOWN')")
((bad == 0)) || fail "$bad refusals without a guard's code: $by_code"
estorm=$(q "SELECT count(*) FROM ($codes) WHERE code = 'ESTORM'")
((estorm > 0)) || fail "no action was refused for the alert storm: $by_code"
((estorm == $(series vigil_actions_storm_refused_total "$m"))) ||
  fail "$estorm ESTORM refusals, vigil_actions_storm_refused_total $(series vigil_actions_storm_refused_total "$m")"
guard_rows=$((reasons - estorm))
guard_metric=$(awk 'index($1, "vigil_guard_refusals_total{") == 1 { n += $2 } END { print n + 0 }' <<< "$m")
((guard_rows == guard_metric)) ||
  fail "$guard_rows guard refusals in the ledger, vigil_guard_refusals_total $guard_metric"
refused_metric=$(series 'vigil_actions_total{type="scale",state="refused"}' "$m")
((refused == ${refused_metric:-0})) ||
  fail "$refused refused rows, vigil_actions_total{type=\"scale\",state=\"refused\"} ${refused_metric:-0}"
((runs + refused > 0)) || fail "no pipeline asked for a scale at all"

echo "d. no duplicate actions"
twice=$(grep '"scale"' "$KUBECTL_STANDIN_LOG" | grep -o '"deployment/svc-[0-9]*"' | sort | uniq -d)
[[ -z $twice ]] || fail "deployments scaled twice: $twice"
dup_keys=$(q "SELECT count(*) FROM (SELECT key FROM actions WHERE state = 'done'
              GROUP BY key HAVING count(*) > 1)")
((dup_keys == 0)) || fail "$dup_keys keys have more than one done row"
ran=$(grep '"scale"' "$KUBECTL_STANDIN_LOG" | grep -o '"deployment/svc-[0-9]*"' | cut -d/ -f2 |
  tr -d '"' | sort)
done_targets=$(q "SELECT substr(target, instr(target, '/deployment/') + 12) FROM actions
                  WHERE type = 'scale' AND state = 'done'" | sort)
[[ $ran == "$done_targets" ]] || fail "the runs and the done rows differ:
runs: $(echo $ran)
done: $(echo $done_targets)"

echo "e. every alert's pipeline ran or was counted as dropped"
policies=$(grep -o '^vigil_policy_matched_total{policy="[^"]*"}' <<< "$m" | cut -d'"' -f2)
for p in $policies; do
  matched=$(series "vigil_policy_matched_total{policy=\"$p\"}" "$m")
  ran_p=$(series "vigil_policy_runs_total{policy=\"$p\"}" "$m")
  dropped_p=$(series "vigil_policy_dropped_alerts_total{policy=\"$p\"}" "$m")
  failed_p=$(series "vigil_policy_failures_total{policy=\"$p\"}" "$m")
  ((ran_p + dropped_p == matched)) || fail "policy $p: $matched matched, $ran_p runs, $dropped_p dropped"
  ((failed_p == 0)) || fail "policy $p: $failed_p runs failed"
  echo "   $p: $matched matched, $ran_p ran, $dropped_p dropped"
done
matched=$(series 'vigil_policy_matched_total{policy="resource-exhaustion"}' "$m")
re_runs=$(series 'vigil_policy_runs_total{policy="resource-exhaustion"}' "$m")
re_dropped=$(series 'vigil_policy_dropped_alerts_total{policy="resource-exhaustion"}' "$m")
((matched == total)) || fail "resource-exhaustion matched $matched alerts, not $total"
entries=$(q "SELECT count(*) FROM timeline WHERE event = 'pipeline'
             AND who = 'policy:resource-exhaustion'")
((entries == re_runs)) || fail "$re_runs resource-exhaustion runs but $entries pipeline entries"
# each run confirmed the saturation from the stand-in's data, or (its query timed out under the
# load) left the alert unclassified and did nothing: fail closed
pipeline_entries() {
  q "SELECT count(*) FROM timeline WHERE event = 'pipeline'
     AND who = 'policy:resource-exhaustion' AND comment LIKE '$1'"
}
confirmed=$(pipeline_entries 'resource_exhaustion (0.90): %')
unclassified=$(pipeline_entries 'unknown (0.00): no action')
((confirmed > 0 && confirmed + unclassified == re_runs)) ||
  fail "of $re_runs runs, $confirmed confirmed the saturation and $unclassified did nothing"

cat <<EOF
storm:         $total alerts in $(val seconds) s ($(val rate)/s), statuses $(val statuses), $(val retried) resent; worst POST $(val post_worst_ms) ms
healthz:       $(val healthz_probes) probes, p50 $(val healthz_p50_ms) ms, p99 $(val healthz_p99_ms) ms, worst $(val healthz_worst_ms) ms (bound $bound_ms)
incidents:     $services, $per_service alerts each
pipelines:     resource-exhaustion $re_runs ran ($confirmed confirmed, $unclassified without data), $re_dropped dropped; $queries range queries served
kubectl scale: $runs run (cap $cap), $refused refused: $by_code
time:          posting ${post_secs}s, drained after ${drain_secs}s, whole test $((SECONDS - t_start))s
EOF
echo "a. GET /healthz answered within $((bound_ms / 1000)) s throughout"
(($(val healthz_errors) == 0)) || fail "GET /healthz failed $(val healthz_errors) times: $(val healthz_error)"
(($(val healthz_probes) >= 20)) || fail "only $(val healthz_probes) health probes"
(($(val healthz_worst_ms) <= bound_ms)) ||
  fail "GET /healthz took over $bound_ms ms (worst $(val healthz_worst_ms) ms, $(val healthz_slow) over 1 s)"
echo ok
