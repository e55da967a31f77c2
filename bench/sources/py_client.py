"""bench/sources/py_client.py URL PHASE N CONC WARM: the Python peer of vigil_client.lua.

asyncio + aiohttp (Debian python3-aiohttp), one ClientSession, a semaphore of CONC; the same
POSTs vigil.prom sends (form-encoded /api/v1/query and /api/v1/query_range), the same JSON
decode and the same conversion into prom.lua's compact shapes. Prints one RESULT line like
vigil_client.lua; cpu is time.process_time() (this process, all threads) around the timed
phase only; latencies use time.perf_counter().
"""
import asyncio
import json
import math
import sys
import time

import aiohttp

INSTANT = [
    'up',
    'node_load1',
    'sum by (mode) (rate(node_cpu_seconds_total[1m]))',
    'demo_temperature',
    'node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes',
]
RANGE = [
    'rate(node_cpu_seconds_total[1m])',
    'node_load1',
    'demo_temperature',
    'sum by (job) (up)',
]


def number(s):
    if s == "NaN":
        return math.nan
    if s == "+Inf":
        return math.inf
    if s == "-Inf":
        return -math.inf
    return float(s)


def convert(data):
    """prom.lua's convert(), line for line."""
    kind, result = data["resultType"], data["result"]
    if kind == "vector":
        return [{"labels": s.get("metric") or {}, "ts": s["value"][0],
                 "value": number(s["value"][1])} for s in result]
    if kind == "matrix":
        out = []
        for s in result:
            ts, values = [], []
            for p in s.get("values") or []:
                ts.append(p[0])
                values.append(number(p[1]))
            out.append({"labels": s.get("metric") or {}, "ts": ts, "values": values})
        return out
    if kind == "scalar":
        return {"ts": result[0], "value": number(result[1])}
    if kind == "string":
        return {"ts": result[0], "value": result[1]}
    return result


class Client:
    def __init__(self, session, url):
        self.session, self.url = session, url.rstrip("/")

    async def call(self, path, params):
        async with self.session.post(self.url + path, data=params) as r:
            body = await r.read()
            status = r.status
            ctype = r.headers.get("Content-Type", "")
        doc = None
        if "json" in ctype and body:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
        if not isinstance(doc, dict):
            return None, "EHTTP: %d from %s" % (status, path)
        if doc.get("status") != "success":
            return None, "EQUERY: %s: %s" % (doc.get("errorType"), doc.get("error"))
        return convert(doc["data"]), None

    async def query(self, expr):
        return await self.call("/api/v1/query", {"query": expr})

    async def query_range(self, expr, start, end, step):
        return await self.call("/api/v1/query_range", {
            "query": expr, "start": "%.3f" % start, "end": "%.3f" % end, "step": str(step)})


async def run(n, one, conc):
    sem = asyncio.Semaphore(conc)
    lat = [0.0] * n
    stats = {"errors": 0, "series": 0, "points": 0, "first_err": None}

    async def task(i):
        async with sem:
            t0 = time.perf_counter()
            r, err = await one(i)
            lat[i] = time.perf_counter() - t0
        if r is not None:
            stats["series"] += len(r)
            for s in r:
                stats["points"] += len(s["values"]) if "values" in s else 1
        else:
            stats["errors"] += 1
            stats["first_err"] = stats["first_err"] or err

    w0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(task(i) for i in range(n)))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    lat.sort()
    return dict(stats, n=n, wall=wall, cpu=cpu, p50=lat[math.ceil(0.50 * n) - 1],
                p99=lat[math.ceil(0.99 * n) - 1], series=stats["series"] / n,
                points=stats["points"] / n)


async def main():
    url, phase, n, conc, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
        int(sys.argv[5])
    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        prom = Client(session, url)

        async def one_instant(i):
            return await prom.query(INSTANT[i % len(INSTANT)])

        async def one_range(i):
            now = time.time()
            return await prom.query_range(RANGE[i % len(RANGE)], now - 3600, now, 15)

        w = await run(warm, one_instant, conc)
        assert w["errors"] == 0, w["first_err"]
        r = await run(n, one_instant if phase == "instant" else one_range, conc)
    print("RESULT client=python phase=%s n=%d errors=%d wall=%.6f cpu=%.6f p50=%.6f p99=%.6f "
          "series=%.2f points=%.2f first_error=%r" % (
              phase, r["n"], r["errors"], r["wall"], r["cpu"], r["p50"], r["p99"], r["series"],
              r["points"], r["first_err"]), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
