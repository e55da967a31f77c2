#!/usr/bin/env bash
# G3 under fire: the daemon (enforce mode, the sandboxed runner, the kubectl stand-in) is killed
# with SIGKILL at random moments while actions run, 30 rounds (VIGIL_ACTION_CRASH_ROUNDS to
# change). Each round posts new alerts (a distinct deployment each, one restart per alert) and,
# every other round, re-posts earlier alerts changed (a new annotation) so the policy asks
# again for keys already claimed. kubectl sleeps a random 0-0.4 s per run
# (tests/fixtures/actions/kubectl, which also records the idempotency key each run was given),
# so kills land before the claim, between the claim and the run, during the run and after it.
# At every start the rows left "claimed" become "unknown", and the count agrees with
# vigil_actions_unknown_at_start. After the last round the daemon starts once more, every
# alert is re-posted, and:
#   (a) per idempotency key at most one kubectl run (the keys the tool was given), and each
#       deployment restarted at most once (the stand-in's own log and its cluster state);
#   (b) every action row (sqlite3 and GET /api/v1/actions paged with before=, which agree) is
#       done or unknown: none is left claimed;
#   (c) every run has a row claimed before it (no run without a committed claim); a key that
#       ran but is not done is unknown; a done row ran exactly once and changed the cluster
#       once; unknown rows are the sum of the unknown_at_start of every start;
#   (d) PRAGMA integrity_check is ok.
source "$(dirname "$0")/../harness/integration.sh"
rounds=${VIGIL_ACTION_CRASH_ROUNDS:-30}
per_round=3
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
# the sandbox helpers (vigil-exec) of this test's daemons die with them (PDEATHSIG); should one
# outlive its daemon, it is found by this test's own scratch directory and killed by its id
helpers() { pgrep -f -- "^$(dirname "$VIGIL")/vigil-exec .*--scratch=$tmp/scratch( |\$)" || true; }
no_helpers() { [[ -z $(helpers) ]]; }
on_exit 'for p in $(helpers); do kill -9 "$p"; done'
cd "$tmp"
mkdir -p policies scratch
kubectl="$VIGIL_SOURCE_DIR/tests/fixtures/actions/kubectl"
# under Landlock only the scratch directory is writable: the stand-in's files go there
export KUBECTL_STANDIN_LOG="$tmp/scratch/kubectl.log" KUBECTL_STANDIN_STATE="$tmp/scratch/state.json"
export KUBECTL_KEYS_LOG="$tmp/scratch/keys.log" KUBECTL_SLEEP_MIN=0 KUBECTL_SLEEP_MAX=0.4
: > "$KUBECTL_STANDIN_LOG"
: > "$KUBECTL_KEYS_LOG"
: > all.log
# every deployment exists (a NotFound would be a failure, not what is under test)
/usr/bin/python3 - "$rounds" "$per_round" > "$KUBECTL_STANDIN_STATE" <<'PY'
import json, sys
rounds, per = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps({"deployments": {"prod/r%d-a%d" % (r, i): {"replicas": 2}
                                  for r in range(1, rounds + 2) for i in range(per)}}))
PY
cat > vigil.conf.lua <<LUA
return {
  listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
  repl_socket = "$tmp/vigil.sock",
  executor = { mode = "enforce", allow = { "$kubectl" }, scratch = "$tmp/scratch",
               env = { "PATH", "KUBECTL_STANDIN_LOG", "KUBECTL_STANDIN_STATE",
                       "KUBECTL_KEYS_LOG", "KUBECTL_SLEEP_MIN", "KUBECTL_SLEEP_MAX" },
               timeout = "20s" },
  -- the guard rails out of the way: only the claim stands between a key and a second run
  guard = { cooldown = 0, rate = "unlimited", target_rate = "unlimited", concurrency = 0,
            target_concurrency = 0, blast_targets = 0, breaker_failures = 0, storm_alerts = 0 },
}
LUA
cat > policies/restart.lua <<'LUA'
return {
  name = "restart-on-crash",
  match = { alertname = "CrashLoop" },
  on_alert = function(alert)
    local l = alert.labels
    -- retries = 0: a second run of a key can only be a second claim, never a retry
    local r, err = vigil.actions.restart{ alert = alert, kind = "deployment",
      name = l.deployment, namespace = l.namespace, why = "crash looping", retries = 0 }
    vigil.log.info("restart result", { target = l.deployment or "",
      state = r and r.state or "nil", error = r and r.error or err or "",
      key = r and r.key or "" })
  end,
}
LUA

