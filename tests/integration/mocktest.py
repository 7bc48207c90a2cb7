# SPDX-License-Identifier: MIT
"""mocktest.py: the small harness shared by test_stripe_mock.py and test_gocardless_mock.py (the mock
process, HTTP calls, a webhook receiver, the test runner). Modelled on test_xero_mock.py, which keeps its
own copy. Python 3 standard library only."""

import ctypes
import decimal
import http.client
import json
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Failure(AssertionError):
    pass


def expect(cond, what):
    if not cond:
        raise Failure(what)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise Failure(f"{what}: expected {expected!r}, got {actual!r}")


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    if _prctl is not None:  # PR_SET_PDEATHSIG: the mock never outlives this test
        _prctl(1, signal.SIGKILL, 0, 0, 0)


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body, parse_float=decimal.Decimal)

    def __repr__(self):
        return f"<{self.status} {self.body[:400]!r}>"


class Mock:
    """One mock process on a free port."""

    def __init__(self, script, name, *args):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, script, "--port", "0", "--quiet", *args], stdout=subprocess.PIPE,
                                     stderr=self.err, preexec_fn=_die_with_parent)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().decode() if ready else ""
        self.line = line.rstrip("\n")
        if not self.line.startswith(f"{name} listening on http://127.0.0.1:"):
            self.stop()
            raise Failure(f"the mock did not start: stdout {line!r}, stderr {self.stderr()!r}")
        self.port = int(self.line.rsplit(":", 1)[1])

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def stop(self, timeout=5):
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by PID
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def call(self, method, path, body=None, headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def ctl(self, method, path, obj=None, expect_status=(200, 201, 204)):
        r = self.call(method, "/_mock/" + path, obj)
        if r.status not in expect_status:
            raise Failure(f"control {method} /_mock/{path}: {r}")
        return json.loads(r.body) if r.body else None


class Receiver:
    """A webhook endpoint on a free loopback port that records every POST (raw body and headers) and
    answers with the next status in `statuses` (then 200).

    `clear(epoch=True)` starts a new epoch: URLs made by `url()` from then on carry it, and a delivery
    to an earlier epoch's URL (one the mock had already taken off its queue before a reset) is answered
    but not recorded, so it cannot leak into the next test."""

    def __init__(self):
        self.lock = threading.Condition()
        self.got = []
        self.statuses = []
        self.epoch = 0
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with rec.lock:
                    if not self.path.startswith(f"/e{rec.epoch}/"):
                        self.send_response(200)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = rec.statuses.pop(0) if rec.statuses else 200
                    rec.got.append({"path": self.path[len(f"/e{rec.epoch}"):],
                                    "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": body, "status": status})
                    rec.lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}/e{self.epoch}{path}"

    def clear(self, epoch=False):
        with self.lock:
            if epoch:
                self.epoch += 1
            self.got = []
            self.statuses = []

    def wait(self, n, timeout=5):
        end = time.monotonic() + timeout
        with self.lock:
            while len(self.got) < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise Failure(f"expected {n} webhook deliveries, got {len(self.got)}")
                self.lock.wait(left)
            return list(self.got)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def parallel(n, fn):
    out = [None] * n

    def run(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            out[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out


def run_tests(module_globals, start, stop):
    """Runs the test_* functions of a module in definition order (or only those named on the command
    line); prints one line per test and ``N passed, N failed``; returns the exit status."""
    tests = [(n, f) for n, f in module_globals.items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        tests = [(n, f) for n, f in tests if n in wanted]
    passed = failed = 0
    try:
        start()
    except Failure as e:
        print(f"not ok - start the mock\n  {e}\n0 passed, 1 failed")
        return 1
    try:
        for name, fn in tests:
            t0 = time.monotonic()
            try:
                fn()
            except Exception:  # noqa: BLE001 (any error fails the test)
                failed += 1
                exc = sys.exc_info()[1]
                msg = str(exc) if isinstance(exc, Failure) else traceback.format_exc()
                print(f"not ok - {name}\n" + "\n".join("  " + x for x in msg.splitlines()))
            else:
                passed += 1
                print(f"ok - {name} ({time.monotonic() - t0:.1f}s)")
            sys.stdout.flush()
    finally:
        rc, err = stop()
    if "internal error" in err:
        failed += 1
        print("not ok - the mock logged internal errors\n" + err)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or rc not in (0, None) else 0
