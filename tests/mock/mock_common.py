# SPDX-License-Identifier: MIT
"""mock_common.py: the plumbing that stripe_api.py and gocardless_api.py share, so each mock file holds only
its provider's behaviour.

It follows the conventions of xero_api.py (which predates it and stays self-contained): one loopback
ThreadingHTTPServer, a single ready line on stdout, exit 0 on SIGTERM/SIGINT, a control API under /_mock/
that answers loopback clients only, fault rules, a call log and stats. Python 3 standard library only.
Nothing here opens an outbound connection except WebhookSender, which POSTs to the URL a test configured
and refuses any host that is not loopback.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import random
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit


def jdump(obj, pretty=False):
    if pretty:
        return json.dumps(obj, indent=2)
    return json.dumps(obj, separators=(",", ":"))


class BadRequest(Exception):
    """A control request the mock refuses; becomes 4xx {"error":"mock_bad_request","message":...}."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def is_loopback(addr):
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1") or addr.startswith("::ffff:127.")


def hmac_sha256_hex(secret, msg):
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


class Window:
    """Timestamps in a rolling window; count() is how many are newer than now - span."""

    def __init__(self, span):
        self.span = span
        self.q = deque()

    def add(self, t):
        self.q.append(t)

    def trim(self, now):
        q, edge = self.q, now - self.span
        while q and q[0] <= edge:
            q.popleft()

    def count(self, now):
        self.trim(now)
        return len(self.q)

    def oldest(self):
        return self.q[0] if self.q else None


class CallStats:
    """What a client did: every authenticated attempt, with the largest counts seen in any 1 s and 60 s
    window and the largest number in flight at once."""

    def __init__(self):
        self.calls_total = 0
        self.w1 = Window(1.0)
        self.w60 = Window(60.0)
        self.max_1s = 0
        self.max_60s = 0
        self.inflight = 0
        self.max_concurrent = 0
        self.violations = 0
        self.violations_by_limit = {}
        self.sent_429_limit = 0
        self.sent_429_fault = 0
        self.statuses = {}
        self.by_path = {}

    def begin(self, now, key):
        self.calls_total += 1
        self.w1.add(now)
        self.w60.add(now)
        self.max_1s = max(self.max_1s, self.w1.count(now))
        self.max_60s = max(self.max_60s, self.w60.count(now))
        self.inflight += 1
        self.max_concurrent = max(self.max_concurrent, self.inflight)
        self.by_path[key] = self.by_path.get(key, 0) + 1

    def end(self, status):
        self.inflight -= 1
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1

    def violation(self, which):
        self.violations += 1
        self.violations_by_limit[which] = self.violations_by_limit.get(which, 0) + 1

    def as_json(self):
        return {
            "calls_total": self.calls_total,
            "max_calls_in_any_1s_window": self.max_1s,
            "max_calls_in_any_60s_window": self.max_60s,
            "max_concurrent": self.max_concurrent,
            "in_flight": self.inflight,
            "violations": self.violations,
            "violations_by_limit": dict(self.violations_by_limit),
            "sent_429": self.sent_429_limit + self.sent_429_fault,
            "sent_429_limit": self.sent_429_limit,
            "sent_429_fault": self.sent_429_fault,
            "statuses": dict(self.statuses),
            "calls_by_path": dict(self.by_path),
        }


FAULT_MODES = ("429", "500", "502", "503", "504", "409", "slow", "drop", "refuse", "none")


