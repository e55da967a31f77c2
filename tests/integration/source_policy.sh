#!/usr/bin/env bash
# A data source's request policy in C, against a loopback server whose answers the test
# scripts: retries of idempotent requests on 5xx and 429 (Retry-After honoured), none for a
# POST, the concurrency limit (the server counts how many it holds at once), and the circuit
# breaker: open after consecutive failures (ECIRCUIT at once, no request sent), a probe after
# the cool-down, closed again when the backend is back. State in vigil.runtime.sources().
source "$(dirname "$0")/../harness/integration.sh"
pids=()
on_exit 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done'
cd "$tmp"
cat > server.py <<'PY'
import http.server, json, sys, threading, time
state = {"hits": {}, "current": 0, "max": 0, "fail": {}, "down": False}
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def answer(self, code, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers: self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
    def handle_any(self):
        path = self.path.split("?")[0]
        n = int(self.headers.get("Content-Length") or 0)
        if n: self.rfile.read(n)
        with lock:
            state["hits"][path] = state["hits"].get(path, 0) + 1
            hits = state["hits"][path]
        if path == "/echo":
            return self.answer(200, {k.lower(): v for k, v in self.headers.items()})
        if path == "/stats":
            return self.answer(200, {"hits": state["hits"], "max": state["max"]})
        if path.startswith("/set/"):  # /set/<name>/<n>: the next n hits of /<name> fail
            _, _, name, n = path.split("/")
            state["fail"]["/" + name] = int(n)
            return self.answer(200, {})
        if path == "/down":
            state["down"] = True; return self.answer(200, {})
        if path == "/up":
            state["down"] = False; return self.answer(200, {})
        if path == "/flaky" and state["down"]:
            return self.answer(503, {"error": "down"})
        with lock:
            left = state["fail"].get(path, 0)
            if left > 0: state["fail"][path] = left - 1
        if left > 0 and path == "/limited":
            return self.answer(429, {"error": "slow down"}, [("Retry-After", "1")])
        if left > 0:
            return self.answer(503, {"error": "try again"})
        if path == "/slow":
            with lock:
                state["current"] += 1; state["max"] = max(state["max"], state["current"])
            time.sleep(0.3)
            with lock: state["current"] -= 1
        return self.answer(200, {"path": path, "hits": hits})
    do_GET = do_POST = handle_any
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
/usr/bin/python3 server.py > port.txt &
pids+=($!)
for _ in $(seq 50); do [[ -s port.txt ]] && break; sleep 0.1; done
port=$(cat port.txt)

cat > policy.lua <<LUA
base = "http://127.0.0.1:$port"
fast = { retries = 2, backoff = "20ms", backoff_max = "2s", breaker_failures = 5,
         breaker_cooldown = "400ms", max_concurrency = 2 }
function get(path, opts)
  opts = opts or {}
  opts.source, opts.policy = "fixture", fast
  return vigil.http.get(base .. path, opts)
end
function stats() return vigil.http.get(base .. "/stats").json end
function source()
  for _, s in ipairs(vigil.runtime.sources()) do if s.name == "fixture" then return s end end
end

-- two 503s, then success: retried, the caller sees only the success
assert(vigil.http.get(base .. "/set/retry/2").status == 200)
r = assert(get("/retry"))
assert(r.status == 200 and r.json.hits == 3, r.status)

-- three 503s is one more than two retries: the caller gets the last 503
assert(vigil.http.get(base .. "/set/gone/3").status == 200)
r = assert(get("/gone"))
assert(r.status == 503, r.status)

-- 429 with Retry-After: 1 is waited for, then retried
assert(vigil.http.get(base .. "/set/limited/1").status == 200)
t0 = vigil.now()
r = assert(get("/limited"))
assert(r.status == 200 and vigil.now() - t0 >= 0.9, vigil.now() - t0)

-- a POST is not idempotent: never retried
assert(vigil.http.get(base .. "/set/post/1").status == 200)
r = assert(vigil.http.post(base .. "/post", { source = "fixture", policy = fast, body = "x" }))
assert(r.status == 503 and stats().hits["/post"] == 1)

-- at most max_concurrency requests at once, the rest wait their turn
fns = {}
for i = 1, 6 do fns[i] = function() return get("/slow").status end end
results, errors = vigil.all(fns)
assert(errors == nil)
for i = 1, 6 do assert(results[i] == 200) end
assert(stats().max == 2, "the server held " .. stats().max .. " at once")

-- the breaker: failures in a row open it; then no request reaches the server
assert(vigil.http.get(base .. "/down").status == 200)
for i = 1, 2 do assert(get("/flaky").status == 503) end  -- 2 x 3 attempts = 6 failures
assert(source().breaker == "open", source().breaker)
before = stats().hits["/flaky"]
_, err = get("/flaky")
assert(err and err:match("^ECIRCUIT: source 'fixture' is failing"), err)
assert(stats().hits["/flaky"] == before, "a request went through an open breaker")

-- after the cool-down one probe goes; the backend is back, so the breaker closes
assert(vigil.http.get(base .. "/up").status == 200)
vigil.sleep(0.5)
assert(source().breaker == "half-open", source().breaker)
r = assert(get("/flaky"))
assert(r.status == 200)
s = source()
assert(s.breaker == "closed" and s.consecutive_failures == 0)
assert(s.short_circuited == 1 and s.retries >= 6 and s.inflight == 0 and s.queued == 0)
print("policy ok")
LUA
out=$("$VIGIL" repl < policy.lua 2>&1) || fail "the script failed: $out"
[[ $out == *"policy ok"* ]] || fail "policy: $out"
echo "sources declared in the config: policy and credentials stay in C"
mkdir -p policies
cat > policies/uses_source.lua <<'LUA'
return { name = "uses-source", match = { team = "sre" }, on_alert = function(alert, ctx)
  local r = assert(ctx.sources.fixture.get("/echo"))
  ctx.log.info("source answered " .. r.status .. " team=" .. tostring(r.json["x-team"]))
end }
LUA
cat > vigil.conf.lua <<CONF
return {
  listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
  repl_socket = "$tmp/vigil.sock",
  sources = {
    fixture = { kind = "http", url = "http://127.0.0.1:$port", retries = 0, breaker_failures = 2,
                breaker_cooldown = "1h", token = env "FIXTURE_TOKEN",
                headers = { ["X-Team"] = "sre" } },
    prom = { kind = "prometheus", url = "http://127.0.0.1:1", timeout = "2s" },
  },
}
CONF
export FIXTURE_TOKEN=t0ps3cret
cat > configured.lua <<'LUA'
src = assert(vigil.source("fixture"))
r = assert(src.get("/echo"))
assert(r.json.authorization == "Bearer t0ps3cret" and r.json["x-team"] == "sre", r.body)
info = require("vigil.core").source_info("fixture")
assert(info.kind == "http" and info.authorization == nil and info.token == nil)
assert(not tostring(require("vigil").inspect(info)):find("t0ps3cret"))
_, err = vigil.source("nope")
assert(err:match("^ENOSOURCE: "), err)
_, err = vigil.source("prom"):query("up")
assert(err:match("^ECONNREFUSED: "), err)
-- the configured policy holds, whatever a caller asks: no retry, breaker open after 2
assert(vigil.http.get(src.url .. "/set/cfg/5").status == 200)
for i = 1, 2 do assert(src.get("/cfg", { policy = { retries = 9, breaker_failures = 99 } }).status == 503) end
_, err = src.get("/cfg")
assert(err:match("^ECIRCUIT: "), err)
assert(vigil.http.get(src.url .. "/stats").json.hits["/cfg"] == 2)
print("configured ok")
LUA
out=$("$VIGIL" repl -c vigil.conf.lua < configured.lua 2>&1) || fail "configured sources: $out"
[[ $out == *"configured ok"* ]] || fail "configured: $out"
[[ $out != *t0ps3cret* ]] || fail "the secret reached the output"
"$VIGIL" run -c vigil.conf.lua 2>"$log" &
pids+=($!)
wait_for 'msg="vigil started"'
vport=$(daemon_port)
curl -sf -XPOST -H 'Content-Type: application/json' "http://127.0.0.1:$vport/api/v2/alerts" \
  -d '[{"labels":{"alertname":"UsesSource","team":"sre"}}]' >/dev/null || fail "post"
wait_for 'msg="source answered 200 team=sre"' 1 5
grep -q t0ps3cret "$log" && fail "the secret reached the log"
echo "ok"
