#!/usr/bin/python3
"""Raw HTTP for tests: sends bytes exactly as given and prints what came back.

  rawhttp.py PORT send FILE|-         send the bytes, print the status line (or "closed")
  rawhttp.py PORT slow HEADER_SECS    send a request line, then a header byte per second
  rawhttp.py PORT flood N             open N connections, print how many got 503 at once

Exit status 0; the test decides what the printed answer means.
"""
import socket
import sys
import time


def status_line(sock, timeout=10.0):
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    return line if line else "closed"


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "send":
        src = sys.argv[3]
        payload = sys.stdin.buffer.read() if src == "-" else open(src, "rb").read()
        with connect(port) as s:
            try:
                s.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
            print(status_line(s))
    elif mode == "slow":
        secs = float(sys.argv[3])
        with connect(port) as s:
            s.sendall(b"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\n")
            start = time.time()
            line = "closed"
            while time.time() - start < secs:
                try:
                    s.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    break
                s.settimeout(1.0)
                try:
                    data = s.recv(4096)
                    if data:
                        line = data.split(b"\r\n", 1)[0].decode("latin-1")
                    break
                except socket.timeout:
                    continue
            print(line)
    elif mode == "flood":
        n = int(sys.argv[3])
        socks = [connect(port) for _ in range(n)]
        refused = 0
        for s in socks:
            s.settimeout(0.5)
            try:
                if s.recv(64).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except socket.timeout:
                pass
        for s in socks:
            s.close()
        print(refused)


if __name__ == "__main__":
    main()
