#!/usr/bin/env bash
# With the real thing, from Debian's packages, on loopback ports chosen here: Prometheus
# evaluates a rule over a value in a Pushgateway, fires it to Alertmanager, which notifies
# vigil's webhook; the incident opens. When the value drops, the resolution travels the same
# way and the incident resolves. Prometheus also scrapes vigil's /metrics, and amtool posts to
# vigil as it would to an Alertmanager (the v2 client shape).
source "$(dirname "$0")/../harness/integration.sh"
for bin in prometheus prometheus-alertmanager prometheus-pushgateway amtool; do
  command -v "$bin" >/dev/null || fail "$bin is missing (make test installs it)"
done
pids=()
on_exit 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done'
cd "$tmp"

mkdir -p policies
cat > policies/seen.lua <<'LUA'
return { name = "seen", match = { team = "sre" }, on_alert = function(alert, ctx)
  ctx.log.info("seen " .. alert.labels.alertname .. " " .. alert.status)
end }
LUA
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
         repl_socket = "$tmp/vigil.sock" }
LUA
"$VIGIL" run -c vigil.conf.lua 2>"$log" &
pids+=($!)
wait_for 'msg="vigil started"'
vport=$(daemon_port)
vigil="http://127.0.0.1:$vport"

cat > rules.yml <<'YML'
groups:
  - name: demo
    interval: 1s
    rules:
      - alert: DemoHigh
        expr: demo_value > 1
        labels: { team: sre, severity: critical, service: demo }
        annotations: { summary: "demo_value is {{ $value }}" }
YML
promport=$(free_port)
start_alerting "$vigil" "alertname" "$promport" "127.0.0.1:$vport"

echo "a rule that fires reaches vigil through Alertmanager and opens an incident"
printf 'demo_value 5\n' | curl -sf --data-binary @- "http://127.0.0.1:$pgport/metrics/job/demo"
wait_for 'msg="seen DemoHigh firing"' 1 60
body=$(curl -sf "$vigil/api/v1/incidents?status=active")
[[ $body == *'"groupKey":"alertname=DemoHigh,service=demo"'* ]] || fail "no incident: $body"
alerts=$(curl -sf "$vigil/api/v1/alerts?filter=alertname%3D%22DemoHigh%22")
[[ $alerts == *'"source":"alertmanager"'* && $alerts == *'"severity":"critical"'* ]] ||
  fail "stored alert: $alerts"

echo "when the value drops, the resolution arrives and the incident resolves"
printf 'demo_value 0\n' | curl -sf --data-binary @- "http://127.0.0.1:$pgport/metrics/job/demo"
wait_for 'msg="seen DemoHigh resolved"' 1 90
body=$(curl -sf "$vigil/api/v1/incidents?status=resolved")
[[ $body == *'"groupKey":"alertname=DemoHigh,service=demo"'* ]] || fail "not resolved: $body"

echo "Prometheus scrapes vigil's /metrics"
deadline=$((SECONDS + 20))
until curl -sf "http://127.0.0.1:$promport/api/v1/query" \
  --data-urlencode 'query=vigil_intake_alerts_total{endpoint="webhook",outcome="new"}' |
  grep -q '"value":\[[0-9.]*,"[1-9]'; do
  ((SECONDS < deadline)) || fail "Prometheus has no vigil_intake_alerts_total from vigil"
  sleep 0.5
done

echo "amtool posts to vigil as to an Alertmanager"
amtool alert add FromAmtool team=sre severity=warning --annotation=summary=hello \
  --alertmanager.url="$vigil" || fail "amtool alert add"
wait_for 'msg="seen FromAmtool firing"' 1 5
echo "ok"
