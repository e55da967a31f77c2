#!/usr/bin/env bash
# vigil.http against real servers on loopback: a vigil daemon's own API (JSON in and out,
# 4xx as answers, query strings, headers), a port nobody listens on (ECONNREFUSED), a server
# that accepts and never answers (ETIMEDOUT within the timeout), a response over max_bytes
# (ETOOBIG), many requests at once, and a cancelled request that leaves nothing behind.
source "$(dirname "$0")/../harness/integration.sh"
pids=()
on_exit 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done'
cd "$tmp"
mkdir -p policies
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies",
         repl_socket = "$tmp/vigil.sock" }
LUA
"$VIGIL" run -c vigil.conf.lua 2>"$log" &
pids+=($!)
wait_for 'msg="vigil started"'
port=$(daemon_port)
# a server that accepts connections and never answers
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
' > silent.port &
pids+=($!)
for _ in $(seq 50); do [[ -s silent.port ]] && break; sleep 0.1; done
silent=$(cat silent.port)
dead=$(free_port)

cat > client.lua <<LUA
base = "http://127.0.0.1:$port"
r = assert(vigil.http.get(base .. "/healthz"))
assert(r.status == 200 and r.body == "ok\n", r.status)
assert(r.headers["content-type"]:find("text/plain", 1, true))
assert(r.elapsed >= 0 and r.elapsed < 5)

-- JSON in and out; the answer's JSON is decoded
r = assert(vigil.http.post(base .. "/api/v2/alerts", { json = { { labels = { alertname = "FromLua" } } } }))
assert(r.status == 200, r.body)
assert(r.json.status == "success" and r.json.accepted == 1)

-- query strings are encoded; a 4xx is an answer, not an error
r = assert(vigil.http.get(base .. "/api/v1/alerts", { query = { filter = 'alertname="FromLua"' } }))
assert(r.status == 200 and #r.json == 1 and r.json[1].name == "FromLua", r.body)
r = assert(vigil.http.get(base .. "/api/v1/alerts", { query = { status = "nonsense" } }))
assert(r.status == 400 and r.json.status == "error", r.status)
r = assert(vigil.http.request{ method = "DELETE", url = base .. "/healthz" })
assert(r.status == 405)

-- failures are nil, "ENAME: detail"
_, err = vigil.http.get("http://127.0.0.1:$dead/")
assert(err:match("^ECONNREFUSED: "), err)
t0 = vigil.now()
_, err = vigil.http.get("http://127.0.0.1:$silent/", { timeout = "300ms" })
assert(err:match("^ETIMEDOUT: "), err)
assert(vigil.now() - t0 < 2, "the timeout was not kept")
_, err = vigil.http.get(base .. "/metrics", { max_bytes = 100 })
assert(err:match("^ETOOBIG: "), err)
_, err = vigil.http.get("file:///etc/passwd")
assert(err:match("^EINVAL: "), err)
assert(not pcall(vigil.http.request, { url = base, headers = { ["X-Evil"] = "a\\r\\nInjected: 1" } }))

-- many at once, on one loop
fns = {}
for i = 1, 50 do fns[i] = function() return vigil.http.get(base .. "/healthz").status end end
results, errors = vigil.all(fns)
assert(errors == nil)
for i = 1, 50 do assert(results[i] == 200) end

-- a cancelled request is abandoned, and the client keeps working
slow = vigil.spawn(function() return vigil.http.get("http://127.0.0.1:$silent/", { timeout = "10s" }) end)
vigil.sleep(0.1)
slow:cancel("not needed")
assert(select(2, vigil.wait(slow)) == "ECANCELED: not needed")
assert(vigil.http.get(base .. "/healthz").status == 200)
print("client ok")
LUA
out=$("$VIGIL" repl < client.lua 2>&1) || fail "the client script failed: $out"
[[ $out == *"client ok"* ]] || fail "client: $out"
echo "ok"