class Faults:
    """Fault rules, checked in order; the first that matches applies. A rule lasts for `count` matching calls
    (default 1; 0 = until cleared) or, with `for_s`, for that many seconds of the mock's clock."""

    def __init__(self, clock):
        self.clock = clock
        self.rules = []

    def set(self, spec):
        rules = spec if isinstance(spec, list) else [spec]
        new = []
        for r in rules:
            if not isinstance(r, dict):
                raise BadRequest("a fault is a JSON object")
            mode = str(r.get("mode", "none"))
            if mode not in FAULT_MODES:
                raise BadRequest(f"fault mode must be one of {', '.join(FAULT_MODES)}")
            if mode == "none":
                continue
            unknown = set(r) - {"mode", "count", "for_s", "retry_after", "delay_ms", "path_prefix", "method",
                                "code", "account"}
            if unknown:
                raise BadRequest(f"unknown fault keys {sorted(unknown)}")
            try:
                count = int(r.get("count", 0 if "for_s" in r else 1))
                for_s = float(r["for_s"]) if r.get("for_s") is not None else None
                ra = r.get("retry_after")
                ra = int(ra) if ra is not None else None
                delay = int(r.get("delay_ms", 1000 if mode == "slow" else 0))
            except (TypeError, ValueError):
                raise BadRequest("count, for_s, retry_after and delay_ms must be numbers") from None
            new.append({
                "mode": mode,
                "remaining": None if count == 0 else count,
                "until": (self.clock() + for_s) if for_s is not None else None,
                "retry_after": ra,
                "delay_ms": delay,
                "path_prefix": r.get("path_prefix"),
                "method": (r.get("method") or "").upper() or None,
                "code": r.get("code"),
                "account": r.get("account"),
                "applied": 0,
            })
        self.rules = new
        return self.view()

    def view(self):
        now = self.clock()
        out = []
        for f in self.rules:
            g = dict(f)
            g["until"] = None if f["until"] is None else round(f["until"] - now, 3)  # seconds left
            out.append(g)
        return out

    def take(self, method, path, account=None, refuse_only=False):
        now = self.clock()
        for f in list(self.rules):
            if f["until"] is not None and now >= f["until"]:
                self.rules.remove(f)
                continue
            if refuse_only != (f["mode"] == "refuse"):
                continue
            if f["method"] and f["method"] != method:
                continue
            if f["path_prefix"] and not path.startswith(f["path_prefix"]):
                continue
            if f["account"] and f["account"] != account:
                continue
            f["applied"] += 1
            if f["remaining"] is not None:
                f["remaining"] -= 1
                if f["remaining"] <= 0:
                    self.rules.remove(f)
            return dict(f)
        return None


def parse_form(text):
    """Stripe-style form body or query string into nested dicts/lists: a[b]=1, a[]=x, a[0]=y."""
    out = {}
    for k, v in parse_qsl(text, keep_blank_values=True):
        keys = []
        i = k.find("[")
        if i < 0:
            keys = [k]
        else:
            keys.append(k[:i])
            rest = k[i:]
            while rest.startswith("["):
                j = rest.find("]")
                if j < 0:
                    raise ValueError(f"bad parameter name {k!r}")
                keys.append(rest[1:j])
                rest = rest[j + 1:]
            if rest:
                raise ValueError(f"bad parameter name {k!r}")
        cur = out
        for n, key in enumerate(keys):
            last = n == len(keys) - 1
            nxt = keys[n + 1] if not last else None
            if key == "" or (isinstance(cur, list)):
                # a[] or a[0]: lists of scalars (enough for expand[], types[])
                if not isinstance(cur, list):
                    raise ValueError(f"bad parameter name {k!r}")
                cur.append(v)
                break
            if last:
                cur[key] = v
            else:
                want_list = nxt == "" or nxt.isdigit()
                if key not in cur:
                    cur[key] = [] if want_list else {}
                cur = cur[key]
                if want_list and not isinstance(cur, list):
                    raise ValueError(f"parameter {keys[0]!r} mixes a list and a hash")
    return out


