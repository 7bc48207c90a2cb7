# SPDX-License-Identifier: MIT
"""harness.py: boots the real settled binary against the real PostgreSQL and Redis that
deploy/test.sh started, so integration and fault tests drive it exactly as a provider would.

Python 3 standard library only. A test module imports it, defines functions named test_* and ends
with ``harness.run(globals())``. Each test prints ``ok - name`` or ``not ok - name`` with the failed
assertion (both values), the run ends with ``N passed, N failed`` and exits 1 on any failure, so
ctest reports it. ``python3 test_x.py test_a test_b`` runs only the named tests.

Environment (exported by deploy/test.sh and the ctest registration in tests/CMakeLists.txt):
  SETTLED_BIN             the settled binary under test (required)
  SETTLED_SOURCE_DIR      the source tree, for fixtures/ and docs/ (required)
  SETTLED_TEST_PG_URL     a PostgreSQL superuser URL; each test creates its own database there (required)
  SETTLED_TEST_REDIS_URL  a Redis URL (optional: servers then run without Redis)
  SETTLED_TEST_PGBIN      PostgreSQL's bin folder, for PgCluster (default /usr/lib/postgresql/15/bin)
  SETTLED_TEST_RUN_AS     the OS user that must own a PgCluster (empty when not running as root)
  SETTLED_TEST_TMP        a scratch folder removed after the run (default: a new temporary folder)
A missing required variable fails the run loudly: these tests never pass by skipping.
"""

import atexit
import base64
import ctypes
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

# ---------------------------------------------------------------------------------------------------
# Secrets the servers of the tests use. Tests sign with these; none of them is ever valid anywhere else.

STRIPE_SECRET = "whsec_test_secret_settled_1"
STRIPE_SECRET_2 = "whsec_test_secret_settled_2"  # second secret of a rotation
XERO_KEY = "test_xero_webhook_key_settled+/="
GOCARDLESS_SECRET = "test_gocardless_secret_settled"

# What sanitizers write when they find something; a server whose log has one fails its test.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer")


class Failure(AssertionError):
    """A failed expectation. Its message names what was checked and shows both values."""


def _env(name, required=True, default=None):
    value = os.environ.get(name, "")
    if value:
        return value
    if required:
        raise Failure(
            f"{name} is not set: run the tests through deploy/test.sh (or export it yourself); "
            "integration tests never pass without their servers"
        )
    return default


def settled_bin():
    """The path of the binary under test (SETTLED_BIN)."""
    path = _env("SETTLED_BIN")
    if not os.access(path, os.X_OK):
        raise Failure(f"SETTLED_BIN={path} is not an executable file")
    return path


def source_dir():
    """The source tree (SETTLED_SOURCE_DIR)."""
    return _env("SETTLED_SOURCE_DIR")


def fixture(rel):
    """The raw bytes of fixtures/<rel>, exactly as stored."""
    with open(os.path.join(source_dir(), "fixtures", rel), "rb") as f:
        return f.read()


def redis_url():
    """SETTLED_TEST_REDIS_URL, or None when the run has no Redis."""
    return _env("SETTLED_TEST_REDIS_URL", required=False)


_scratch = None


def scratch_dir():
    """A scratch folder for this process: inside SETTLED_TEST_TMP when set, else a new temporary
    folder. Removed at exit unless the run failed (then its path is printed for a post-mortem)."""
    global _scratch
    if _scratch is None:
        base = _env("SETTLED_TEST_TMP", required=False)
        name = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "harness"
        _scratch = tempfile.mkdtemp(prefix=f"{name}.", dir=base)
        os.chmod(_scratch, 0o755)  # a PgCluster's owner must reach folders inside it
    return _scratch


# ---------------------------------------------------------------------------------------------------
# Expectations


def expect_eq(actual, expected, what):
    """Fails with both values unless actual == expected."""
    if actual != expected:
        raise Failure(f"{what}:\n      expected: {expected!r}\n      actual:   {actual!r}")


def expect(cond, what, detail=None):
    """Fails unless cond is true; detail (any value) is shown with the failure."""
    if not cond:
        raise Failure(what if detail is None else f"{what}: {detail!r}")


def expect_in(needle, haystack, what):
    """Fails unless needle is in haystack, showing both."""
    if needle not in haystack:
        raise Failure(f"{what}:\n      expected to find: {needle!r}\n      in:               {haystack!r}")


def expect_not_in(needle, haystack, what):
    """Fails if needle is in haystack, showing both."""
    if needle in haystack:
        raise Failure(f"{what}:\n      must not contain: {needle!r}\n      but it is in:     {haystack!r}")


