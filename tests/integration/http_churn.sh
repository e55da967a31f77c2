#!/usr/bin/env bash
# 10,000 HTTP requests with random failures (500s, refused connections, timeouts) and random
# cancellations, then a policy unloaded while its requests are in flight: afterwards no request
# is left in the client (http_active back to 0) and the sanitizers find nothing leaked at exit.
source "$(dirname "$0")/../harness/integration.sh"
pids=()
on_exit 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done'
cd "$tmp"
cat > server.py <<'PY'
import http.server, random, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        r = random.random()
        if r < 0.02: time.sleep(0.3)
        code = 500 if r > 0.8 else 200
        body = b'{"ok":true}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
/usr/bin/python3 server.py > port.txt 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do [[ -s port.txt ]] && break; sleep 0.1; done
port=$(cat port.txt)
dead=$(free_port)
n=${VIGIL_CHURN_REQUESTS:-10000}

cat > churn.lua <<LUA
good, dead = "http://127.0.0.1:$port/", "http://127.0.0.1:$dead/"
counts = { ok = 0, http500 = 0, failed = 0, cancelled = 0 }
math.randomseed(42)
function one(i)
  local url = math.random() < 0.1 and dead or good
  local src = (i % 3 == 0) and "churn" or nil
  local r, err = vigil.http.request{ url = url, timeout = "200ms", source = src,
    policy = { retries = 1, backoff = "1ms", breaker_failures = 100000, max_concurrency = 64 } }
  if r and r.status == 200 then counts.ok = counts.ok + 1
  elseif r then counts.http500 = counts.http500 + 1
  else counts.failed = counts.failed + 1 end
end
done = 0
while done < $n do
  batch = {}
  for k = 1, 200 do batch[k] = vigil.spawn(one, done + k) end
  vigil.sleep(0.005)
  for k = 1, 200 do
    if math.random() < 0.1 then batch[k]:cancel("churn") ; counts.cancelled = counts.cancelled + 1 end
  end
  for k = 1, 200 do
    local _, e = vigil.wait(batch[k])
    assert(e == nil or e:match("^ECANCELED: "), e) -- a request fails by value, never by error
  end
  done = done + 200
end
assert(vigil.runtime.stats().http_active == 0, "requests left: " .. vigil.runtime.stats().http_active)
for _, s in ipairs(vigil.runtime.sources()) do assert(s.inflight == 0 and s.queued == 0, s.name) end
assert(counts.ok > 0 and counts.http500 > 0 and counts.failed > 0 and counts.cancelled > 0)
print(("churn ok: %d ok, %d 500s, %d failed, %d cancelled"):format(counts.ok, counts.http500,
  counts.failed, counts.cancelled))
LUA
out=$("$VIGIL" repl < churn.lua 2>&1) || fail "churn: $out"
[[ $out == *"churn ok"* ]] || fail "churn: $out"
echo "${out##*$'\n'}"

echo "a policy unloaded while its requests are in flight"
mkdir -p policies
cat > policies/busy.lua <<LUA
return { name = "busy", match = {}, every = { poll = { interval = "20ms", run = function(ctx)
  for _ = 1, 20 do vigil.spawn(function() vigil.http.get("http://127.0.0.1:$port/", { timeout = "2s" }) end) end
  vigil.http.get("http://127.0.0.1:$port/", { timeout = "2s" })
end } } }
LUA
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
         repl_socket = "$tmp/vigil.sock", drain = "10ms", reload_debounce = "50ms" }
LUA
"$VIGIL" run -c vigil.conf.lua 2>"$log" &
pid=$!
pids+=($pid)
wait_for 'msg="vigil started"'
sleep 1
rm policies/busy.lua
wait_for 'msg="policy removed" policy=busy' 1 5
sleep 0.5
out=$(printf 'print(vigil.runtime.stats().http_active)\n' | "$VIGIL" repl --attach vigil.sock)
[[ $out == 0 ]] || fail "requests left after the unload: $out"
kill -TERM "$pid"
wait "$pid" || fail "the daemon did not stop cleanly (or the sanitizers found a leak)"
echo "ok"
