#!/usr/bin/python3
"""bench/logs: grouping (GA) and parsing (PA) accuracy of vigil's log template miner on the
Loghub-2k datasets, and its throughput, printed beside the peers in one run.

The miner sees each line's Content field (the message after the log header) taken from the
dataset's *_structured.csv; header stripping lives here, never in the miner. One default
configuration for every dataset. Peers: the published accuracy of Drain tuned per dataset
(notes/benchmarks.md §3), and a live run of the reference Python Drain (drain_ref.py, the
logparser algorithm with the benchmark's per-dataset regexes and thresholds) for accuracy and
speed on the same machine.

usage: bench/logs/run.py [--bench BUILD/bench/bench_logs] [--data DIR] [--lines N] [--no-peer]
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import drain_ref  # noqa: E402

DATASETS = ["HDFS", "Hadoop", "Spark", "Zookeeper", "BGL", "HPC", "Linux", "Apache", "OpenSSH",
            "Android"]
# notes/benchmarks.md §3: Drain with per-dataset tuned regexes and thresholds.
PUBLISHED_DRAIN_GA = {"HDFS": 0.998, "Hadoop": 0.948, "Spark": 0.920, "Zookeeper": 0.967,
                      "BGL": 0.963, "HPC": 0.887, "Linux": 0.690, "Apache": 1.000,
                      "OpenSSH": 0.788, "Android": 0.911}


def load(data, name):
    path = os.path.join(data, name, name + "_2k.log_structured.csv")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    return ([r["Content"] for r in rows], [r["EventId"] for r in rows],
            [r["EventTemplate"] for r in rows])


def grouping_accuracy(truth, pred):
    """A line is right when its predicted group holds exactly the lines of its true group."""
    by_true, by_pred = defaultdict(set), defaultdict(set)
    for i, (t, p) in enumerate(zip(truth, pred)):
        by_true[t].add(i)
        by_pred[p].add(i)
    ok = 0
    for members in by_pred.values():
        i = next(iter(members))
        if by_true[truth[i]] == members:
            ok += len(members)
    return ok / len(truth)


def norm_template(t):
    return " ".join(t.split())


def parsing_accuracy(truth, pred):
    return sum(norm_template(a) == norm_template(b) for a, b in zip(truth, pred)) / len(truth)


def run_vigil(bench, contents, lines):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8",
                                     errors="surrogateescape") as f:
        for c in contents:
            f.write(c.replace("\n", " ") + "\n")
        path = f.name
    try:
        out = subprocess.run([bench, path], check=True, capture_output=True).stdout
        ids, tpls = [], []
        for line in out.decode("utf-8", "surrogateescape").split("\n")[:len(contents)]:
            i, _, t = line.partition("\t")
            ids.append(i)
            tpls.append(t)
        t = subprocess.run([bench, "--lines", str(lines), path], check=True,
                           capture_output=True).stdout.split()
        done, secs, clusters, nbytes = int(t[0]), float(t[1]), int(t[2]), int(t[3])
        return ids, tpls, done / secs, clusters, nbytes
    finally:
        os.unlink(path)


def run_peer(name, contents):
    t0 = time.perf_counter()
    ids, tpls = drain_ref.parse(name, contents)
    return ids, tpls, len(contents) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=os.path.join(HERE, "..", "..", "build", "release", "bench",
                                                    "bench_logs"))
    ap.add_argument("--data", default=os.environ.get(
        "VIGIL_LOGHUB", os.path.join(HERE, "..", "..", "..", "shared", "data", "loghub2k")))
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    names = [n for n in DATASETS if not a.only or n in a.only.split(",")]
    print("log template mining on Loghub-2k: vigil (one default configuration) vs Drain")
    print("GA = grouping accuracy, PA = parsing accuracy; vigil lines/s = miner alone, one core,")
    print(f"the dataset repeated to >= {a.lines:,} lines; Drain-py = the reference Python Drain")
    print("with the benchmark's tuned per-dataset settings, run now on this machine.\n")
    hdr = (f"{'dataset':<10} {'GA':>6} {'PA':>6} {'tpl':>5} {'lines/s':>11} {'KiB':>6} |"
           f" {'Drain GA':>8} |" + ("" if a.no_peer else
                                    f" {'Drain-py GA':>11} {'PA':>6} {'lines/s':>9}"))
    print(hdr)
    print("-" * len(hdr))
    tot = defaultdict(float)
    for name in names:
        contents, truth, ttpl = load(a.data, name)
        ids, tpls, lps, clusters, nbytes = run_vigil(a.bench, contents, a.lines)
        ga, pa = grouping_accuracy(truth, ids), parsing_accuracy(ttpl, tpls)
        row = (f"{name:<10} {ga:6.3f} {pa:6.3f} {clusters:5d} {lps:11,.0f} {nbytes / 1024:6.0f} |"
               f" {PUBLISHED_DRAIN_GA[name]:8.3f} |")
        tot["ga"] += ga
        tot["pa"] += pa
        tot["lps"] += lps
        tot["pub"] += PUBLISHED_DRAIN_GA[name]
        if not a.no_peer:
            pids, ptpls, plps = run_peer(name, contents)
            pga, ppa = grouping_accuracy(truth, pids), parsing_accuracy(ttpl, ptpls)
            row += f" {pga:11.3f} {ppa:6.3f} {plps:9,.0f}"
            tot["pga"] += pga
            tot["ppa"] += ppa
            tot["plps"] += plps
        print(row)
    n = len(names)
    print("-" * len(hdr))
    row = (f"{'mean':<10} {tot['ga'] / n:6.3f} {tot['pa'] / n:6.3f} {'':5} {tot['lps'] / n:11,.0f}"
           f" {'':6} | {tot['pub'] / n:8.3f} |")
    if not a.no_peer:
        row += f" {tot['pga'] / n:11.3f} {tot['ppa'] / n:6.3f} {tot['plps'] / n:9,.0f}"
    print(row)


if __name__ == "__main__":
    main()
