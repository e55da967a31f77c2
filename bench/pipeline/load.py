#!/usr/bin/python3
"""bench/pipeline/load.py: the alert load of bench/pipeline/run (stdlib only).

    load.py URL TAG rate RATE SECS     one alert per request, RATE alerts/s for SECS seconds
    load.py URL TAG burst N BATCH      N alerts in batches of BATCH, as fast as vigil answers
    load.py URL TAG flood N BATCH MAX  N alerts in batches of BATCH, as fast as vigil runs them:
                                       a batch is sent whenever vigil_tasks_running (/metrics)
                                       is below MAX, so the daemon is kept busy but not over
                                       its admission limit (intake.max_policy_tasks)

POSTs Alertmanager v2 alerts to URL/api/v2/alerts over keep-alive connections. Every alert is
new and opens its own incident (vigil groups by alertname and namespace: each alert has a
namespace of its own, TAG-<n>). The mix follows the bundled policies' alert names:

  80%  PodCPUSaturation    warning   resource-exhaustion (range query, scale + notify) and
                                     flapping (no data source, no action)
   5%  PodMemorySaturation warning   the same two
  10%  KubePodCrashLooping critical  crash-loop (instant query, restart, escalation timer) and
                                     default-escalation (two escalation timers, no action)
   5%  NodeFilesystemFillingUp warning  disk-filling (6 h range query, forecast, notify) and
                                     flapping

rate: the schedule is fixed in advance (open loop): request i is sent at t0 + i/RATE by one of
8 connections, whatever the latency of the others, so a slow vigil does not slow the load
(it shows as latency instead). burst: 4 connections, each sending its share back to back.
flood: one connection for the alerts, another polling /metrics every 5 ms at most.

Prints one line "LOAD sent=... ok=... failed=... t0_ms=... t1_ms=... late=..." (epoch ms of
the first and the last request; late: requests sent more than 10 ms after their slot).
"""
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlparse

MIX = ["cpu"] * 16 + ["mem"] + ["crash"] * 2 + ["disk"]  # 20 slots: 80/5/10/5 %


def alert(tag, n):
    kind = MIX[n % len(MIX)]
    ns = "%s-%d" % (tag, n)
    pod = "api%d-7d9f5c-x%04d" % (n % 97, n % 10000)
    if kind in ("cpu", "mem"):
        labels = {"alertname": "PodCPUSaturation" if kind == "cpu" else "PodMemorySaturation",
                  "severity": "warning", "resource": kind, "namespace": ns, "pod": pod}
    elif kind == "crash":
        labels = {"alertname": "KubePodCrashLooping", "severity": "critical", "namespace": ns,
                  "pod": pod}
    else:
        labels = {"alertname": "NodeFilesystemFillingUp", "severity": "warning", "namespace": ns,
                  "instance": "node-%d:9100" % (n % 50), "mountpoint": "/var"}
    return {"labels": labels, "annotations": {"summary": "pipeline benchmark alert %d" % n}}


class Poster:
    def __init__(self, url):
        u = urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def request(self, method, path, body=None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in range(2):  # one reconnect: an idle keep-alive may have been closed
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.conn.request(method, path, body, headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt == 1:
                    return 0, b""
        return 0, b""

    def post(self, alerts):
        status, _ = self.request("POST", "/api/v2/alerts",
                                 json.dumps(alerts, separators=(",", ":")))
        return 200 <= status < 300

    def tasks_running(self):
        status, body = self.request("GET", "/metrics")
        for line in body.decode("utf-8", "replace").splitlines():
            if line.startswith("vigil_tasks_running "):
                return float(line.split()[1])
        raise SystemExit("load.py: no vigil_tasks_running in /metrics (HTTP %d)" % status)


def run(workers):
    threads = [threading.Thread(target=w) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    mode = sys.argv[3] if len(sys.argv) > 3 else ""
    if len(sys.argv) != {"rate": 6, "burst": 6, "flood": 7}.get(mode, 0):
        sys.exit(__doc__)
    url, tag = sys.argv[1], sys.argv[2]
    a, b = float(sys.argv[4]), float(sys.argv[5])
    lock = threading.Lock()
    st = {"sent": 0, "ok": 0, "failed": 0, "late": 0, "t0": None, "t1": 0.0}

    def count(n, ok, t_sent):
        with lock:
            st["sent"] += n
            st["ok" if ok else "failed"] += n
            if st["t0"] is None or t_sent < st["t0"]:
                st["t0"] = t_sent
            st["t1"] = max(st["t1"], t_sent)

    if mode == "rate":
        rate, secs, conns = a, b, 8
        total = int(rate * secs)
        start = time.time() + 0.2

        def worker(k):
            p = Poster(url)
            for i in range(k, total, conns):
                slot = start + i / rate
                now = time.time()
                if slot > now:
                    time.sleep(slot - now)
                elif now - slot > 0.01:
                    with lock:
                        st["late"] += 1
                t = time.time()
                count(1, p.post([alert(tag, i)]), t)
        run([lambda k=k: worker(k) for k in range(conns)])
    elif mode == "flood":
        total, batch, most = int(a), int(b), float(sys.argv[6])
        p, probe = Poster(url), Poster(url)
        for first in range(0, total, batch):
            while probe.tasks_running() >= most:
                time.sleep(0.005)
            t = time.time()
            n = min(batch, total - first)
            count(n, p.post([alert(tag, i) for i in range(first, first + n)]), t)
    else:
        total, batch, conns = int(a), int(b), 4

        def worker(k):
            p = Poster(url)
            for first in range(k * batch, total, conns * batch):
                t = time.time()
                n = min(batch, total - first)
                count(n, p.post([alert(tag, i) for i in range(first, first + n)]), t)
        run([lambda k=k: worker(k) for k in range(conns)])
    print("LOAD sent=%d ok=%d failed=%d t0_ms=%.0f t1_ms=%.0f late=%d" % (
        st["sent"], st["ok"], st["failed"], (st["t0"] or 0) * 1000, st["t1"] * 1000, st["late"]))


if __name__ == "__main__":
    main()
