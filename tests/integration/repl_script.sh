#!/usr/bin/env bash
# The REPL with a non-terminal stdin: input runs as a script, chunk by chunk, each as a task;
# the first error ends it with status 1 and names the script's own line. The same through
# `--attach` into a running daemon, whose socket only its owner may open.
source "$(dirname "$0")/../harness/integration.sh"
pid=
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
cd "$tmp"

# repl_run EXPECTED_RC [ARGS...] < script: runs the REPL, keeps stdout in $out, stderr in $err
repl_run() {
  local want=$1 rc=0
  shift
  "$VIGIL" repl "$@" >out.txt 2>err.txt || rc=$?
  out=$(cat out.txt)
  err=$(cat err.txt)
  [[ $rc == "$want" ]] || fail "repl $* exited $rc, want $want; stdout: $out; stderr: $err"
}

echo "a script runs in order, async calls included, and exits 0"
cat > ok.lua <<'LUA'
#!/usr/bin/env vigil-repl
local start = vigil.now()
total = 0
for i = 1, 4 do
  total = total + i
end
vigil.sleep(0.05)
print("total", total)
-- globals persist from chunk to chunk; locals end with theirs
print(start == nil, vigil.now() > 0)
t = vigil.spawn(function() vigil.sleep(0.01) return "child" end)
print(vigil.wait(t))
function twice(x)
  return x * 2
end
print(twice(21))
LUA
repl_run 0 < ok.lua
[[ $out == $'total\t10\ntrue\ttrue\nchild\n42' ]] || fail "unexpected output: $out"
[[ -z $err ]] || fail "unexpected stderr: $err"

echo "the first error stops the script with status 1 and the script's line number"
printf 'print("one")\n\nx = 1\nerror("boom")\nprint("never")\n' > bad.lua
repl_run 1 < bad.lua
[[ $out == "one" ]] || fail "output after the error: $out"
[[ $err == *"stdin:4: boom"* ]] || fail "error does not name line 4: $err"

echo "a syntax error names its line; an unfinished last chunk is an error too"
printf 'print("a")\nlocal x = = 1\n' > syntax.lua
repl_run 1 < syntax.lua
[[ $err == *"stdin:2:"*"unexpected symbol"* ]] || fail "syntax error: $err"
printf 'print("a")\nfor i = 1, 2 do\n  print(i)\n' > unfinished.lua
repl_run 1 < unfinished.lua
[[ $out == "a" && $err == *"'end' expected"* ]] || fail "unfinished chunk: $out / $err"

echo "print takes long values and many arguments"
printf 'print(string.rep("x", 3000), 1, nil, true, string.rep("y", 5000))\n' > long.lua
repl_run 0 < long.lua
[[ ${#out} == 8012 && $out == xxx*$'\t1\tnil\ttrue\t'yyy* ]] || fail "long print: ${#out} bytes"

echo "empty input exits 0; a pipe works like a file"
repl_run 0 < /dev/null
rc=0
out=$(printf 'print(6 * 7)\n' | "$VIGIL" repl 2>&1) || rc=$?
[[ $rc == 0 && $out == 42 ]] || fail "pipe: rc=$rc out=$out"

echo "the REPL is sandboxed like a policy: no os.execute, io or loading bytecode"
printf 'print(os.execute, io, debug)\nprint(load("\\27Lua", "x", "b"))\n' > sandbox.lua
repl_run 0 < sandbox.lua
[[ $out == $'nil\tnil\tnil\nnil\t'*"binary chunks are not allowed"* ]] || fail "sandbox: $out"

echo "with -c, the config's policies are loaded and can be steered"
mkdir -p policies
cat > policies/echo.lua <<'LUA'
return { name = "echo", match = { team = "sre" }, on_alert = function(alert, ctx)
  ctx.log.info("echo saw " .. alert.labels.alertname)
end }
LUA
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies", repl_socket = "$tmp/vigil.sock" }
LUA
cat > steer.lua <<'LUA'
ps = vigil.runtime.policies()
print(#ps, ps[1].name, ps[1].enabled, ps[1].match)
print(vigil.runtime.dispatch{ labels = { alertname = "Disk", team = "sre" } })
print(vigil.runtime.dispatch{ labels = { alertname = "Disk", team = "db" } })
vigil.sleep(0.05)
print(vigil.runtime.policies()[1].runs)
LUA
repl_run 0 -c vigil.conf.lua < steer.lua
[[ $out == $'1\techo\ttrue\t{team="sre"}\n1\n0\n1' ]] || fail "steering: $out"
[[ $err == *'msg="echo saw Disk"'* ]] || fail "the policy did not run: $err"

echo "--attach runs lines inside the daemon, whose socket is private to its owner"
"$VIGIL" run -c vigil.conf.lua 2>"$log" &
pid=$!
wait_for 'msg="vigil started"'
[[ -S vigil.sock ]] || fail "no socket"
[[ $(stat -c %a vigil.sock) == 600 ]] || fail "socket mode is $(stat -c %a vigil.sock)"
cat > attach.lua <<'LUA'
print(vigil.runtime.policies()[1].name)
print(vigil.runtime.dispatch{ labels = { alertname = "Attached", team = "sre" } })
vigil.sleep(0.05)
shared = "kept"
LUA
repl_run 0 --attach vigil.sock < attach.lua
[[ $out == $'echo\n1' ]] || fail "attach: $out"
wait_for 'msg="echo saw Attached"' 1 3
printf 'print(shared)\nerror("attached failure")\nprint("never")\n' > attach2.lua
repl_run 1 --attach vigil.sock < attach2.lua
[[ $out == "nil" ]] || fail "each client has its own session: $out"
[[ $err == *"stdin:2: attached failure"* ]] || fail "attach error: $err"
wait_for 'msg="repl client detached"' 2 3

echo "a frame larger than the protocol allows is refused without harming the daemon"
/usr/bin/python3 - "$tmp/vigil.sock" <<'PY' || fail "oversized frame"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(struct.pack(">I", 64 << 20) + b"C")
s.settimeout(5)
data = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    sys.exit("the daemon kept a connection that broke the protocol")
PY
wait_for 'repl client.*protocol' 1 3
kill -0 "$pid" || fail "the daemon died"
printf 'print("still here")\n' | "$VIGIL" repl --attach vigil.sock > out.txt
[[ $(cat out.txt) == "still here" ]] || fail "daemon unusable after a bad client"

echo "attaching to nothing fails clearly"
repl_run 1 --attach "$tmp/nope.sock" < /dev/null
[[ $err == *"nope.sock"* ]] || fail "no socket error: $err"

kill -TERM "$pid"
wait "$pid" || true
pid=
[[ ! -e vigil.sock ]] || fail "the socket outlived the daemon"
echo "ok"
