#!/usr/bin/env bash
# vigil.loki, vigil.jaeger and vigil.datadog against tests/fixtures/sources/fixture_server.py
# (canned answers in the documented formats of notes/apis.md, their error bodies, 429s, 5xx,
# slow, truncated, short, malformed and oversized answers), and vigil.alertmanager against a
# real Alertmanager (Debian): create, list and expire a silence, list a posted alert.
# Every parsed result and every error mapping is asserted exactly.
source "$(dirname "$0")/../harness/integration.sh"
command -v prometheus-alertmanager >/dev/null || fail "prometheus-alertmanager is missing (make test installs it)"
src=${VIGIL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
pids=()
on_exit 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done'
cd "$tmp"

/usr/bin/python3 "$src/tests/fixtures/sources/fixture_server.py" > fixture.port 2> fixture.log &
pids+=($!)
disown
until_ok 10 test -s fixture.port
fx=$(cat fixture.port)

am=$(free_port) dead=$(free_port)
cat > am.yml <<YML
route: { receiver: "null", group_wait: 1s }
receivers: [ { name: "null" } ]
YML
prometheus-alertmanager --config.file=am.yml --storage.path="$tmp/am" \
  --web.listen-address="127.0.0.1:$am" --cluster.listen-address="" 2>am.log &
pids+=($!)
disown
until_ok 30 curl -sf "http://127.0.0.1:$am/-/ready"
curl -sf -H 'Content-Type: application/json' "http://127.0.0.1:$am/api/v2/alerts" -d '[
  {"labels": {"alertname": "HighLatency", "service": "checkout", "severity": "critical"},
   "annotations": {"summary": "p99 above 2s"}, "generatorURL": "http://prometheus:9090/graph"},
  {"labels": {"alertname": "DiskFull", "service": "db", "severity": "warning"}}]' >/dev/null \
  || fail "could not post alerts to Alertmanager"

cat > client.lua <<LUA
FX = "http://127.0.0.1:$fx"
function requests() return vigil.http.get(FX .. "/_requests").json end
function forget() vigil.http.request{ method = "DELETE", url = FX .. "/_requests" } end
function expect(want, got, err)
  assert(got == nil, "expected a failure, got a result")
  assert(err == want, ("\n  want %q\n  got  %q"):format(want, tostring(err)))
end
-- every fault of the fixture, as each client must name it
function faults(make, call, path, messages)
  local function c(kind) return make(FX .. "/fault/" .. kind) end
  expect("ERATELIMIT: " .. messages[429] .. "; retry after " .. messages.wait .. " s", call(c("ratelimit")))
  expect("ERATELIMIT: " .. messages[429] .. "; retry after 9 s", call(c("retryafter")))
  expect("EHTTP: 500 from " .. path .. ": " .. messages[500], call(c("500")))
  expect("EHTTP: 503 from " .. path .. ": " .. messages[503], call(c("503")))
  expect("EHTTP: 502 from " .. path .. ": <html><body><h1>502 Bad Gateway</h1></body></html>",
    call(c("badgateway")))
  expect("EHTTP: 200 from " .. path .. ": not JSON: <<not json>>", call(c("malformed")))
  local _, err = call(c("truncated"))
  assert(err:find("^EHTTP: 200 from " .. path:gsub("%p", "%%%0") .. ": not JSON: {"), err)
  _, err = call(c("short"))
  assert(err:match("^EPROTO: transfer closed with 99990 bytes remaining"), err)
  _, err = call(c("oversized"))
  assert(err:match("^ETOOBIG: "), err)
  local t0 = vigil.now()
  _, err = call(c("slow"))
  assert(err:match("^ETIMEDOUT: ") and vigil.now() - t0 < 2, err)
end

----------------------------------------------------------------------------- Loki
loki = vigil.loki{ url = FX .. "/", timeout = "5s" }
LOG = '{namespace="prod"} |= "error"'
METRIC = 'sum by (level) (count_over_time({namespace="prod"}[1m]))'
CHECKOUT = { app = "checkout", namespace = "prod", pod = "checkout-5f7d9c-abcde", level = "error" }
L1 = 'level=error msg="payment gateway timeout" order=8812'
L2 = 'level=error msg="payment gateway timeout" order=8809'