def expect_problem(resp, status, code, what):
    """Checks an error reply resp = (status, headers, body): the given status, Content-Type
    application/problem+json, and a JSON body whose "code" is code (or one of code, a tuple).
    Returns the decoded body."""
    got_status, headers, body = resp
    expect_eq(got_status, status, f"{what}: status (body {body[:300]!r})")
    ctype = headers.get("content-type", "")
    expect_eq(ctype.split(";")[0].strip(), "application/problem+json", f"{what}: Content-Type")
    try:
        doc = json.loads(body)
    except ValueError:
        raise Failure(f"{what}: the body is not JSON: {body[:300]!r}")
    expect(isinstance(doc, dict), f"{what}: the problem body is not a JSON object", doc)
    if isinstance(code, tuple):
        expect_in(doc.get("code"), code, f"{what}: problem code (body {doc!r})")
    else:
        expect_eq(doc.get("code"), code, f"{what}: problem code (body {doc!r})")
    return doc


# ---------------------------------------------------------------------------------------------------
# Signatures, computed as the providers' SDKs do (providers/PROVIDERS.md)


def sign_stripe(body, secret=STRIPE_SECRET, t=None):
    """The Stripe-Signature header value for body: "t=<t>,v1=<hex HMAC-SHA256 of '<t>.' + body>".
    t defaults to now."""
    if t is None:
        t = int(time.time())
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def sign_xero(body, key=XERO_KEY):
    """The x-xero-signature header value for body: base64 of HMAC-SHA256(key, body)."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def sign_gocardless(body, secret=GOCARDLESS_SECRET):
    """The Webhook-Signature header value for body: hex HMAC-SHA256(secret, body)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------------
# PostgreSQL through psql


def free_port():
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NULL = "\x02NULL\x03"


def _psql(url, query, params, timeout=60):
    # Parameters travel as psql variables (-v pN=value) and the query refers to them as :'pN' (a quoted
    # literal) or :"pN" (a quoted identifier); the query goes through stdin, where psql interpolates.
    # $1, $2, ... in the query are rewritten to :'p1', :'p2', ... for convenience (so do not use
    # dollar quoting in a query that has parameters).
    args = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-F", "\x1f", "-R", "\x1e", "-P", "null=" + _NULL]
    for i, p in enumerate(params, 1):
        value = p if isinstance(p, str) else str(p)
        if "\0" in value:
            raise ValueError("psql parameters cannot hold NUL bytes")
        args += ["-v", f"p{i}={value}"]
    if params:
        query = re.sub(r"\$(\d+)", r":'p\1'", query)
    args += ["-d", url, "-f", "-"]
    res = subprocess.run(args, input=query.encode(), capture_output=True, timeout=timeout)
    if res.returncode != 0:
        raise Failure(f"psql failed ({res.returncode}) on {query!r}: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout.decode()


def sql(url, query, *params):
    """Runs one query on url and returns its output as text (rows joined by newlines, columns by '|',
    NULL as ''). Parameters: $1, $2, ... (see _psql)."""
    rows = sql_rows(url, query, *params)
    return "\n".join("|".join("" if c is None else c for c in row) for row in rows)


def sql_rows(url, query, *params):
    """Runs one query on url and returns its rows as lists of strings (None for NULL)."""
    out = _psql(url, query, params)
    if out.endswith("\n"):
        out = out[:-1]
    if out == "":
        return []
    return [[None if c == _NULL else c for c in rec.split("\x1f")] for rec in out.split("\x1e")]


def sql_value(url, query, *params):
    """Runs a query that returns one value and returns it (None for NULL or no row)."""
    rows = sql_rows(url, query, *params)
    if not rows:
        return None
    if len(rows) != 1 or len(rows[0]) != 1:
        raise Failure(f"expected one value from {query!r}, got {rows!r}")
    return rows[0][0]


def with_database(url, dbname):
    """url with its database replaced by dbname."""
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + urllib.parse.quote(dbname), u.query, u.fragment))


