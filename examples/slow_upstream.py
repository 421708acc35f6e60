#!/usr/bin/env python3
"""A slow backend to put jobdock in front of: POST /v1/reports/{customer} takes a few seconds.

    python3 examples/slow_upstream.py          # listens on 127.0.0.1:9000
"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY = float(os.environ.get("SLOW_UPSTREAM_DELAY", "3"))

class Reports(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(DELAY)  # the slow part jobdock hides from its clients
        report = {"customer": self.path.rsplit("/", 1)[-1], "request": json.loads(body or b"{}"),
                  "job": self.headers.get("Jobdock-Job-Id"), "attempt": self.headers.get("Jobdock-Attempt")}
        answer = json.dumps(report).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Report-Id", self.headers.get("Idempotency-Key", "-"))
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"slow upstream on http://127.0.0.1:{port} ({DELAY} s per report)", file=sys.stderr)
    ThreadingHTTPServer(("127.0.0.1", port), Reports).serve_forever()
