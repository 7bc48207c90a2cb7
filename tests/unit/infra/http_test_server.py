#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A loopback HTTP/1.1 server for tests/unit/infra/http_client.c: it binds a free port on 127.0.0.1,
prints "listening <port>" on stdout, and serves until it is killed.

  /echo            any method: 200, JSON {"method", "path", "headers": [[name, value], ...], "body_hex"}
  /status/<code>   that status; 429 adds Retry-After: 7; every answer has X-Mixed-Case with padded value
  /slow?ms=N       waits N ms, then 200 "slow"
  /big?bytes=N     200 with N bytes ("0123456789" repeated); &chunked=1 sends it chunked, no Content-Length
  /redirect        302 to /echo
  /drop            closes the connection without answering
  /count           "<requests> <connections>": how many arrived so far
An Expect: 100-continue request gets an interim 100 response carrying X-Interim: 1.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COUNT = 0
CONNECTIONS = 0
COUNT_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would hold the body 40 ms

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        global CONNECTIONS
        super().setup()
        with COUNT_LOCK:
            CONNECTIONS += 1

    def handle_expect_100(self):
        self.wfile.write(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n")
        self.wfile.flush()
        return True

    def reply(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("X-Mixed-Case", "   padded value \t ")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        global COUNT
        with COUNT_LOCK:
            COUNT += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/echo":
            doc = {
                "method": self.command,
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_hex": body.hex(),
            }
            self.reply(200, json.dumps(doc).encode(), [("Content-Type", "application/json")])
        elif url.path.startswith("/status/"):
            code = int(url.path[len("/status/"):])
            extra = [("Retry-After", "7")] if code == 429 else []
            self.reply(code, b"status %d" % code, extra)
        elif url.path == "/slow":
            time.sleep(int(query.get("ms", ["1000"])[0]) / 1000.0)
            self.reply(200, b"slow")
        elif url.path == "/big":
            n = int(query.get("bytes", ["0"])[0])
            data = (b"0123456789" * (n // 10 + 1))[:n]
            if query.get("chunked") == ["1"]:
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, n, 65536):
                    part = data[i:i + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.reply(200, data)
        elif url.path == "/redirect":
            self.reply(302, b"moved", [("Location", "/echo")])
        elif url.path == "/drop":
            self.close_connection = True
        elif url.path == "/count":
            with COUNT_LOCK:
                counts = b"%d %d" % (COUNT, CONNECTIONS)
            self.reply(200, counts)
        else:
            self.reply(404, b"not found")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # read by listen(), so it is set on the class

    def handle_error(self, request, client_address):
        # the client hung up first (a timeout, a body cap, a shutdown): expected, so no traceback
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


def main():
    server = Server(("127.0.0.1", 0), Handler)
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
