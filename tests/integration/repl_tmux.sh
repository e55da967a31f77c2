#!/usr/bin/env bash
# The interactive REPL, driven through a real terminal (tmux): type lines, read the screen.
# Expressions print their values, multi-line input continues, async lines run, Ctrl-C stops a
# waiting line and a busy loop without ending the REPL, Tab completes vigil.* and history
# survives a restart. Then the same prompt attached to a running daemon.
source "$(dirname "$0")/../harness/integration.sh"
command -v tmux >/dev/null || fail "tmux is missing (make test installs it)"
export HOME="$tmp/home" # the history file goes here
mkdir -p "$HOME"
sock="$tmp/tmux.sock"
pid=
on_exit 'tmux -S "$sock" kill-server 2>/dev/null'
on_exit '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null'
cd "$tmp"

screen() { tmux -S "$sock" capture-pane -p -t repl; }
# type TEXT: types it literally (tmux would read "end" as the End key otherwise) and Enter
type_line() {
  tmux -S "$sock" send-keys -t repl -l "$1"
  tmux -S "$sock" send-keys -t repl Enter
}
key() { tmux -S "$sock" send-keys -t repl "$@"; }
# see PATTERN [SECONDS]: until the screen matches the extended regex
see() {
  local deadline=$((SECONDS + ${2:-5}))
  while ((SECONDS < deadline)); do
    screen | grep -Eq -- "$1" && return 0
    sleep 0.05
  done
  echo "---- screen ----" >&2
  screen >&2
  fail "the screen never showed /$1/"
}
# prompts N: until N prompts are on the screen (the REPL is idle again)
prompts() {
  local deadline=$((SECONDS + 5))
  while ((SECONDS < deadline)); do
    (($(screen | grep -c '^vigil>') >= $1)) && return 0
    sleep 0.05
  done
  screen >&2
  fail "expected $1 prompts"
}
start_repl() {
  tmux -S "$sock" new-session -d -s repl -x 150 -y 50 \
    "$(printf '%q ' "$VIGIL" repl "$@"); echo \"exit status \$?\"; sleep 60"
  see '^vigil>'
}

echo "expressions print their values; statements print nothing"
start_repl
see 'Tab completes, Ctrl-C interrupts, Ctrl-D exits'
type_line 'x = 40'
type_line 'x + 2'
see '^42$'
type_line '{ name = "api", ports = { 80, 443 } }'
see '^  name = "api",$'
see '^    443,$'
type_line '"two", nil, 3'
see '^"two"[[:space:]]+nil[[:space:]]+3$'

echo "a statement over several lines continues with its own prompt"
type_line 'for i = 1, 3 do'
see '^    >>$'
type_line 'print("line " .. i)'
type_line 'end'
see '^line 3$'

echo "an async line runs as a task; a task spawned on one line is waited on the next"
type_line 'vigil.sleep(0.2) print("slept")'
see '^slept$'
type_line 't = vigil.spawn(function() vigil.sleep(0.1) return "from the background" end)'
type_line 'vigil.wait(t)'
see '^"from the background"$'

echo "errors show the message and keep the REPL"
type_line 'error("no such pod")'
see '^stdin:1: no such pod$'
type_line 'nosuch.field'
see "attempt to index a nil value \\(global 'nosuch'\\)"

echo "Ctrl-C stops a waiting line"
before=$(screen | grep -c '^vigil>')
type_line 'vigil.sleep(3600)'
sleep 0.3
key C-c
see '^\^?C?interrupted$'
prompts $((before + 1)) # one fresh prompt, not two
type_line 'print("still alive")'
see '^still alive$'

echo "Ctrl-C stops a loop that never yields"
type_line 'n = 0 while true do n = n + 1 end'
sleep 0.5
key C-c
see 'interrupted' 3
type_line 'print(n > 0)'
see '^true$'

echo "Tab completes vigil.* members"
tmux -S "$sock" send-keys -t repl -l 'vigil.slee'
key Tab
see '^vigil> vigil\.sleep'
key C-u
tmux -S "$sock" send-keys -t repl -l 'vigil.runtime.po'
key Tab
see '^vigil> vigil\.runtime\.policies'
key C-u

echo "Ctrl-D leaves with status 0"
key C-d
see '^exit status 0$'
tmux -S "$sock" kill-session -t repl

echo "history survives a restart"
start_repl
key Up
see '^vigil> print\(n > 0\)'
key C-u C-d
see '^exit status 0$'
tmux -S "$sock" kill-session -t repl

echo "attached to a daemon, lines run inside it"
mkdir -p policies
cat > policies/seen.lua <<'LUA'
return { name = "seen", match = { team = "sre" }, on_alert = function(alert, ctx)
  ctx.log.info("seen " .. alert.labels.alertname)
end }
LUA
cat > vigil.conf.lua <<LUA
return { listen = "127.0.0.1:0", store = "$tmp/vigil.db", policies = "$tmp/policies", repl_socket = "$tmp/vigil.sock" }
LUA
"$VIGIL" run -c vigil.conf.lua 2>"$log" &
pid=$!
wait_for 'msg="vigil started"'
start_repl --attach "$tmp/vigil.sock"
type_line 'vigil.runtime.policies()[1].name'
see '^"seen"$'
type_line 'vigil.runtime.dispatch{ labels = { alertname = "FromRepl", team = "sre" } }'
see '^1$'
wait_for 'msg="seen FromRepl"' 1 3
type_line 'vigil.sleep(3600)'
sleep 0.3
key C-c
see 'interrupted'
type_line 'print("attached and alive")'
see '^attached and alive$'
tmux -S "$sock" send-keys -t repl -l 'vigil.runtime.di'
key Tab
see '^vigil> vigil\.runtime\.di(s|spatch)'
key C-u C-d
see '^exit status 0$'
kill -0 "$pid" || fail "the daemon died"
echo "ok"
