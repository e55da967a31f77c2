#!/usr/bin/env bash
# Runs every ```lua block of docs/*.md as a spec case (in a fresh sandboxed VM on the virtual
# clock, like `vigil test`), so the documentation's examples cannot rot. A block preceded by
# the line `<!-- not run -->` is skipped (config files, policy files shown whole).
set -euo pipefail
cd "${VIGIL_SOURCE_DIR:-$(dirname "$0")/../..}"
VIGIL=${VIGIL:-build/dev/vigil}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

count=0
for doc in docs/*.md; do
  name=$(basename "$doc" .md)
  spec="$tmp/${name}_spec.lua"
  awk -v doc="$doc" '
    /^<!-- not run -->/ { skip = 1; next }
    /^```lua$/ { if (!skip) { n++; inblock = 1; printf "it(%c%s example %d (line %d)%c, function()\n", 34, doc, n, NR, 34 } ; next }
    /^```$/ { if (inblock) { print "end)"; inblock = 0 } ; skip = 0; next }
    inblock { print }
    { if (!/^[[:space:]]*$/ && !inblock) skip = skip }
  ' "$doc" > "$spec"
  if ! grep -q '^it(' "$spec"; then
    rm "$spec"
    continue
  fi
  count=$((count + $(grep -c '^it(' "$spec")))
done
echo "docs: $count examples"
[[ $count -gt 0 ]] || { echo "no examples found in docs/" >&2; exit 1; }
"$VIGIL" test "$tmp"
