#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_smtp_sink.py: self-test of settled's test SMTP server (tests/mock/smtp_sink.py), driven with the
standard library's smtplib. Needs neither settled nor PostgreSQL. ``python3 test_smtp_sink.py test_a`` runs only
the named tests."""

import os
import smtplib
import socket
import ssl
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mocktest import Failure, Mock, expect, expect_eq, run_tests  # noqa: E402

SINK = os.path.join(os.path.dirname(HERE), "mock", "smtp_sink.py")
MAILDIR = tempfile.mkdtemp(prefix="smtp-sink-test-")
M = T = None

MSG = "From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nline one\r\n.leading dot\r\n"


def smtp(mock):
    return smtplib.SMTP("127.0.0.1", mock.ctl("GET", "info")["smtp_port"], timeout=10)


def test_receive_and_maildir():
    M.ctl("DELETE", "messages")
    with smtp(M) as s:
        s.sendmail("a@example.com", ["b@example.com"], MSG)
    got = M.ctl("GET", "messages")
    expect_eq(len(got), 1, "one message")
    expect_eq(got[0]["mail_from"], "a@example.com", "MAIL FROM")
    expect_eq(got[0]["rcpt"], ["b@example.com"], "RCPT TO")
    expect(".leading dot" in got[0]["data"] and "..leading" not in got[0]["data"], "dot-unstuffed")
    files = os.listdir(os.path.join(MAILDIR, "new"))
    expect_eq(len(files), 1, "one file in the Maildir")


def test_faults():
    M.ctl("DELETE", "messages")
    M.ctl("PUT", "faults", {"rcpt": {"bad@example.com": 550}, "data": [451]})
    with smtp(M) as s:
        try:
            s.sendmail("a@example.com", ["bad@example.com"], MSG)
            raise Failure("550 expected")
        except smtplib.SMTPRecipientsRefused as e:
            expect_eq(e.recipients["bad@example.com"][0], 550, "the permanent refusal")
        try:
            s.sendmail("a@example.com", ["b@example.com"], MSG)
            raise Failure("451 expected")
        except smtplib.SMTPDataError as e:
            expect_eq(e.smtp_code, 451, "the temporary refusal")
        s.sendmail("a@example.com", ["b@example.com"], MSG)  # then accepted
    expect_eq(len(M.ctl("GET", "messages")), 1, "only the accepted one is kept")
    M.ctl("PUT", "faults", {"greeting": [421]})
    try:
        smtp(M).ehlo()
        raise Failure("421 greeting expected")
    except smtplib.SMTPServerDisconnected:
        pass
    except smtplib.SMTPConnectError as e:
        expect_eq(e.smtp_code, 421, "greeting")


def test_drop_is_not_kept():
    M.ctl("DELETE", "messages")
    M.ctl("PUT", "faults", {"drop": 1})
    with smtp(M) as s:
        try:
            s.sendmail("a@example.com", ["b@example.com"], MSG)
            raise Failure("a dropped connection expected")
        except smtplib.SMTPServerDisconnected:
            pass
    expect_eq(M.ctl("GET", "messages"), [], "nothing kept")


def test_client_gone_before_250_is_not_kept():
    M.ctl("DELETE", "messages")
    M.ctl("PUT", "faults", {"slow_ms": 800})
    s = smtp(M)
    s.ehlo()
    s.mail("a@example.com")
    s.rcpt("b@example.com")
    s.putcmd("data")
    expect_eq(s.getreply()[0], 354, "DATA")
    s.send(MSG.encode() + b".\r\n")
    s.sock.shutdown(socket.SHUT_RDWR)  # gone before the reply, as a killed client is
    s.close()
    time.sleep(1.2)
    expect_eq(M.ctl("GET", "messages"), [], "a message whose client left before the 250 is not kept")


def test_starttls_and_auth():
    T.ctl("DELETE", "messages")
    with smtp(T) as s:
        s.ehlo()
        expect(s.has_extn("starttls"), "STARTTLS offered")
        try:
            s.sendmail("a@example.com", ["b@example.com"], MSG)
            raise Failure("530 expected without AUTH")
        except smtplib.SMTPSenderRefused as e:
            expect_eq(e.smtp_code, 530, "authentication required")
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the throwaway certificate
        s.starttls(context=ctx)
        s.ehlo()
        s.login("mailer", "s3cret")
        s.sendmail("a@example.com", ["b@example.com"], MSG)
    got = T.ctl("GET", "messages")
    expect_eq([(m["tls"], m["auth"]) for m in got], [(True, "mailer")], "over TLS, authenticated")


def test_sigterm_stops():
    m = Mock(SINK, "smtp-sink")
    t0 = time.monotonic()
    expect_eq(m.stop(), 0, "exit status on SIGTERM")
    expect(time.monotonic() - t0 < 3, "and promptly")


def start():
    global M, T
    M = Mock(SINK, "smtp-sink", "--maildir", MAILDIR)
    T = Mock(SINK, "smtp-sink", "--starttls", "--auth", "mailer:s3cret")


def stop():
    T.stop()
    rc = M.stop()
    return rc, M.stderr() + T.stderr()


if __name__ == "__main__":
    sys.exit(run_tests(globals(), start, stop))