forget()
e = assert(loki:query_range(LOG, { start = 1719909000, ["end"] = 1719912600.5, limit = 10 }))
assert(#e == 3, #e)
-- one timeline, newest first (backward), across both streams
assert(e[1].ts == 1719912598123456789 and math.type(e[1].ts) == "integer")
assert(e[1].line == L1 and e[1].level == "error" and e[1].service == "checkout")
for k, v in pairs(CHECKOUT) do assert(e[1].labels[k] == v, k) end
assert(e[2].ts == 1719912595000000000 and e[2].line == "retrying charge order=8812")
assert(e[2].level == "warn" and e[2].service == "payments") -- detected_level, service_name
assert(e[3].ts == 1719912590004000000 and e[3].line == L2)
q = requests()[1].query
assert(q.start[1] == "1719909000000000000" and q["end"][1] == "1719912600500000000", q.start[1])
assert(q.limit[1] == "10" and q.direction[1] == "backward" and q.query[1] == LOG)

e = assert(loki:query_range(LOG, { direction = "forward", start = "2024-07-02T08:30:00Z" }))
assert(e[1].ts == 1719912590004000000 and e[2].ts == 1719912595000000000)
assert(e[3].ts == 1719912598123456789)
-- an entry's ts (ns) can be passed back to page
forget()
assert(loki:query_range(LOG, { start = 1719909000, ["end"] = e[3].ts }))
q = requests()[1].query
assert(q["end"][1] == "1719912598123456789" and q.start[1] == "1719909000000000000")
-- durations mean "that long ago", sent as nanoseconds too
forget()
loki:labels{ start = "6h" }
q = requests()[1].query
assert(#q.start[1] == 19 and math.abs(tonumber(q.start[1]) / 1e9 - (vigil.now() - 6 * 3600)) < 5)

m = assert(loki:query_range(METRIC, { start = "1h", step = "1m" }))
assert(#m == 2 and m[1].labels.level == "error" and m[2].labels.level == "warn")
assert(m[1].ts[1] == 1719912540 and m[1].ts[2] == 1719912600)
assert(m[1].values[1] == 12 and m[1].values[2] == 37.77)
assert(m[2].values[1] ~= m[2].values[1] and m[2].values[2] == math.huge) -- NaN, +Inf
v = assert(loki:query(METRIC))
assert(#v == 1 and v[1].labels.level == "error" and v[1].value == 37.77 and v[1].ts == 1719912600)

names = assert(loki:labels())
assert(#names == 4 and names[1] == "app" and names[4] == "level")
none = assert(loki:labels{ query = '{app="none"}' }) -- Loki leaves "data" out
assert(type(none) == "table" and #none == 0)
vals = assert(loki:label_values("namespace"))
assert(#vals == 2 and vals[1] == "prod" and vals[2] == "staging")
vals = assert(loki:label_values("nothing"))
assert(#vals == 0)
assert(not pcall(loki.label_values, loki, "bad name"))
assert(not pcall(loki.query_range, loki, LOG, { start = "yesterday" }))

-- Loki's plain-text 400s
expect("EQUERY: log queries are not supported as an instant query type, please change your"
  .. " query to a range query type", loki:query(LOG))
expect("EQUERY: parse error at line 1, col 1: syntax error: unexpected IDENTIFIER",
  loki:query_range("{app="))
expect("EQUERY: limit must be a positive value", loki:query_range(LOG, { limit = 0 }))
expect("EQUERY: max entries limit per query exceeded, limit > max_entries_limit_per_query"
  .. " (6000 > 5000)", loki:query_range(LOG, { limit = 6000 }))
expect("EQUERY: end timestamp must not be before or equal to start time",
  loki:query_range(LOG, { start = 1719912600, ["end"] = 1719909000 }))
-- multi-tenant: X-Scope-OrgID
expect("EAUTH: no org id", vigil.loki{ url = FX .. "/mt" }:labels())
forget()
assert(#assert(vigil.loki{ url = FX .. "/mt", tenant = "team-a" }:labels()) == 4)
assert(requests()[1].headers["x-scope-orgid"] == "team-a")
faults(function(url)
  return vigil.loki{ url = url, timeout = "400ms", max_bytes = 1000000, retries = 0 }
end,
  function(c) return c:labels() end, "/loki/api/v1/labels",
  { [429] = "too many outstanding requests", wait = 7, [500] = "internal server error",
    [503] = "no healthy instances" })
expect("EHTTP: 504 from /loki/api/v1/labels: request timed out, decrease the duration of the"
  .. " request or add more label matchers (prefer exact match over regex match) to reduce the"
  .. " amount of data processed", vigil.loki{ url = FX .. "/fault/504" }:labels())
_, err = vigil.loki{ url = "http://127.0.0.1:$dead" }:labels()
assert(err:match("^ECONNREFUSED: "), err)
-- through the source policy in C: a 5xx is retried (twice by default), a breaker opens
forget()
expect("EHTTP: 503 from /loki/api/v1/labels: no healthy instances",
  vigil.loki{ url = FX .. "/fault/503", backoff = "10ms" }:labels())
assert(#requests() == 3, #requests())
broken = vigil.loki{ url = FX .. "/fault/500", name = "loki-breaker", retries = 0,
  breaker_failures = 2, breaker_cooldown = "1h" }
forget()
expect("EHTTP: 500 from /loki/api/v1/labels: internal server error", broken:labels())
expect("EHTTP: 500 from /loki/api/v1/labels: internal server error", broken:labels())
_, err = broken:labels()
assert(err:match("^ECIRCUIT: source 'loki%-breaker' is failing"), err)
assert(#requests() == 2)
print("loki ok")

--------------------------------------------------------------------------- Jaeger
jaeger = vigil.jaeger{ url = FX, timeout = "5s" }
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
t = assert(jaeger:trace(TID))
assert(t.id == TID and #t.spans == 3 and t.errors == 2 and t.root == "00f067aa0ba902b7")
assert(t.start == 1719912600123456 / 1e6)
assert(t.duration == (1719912601000000 - 1719912600123456) / 1e6, t.duration)
assert(#t.services.frontend == 1 and t.services.frontend[1] == "00f067aa0ba902b7")
assert(#t.services.payments == 2 and t.services.payments[1] == "53995c3f42cd8ad8"
  and t.services.payments[2] == "6e0c63257de34c92")
s1, s2, s3 = t.spans[1], t.spans[2], t.spans[3]
assert(s1.id == "00f067aa0ba902b7" and s1.parent == nil and s1.service == "frontend")
assert(s1.operation == "POST /checkout" and s1.kind == "server" and s1.error == true)
assert(s1.start == 1719912600.123456 and s1.duration == 0.845213)
assert(s1.tags["http.status_code"] == 500 and math.type(s1.tags["http.status_code"]) == "integer")
assert(#s1.logs == 1 and s1.logs[1].ts == 1719912600.9 and s1.logs[1].fields.event == "exception")
assert(s2.parent == "00f067aa0ba902b7" and s2.service == "payments" and s2.error == false)
assert(s2.tags["db.rows"] == math.maxinteger) -- an int64 beyond 2^53, sent as a string
assert(s2.warnings[1]:match("^clock skew"))
assert(s3.parent == "53995c3f42cd8ad8" and s3.error == true and s3.tags.score == 0.25)
expect("EQUERY: trace not found", jaeger:trace("00000000000000000000000000000001"))
expect('EQUERY: strconv.ParseUint: parsing "xyz": invalid syntax', jaeger:trace("xyz"))

forget()
ts = assert(jaeger:traces{ service = "frontend", operation = "POST /checkout",
  tags = { error = true, ["http.status_code"] = 500 }, start = 1719912000, ["end"] = 1719913000.5,
  limit = 20, min_duration = "100ms", max_duration = 2 })
assert(#ts == 1 and ts[1].id == TID and ts[1].errors == 2)
q = requests()[1].query
assert(q.start[1] == "1719912000000000" and q["end"][1] == "1719913000500000")
assert(q.limit[1] == "20" and q.operation[1] == "POST /checkout" and q.minDuration[1] == "100ms")
assert(q.maxDuration[1] == "2.000000s")
tags = vigil.json.decode(q.tags[1])
assert(tags.error == "true" and tags["http.status_code"] == "500")
ts = assert(jaeger:traces{ service = "nobody" })
assert(#ts == 0)
expect("EQUERY: parameter 'service' is required", jaeger:traces{})
svcs = assert(jaeger:services())
assert(#svcs == 2 and svcs[1] == "frontend" and svcs[2] == "payments")
ops = assert(jaeger:operations("frontend"))
assert(#ops == 2 and ops[1] == "POST /checkout" and ops[2] == "GET /health")
ops = assert(jaeger:operations("payments service")) -- escaped in the path
assert(#ops == 1 and ops[1] == "charge")
forget()
deps = assert(jaeger:dependencies{ ["end"] = 1719912600, lookback = "1h" })
assert(#deps == 2 and deps[1].parent == "frontend" and deps[1].child == "payments")
assert(deps[1].calls == 1234 and deps[2].calls == 56)
q = requests()[1].query
assert(q.endTs[1] == "1719912600000" and q.lookback[1] == "3600000")
faults(function(url)
  return vigil.jaeger{ url = url, timeout = "400ms", max_bytes = 1000000, retries = 0 }
end,
  function(c) return c:services() end, "/api/services",
  { [429] = "too many requests", wait = 7, [500] = "storage unavailable",
    [503] = "service unavailable" })
print("jaeger ok")

-------------------------------------------------------------------------- Datadog
assert(not pcall(vigil.datadog, { site = "datadoghq.eu" })) -- keys are required
dd = vigil.datadog{ url = FX, api_key = "fixture-api-key", app_key = "fixture-app-key" }
assert(not vigil.inspect(dd):find("fixture%-a")) -- printing a client shows no key
assert(vigil.datadog{ site = "datadoghq.eu", api_key = "k", app_key = "a" }.url
  == "https://api.datadoghq.eu")
assert(vigil.datadog{ api_key = "k", app_key = "a" }.url == "https://api.datadoghq.com")
forget()
s = assert(dd:query("avg:system.cpu.idle{env:prod} by {host}",
  { from = 1719909000, to = "2024-07-02T09:30:00Z" }))
r = requests()[1]
assert(r.query.from[1] == "1719909000" and r.query.to[1] == "1719912600")
assert(r.headers["dd-api-key"] == "fixture-api-key")
assert(r.headers["dd-application-key"] == "fixture-app-key")
assert(#s == 2)
assert(s[1].metric == "system.cpu.idle" and s[1].scope == "env:prod,host:web-1")
assert(s[1].labels.host == "web-1" and s[1].aggr == "avg" and s[1].unit == "percent")
assert(s[1].expression == "avg:system.cpu.idle{env:prod,host:web-1}" and s[1].interval == 300)
-- ms -> unix seconds; the null point is left out
assert(#s[1].ts == 2 and #s[1].values == 2)
assert(s[1].ts[1] == 1719909000 and math.type(s[1].ts[1]) == "integer" and s[1].ts[2] == 1719909300)
assert(s[1].values[1] == 91.45 and s[1].values[2] == 90.71)
assert(s[2].labels.host == "web-2" and s[2].aggr == nil and s[2].unit == nil)
assert(#s[2].ts == 1 and s[2].values[1] == 88)
assert(#assert(dd:query("avg:nodata{*}")) == 0)
expect("EQUERY: Rate of metric changed too fast", dd:query("avg:broken{*}"))
expect("EQUERY: Error parsing query: unable to parse avg:bad{: Rule 'scope_expr' didn't match"
  .. " at 'ad{'", dd:query("avg:bad{"))
expect("EAUTH: Forbidden", vigil.datadog{ url = FX, api_key = "x", app_key = "y" }:query("x"))

-- logs: cursor pagination
forget()
logs = assert(dd:search{ query = "*", limit = 2, from = 1719909000, to = "now" })
assert(#logs == 2 and #requests() == 1)
body = vigil.json.decode(requests()[1].body)
assert(body.filter.query == "*" and body.filter.from == "1719909000000" and body.filter.to == "now")
assert(body.page.limit == 2 and body.page.cursor == nil and body.sort == "-timestamp")
l1 = logs[1]
assert(l1.id == "AQAAAYAZdbh47dGwNwAAAABBWUFaZGJyMUFBQ0s4OEN3YmZ1UDJRQUI")
assert(l1.ts == 1719912587401000000 and math.type(l1.ts) == "integer")
assert(l1.line == "payment gateway timeout order=8812" and l1.level == "error")
assert(l1.service == "checkout" and l1.host == "web-1")
assert(l1.labels.env == "prod" and l1.labels.source == "python" and #l1.tags == 3)
assert(l1.attributes.http.status_code == 504 and l1.attributes.order_id == 8812)
assert(logs[2].line == "request 1" and logs[2].ts == 1719912585000000000)
forget()
logs = assert(dd:search{ limit = 10, page_size = 2 }) -- 2 + 2 + 1, the last page short
assert(#logs == 5 and logs[5].line == "request 4")
rs = requests()
assert(#rs == 3, #rs)
assert(vigil.json.decode(rs[2].body).page.cursor == "off2")
assert(vigil.json.decode(rs[3].body).page.cursor == "off4")
forget()
logs = assert(dd:search{ limit = 20, page_size = 5 }) -- the final page is {"data": []}
assert(#logs == 5 and #requests() == 2)
forget()
logs = assert(dd:search{ limit = 4, page_size = 3 }) -- stops at the limit
assert(#logs == 4 and #requests() == 2 and vigil.json.decode(requests()[2].body).page.limit == 1)
logs, warnings = dd:search{ query = "service:checkout", limit = 10, page_size = 3 }
assert(#logs == 5 and #warnings == 2, #warnings)
assert(warnings[1] == "One or several indexes are missing or invalid: indexes: main2")
assert(warnings[2] == "partial results: the search timed out")
expect("EQUERY: invalid query: unexpected '['", dd:search{ query = "bad:[" })
-- 429: wait X-RateLimit-Reset, and do not ask again before then
limited = vigil.datadog{ url = FX .. "/fault/ratelimit", api_key = "k", app_key = "a" }
forget()
expect("ERATELIMIT: Too many requests; retry after 42 s", limited:query("x"))
expect("ERATELIMIT: /api/v1/query is rate limited; retry after 42 s", limited:query("x"))
assert(#requests() == 1)
faults(function(url)
  return vigil.datadog{ url = url, api_key = "fixture-api-key", app_key = "fixture-app-key",
    timeout = "400ms", max_bytes = 1000000 }
end, function(c) return c:query("avg:system.cpu.idle{env:prod} by {host}") end, "/api/v1/query",
  { [429] = "Too many requests", wait = 42, [500] = "Internal Server Error",
    [503] = "Service Unavailable" })
-- Datadog is retried only when asked (the C policy does not read X-RateLimit-Reset)
forget()
dd503 = { url = FX .. "/fault/503", api_key = "fixture-api-key", app_key = "fixture-app-key" }
expect("EHTTP: 503 from /api/v1/query: Service Unavailable", vigil.datadog(dd503):query("x"))
assert(#requests() == 1)
dd503.retries, dd503.backoff, dd503.name = 1, "10ms", "dd-retrying"
expect("EHTTP: 503 from /api/v1/query: Service Unavailable", vigil.datadog(dd503):query("x"))
assert(#requests() == 3)
print("datadog ok")

--------------------------------------------------------------- Alertmanager (real)
am = vigil.alertmanager{ url = "http://127.0.0.1:$am", timeout = "5s" }
st = assert(am:status())
assert(st.version:match("^0%.%d+"), st.version)
assert(st.cluster == "disabled" and st.peers == 0)
assert(math.abs(st.started - vigil.now()) < 120 and st.config:find('name: "null"', 1, true))

alerts = assert(am:alerts())
table.sort(alerts, function(a, b) return a.labels.alertname < b.labels.alertname end)
assert(#alerts == 2, #alerts)
hl = alerts[2]
assert(hl.labels.alertname == "HighLatency" and hl.labels.service == "checkout")
assert(hl.fingerprint == "c75f68922c9ebc87") -- notes/apis.md 7.6
assert(hl.annotations.summary == "p99 above 2s" and hl.state == "active")
assert(hl.receivers[1] == "null" and #hl.silenced_by == 0)
assert(hl.generator_url == "http://prometheus:9090/graph")
assert(math.abs(hl.starts_at - vigil.now()) < 120 and hl.ends_at > hl.starts_at)
only = assert(am:alerts{ filter = { alertname = "DiskFull" } })
assert(#only == 1 and only[1].labels.severity == "warning")
only = assert(am:alerts{ filter = { 'severity=~"crit.*"', 'service!="db"' } })
assert(#only == 1 and only[1].labels.alertname == "HighLatency")

id = assert(am:silence{ matchers = { 'alertname="HighLatency"', 'service=~"check.*"' },
  duration = "2h", comment = "vigil test", created_by = "sources_clients.sh" })
assert(id:match("^%x+%-%x+%-%x+%-%x+%-%x+$"), id)
sil = assert(am:silences{ state = "active" })
assert(#sil == 1 and sil[1].id == id and sil[1].comment == "vigil test")
assert(sil[1].created_by == "sources_clients.sh")
assert(sil[1].matchers[1] == 'alertname="HighLatency"' and sil[1].matchers[2] == 'service=~"check.*"')
assert(math.abs(sil[1].ends_at - sil[1].starts_at - 7200) < 2, sil[1].ends_at - sil[1].starts_at)
assert(#assert(am:silences{ filter = 'alertname="HighLatency"' }) == 1)
assert(#assert(am:silences{ filter = 'alertname="Other"' }) == 0)
-- the alert is silenced now (Alertmanager applies silences asynchronously)
for _ = 1, 50 do
  silenced = assert(am:alerts{ filter = { alertname = "HighLatency" } })[1]
  if silenced.state == "suppressed" then break end
  vigil.sleep(0.1)
end
assert(silenced.state == "suppressed" and silenced.silenced_by[1] == id, silenced.state)
assert(#assert(am:alerts{ silenced = false }) == 1)
-- a map of matchers
id2 = assert(am:silence{ matchers = { alertname = "DiskFull", service = "db" }, duration = 600 })
assert(am:expire(id) == true and am:expire(id2) == true)
assert(#assert(am:silences{ state = "active" }) == 0)
sil = assert(am:silences{ state = "expired" })
assert(#sil == 2)

-- Alertmanager's refusals: a JSON string, a {code, message} object, the old 500
expect("EQUERY: Failed to create silence: end time can't be in the past",
  am:silence{ matchers = { alertname = "X" }, starts_at = 1000000000, ends_at = 1000003600 })
_, err = am:alerts{ filter = { 'x=~"("' } }
assert(err:match("^EQUERY: error parsing regexp: missing closing %): "), err)
_, err = am:expire("7c3a9b2e-5f1d-4c61-9e0c-2a8f6b1d4e77")
assert(err == "EQUERY: silence not found", err) -- 0.25 answers 500, newer ones 404
expect('EQUERY: silenceID in path must be of type uuid: "not-a-uuid"', am:expire("not-a-uuid"))
assert(not pcall(am.silence, am, { matchers = { "alertname" } }))
_, err = vigil.alertmanager{ url = "http://127.0.0.1:$dead" }:status()
assert(err:match("^ECONNREFUSED: "), err)
-- reads are retried, creating a silence never is (it would make two)
down = vigil.alertmanager{ url = FX .. "/fault/503", backoff = "10ms" }
forget()
_, err = down:silences()
assert(err:match("^EHTTP: 503 from /api/v2/silences: ") and #requests() == 3, err)
forget()
_, err = down:silence{ matchers = { alertname = "X" } }
assert(err:match("^EHTTP: 503 from /api/v2/silences: ") and #requests() == 1, err)
print("alertmanager ok")
LUA
out=$("$VIGIL" repl < client.lua 2>&1) || fail "the client script failed: $out"
for c in loki jaeger datadog alertmanager; do
  [[ $out == *"$c ok"* ]] || fail "$c: $out"
done
echo "ok"
