#!/usr/bin/python3
"""Posts batches of distinct alerts to vigil until it stops answering, and records which
alerts were acknowledged with a 2xx (one `seq` per line, appended to ACKED) and how many
requests got each other status (printed at the end as `status=count` pairs).

  loadgen.py PORT ACKED FIRST_SEQ [BATCH] [SECONDS]

Each alert carries a unique `seq` label, so a test can check afterwards that every
acknowledged alert is in the store (G1).
"""
import http.client
import json
import sys
import time


def main():
    port, acked_path, seq = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    statuses = {}
    deadline = time.time() + seconds
    conn = None
    with open(acked_path, "a") as acked:
        while time.time() < deadline:
            alerts = [{"labels": {"alertname": "Load", "seq": str(seq + i), "team": "load"}}
                      for i in range(batch)]
            body = json.dumps(alerts)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", "/api/v2/alerts", body,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                break  # the daemon went away: what was acknowledged is on file
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if 200 <= resp.status < 300:
                acked.write("".join("%d\n" % (seq + i) for i in range(batch)))
                acked.flush()
            seq += batch
    print(" ".join("%d=%d" % kv for kv in sorted(statuses.items())))
    print("next=%d" % seq)


if __name__ == "__main__":
    main()
