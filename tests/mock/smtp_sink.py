#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""smtp_sink.py: settled's own test SMTP server (Python 3 standard library only; smtpd is gone from 3.12).

It receives mail on one loopback port and keeps it in memory (and, with --maildir, in a Maildir: one file per
message under DIR/new), and answers a control API over HTTP on another:

    GET    /_mock/info        {"smtp_port": N, "maildir": DIR or null, "starttls": bool, "auth": bool}
    GET    /_mock/messages    [{"mail_from", "rcpt": [...], "data": the message text, "tls": bool, "auth": user}]
    DELETE /_mock/messages    forget the messages and every fault
    PUT    /_mock/faults      {"greeting": [421, ...]      codes for the next connections' greetings (then 220),
                               "rcpt": {"addr": 550, ...}  a permanent (or any) reply to RCPT TO for an address,
                               "data": [451, ...]          codes for the next messages' end of DATA (then 250),
                               "slow_ms": N                wait before each end-of-DATA reply,
                               "drop": N                   close the next N connections after the data, unanswered}
    GET    /_mock/sessions    how many SMTP connections were made

A message whose client went away before the 250 after DATA (a kill -9, a drop) is not kept, as RFC 5321 section
6.1 lets a server do, so a test sees exactly what a client was told was accepted.

    python3 smtp_sink.py --port 0 [--smtp-port 0] [--maildir DIR] [--starttls] [--auth USER:PASS] [--quiet]

