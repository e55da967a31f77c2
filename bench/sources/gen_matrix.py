"""bench/sources/gen_matrix.py SERIES POINTS: prints a /api/v1/query_range answer body in
Prometheus' exact format (as Prometheus 2.x writes it: compact JSON, timestamps as numbers
with up to 3 decimals, values as strings in Go's shortest float form), SERIES series of
POINTS points each, node_cpu-like labels. Deterministic (fixed seed)."""
import json
import random
import sys

series, points = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(42)
start = 1767225600.123  # 2026-01-01T00:00:00.123Z
result = []
for k in range(series):
    metric = {"cpu": str(k // 8), "instance": "127.0.0.1:9100", "job": "node",
              "mode": ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"][k % 8]}
    values = []
    for j in range(points):
        t = round(start + 15 * j, 3)
        v = 0.001 + rng.random() * 0.05 if k % 8 else 0.9 + rng.random() * 0.1
        # Go's strconv.FormatFloat(v, 'f', -1, 64) is the shortest round-tripping form, as
        # Python's repr; integral values print without ".0"
        values.append([int(t) if t == int(t) else t, repr(v)])
    result.append({"metric": metric, "values": values})
doc = {"status": "success", "data": {"resultType": "matrix", "result": result}}
sys.stdout.write(json.dumps(doc, separators=(",", ":")))
