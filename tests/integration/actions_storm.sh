#!/usr/bin/env bash
# G5 under a storm: 10,000 alerts in about 10 s (VIGIL_STORM_ALERTS, VIGIL_STORM_SECONDS to
# change), each a distinct deployment, to a policy that asks for a restart per alert, in enforce
# mode (the sandboxed runner, the kubectl stand-in, 1 s per run), under
#   guard = { rate = "50/h", target_rate = "6/h", cooldown = 0, concurrency = 8 }
# (and the alert-storm rule off, so that the budget is what stops the storm).
# The daemon is restarted twice in the middle of the storm (SIGTERM a third of the way, SIGKILL at
# two thirds) while the client keeps posting (tests/fixtures/actions/storm.py: what could not be
# delivered goes to the next daemon). Checked:
#   - at most 50 restarts ran across the three lives (the stand-in's log, and the claims in the
#     ledger): the budget survives a clean stop and a crash; every run has a claim;
#   - the rest were refused and counted: refused rows in the ledger, and in the last life
#     sum(vigil_guard_refusals_total) == vigil_actions_total{state="refused"} (over types) == its refused
#     rows, and each alert it took got a decision (or was counted as dropped);
#   - every alert answered 2xx is in the store;
#   - intake stayed responsive: GET /healthz answered within 1 s throughout (the worst printed);
#   - the daemon's RSS stayed bounded (printed).
# Alerts acknowledged just before the stop or the crash get their decision when the next life
# replays what was stored but not decided (a replayed alert whose action was already claimed
# is answered "duplicate" and writes no new row); any left undecided are counted, printed.
source "$(dirname "$0")/../harness/integration.sh"
export LC_ALL=C # sort and comm agree
total=${VIGIL_STORM_ALERTS:-10000}
seconds=${VIGIL_STORM_SECONDS:-10}
budget=50
rss_limit_kb=$((128 * 1024))
# AddressSanitizer keeps freed memory in quarantine (256 MB) and shadows the rest
readelf -d "$VIGIL" 2>/dev/null | grep -q 'libasan' && rss_limit_kb=$((768 * 1024))
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
on_exit '[[ -n "${storm:-}" ]] && kill "$storm" 2>/dev/null'
# the sandbox helpers (vigil-exec) of this test's daemons die with them (PDEATHSIG); should one
# outlive its daemon, it is found by this test's own scratch directory and killed by its id
helpers() { pgrep -f -- "^$(dirname "$VIGIL")/vigil-exec .*--scratch=$tmp/scratch( |\$)" || true; }
no_helpers() { [[ -z $(helpers) ]]; }
on_exit 'for p in $(helpers); do kill -9 "$p"; done'
cd "$tmp"
mkdir -p policies scratch
kubectl="$VIGIL_SOURCE_DIR/tests/fixtures/bin/kubectl"
export KUBECTL_STANDIN_LOG="$tmp/scratch/kubectl.log" KUBECTL_STANDIN_STATE="$tmp/scratch/state.json"
export KUBECTL_STANDIN_SLEEP=1 # 8 at a time: the budget is spent over ~6 s, across a restart
: > "$KUBECTL_STANDIN_LOG"
: > all.log
/usr/bin/python3 - "$total" > "$KUBECTL_STANDIN_STATE" <<'PY'
import json, sys
print(json.dumps({"deployments": {"ns-%d/d%d" % (i % 50, i): {"replicas": 1}
                                  for i in range(int(sys.argv[1]))}}))
PY
cat > vigil.conf.lua <<LUA
return {
  listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
  repl_socket = "$tmp/vigil.sock",
  executor = { mode = "enforce", allow = { "$kubectl" }, scratch = "$tmp/scratch",
               env = { "PATH", "KUBECTL_STANDIN_LOG", "KUBECTL_STANDIN_STATE",
                       "KUBECTL_STANDIN_SLEEP" },
               timeout = "20s" },
  -- the alert-storm rule (ESTORM) off: here the budget is what must hold, across restarts
  guard = { rate = "$budget/h", target_rate = "6/h", cooldown = 0, concurrency = 8,
            storm_alerts = 0 },
}
LUA
cat > policies/storm.lua <<'LUA'
return {
  name = "restart-storm",
  match = { alertname = "Storm" },
  on_alert = function(alert)
    local l = alert.labels
    local r, err = vigil.actions.restart{ alert = alert, kind = "deployment",
      name = l.deployment, namespace = l.namespace, why = "storm" }
    if not r or (r.state ~= "refused" and r.state ~= "done") then
      vigil.log.warn("restart result", { target = l.deployment or "",
        state = r and r.state or "nil", error = r and r.error or err or "" })
    end
  end,
}
LUA