Ready line on stdout: "smtp-sink listening on http://127.0.0.1:PORT" (the control port; the SMTP port is in
/_mock/info and on stderr). --starttls makes a throwaway self-signed certificate with openssl at start and offers
STARTTLS; --auth offers AUTH PLAIN and requires it. Stops with status 0 on SIGTERM or SIGINT.
"""

import argparse
import base64
import json
import os
import select
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, maildir, starttls, auth):
        self.lock = threading.Lock()
        self.messages = []
        self.sessions = 0
        self.maildir = maildir
        self.starttls = starttls
        self.auth = auth  # (user, password) or None
        self.ssl_ctx = None
        self.reset()

    def reset(self):
        self.greeting = []
        self.rcpt = {}
        self.data = []
        self.slow_ms = 0
        self.drop = 0

    def keep(self, msg):
        with self.lock:
            self.messages.append(msg)
            n = len(self.messages)
        if self.maildir:
            name = f"{int(time.time() * 1000)}.{os.getpid()}_{n}.smtp-sink"
            tmp = os.path.join(self.maildir, "tmp", name)
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(msg["data"])
            os.rename(tmp, os.path.join(self.maildir, "new", name))


STATE = None
QUIET = False


def log(*a):
    if not QUIET:
        print("smtp-sink:", *a, file=sys.stderr, flush=True)


class SMTPHandler(socketserver.StreamRequestHandler):
    timeout = 30

    def reply(self, text):
        self.wfile.write((text + "\r\n").encode())
        self.wfile.flush()

    def line(self):
        raw = self.rfile.readline(65536)
        if not raw:
            return None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def handle(self):
        st = STATE
        with st.lock:
            st.sessions += 1
            code = st.greeting.pop(0) if st.greeting else 220
        if code != 220:
            self.reply(f"{code} smtp-sink: not now")
            return
        self.reply("220 smtp-sink ESMTP ready")
        self.tls = False
        self.user = None
        mail_from, rcpt = None, []
        while True:
            cmd = self.line()
            if cmd is None:
                return
            verb = cmd.split(" ", 1)[0].upper()
            arg = cmd[len(verb):].strip()
            if verb in ("EHLO", "HELO"):
                ext = ["250-smtp-sink", "250-8BITMIME", "250-SIZE 10485760"]
                if st.starttls and not self.tls:
                    ext.append("250-STARTTLS")
                if st.auth:
                    ext.append("250-AUTH PLAIN")
                ext.append("250 HELP")
                self.reply("\r\n".join(ext) if verb == "EHLO" else "250 smtp-sink")
                mail_from, rcpt = None, []
            elif verb == "STARTTLS" and st.starttls and not self.tls:
                self.reply("220 go ahead")
                conn = st.ssl_ctx.wrap_socket(self.connection, server_side=True)
                self.connection = self.request = conn
                self.rfile = conn.makefile("rb")
                self.wfile = conn.makefile("wb")
                self.tls = True
                mail_from, rcpt = None, []
            elif verb == "AUTH" and st.auth:
                parts = arg.split(" ", 1)
                if parts[0].upper() != "PLAIN":
                    self.reply("504 5.5.4 only PLAIN")
                    continue
                token = parts[1] if len(parts) > 1 else None
                if token is None:
                    self.reply("334 ")
                    token = self.line() or ""
                try:
                    _, user, pw = base64.b64decode(token).decode().split("\0")
                except Exception:
                    self.reply("501 5.5.2 bad AUTH PLAIN")
                    continue
                if (user, pw) == st.auth:
                    self.user = user
                    self.reply("235 2.7.0 authenticated")
                else:
                    self.reply("535 5.7.8 bad credentials")
            elif verb == "MAIL":
                if st.auth and self.user is None:
                    self.reply("530 5.7.0 authentication required")
                    continue
                mail_from = arg.split(":", 1)[1].strip().split(" ")[0].strip("<>") if ":" in arg else ""
                rcpt = []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                if mail_from is None:
                    self.reply("503 5.5.1 MAIL first")
                    continue
                addr = arg.split(":", 1)[1].strip().strip("<>") if ":" in arg else ""
                with st.lock:
                    code = st.rcpt.get(addr)
                if code:
                    self.reply(f"{code} {'5.1.1' if code >= 500 else '4.2.0'} <{addr}>: "
                               f"{'no such user here' if code >= 500 else 'try again later'}")
                    continue
                rcpt.append(addr)
                self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                if not rcpt:
                    self.reply("503 5.5.1 RCPT first")
                    continue
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while True:
                    raw = self.rfile.readline(1 << 20)
                    if not raw:
                        return
                    if raw in (b".\r\n", b".\n"):
                        break
                    if raw.startswith(b".."):
                        raw = raw[1:]
                    lines.append(raw)
                data = b"".join(lines).decode("utf-8", "replace")
                with st.lock:
                    drop = st.drop > 0
                    if drop:
                        st.drop -= 1
                    code = st.data.pop(0) if st.data else 250
                    slow = st.slow_ms
                if drop:
                    log("dropping a connection after its data")
                    return
                if slow:
                    time.sleep(slow / 1000)
                if code == 250 and self.gone():
                    log("the client left before the 250: not kept")
                    return
                if code == 250:
                    st.keep({"mail_from": mail_from, "rcpt": rcpt, "data": data, "tls": self.tls,
                             "auth": self.user, "received_at": time.time()})
                    self.reply("250 2.0.0 queued")
                else:
                    self.reply(f"{code} {'4.3.0 try again later' if code < 500 else '5.6.0 refused'}")
                mail_from, rcpt = None, []
            elif verb == "RSET":
                mail_from, rcpt = None, []
                self.reply("250 ok")
            elif verb == "NOOP":
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 5.5.2 command not implemented")

    def gone(self):
        """Whether the client closed the connection (EOF waiting to be read)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ssl.SSLError):
            return True


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Control(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, status, obj=None):
        body = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        st = STATE
        if self.path == "/_mock/info":
            self.send(200, {"smtp_port": SMTP_PORT, "maildir": st.maildir, "starttls": st.starttls,
                            "auth": st.auth is not None})
        elif self.path == "/_mock/messages":
            with st.lock:
                self.send(200, list(st.messages))
        elif self.path == "/_mock/sessions":
            with st.lock:
                self.send(200, {"sessions": st.sessions})
        else:
            self.send(404, {"error": "no such control path"})

    def do_DELETE(self):
        if self.path == "/_mock/messages":
            with STATE.lock:
                STATE.messages.clear()
                STATE.sessions = 0
                STATE.reset()
            self.send(204)
        else:
            self.send(404, {"error": "no such control path"})

    def do_PUT(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            f = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self.send(400, {"error": "not JSON"})
        if self.path != "/_mock/faults" or not isinstance(f, dict):
            return self.send(404, {"error": "no such control path"})
        st = STATE
        with st.lock:
            st.greeting = [int(c) for c in f.get("greeting", [])]
            st.rcpt = {k: int(v) for k, v in f.get("rcpt", {}).items()}
            st.data = [int(c) for c in f.get("data", [])]
            st.slow_ms = int(f.get("slow_ms", 0))
            st.drop = int(f.get("drop", 0))
        self.send(200, {"ok": True})


SMTP_PORT = 0


def make_cert(tmp):
    key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    return ctx, crt


def main():
    global STATE, QUIET, SMTP_PORT
    p = argparse.ArgumentParser(description="settled's test SMTP server")
    p.add_argument("--port", type=int, required=True, help="the control API's port (0: any free one)")
    p.add_argument("--smtp-port", type=int, default=0, help="the SMTP port (0: any free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--maildir", help="also deliver into this Maildir (made if missing)")
    p.add_argument("--starttls", action="store_true", help="offer STARTTLS with a throwaway self-signed certificate")
    p.add_argument("--auth", help="USER:PASS: offer and require AUTH PLAIN")
    p.add_argument("--quiet", "-q", action="store_true")
    a = p.parse_args()
    QUIET = a.quiet
    if a.maildir:
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(a.maildir, sub), exist_ok=True)
    auth = tuple(a.auth.split(":", 1)) if a.auth else None
    STATE = State(os.path.abspath(a.maildir) if a.maildir else None, a.starttls, auth)
    tmp = tempfile.TemporaryDirectory(prefix="smtp-sink-")
    if a.starttls:
        STATE.ssl_ctx, crt = make_cert(tmp.name)
        log("STARTTLS certificate", crt)
    smtp = Server((a.host, a.smtp_port), SMTPHandler)
    SMTP_PORT = smtp.server_address[1]
    ctl = ThreadingHTTPServer((a.host, a.port), Control)
    ctl.daemon_threads = True
    threading.Thread(target=smtp.serve_forever, daemon=True).start()
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"smtp-sink: SMTP on smtp://{a.host}:{SMTP_PORT}", file=sys.stderr, flush=True)
    print(f"smtp-sink listening on http://{a.host}:{ctl.server_address[1]}", flush=True)
    while not stop.wait(0.2):
        pass
    smtp.shutdown()
    ctl.shutdown()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
