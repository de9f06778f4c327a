#!/usr/bin/env python3
"""The delayed-ACK scenario of bench/quickack.sh (issue 25 item 14).

  quickack.py serve PORT           a backend on Python's http.server: HTTP/1.1
                                   keep-alive, the head and the body in two
                                   writes, no TCP_NODELAY (what many small
                                   frameworks do)
  quickack.py measure URL HOST N   N sequential keep-alive GETs on one
                                   connection; prints "p50_ms p99_ms slow"
                                   (slow: requests over 20 ms)

The client sends each request in one write with TCP_NODELAY, so what it
measures is the hop behind it.
"""
import http.client
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

BODY = b"ok\n" * 100


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        # send_response/send_header buffer the head and end_headers writes
        # it: one write; the body is a second one. Nagle then holds the body
        # until the head is ACKed, and a peer in delayed-ACK mode waits up
        # to 40 ms to ACK it.
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def serve(port):
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def measure(url, host, n):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    path = parts.path or "/"
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read()
        times.append((time.perf_counter() - start) * 1000)
        if resp.status != 200 or body != BODY:
            sys.exit(f"bad answer: {resp.status} {body[:80]!r}")
    times.sort()
    p50 = times[len(times) // 2]
    p99 = times[min(len(times) - 1, (len(times) * 99 + 99) // 100 - 1)]
    slow = sum(1 for t in times if t > 20)
    print(f"{p50:.3f} {p99:.3f} {slow}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "measure":
        measure(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