def settled_env(extra=None):
    """The environment a settled child process gets: the caller's without any SETTLED_* variable
    (settled rejects unknown SETTLED_* keys, and the test variables are such), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLED_")}
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def run_settled(args, env=None, timeout=60):
    """Runs `$SETTLED_BIN args...` to completion with settled_env(env) and returns the
    CompletedProcess (stdout and stderr as text). Fails if a sanitizer reported anything."""
    res = subprocess.run(
        [settled_bin()] + list(args),
        env=settled_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
    res.stdout = res.stdout.decode(errors="replace")
    res.stderr = res.stderr.decode(errors="replace")
    report = sanitizer_report(res.stderr)
    if report:
        raise Failure(f"`settled {' '.join(args)}` has a sanitizer report:\n{_indent(report)}")
    return res


_databases = []


def new_database(prefix="t", migrate=True, pg_url=None):
    """Creates a uniquely named database on pg_url (default SETTLED_TEST_PG_URL), runs `settled migrate`
    on it unless migrate is False, and returns its URL. Databases are dropped at the end of a run
    that passed."""
    base = pg_url or _env("SETTLED_TEST_PG_URL")
    clean = re.sub(r"[^a-z0-9_]", "_", prefix.lower())[:30]
    name = f"{clean}_{os.getpid()}_{len(_databases)}_{os.urandom(3).hex()}"
    sql(base, 'CREATE DATABASE :"p1"', name)
    url = with_database(base, name)
    _databases.append((base, name))
    if migrate:
        res = run_settled(["migrate"], {"SETTLED_DATABASE_URL": url})
        if res.returncode != 0:
            raise Failure(f"settled migrate on {name} exited {res.returncode}:\n{res.stderr[-4000:]}")
    return url


def _drop_databases():
    for base, name in _databases:
        try:
            sql(base, 'DROP DATABASE IF EXISTS :"p1" WITH (FORCE)', name)
        except Exception as e:  # noqa: BLE001 (cleanup must go on)
            print(f"# could not drop database {name}: {e}")


# ---------------------------------------------------------------------------------------------------
# The server


try:  # resolved here, in the parent, so that the child between fork and exec only makes the call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: servers are still killed by the runner and atexit
    _prctl = None


def _die_with_parent():
    # In the child, before exec: if the test process dies (ctest timeout, crash), the kernel kills the
    # server too, so no settled outlives its test. PR_SET_PDEATHSIG = 1.
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)


_servers = []


class LoggedProcess:
    """What every settled process of the tests shares: self.proc (a Popen or None) and self.log_path, the
    file its stdout and stderr go to."""

    proc = None
    log_path = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        """Everything the process wrote so far (stdout and stderr)."""
        if not self.log_path:
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])


class Settled(LoggedProcess):
    """One `settled serve` on a free port of 127.0.0.1, talking to db_url.

    The server gets the test secrets (STRIPE_SECRET, XERO_KEY, GOCARDLESS_SECRET), SETTLED_THREADS =
    threads, Redis from SETTLED_TEST_REDIS_URL when set, and env on top (a value of None removes a
    key). Its stdout and stderr go to a log file (self.log_path). The constructor returns once
    /healthz answers 200, or fails with the log's tail.

    Use as a context manager (``with Settled(url) as s:``): leaving the block stops the server and
    checks a clean exit, unless the block raised, in which case the server is killed and its log is
    shown. stop() and kill9() can also be called directly; start() restarts a stopped server on the
    same port.
    """

    def __init__(self, db_url, env=None, threads=1, start=True, port=None, ready_timeout=30):
        self.db_url = db_url
        self.port = port or free_port()
        self.ready_timeout = ready_timeout
        self.env = {
            "SETTLED_LISTEN": f"127.0.0.1:{self.port}",
            "SETTLED_DATABASE_URL": db_url,
            "SETTLED_THREADS": threads,
            "SETTLED_STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
            "SETTLED_XERO_WEBHOOK_KEY": XERO_KEY,
            "SETTLED_GOCARDLESS_WEBHOOK_SECRETS": GOCARDLESS_SECRET,
        }
        if redis_url():
            self.env["SETTLED_REDIS_URL"] = redis_url()
        self.env.update(env or {})
        self.proc = None
        self.starts = 0
        self.log_path = None
        if start:
            self.start()

    def start(self):
        """Starts the server (again) and waits for /healthz."""
        if self.proc is not None and self.proc.poll() is None:
            raise Failure("start(): the server is already running")
        self.starts += 1
        self.log_path = os.path.join(scratch_dir(), f"settled-{self.port}-{self.starts}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [settled_bin(), "serve"],
            env=settled_env(self.env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
        log.close()
        if self not in _servers:
            _servers.append(self)
        deadline = time.monotonic() + self.ready_timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"settled serve exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                status, _, _ = self.get("/healthz", timeout=2)
                if status == 200:
                    return self
                last = f"/healthz answered {status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill9()
        raise Failure(f"settled serve did not become healthy in {self.ready_timeout}s ({last}):\n{self.log_tail()}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        elif self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()
            print(f"# server log ({self.log_path}):\n{_indent(self.log_tail())}")
        return False

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    # -- HTTP ---------------------------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=15):
        """Sends one request on a fresh connection and returns (status, headers, body): headers as a
        dict with lower-case names (repeated headers joined by ", "), body as bytes."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {}
            for k, v in resp.getheaders():
                k = k.lower()
                hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
            return resp.status, hdrs, data
        finally:
            conn.close()

    def post(self, path, body, headers=None, timeout=15):
        """POSTs body (bytes, sent as is) with Content-Type application/json unless headers set one."""
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.request("POST", path, body, h, timeout)

    def get(self, path, headers=None, timeout=15):
        return self.request("GET", path, None, headers, timeout)

    def post_stripe(self, body, path="/webhooks/stripe", secret=STRIPE_SECRET, t=None, headers=None):
        h = {"Stripe-Signature": sign_stripe(body, secret, t)}
        h.update(headers or {})
        return self.post(path, body, h)

    def post_xero(self, body, path="/webhooks/xero", key=XERO_KEY, headers=None):
        h = {"x-xero-signature": sign_xero(body, key)}
        h.update(headers or {})
        return self.post(path, body, h)

    def post_gocardless(self, body, path="/webhooks/gocardless", secret=GOCARDLESS_SECRET, headers=None):
        h = {"Webhook-Signature": sign_gocardless(body, secret)}
        h.update(headers or {})
        return self.post(path, body, h)

    def metrics(self):
        """GET /metrics parsed into {"name{labels}": float} (labels exactly as the server wrote them)."""
        status, _, body = self.get("/metrics")
        expect_eq(status, 200, "GET /metrics status")
        return parse_metrics(body.decode())

    # -- process ------------------------------------------------------------------------------------


    def log_records(self):
        """The JSON log lines, decoded (lines that are not JSON are skipped)."""
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def check_log(self):
        """Fails if a sanitizer reported anything in the log (showing the report)."""
        report = sanitizer_report(self.log())
        if report:
            raise Failure(f"the server log ({self.log_path}) has a sanitizer report:\n{_indent(report)}")

    def stop(self, timeout=30):
        """SIGTERM, waits for the exit, and fails unless it exited with 0 and its log is clean."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise Failure(f"settled did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}")
        self.check_log()
        expect_eq(self.proc.returncode, 0, f"settled exit code after SIGTERM (log {self.log_path}:\n{self.log_tail()})")

    def kill9(self):
        """SIGKILL, no questions asked (for crash tests); waits for the process to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def sanitizer_report(text, limit=5000):
    """The part of text from the first sanitizer report on (at most limit characters), or ''."""
    at = [text.find(m) for m in SANITIZER_MARKS if m in text]
    if not at:
        return ""
    start = text.rfind("\n", 0, min(at)) + 1
    if text.rfind("=====", 0, start) > start - 200:  # ASan's ===== banner line just before
        start = text.rfind("\n", 0, text.rfind("=====", 0, start)) + 1
    report = text[start:]
    return report if len(report) <= limit else report[:limit] + f"\n... ({len(report) - limit} more characters)"


