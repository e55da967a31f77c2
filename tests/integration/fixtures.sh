#!/usr/bin/env bash
# The test fixtures test themselves: tests/fixtures/receivers.py (the Slack, PagerDuty and
# webhook stand-ins) accepts what the real services accept and rejects what they reject, and
# tests/fixtures/bin/kubectl answers like kubectl. The other tests trust them only because this
# one passes.
source "$(dirname "$0")/../harness/integration.sh"
out=$(/usr/bin/python3 "$VIGIL_SOURCE_DIR/tests/fixtures/receivers.py" --self-test 2>&1) ||
  fail "receivers.py --self-test failed: $out"
grep -q ' 0 failed' <<< "$out" || fail "receivers.py --self-test: $out"
echo "$out" | tail -1
