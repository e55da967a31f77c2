#!/usr/bin/python3
"""bench/exec: the sandboxed process runner against its peers, measured in one run, as one
table (`make bench-exec` builds the release tree and runs this).

Every runner starts /bin/true and waits for it, `conc` at a time until RUNS have completed:
  sandboxed    vg_exec_run (src/engine/exec.c) through the exec server (vigil-exec --server
               forks a supervisor per run) with every tier this kernel offers (rlimits,
               no_new_privs, fds, Landlock, seccomp), stdout/stderr/status captured
  spawned      the same with executor.server = false: vigil-exec spawned for every run
  uv_spawn     bare uv_spawn of /bin/true on the same loop, stdio ignored (libuv 1.44 forks)
  posix_spawn  bare posix_spawn + a pidfd on the same loop, stdio ignored: the floor
  python       asyncio.create_subprocess_exec, stdout/stderr captured (py_spawn.py)
concurrency 1 gives the latency of one run, concurrency 8 the rate the machine sustains.
Medians of REPS runs of each, the runners interleaved (bench_exec alternates its order).
Nothing fails on a missed target: the table says MISSED.

usage: bench/exec/run.py [--quick] path/to/vigil
"""
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CONCS = [1, 8]


def parse(out, into):
    tiers = None
    for line in out.splitlines():
        f = line.split("|")
        if f[0] == "TIERS":
            tiers = f[1]
        elif f[0] == "RES" and f[1] != "warm-up":
            name, conc = f[1], int(f[2])
            rate, p50, p99 = float(f[5]), float(f[6]), float(f[7])
            into.setdefault((name, conc), []).append((rate, p50, p99))
    return tiers


def main():
    args = sys.argv[1:]
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    if len(args) != 1:
        sys.exit(__doc__.strip().splitlines()[-1])
    vigil = os.path.realpath(args[0])
    build = os.path.dirname(vigil)
    bench = os.path.join(build, "bench", "bench_exec")
    helper = os.path.join(build, "vigil-exec")
    for f in (bench, helper):
        if not os.access(f, os.X_OK):
            sys.exit(f"bench/exec: {f} missing (make release)")
    reps, runs = (3, 200) if quick else (5, 500)
    conc = [str(c) for c in CONCS]
    res, tiers = {}, None
    for rep in range(reps):
        cmd = [bench] + (["-r"] if rep % 2 else []) + [helper, str(runs)] + conc
        tiers = parse(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout,
                      res) or tiers
        py = [sys.executable, os.path.join(HERE, "py_spawn.py"), str(runs)] + conc
        parse(subprocess.run(py, check=True, capture_output=True, text=True).stdout, res)

    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in res.items()}
    uname = os.uname()
    print(f"bench/exec: /bin/true, {runs} runs per phase, medians of {reps} reps; "
          f"{uname.sysname} {uname.release}, {os.cpu_count()} CPUs")
    print(f"sandbox tiers: {tiers}")
    print()
    print(f"{'conc':>4}  {'runner':<12} {'runs/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
          f"  {'sandboxed is':<28}")
    for c in CONCS:
        sb = med[("sandboxed", c)]
        for name in ("sandboxed", "spawned", "uv_spawn", "posix_spawn", "python"):
            rate, p50, p99 = med[(name, c)]
            rel = "" if name == "sandboxed" else (
                f"{sb[0] / rate:.2f}x its rate, {sb[1] / p50:.2f}x its p50")
            print(f"{c:>4}  {name:<12} {rate:>8.0f} {p50:>8.2f} {p99:>8.2f}  {rel}")
        print()

    best = max(med[("sandboxed", c)][0] for c in CONCS)
    bare_best = max(med[("uv_spawn", c)][0] for c in CONCS)
    py_best = max(med[("python", c)][0] for c in CONCS)
    overhead = max(max(med[("uv_spawn", c)][0] / med[("sandboxed", c)][0],
                       med[("sandboxed", c)][1] / med[("uv_spawn", c)][1]) for c in CONCS)
    rows = [
        (">= 500 sandboxed runs/s", f"{best:.0f}/s (bare uv_spawn: {bare_best:.0f}/s)", best >= 500),
        ("overhead <= 2x bare uv_spawn", f"{overhead:.2f}x (worst of rate and p50)", overhead <= 2),
        (">= 3x Python's rate", f"{best / py_best:.2f}x", best >= 3 * py_best),
    ]
    print("targets:")
    for what, got, ok in rows:
        print(f"  {what:<30} {got:<42} {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