class WebhookSender:
    """Delivers webhooks from a background thread to the one configured loopback URL.

    Subclasses' callers pass deliveries as (events, build) where build(events) -> (body bytes, headers).
    Switches (PUT /_mock/webhook): delay_ms before each delivery, duplicate (each delivery sent that many
    extra times), hold (queue until POST /_mock/webhook/flush with an order: fifo, reverse or shuffle),
    retries (extra attempts after a non-2xx or a timeout, retry_delay_ms apart), timeout_s."""

    def __init__(self, name, clock, build):
        self.name = name
        self.clock = clock
        self.build = build  # build(events, config, attempt) -> (body, headers)
        self.lock = threading.Condition()
        self.config = None
        self.queue = deque()
        self.held = []
        self.log = []
        self.busy = 0
        self.seq = 0
        t = threading.Thread(target=self._run, daemon=True)
        t.start()

    DEFAULTS = {"url": None, "secret": None, "delay_ms": 0, "duplicate": 0, "hold": False, "retries": 0,
                "retry_delay_ms": 200, "timeout_s": 10, "enabled": True}

    def configure(self, spec, extra_keys=()):
        if not isinstance(spec, dict):
            raise BadRequest("the webhook configuration is a JSON object")
        with self.lock:
            cfg = dict(self.config or self.DEFAULTS)
            for k in spec:
                if k not in self.DEFAULTS and k not in extra_keys:
                    raise BadRequest(f"unknown webhook setting {k!r}")
            cfg.update(spec)
            url = cfg.get("url")
            if not isinstance(url, str) or not url.startswith("http://"):
                raise BadRequest("url must be an http:// URL on a loopback address")
            host = urlsplit(url).hostname or ""
            if not (is_loopback(host) or host == "localhost"):
                raise BadRequest("the mock only delivers webhooks to loopback addresses")
            if not isinstance(cfg.get("secret"), str) or not cfg["secret"]:
                raise BadRequest("secret is required")
            self.config = cfg
            if not cfg["hold"] and self.held:
                self.queue.extend(self.held)
                self.held = []
            self.lock.notify_all()
            return self.view()

    def view(self):
        with self.lock:
            return {"config": self.config, "queued": len(self.queue), "held": len(self.held), "in_flight": self.busy}

    def clear(self):
        with self.lock:
            self.config = None
            self.queue.clear()
            self.held = []
            self.log = []

    def enqueue(self, events):
        """events: a list of provider events that make one delivery (no-op without a configured URL)."""
        with self.lock:
            if not self.config or not self.config.get("enabled", True):
                return False
            if self.config["hold"]:
                self.held.append(events)
            else:
                self.queue.append(events)
            self.lock.notify_all()
            return True

    def flush(self, order="fifo", seed=None):
        with self.lock:
            items = self.held
            self.held = []
            if order == "reverse":
                items.reverse()
            elif order == "shuffle":
                random.Random(seed).shuffle(items)
            elif order != "fifo":
                self.held = items
                raise BadRequest("order must be fifo, reverse or shuffle")
            self.queue.extend(items)
            self.lock.notify_all()
            return len(items)

    def drain(self, timeout):
        """Waits until nothing is queued or being delivered (held deliveries do not count)."""
        end = time.monotonic() + timeout
        with self.lock:
            while self.queue or self.busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
            return True

    def _run(self):
        while True:
            with self.lock:
                while not self.queue:
                    self.lock.wait()
                events = self.queue.popleft()
                cfg = dict(self.config) if self.config else None
                self.busy += 1
            try:
                if cfg:
                    for copy in range(1 + int(cfg.get("duplicate") or 0)):
                        self._deliver(events, cfg, copy)
            except Exception:  # noqa: BLE001
                sys.stderr.write(f"{self.name}: internal error in webhook delivery\n" + traceback.format_exc())
            finally:
                with self.lock:
                    self.busy -= 1
                    self.lock.notify_all()

    def _deliver(self, events, cfg, copy):
        for attempt in range(1 + int(cfg.get("retries") or 0)):
            if cfg.get("delay_ms"):
                time.sleep(cfg["delay_ms"] / 1000.0)
            if attempt:
                time.sleep((cfg.get("retry_delay_ms") or 0) / 1000.0)
            body, headers = self.build(events, cfg, attempt)
            u = urlsplit(cfg["url"])
            entry = {"seq": 0, "t_ms": int(self.clock() * 1000), "url": cfg["url"], "attempt": attempt + 1,
                     "copy": copy, "ids": [e.get("id") for e in events],
                     "types": [e.get("type") or f"{e.get('resource_type')}.{e.get('action')}" for e in events],
                     "headers": headers, "body": body.decode("utf-8"), "status": None, "error": None}
            try:
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=float(cfg.get("timeout_s") or 10))
                try:
                    conn.request("POST", (u.path or "/") + (("?" + u.query) if u.query else ""), body=body,
                                 headers=headers)
                    r = conn.getresponse()
                    r.read()
                    entry["status"] = r.status
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException) as e:
                entry["error"] = f"{type(e).__name__}: {e}"
            with self.lock:
                self.seq += 1
                entry["seq"] = self.seq
                self.log.append(entry)
                if len(self.log) > 5000:
                    del self.log[:1000]
            if entry["status"] is not None and 200 <= entry["status"] < 300:
                return


