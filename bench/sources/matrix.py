"""bench/sources/matrix.py BODY_FILE ITER: the Python peer of matrix.lua: json.loads plus
py_client.py's convert() (prom.lua's, line for line) on the same body; per-iteration
time.process_time(), medians. Prints one RESULT line."""
import json
import statistics
import sys
import time

from py_client import convert

body_file, iters = sys.argv[1], int(sys.argv[2])
with open(body_file, "rb") as f:
    body = f.read()
both, dec, conv = [], [], []
w0 = time.perf_counter()
for _ in range(iters):
    c0 = time.process_time()
    doc = json.loads(body)
    c1 = time.process_time()
    out = convert(doc["data"])
    c2 = time.process_time()
    both.append(c2 - c0)
    dec.append(c1 - c0)
    conv.append(c2 - c1)
wall = (time.perf_counter() - w0) / iters
points = sum(len(s["values"]) for s in out)
print("RESULT client=python phase=matrix points=%d bytes=%d both=%.6f decode=%.6f convert=%.6f "
      "wall_per_iter=%.6f iter=%d" % (points, len(body), statistics.median(both),
                                      statistics.median(dec), statistics.median(conv), wall, iters))
