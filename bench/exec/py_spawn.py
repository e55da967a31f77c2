#!/usr/bin/python3
"""bench/exec peer: /bin/true through asyncio.create_subprocess_exec, as a Python automation
runner would start a tool: stdout and stderr captured (communicate()), `conc` runs in flight
until `runs` have completed. Prints RES|python|<conc>|<runs>|<wall s>|<runs/s>|<p50 ms>|<p99 ms>
per concurrency, like bench_exec. usage: py_spawn.py RUNS CONC..."""
import asyncio
import sys
import time


async def phase(runs, conc):
    lat = []
    left = runs

    async def worker():
        nonlocal left
        while left > 0:
            left -= 1
            t = time.perf_counter()
            p = await asyncio.create_subprocess_exec(
                "/bin/true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await p.communicate()
            if p.returncode != 0:
                sys.exit(f"py_spawn: /bin/true exited {p.returncode}")
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return time.perf_counter() - t0, sorted(lat)


def quantile(v, q):
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


async def main():
    runs = int(sys.argv[1])
    for conc in map(int, sys.argv[2:]):
        await phase(conc * 2, conc)  # warm-up
        wall, lat = await phase(runs, conc)
        print(f"RES|python|{conc}|{runs}|{wall:.4f}|{runs / wall:.1f}|"
              f"{quantile(lat, 0.5) * 1e3:.3f}|{quantile(lat, 0.99) * 1e3:.3f}", flush=True)


asyncio.run(main())
