#!/usr/bin/env bash
# The command line: help for every command, version, exit codes, config and policy errors
# reported as file:line: message, and `vigil check`.
set -euo pipefail
VIGIL=$(realpath "${VIGIL:-build/dev/vigil}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_rc() { # expect_rc CODE cmd...: runs cmd, checks its exit code, keeps output in $out
  local want=$1
  shift
  local rc=0
  out=$("$@" 2>&1) || rc=$?
  [[ $rc == "$want" ]] || fail "'$*' exited $rc, want $want; output: $out"
}

expect_rc 0 "$VIGIL" version
[[ $out =~ ^vigil\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "version: $out"
for cmd in run repl test check; do
  expect_rc 0 "$VIGIL" "$cmd" --help
  [[ $out == *"usage: vigil $cmd"* ]] || fail "$cmd --help: $out"
done
expect_rc 2 "$VIGIL"
expect_rc 2 "$VIGIL" frobnicate
[[ $out == *"unknown command 'frobnicate'"* ]] || fail "unknown command: $out"

echo "config errors name the key, with file:line"
printf 'return {\n  lisen = "127.0.0.1:1",\n}\n' > "$dir/bad.conf.lua"
expect_rc 2 "$VIGIL" run -c "$dir/bad.conf.lua"
[[ $out == *"bad.conf.lua:2: unknown key 'lisen' (did you mean 'listen'?)"* ]] || fail "$out"
printf 'return { token = "literal" }\n' > "$dir/tok.conf.lua"
expect_rc 2 "$VIGIL" run -c "$dir/tok.conf.lua"
[[ $out == *"token must come from env"* ]] || fail "$out"
printf 'return { token = env "VIGIL_TEST_UNSET_VAR" }\n' > "$dir/env.conf.lua"
expect_rc 2 "$VIGIL" run -c "$dir/env.conf.lua"
[[ $out == *"VIGIL_TEST_UNSET_VAR is not set"* ]] || fail "$out"
printf 'return { limits = { timeout = "soon" } }\n' > "$dir/dur.conf.lua"
expect_rc 2 "$VIGIL" run -c "$dir/dur.conf.lua"
[[ $out == *"invalid duration"* ]] || fail "$out"
expect_rc 2 "$VIGIL" run --policies "$dir/does-not-exist"
[[ $out == *"does not exist"* ]] || fail "$out"

echo "vigil check"
mkdir -p "$dir/p"
printf 'return { name = "ok", match = {}, on_alert = function() end }\n' > "$dir/p/ok.lua"
expect_rc 0 "$VIGIL" check "$dir/p"
[[ $out == *"1 checked, 0 with problems"* ]] || fail "$out"
printf 'return {\n  name = "bad",\n  match = { "severity=~\\"(\\"" },\n  on_alert = function() end,\n}\n' > "$dir/p/bad.lua"
printf 'return { name = "ok", match = {}, on_alert = function() end }\n' > "$dir/p/dup.lua"
printf 'local x = \n' > "$dir/p/syntax.lua"
expect_rc 1 "$VIGIL" check "$dir/p"
[[ $out == *"bad.lua:3: bad match[1]: bad regex"* ]] || fail "bad regex: $out"
[[ $out == *"duplicate policy name 'ok'"* ]] || fail "duplicate: $out"
[[ $out == *"syntax.lua:2:"* ]] || fail "syntax: $out"
[[ $out == *"4 checked, 3 with problems"* ]] || fail "summary: $out"

echo "lib modules run in the strict sandbox environment and may require each other"
mkdir -p "$dir/q/lib/net"
printf 'return { port = 443 }\n' > "$dir/q/lib/net/ports.lua"
printf 'local ports = require("lib.net.ports")\nreturn { port = ports.port }\n' > "$dir/q/lib/svc.lua"
printf 'local svc = require("lib.svc")\nreturn { name = "svc", match = {}, description = tostring(svc.port),\n  on_alert = function() end }\n' > "$dir/q/svc.lua"
expect_rc 0 "$VIGIL" check "$dir/q"
printf 'return { f = format }\n' > "$dir/q/lib/leaky.lua" # not string.format via a stray _ENV
printf 'local l = require("lib.leaky")\nreturn { name = "leaky", match = {}, on_alert = function() end }\n' > "$dir/q/leaky.lua"
expect_rc 1 "$VIGIL" check "$dir/q"
[[ $out == *"lib/leaky.lua:1: undefined global 'format'"* ]] || fail "lib env: $out"
echo "the example configs validate, with the example and the bundled policies"
# the secrets the example configs read (token, notifiers): any value of the right shape
for conf in "$VIGIL_SOURCE_DIR"/examples/*.conf.lua; do
  VIGIL_TOKEN=example VIGIL_PD_ONCALL_KEY=0123456789abcdef0123456789abcdef \
    VIGIL_PD_MANAGERS_KEY=fedcba9876543210fedcba9876543210 VIGIL_HOOK_SECRET=example \
    VIGIL_SLACK_WEBHOOK=https://hooks.slack.com/services/T0/B0/example \
    expect_rc 0 "$VIGIL" check -c "$conf" "$VIGIL_SOURCE_DIR/examples/policies" \
    "$VIGIL_SOURCE_DIR/policies"
done
echo "a bad executor key names itself and its line"
printf 'return {\n  executor = { mode = "enforce",\n    allow = { "kubectl" } },\n}\n' > "$dir/bad.conf.lua"
expect_rc 1 "$VIGIL" check -c "$dir/bad.conf.lua" "$dir/q"
[[ $out == *'bad.conf.lua:3: executor.allow[1]: "kubectl" is not an absolute path'* ]] || fail "executor.allow: $out"
printf 'return { guard = { rate = "lots" } }\n' > "$dir/bad.conf.lua"
expect_rc 1 "$VIGIL" check -c "$dir/bad.conf.lua" "$dir/q"
[[ $out == *'rate: a rate is "<count>/<period>"'* ]] || fail "guard.rate: $out"
echo "ok"