start() { start_daemon; }
crash() {
  kill -9 "$pid" 2>/dev/null || true
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  pid=
  cat "$log" >> all.log
  ((rc == 137)) || fail "the daemon had exited on its own (status $rc) before the kill"
}
post() {
  curl -sf -XPOST "$base/api/v2/alerts" -H 'Content-Type: application/json' -d "$1" > /dev/null ||
    fail "posting $1"
}
metric() { # the value of an exact series
  local m
  m=$(curl -sf "$base/metrics") || fail "GET /metrics"
  awk -v s="$1" '$1 == s { print $2 }' <<< "$m"
}
claimed_rows() {
  if [[ -f vigil.db ]]; then
    sqlite3 vigil.db "SELECT count(*) FROM actions WHERE state = 'claimed'"
  else
    echo 0
  fi
}
alert() { # alert DEPLOYMENT [SUMMARY]
  local ann=
  [[ -n ${2:-} ]] && ann=", \"annotations\": {\"summary\": \"$2\"}"
  printf '{"labels": {"alertname": "CrashLoop", "namespace": "prod", "deployment": "%s"}%s}' \
    "$1" "$ann"
}
# start_checked: a start whose unknown rows are the rows a crash left claimed, and say so
unknown_total=0
start_checked() {
  local claimed
  claimed=$(claimed_rows)
  start
  local at_start
  at_start=$(metric vigil_actions_unknown_at_start)
  [[ $at_start == "$claimed" ]] ||
    fail "$claimed rows were left claimed, vigil_actions_unknown_at_start says $at_start"
  if ((claimed > 0)); then
    grep -Eq "msg=\"actions with an unknown outcome.* count=$claimed( |$)" "$log" ||
      fail "the start did not log $claimed actions with an unknown outcome"
  fi
  [[ $(claimed_rows) == 0 ]] || fail "rows still claimed after the start"
  unknown_total=$((unknown_total + claimed))
}

