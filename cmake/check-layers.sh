#!/usr/bin/env bash
# Enforces the layer rules of DESIGN.md §3: engines never see Lua, bindings never call
# libuv/curl/SQLite directly.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
if grep -nE '#\s*include\s*[<"](lua|lauxlib|lualib)\.h' src/engine/*.[ch] 2>/dev/null; then
  echo "layer violation: src/engine includes Lua headers" >&2; bad=1
fi
if grep -nE '\b(uv|curl|sqlite3)_[a-z_]+\s*\(' src/lua/*.c 2>/dev/null; then
  echo "layer violation: src/lua calls uv_/curl_/sqlite3_ directly" >&2; bad=1
fi
exit $bad