class BaseHandler(BaseHTTPRequestHandler):
    """HTTP plumbing: body reading, replies, drop, dispatch to api()/control() and the error net."""

    protocol_version = "HTTP/1.1"
    mock_name = "mock"
    STATE = None
    QUIET = False

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):  # noqa: D401 (BaseHTTPRequestHandler's hook)
        if not type(self).QUIET:
            sys.stderr.write("%s: %s %s\n" % (self.mock_name, self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def reply(self, status, body=b"", ctype="application/json", headers=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if status not in (204, 304):
            if body:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and status not in (204, 304):
            self.wfile.write(body)

    def reply_json(self, status, obj, headers=None, pretty=False):
        self.reply(status, jdump(obj, pretty) + "\n", headers=headers)

    def drop(self):
        """Closes the connection without a response (a lost response)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def dispatch(self, method):
        try:
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            body = self.read_body()
            if path == "/_mock" or path.startswith("/_mock/"):
                if not is_loopback(self.client_address[0]):
                    return self.reply_json(403, {"error": "the control API answers the loopback interface only"})
                parts = [unquote(p) for p in path.split("/") if p][1:]
                self.control(method, parts, url.query, body)
            else:
                self.api(method, path, url.query, body)
        except BadRequest as e:
            self.reply_json(e.status, {"error": "mock_bad_request", "message": str(e)})
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 (a bug of the mock: say so loudly, keep serving)
            sys.stderr.write(f"{self.mock_name}: internal error\n" + traceback.format_exc())
            try:
                self.reply(500, f"{self.mock_name} internal error (see its stderr)\n", "text/plain; charset=utf-8",
                           {"X-Mock-Internal-Error": "1"})
            except OSError:
                self.close_connection = True

    @staticmethod
    def body_json(body, default=None):
        if not body.strip():
            return default
        try:
            return json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not JSON: {e}") from None


def make_server(handler_cls, state):
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 256

        def verify_request(self, request, client_address):
            # fault mode "refuse": reset the connection as soon as it is accepted (SO_LINGER 0 makes close()
            # send an RST). The listening socket stays open, so a client sees ECONNRESET, not ECONNREFUSED.
            with state.lock:
                f = state.faults.take("*", "*", refuse_only=True)
            if f:
                try:
                    request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
                return False
            return True

        def handle_error(self, request, client_address):
            if not handler_cls.QUIET:
                super().handle_error(request, client_address)

    return Server


def run(name, handler_cls, state, description, seed_loader=None, argv=None):
    """The shared main(): flags --port/--host/--state/--demo/--quiet, the ready line, exit 0 on SIGTERM."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, required=True, help="TCP port (0: any free port, printed)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--state", help="a load document (see README) applied at start")
    ap.add_argument("--demo", action="store_true", help="seed demo credentials and objects")
    ap.add_argument("--quiet", "-q", action="store_true", help="no request log on stderr")
    args = ap.parse_args(argv)
    handler_cls.QUIET = args.quiet
    handler_cls.STATE = state
    seed = []
    if args.demo:
        seed.append(state.demo_document())
    if args.state:
        with open(args.state, encoding="utf-8") as f:
            seed.append(json.load(f))
    try:
        for doc in seed:
            with state.lock:
                state.load(doc)
    except (BadRequest, ValueError) as e:
        sys.stderr.write(f"{name}: bad seed: {e}\n")
        return 2
    state.seed = seed
    Server = make_server(handler_cls, state)
    if ":" in args.host:
        Server.address_family = socket.AF_INET6
    httpd = Server((args.host, args.port), handler_cls)
    port = httpd.server_address[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"{name} listening on http://{shown}:{port}", flush=True)

    def stop(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
    return 0