echo "kill -9 at random moments while actions run, $rounds rounds"
posted=()
reposts=0
for ((r = 1; r <= rounds; r++)); do
  start_checked
  body=
  for ((i = 0; i < per_round; i++)); do
    body+="${body:+, }$(alert "r$r-a$i")"
    posted+=("r$r-a$i")
  done
  if ((r % 2 == 0)); then # earlier alerts, changed: the policy asks for their keys again
    for _ in 1 2; do
      d=${posted[RANDOM % (${#posted[@]} - per_round)]}
      body+=", $(alert "$d" "still crashing (round $r)")"
      reposts=$((reposts + 1))
    done
  fi
  post "[$body]"
  sleep "0.$((RANDOM % 7))$((RANDOM % 10))"
  crash
done

echo "the last start: every alert again, then the books"
start_checked
body=
for d in "${posted[@]}"; do body+="${body:+, }$(alert "$d" "after the crashes")"; done
post "[$body]"
wait_for 'msg="restart result"' "${#posted[@]}" 60
until_ok 30 sh -c "curl -sf '$base/metrics' | grep -qx 'vigil_actions_running 0'"
until_ok 30 no_helpers # no run of an earlier life left
cat "$log" >> all.log
limit=25 # pages of 25, newest first, each before the last id of the one before
curl -sf "$base/api/v1/actions?limit=$limit" > api.0.json || fail "GET /api/v1/actions"
page=0
while :; do
  last=$(/usr/bin/python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))["actions"]; print(a[-1]["id"] if len(a) == int(sys.argv[2]) else "")' "api.$page.json" "$limit")
  [[ -n $last ]] || break
  page=$((page + 1))
  curl -sf "$base/api/v1/actions?limit=$limit&before=$last" > "api.$page.json" || fail "paging"
done
curl -sf "$base/api/v1/actions?state=unknown&limit=1000" > api.unknown.json || fail "state=unknown"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
((rc == 0)) || fail "the daemon exited with status $rc on SIGTERM"
[[ $(sqlite3 vigil.db 'PRAGMA integrity_check') == ok ]] || fail "integrity_check failed"

/usr/bin/python3 - "$tmp" "${#posted[@]}" "$unknown_total" <<'PY' || fail "the books do not add up"
import collections, glob, json, re, sqlite3, sys

tmp, nalerts, unknown_total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
errors = []
def check(ok, msg):
    if not ok:
        errors.append(msg)

db = sqlite3.connect(tmp + "/vigil.db")
rows = {r[0]: r for r in db.execute(
    "SELECT id, key, claim_key, target, state FROM actions WHERE policy = 'restart-on-crash'")}
by_key = collections.defaultdict(list)
by_target = collections.defaultdict(list)
for r in rows.values():
    by_key[r[1]].append(r)
    by_target[r[3]].append(r)

# the API says the same as the database
api = {}
for f in sorted(glob.glob(tmp + "/api.[0-9]*.json")):
    for a in json.load(open(f))["actions"]:
        check(a["id"] not in api, "action %d listed twice by the API" % a["id"])
        api[a["id"]] = a
check(set(api) == set(rows), "the API lists %d actions, the database holds %d" % (len(api), len(rows)))
for i, a in api.items():
    if i in rows:
        check(a["state"] == rows[i][4] and a["key"] == rows[i][1], "action %d differs in the API" % i)
api_unknown = json.load(open(tmp + "/api.unknown.json"))["actions"]

# (a) runs per key (the key the tool was given) and per deployment (the stand-in's log)
keys_log = [json.loads(l) for l in open(tmp + "/scratch/keys.log")]
runs_by_key = collections.Counter(e["key"] for e in keys_log)
standin = [json.loads(l) for l in open(tmp + "/scratch/kubectl.log")]
runs_by_target = collections.Counter()
for argv in standin:
    check(argv[:2] == ["rollout", "restart"], "unexpected kubectl call %s" % argv)
    ns = argv[argv.index("-n") + 1]
    kind, _, name = argv[2].partition("/")
    runs_by_target["%s/%s/%s" % (ns, kind, name)] += 1
for k, n in runs_by_key.items():
    check(n == 1, "key %s ran %d times" % (k, n))
for t, n in runs_by_target.items():
    check(n == 1, "%s was restarted %d times" % (t, n))
cluster = json.load(open(tmp + "/scratch/state.json"))["deployments"]
for name, d in cluster.items():
    check(d.get("restarts", 0) <= 1, "%s has %d restarts in the cluster" % (name, d.get("restarts", 0)))

# (b) every row is in a final or surfaced state
states = collections.Counter(r[4] for r in rows.values())
check(set(states) <= {"done", "unknown"}, "states other than done/unknown: %s" % dict(states))
check(len(rows) == nalerts, "%d alerts but %d action rows" % (nalerts, len(rows)))
for k, rs in by_key.items():
    check(len(rs) == 1, "key %s has %d rows" % (k, len(rs)))
    check(all(r[2] == k for r in rs), "key %s is not held by its row" % k)

# (c) a run has a row claimed before it; not done means unknown; done means it ran, once
for k in runs_by_key:
    check(k in by_key, "key %s ran without a claim in the ledger" % k)
for t in runs_by_target:
    check(t in by_target, "%s was restarted without a claim in the ledger" % t)
    check(all(r[4] in ("done", "unknown") for r in by_target.get(t, [])),
          "%s ran and its row is %s" % (t, [r[4] for r in by_target.get(t, [])]))
done = [r for r in rows.values() if r[4] == "done"]
unknown = [r for r in rows.values() if r[4] == "unknown"]
for r in done:
    check(runs_by_key.get(r[1]) == 1 and runs_by_target.get(r[3]) == 1, "done %s did not run once" % r[1])
    ns, _, name = r[3].split("/")
    check(cluster[ns + "/" + name].get("restarts", 0) == 1, "done %s did not change the cluster" % r[1])
check(len(unknown) == unknown_total,
      "%d unknown rows, but the starts counted %d" % (len(unknown), unknown_total))
check(len(api_unknown) == len(unknown), "state=unknown lists %d, not %d" % (len(api_unknown), len(unknown)))

dups = 0
for line in open(tmp + "/all.log"):
    if 'msg="restart result"' in line and re.search(r"\bstate=duplicate\b", line):
        dups += 1
ran_unknown = sum(1 for r in unknown if r[3] in runs_by_target)
print("alerts %d, kubectl runs %d (keys %d), done %d, unknown %d (%d had started, %d had not),"
      " duplicates refused %d" % (nalerts, len(standin), len(keys_log), len(done), len(unknown),
                                  ran_unknown, len(unknown) - ran_unknown, dups))
for e in errors[:20]:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
echo "ok ($rounds rounds, $reposts re-posts)"