info=$tmp/daemon.info
echo down > "$info"
start() {
  start_daemon
  echo "$pid $port" > "$info.tmp"
  mv "$info.tmp" "$info"
}
down() { # down SIGNAL: the client stops looking at this daemon first, then it goes
  echo down > "$info.tmp"
  mv "$info.tmp" "$info"
  kill "-$1" "$pid" 2>/dev/null || true
  local rc=0 want=0
  wait "$pid" 2>/dev/null || rc=$?
  pid=
  cat "$log" >> all.log
  [[ $1 == KILL ]] && want=137
  ((rc == want)) || fail "the daemon exited with status $rc (SIG$1 gives $want)"
}
metrics() { curl -sf "$base/metrics" || fail "GET /metrics"; }
series() { awk -v s="$1" '$1 == s { print $2 }' <<< "$2"; }
sum_series() { awk -v p="$1" 'index($1, p) == 1 { n += $2 } END { print n + 0 }' <<< "$2"; }
max_id() { sqlite3 vigil.db 'SELECT coalesce(max(id), 0) FROM actions'; }

echo "$total alerts in ~${seconds}s, a restart budget of $budget/h, SIGTERM and SIGKILL midway"
start
t0=$SECONDS
/usr/bin/python3 "$VIGIL_SOURCE_DIR/tests/fixtures/actions/storm.py" "$info" acked.txt \
  "$total" 50 "$seconds" > storm.out &
storm=$!
sleep "$(awk -v s="$seconds" 'BEGIN { print s / 3 }')"
down TERM
start
sleep "$(awk -v s="$seconds" 'BEGIN { print s / 3 }')"
down KILL
boundary=$(max_id) # the last life's rows are those after it
start
wait "$storm" || fail "the storm client failed: $(cat storm.out)"
storm=
storm_secs=$((SECONDS - t0))
cat storm.out
until_ok 60 sh -c "curl -sf '$base/metrics' | grep -qx 'vigil_actions_running 0'"
until_ok 60 sh -c "curl -sf '$base/metrics' | grep -qx 'vigil_tasks_running 0'"
until_ok 30 no_helpers # no run of an earlier life left
m=$(metrics)
rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
curl -sf "$base/api/v1/alerts?filter=alertname%3D%22Storm%22&limit=100000" |
  grep -o '"deployment":"d[0-9]*"' | cut -d'"' -f4 | LC_ALL=C sort -u > stored.txt
down TERM
[[ $(sqlite3 vigil.db 'PRAGMA integrity_check') == ok ]] || fail "integrity_check failed"

echo "every alert answered 2xx is in the store"
LC_ALL=C sort -u acked.txt > acked.sorted
acked=$(wc -l < acked.sorted)
((acked == total)) || fail "only $acked of $total alerts were acknowledged: $(cat storm.out)"
missing=$(comm -23 acked.sorted stored.txt | wc -l)
((missing == 0)) || fail "$missing acknowledged alerts are not stored, e.g. $(comm -23 acked.sorted stored.txt | head -3 | tr '\n' ' ')"

echo "at most $budget restarts across the three lives"
runs=$(grep -c '"rollout", "restart"' "$KUBECTL_STANDIN_LOG" || true)
q() { sqlite3 vigil.db "$1"; }
claims=$(q "SELECT count(*) FROM actions WHERE state IN ('claimed', 'done', 'failed', 'unknown')")
done_rows=$(q "SELECT count(*) FROM actions WHERE state = 'done'")
unknown_rows=$(q "SELECT count(*) FROM actions WHERE state = 'unknown'")
refused_rows=$(q "SELECT count(*) FROM actions WHERE state = 'refused'")
other=$(q "SELECT group_concat(state || ':' || n) FROM (SELECT state, count(*) n FROM actions
           WHERE state NOT IN ('done', 'unknown', 'refused') GROUP BY state)")