def _indent(text):
    return "\n".join("    " + line for line in text.splitlines())


def parse_metrics(text):
    """Prometheus text format to {"name{labels}": value}; comments skipped."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$", line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


def metric_sum(metrics, name, **labels):
    """The sum of every sample of metric name whose labels include all of labels (values as strings)."""
    total = 0.0
    found = False
    for key, value in metrics.items():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$", key)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            total += value
            found = True
    return total if found else None


# ---------------------------------------------------------------------------------------------------
# An extra PostgreSQL cluster, for tests that stop, restart or break the store


class PgCluster:
    """A private PostgreSQL cluster in a folder of its own, on 127.0.0.1:port, superuser "settled",
    trust authentication, no Unix socket. For tests that must stop the store under a running settled
    and start it again on the same port (SETTLED_TEST_PG_URL is shared and must never be stopped).

        pg = PgCluster()             # initdb in a new folder under the scratch folder, picks a free port
        pg.start()                   # pg_ctl start, waits until it accepts connections
        url = pg.url("postgres")     # postgresql://settled@127.0.0.1:PORT/postgres
        db = new_database("x", pg_url=pg.url())
        pg.stop()                    # fast shutdown (mode="immediate" to simulate a crash)
        pg.start()                   # same folder, same port
        pg.destroy()                 # stop if running and remove the folder (also done at exit)

    Binaries come from SETTLED_TEST_PGBIN. When SETTLED_TEST_RUN_AS names a user (the run is root,
    and initdb refuses root), every command runs as that user through `runuser -u USER --` and the
    folder is owned by it; every parent folder must let that user through (the scratch folder does).
    extra_conf lines are appended to postgresql.conf (e.g. "fsync = off").
    """

    def __init__(self, directory=None, port=None, extra_conf=()):
        self.dir = directory or tempfile.mkdtemp(prefix="pg.", dir=scratch_dir())
        self.data = os.path.join(self.dir, "data")
        self.port = port or free_port()
        self.pgbin = _env("SETTLED_TEST_PGBIN", required=False, default="/usr/lib/postgresql/15/bin")
        self.run_as = _env("SETTLED_TEST_RUN_AS", required=False, default="")
        os.chmod(self.dir, 0o755)
        if self.run_as:
            shutil.chown(self.dir, user=self.run_as)
        self._cmd(
            ["initdb", "-D", self.data, "-U", "settled", "-E", "UTF8", "--locale=C.UTF-8", "-A", "trust"], timeout=120
        )
        conf = [
            "",
            "# harness.PgCluster",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            "unix_socket_directories = ''",
        ] + list(extra_conf)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n".join(conf) + "\n")
        _clusters.append(self)

    def _cmd(self, args, timeout=60, check=True):
        argv = [os.path.join(self.pgbin, args[0])] + args[1:]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--"] + argv
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if check and res.returncode != 0:
            raise Failure(
                f"{' '.join(args[:2])} failed ({res.returncode}): {res.stderr.decode(errors='replace').strip()}\n"
                f"{self.log_tail()}"
            )
        return res

    def url(self, dbname="postgres"):
        return f"postgresql://settled@127.0.0.1:{self.port}/{dbname}"

    def running(self):
        return self._cmd(["pg_ctl", "-D", self.data, "status"], check=False).returncode == 0

    def start(self, timeout=60):
        """Starts the cluster and returns once it accepts connections."""
        self._cmd(
            ["pg_ctl", "-D", self.data, "-l", os.path.join(self.data, "server.log"), "-w", "-t", str(timeout), "start"],
            timeout=timeout + 10,
        )
        return self

    def stop(self, mode="fast", timeout=60):
        """Stops the cluster: mode "fast" (roll back, disconnect), "smart" or "immediate" (no
        checkpoint: like a crash of the database server)."""
        if self.running():
            self._cmd(["pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", str(timeout), "stop"], timeout=timeout + 10)

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.data, "server.log"), "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def destroy(self):
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self in _clusters:
                _clusters.remove(self)


_clusters = []


def start_cluster(directory=None, port=None, extra_conf=()):
    """A started PgCluster (see its docstring)."""
    return PgCluster(directory, port, extra_conf).start()


# ---------------------------------------------------------------------------------------------------
# The runner


def _cleanup_servers():
    for s in list(_servers):
        s.kill9()
    _servers.clear()


def _cleanup_all(passed):
    _cleanup_servers()
    for c in list(_clusters):
        c.destroy()
    if passed:
        _drop_databases()
        if _scratch:
            shutil.rmtree(_scratch, ignore_errors=True)
    elif _scratch:
        print(f"# server logs are in {_scratch} (deploy/test.sh removes it when it exits)")


atexit.register(_cleanup_servers)


def run(namespace):
    """Runs the test_* functions of namespace (a module's globals()) in the order they were defined,
    or only those named on the command line. Prints one line per test and a summary, then exits."""
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        unknown = set(wanted) - {n for n, _ in tests}
        if unknown:
            print(f"unknown tests: {', '.join(sorted(unknown))}")
            sys.exit(2)
        tests = [(n, f) for n, f in tests if n in wanted]
    passed = failed = 0
    try:
        settled_bin()
        source_dir()
        _env("SETTLED_TEST_PG_URL")
    except Failure as e:
        print(f"not ok - environment: {e}")
        print("0 passed, 1 failed")
        sys.exit(1)
    for name, fn in tests:
        started = time.monotonic()
        try:
            fn()
        except Failure as e:
            failed += 1
            print(f"not ok - {name}\n{_indent(str(e))}")
        except Exception:  # noqa: BLE001 (any error fails the test, with its traceback)
            failed += 1
            print(f"not ok - {name}\n{_indent(traceback.format_exc())}")
        else:
            passed += 1
            print(f"ok - {name} ({time.monotonic() - started:.1f}s)")
        finally:
            # A test that failed half-way may leave servers behind: they must not disturb the next one.
            for s in list(_servers):
                if s.running():
                    s.kill9()
            _servers.clear()
        sys.stdout.flush()
    if not tests:
        print("not ok - no tests found")
        failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.stdout.flush()
    _cleanup_all(failed == 0)
    sys.exit(1 if failed else 0)
