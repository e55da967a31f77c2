#!/usr/bin/env bash
# Installs the Debian packages vigil needs, only those that are missing.
#   cmake/install-deps.sh          build + run dependencies
#   cmake/install-deps.sh --test   also what the test suite starts and checks with
set -euo pipefail

build=(cmake make gcc pkg-config liblua5.4-dev lua5.4 lua-cjson-dev libuv1-dev
       libcurl4-openssl-dev libsqlite3-dev libedit-dev libpcre2-dev libjansson-dev
       libhttp-parser-dev libseccomp-dev)
test=(libcmocka-dev lua-check tmux clang clang-format clang-tidy curl python3 python3-aiohttp wrk strace sqlite3
      prometheus prometheus-alertmanager prometheus-node-exporter prometheus-pushgateway)

want=("${build[@]}")
[[ "${1:-}" == "--test" ]] && want+=("${test[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "vigil: installing ${missing[*]}" >&2
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Debian starts the packaged Prometheus services on install; tests start their own on loopback.
if [[ ! -e /usr/sbin/policy-rc.d && -z "$sudo" ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
