#!/usr/bin/python3
"""bench/pipeline/prom_fixture.py: the loopback Prometheus of bench/pipeline/run.

    prom_fixture.py PORTFILE

A threaded HTTP/1.1 server (stdlib only, keep-alive) on 127.0.0.1, an ephemeral port written to
PORTFILE once it listens. It answers the Prometheus HTTP API calls the bundled policies make
with fixed, valid answers built once at start-up, so it costs as little as a Python server can:

  /api/v1/query_range  a matrix of one series; the values depend on the query's metric:
                       node_filesystem_avail_bytes: 6 h at 5 m, falling (disk-filling's
                       forecast finds it full in about 2 h); anything else (the saturation
                       ratio of resource-exhaustion): 5 m at 30 s rising to 0.97 (> 0.9:
                       confirmed, the plan runs)
  /api/v1/query        a vector of one sample: kube_deployment_spec_replicas: 2 (as
                       kube-state-metrics reports it: resource-exhaustion's scale then needs no
                       `kubectl get`); anything else: 5 (crash-loop: 5 restarts in 15 m)
  POST /hook           204: the webhook notifiers of the config (dry-run never sends; there
                       in case it does)

GET and POST (form-encoded, as vigil.prom sends) are both accepted. Counts requests per path
and prints them on SIGTERM. Logs nothing per request.
"""
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

T0 = int(time.time())
COUNTS = {}
LOCK = threading.Lock()


def body(doc):
    return json.dumps(doc, separators=(",", ":")).encode()


def matrix(metric, points, step, values):
    start = T0 - (points - 1) * step
    vals = [[start + i * step, repr(float(v))] for i, v in enumerate(values)]
    return body({"status": "success", "data": {"resultType": "matrix",
                 "result": [{"metric": metric, "values": vals}]}})


SATURATION = matrix({"__name__": "vigil:pod_saturation:ratio", "resource": "cpu"}, 11, 30,
                    [0.55, 0.6, 0.62, 0.7, 0.75, 0.8, 0.86, 0.9, 0.93, 0.95, 0.97])
# 6 h at 5 m: 73 points, 10 GB falling by 60 MB every 5 m (a steady 720 MB/h: ~2 h left at the
# end) with a little noise so the forecast has something to fit
DISK = matrix({"__name__": "node_filesystem_avail_bytes", "mountpoint": "/var"}, 73, 300,
              [10e9 - i * 60e6 + (i % 3) * 5e6 for i in range(73)])
VECTOR = body({"status": "success", "data": {"resultType": "vector",
               "result": [{"metric": {"pod": "x"}, "value": [T0, "5"]}]}})
REPLICAS = body({"status": "success", "data": {"resultType": "vector",
                 "result": [{"metric": {"deployment": "x"}, "value": [T0, "2"]}]}})


class Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: vigil opens up to max_concurrency
    # connections at once, and SYNs beyond the backlog are dropped and retried after 1 s, 3 s...
    request_queue_size = 1024
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, payload=b""):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def route(self, params):
        path = self.path.split("?", 1)[0]
        with LOCK:
            COUNTS[path] = COUNTS.get(path, 0) + 1
        if path == "/api/v1/query_range":
            query = (params.get("query") or [""])[0]
            self.answer(200, DISK if "node_filesystem_avail_bytes" in query else SATURATION)
        elif path == "/api/v1/query":
            query = (params.get("query") or [""])[0]
            self.answer(200, REPLICAS if "kube_deployment_spec_replicas" in query else VECTOR)
        elif path == "/hook":
            self.answer(204)
        else:
            self.answer(404, body({"status": "error", "errorType": "not_found", "error": path}))

    def do_GET(self):
        q = self.path.split("?", 1)
        self.route(parse_qs(q[1]) if len(q) > 1 else {})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n > 0 else b""
        params = {}
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            params = parse_qs(data.decode("utf-8", "replace"))
        self.route(params)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: prom_fixture.py PORTFILE")
    server = Server(("127.0.0.1", 0), Handler)

    def stop(*_):
        with LOCK:
            print("prom_fixture: requests " + json.dumps(COUNTS, sort_keys=True), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