# a token comes back every 3600/$budget s: a storm that took longer earned that many more
allowed=$((budget + storm_secs * budget / 3600))
((runs <= allowed)) || fail "kubectl restarted $runs deployments: the budget is $allowed"
((claims <= allowed)) || fail "$claims actions were claimed: the budget is $allowed"
((runs <= claims)) || fail "$runs kubectl runs but only $claims claims"
((done_rows > 0)) || fail "no restart ran at all"
[[ -z $other ]] || fail "rows in other states: $other"
# every run has its claim
ran=$(grep -o '"deployment/d[0-9]*"' "$KUBECTL_STANDIN_LOG" | tr -d '"' | cut -d/ -f2 | LC_ALL=C sort)
[[ -z $(uniq -d <<< "$ran") ]] || fail "deployments restarted twice: $(uniq -d <<< "$ran" | head -3)"
claimed_targets=$(q "SELECT substr(target, instr(target, '/deployment/') + 12) FROM actions
                     WHERE state IN ('done', 'unknown')" | LC_ALL=C sort)
unclaimed=$(comm -23 <(echo "$ran") <(echo "$claimed_targets") | grep -c . || true)
((unclaimed == 0)) || fail "$unclaimed runs have no claim in the ledger"
tokens=$(q "SELECT printf('%.2f', value) FROM guard_state WHERE name = 'bucket:type:restart'")

echo "the rest were refused and counted"
refusals=$(sum_series 'vigil_guard_refusals_total{' "$m")
refused_metric=$(awk '$1 ~ /^vigil_actions_total{.*state="refused"}$/ { n += $2 } END { print n + 0 }' <<< "$m")
refused_last=$(q "SELECT count(*) FROM actions WHERE state = 'refused' AND id > $boundary")
rows_last=$(q "SELECT count(*) FROM actions WHERE id > $boundary")
((refusals == refused_last && refused_metric == refused_last)) ||
  fail "the last life: refusals_total $refusals, actions_total{refused} $refused_metric, refused rows $refused_last"
matched=$(series 'vigil_policy_matched_total{policy="restart-storm"}' "$m")
runs_last=$(series 'vigil_policy_runs_total{policy="restart-storm"}' "$m")
dropped=$(series 'vigil_policy_dropped_alerts_total{policy="restart-storm"}' "$m")
failures=$(series 'vigil_policy_failures_total{policy="restart-storm"}' "$m")
((failures == 0)) || fail "$failures policy runs failed"
duplicates=$(awk '$1 ~ /^vigil_actions_total{.*state="duplicate"}$/ { n += $2 } END { print n + 0 }' <<< "$m")
((runs_last + dropped == matched && rows_last + duplicates == runs_last)) ||
  fail "the last life: $matched alerts matched, $runs_last runs, $dropped dropped, $rows_last decisions, $duplicates duplicates"
by_rule=$(grep '^vigil_guard_refusals_total{' <<< "$m" | awk '$2 > 0' | sed 's/.*rule="\([^"]*\)"} /\1=/' | tr '\n' ' ')
undecided=$(comm -23 acked.sorted <(q "SELECT substr(target, instr(target, '/deployment/') + 12)
                                       FROM actions" | LC_ALL=C sort -u) | wc -l)

echo "intake stayed responsive, memory bounded"
val() { sed -n "s/^$1=//p" storm.out; }
(($(val healthz_errors) == 0)) || fail "GET /healthz failed $(val healthz_errors) times: $(val healthz_error)"
(($(val healthz_slow) == 0)) || fail "GET /healthz took over 1 s $(val healthz_slow) times (worst $(val healthz_worst_ms) ms)"
(($(val healthz_probes) >= 20)) || fail "only $(val healthz_probes) health probes"
rss_max=$(val rss_max_kb)
((rss_max < rss_limit_kb && rss_kb < rss_limit_kb)) || fail "RSS reached $rss_max kB (limit $rss_limit_kb)"

cat <<EOF
alerts posted:  $total in $(val seconds) s ($(val rate) alerts/s), $acked answered 2xx, all stored
restarts run:   $runs (rows done $done_rows, unknown $unknown_rows; budget $allowed, tokens left ${tokens:-full})
refused:        $refused_rows rows in the ledger; in the last life $refusals (${by_rule% })
undecided:      $undecided acknowledged alerts without a decision (taken just before the stop or the crash); dropped in the last life $dropped
worst healthz:  $(val healthz_worst_ms) ms over $(val healthz_probes) probes
RSS:            at most $((rss_max / 1024)) MB, $((rss_kb / 1024)) MB at the end
EOF
echo ok
