#!/usr/bin/env bash
# vigil.prom against a real Prometheus (Debian) scraping a real node-exporter and a real
# Pushgateway into which known values are pushed: exact instant and range results, metadata
# endpoints, Prometheus' own error for bad PromQL, an unreachable port, a silent server.
source "$(dirname "$0")/../harness/integration.sh"
for bin in prometheus prometheus-pushgateway prometheus-node-exporter; do
  command -v "$bin" >/dev/null || fail "$bin is missing (make test installs it)"
done
pids=()
on_exit 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done'
cd "$tmp"
pg=$(free_port) ne=$(free_port) pr=$(free_port) dead=$(free_port)
prometheus-pushgateway --web.listen-address="127.0.0.1:$pg" 2>pg.log &
pids+=($!)
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne" --collector.disable-defaults \
  --collector.loadavg 2>ne.log &
pids+=($!)
cat > prom.yml <<YML
global: { scrape_interval: 1s }
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs: [{ targets: ["127.0.0.1:$pg"] }]
  - job_name: node
    static_configs: [{ targets: ["127.0.0.1:$ne"] }]
YML
until_ok 20 curl -sf "http://127.0.0.1:$pg/-/ready"
printf 'demo_temperature{room="a"} 21.5\ndemo_temperature{room="b"} 19\n' |
  curl -sf --data-binary @- "http://127.0.0.1:$pg/metrics/job/demo"
prometheus --config.file=prom.yml --storage.tsdb.path="$tmp/prom" \
  --web.listen-address="127.0.0.1:$pr" 2>prom.log &
pids+=($!)
until_ok 30 curl -sf "http://127.0.0.1:$pr/-/ready"
# wait until both targets were scraped six times or more
until_ok 40 bash -c "curl -sf 'http://127.0.0.1:$pr/api/v1/query?query=count_over_time(up%5B1m%5D)' |
  grep -q '\"value\":\[[0-9.]*,\"\([6-9]\|[1-9][0-9]\)\"'"
/usr/bin/python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
' > silent.port &
pids+=($!)
until_ok 5 test -s silent.port
silent=$(cat silent.port)

cat > client.lua <<LUA
prom = vigil.prom{ url = "http://127.0.0.1:$pr/", timeout = "5s" }

-- an instant vector, exact values, sorted by room for a stable check
v = assert(prom:query('demo_temperature{job="demo"}'))
table.sort(v, function(a, b) return a.labels.room < b.labels.room end)
assert(#v == 2, #v)
assert(v[1].labels.room == "a" and v[1].value == 21.5 and v[1].labels.job == "demo")
assert(v[2].labels.room == "b" and v[2].value == 19)
assert(math.abs(v[1].ts - vigil.now()) < 60)

-- scalars, NaN and infinities
s = assert(prom:query("scalar(vector(1)) / 0"))
assert(s.value == math.huge, tostring(s.value))
s = assert(prom:query("0 / 0 * scalar(vector(1))"))
assert(s.value ~= s.value, "NaN expected")

-- a range: every point of the last 4 s at 1 s steps
m = assert(prom:query_range('demo_temperature{room="a"}', { start = "4s", step = "1s" }))
assert(#m == 1 and #m[1].values >= 4 and #m[1].values == #m[1].ts, #m[1].values)
for i = 1, #m[1].values do assert(m[1].values[i] == 21.5) end
assert(m[1].ts[2] - m[1].ts[1] == 1)

-- the node exporter is scraped too
up = assert(prom:query('up{job="node"}'))
assert(#up == 1 and up[1].value == 1)

-- metadata
names = assert(prom:labels())
found = false
for _, n in ipairs(names) do found = found or n == "room" end
assert(found, "no label 'room'")
rooms = assert(prom:label_values("room"))
assert(#rooms == 2 and rooms[1] == "a" and rooms[2] == "b")
series = assert(prom:series('demo_temperature'))
assert(#series == 2)
targets = assert(prom:targets())
assert(#targets.activeTargets == 2)
assert(prom:alerts())
assert(prom:rules())

-- failures
_, err = prom:query("sum(")
assert(err:match("^EQUERY: bad_data: "), err)
_, err = vigil.prom{ url = "http://127.0.0.1:$dead" }:query("up")
assert(err:match("^ECONNREFUSED: "), err)
_, err = vigil.prom{ url = "http://127.0.0.1:$silent", timeout = "300ms" }:query("up")
assert(err:match("^ETIMEDOUT: "), err)
assert(not pcall(prom.label_values, prom, "bad name"))
print("prom ok")
LUA
out=$("$VIGIL" repl < client.lua 2>&1) || fail "the client script failed: $out"
[[ $out == *"prom ok"* ]] || fail "client: $out"
echo "ok"
