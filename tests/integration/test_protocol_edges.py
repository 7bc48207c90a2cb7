# SPDX-License-Identifier: MIT
"""test_protocol_edges.py: the edges of the webhook protocols, through the real binary.

- A 204 (GoCardless's success) carries no Content-Length and no chunked framing, and the connection stays usable.
- A Xero delivery with a valid signature whose body is not Xero's payload (not even JSON) is answered 200 with an
  empty body, as intent-to-receive requires of every correctly signed payload, and is kept as one ignored row (so a
  2xx still means durable); an invalid signature over it is still 401.
- A Stripe thin event (object "v2.core.event", sent by event destinations) is verified, stored as ignored with its
  reason, and answered 200; never 400.
- A request still uploading when SIGTERM comes is read to its end, committed and answered 2xx within
  SETTLED_SHUTDOWN_TIMEOUT_MS.

Why these can fail: before, h2o wrote "content-length: 0" on 204 replies, Xero got 400 for a signed unparsable body
(Xero disables such an endpoint), Stripe thin events got 400, and a stopping server exited as soon as its database
work was done, cutting off a request whose body was still arriving.
"""

import json
import signal
import socket
import time

import harness as h
from harness import expect, expect_eq, expect_in


def read_reply(sock, timeout=10):
    """Reads one HTTP/1.1 reply (headers and a Content-Length body, or none); returns (head bytes, body bytes)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head, rest[:length]


def gocardless_body(event_id):
    return json.dumps({"events": [{"id": event_id, "created_at": "2024-01-01T00:00:00.000Z", "action": "confirmed",
                                   "resource_type": "payments", "links": {"payment": "PM" + event_id}}]}).encode()


def post_bytes(path, body, sig_header, sig):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{sig_header}: {sig}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_204_has_no_content_length():
    db = h.new_database("edge_204")
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            for ev in ("EV204A", "EV204B"):  # the second on the same connection: the framing of the first was right
                body = gocardless_body(ev)
                c.sendall(post_bytes("/webhooks/gocardless", body, "Webhook-Signature", h.sign_gocardless(body)))
                head, rest = read_reply(c)
                expect(head.startswith(b"HTTP/1.1 204"), f"{ev}: status", head[:60])
                expect("content-length" not in head.decode().lower(), f"{ev}: a 204 has no Content-Length", head)
                expect("transfer-encoding" not in head.decode().lower(), f"{ev}: nor chunked framing", head)
                expect_eq(rest, b"", f"{ev}: no body")
    expect_eq(h.sql_value(db, "SELECT count(*) FROM webhook_events WHERE provider = 'gocardless'"), "2", "stored")


def test_xero_unparsable_but_signed_is_200_and_kept():
    db = h.new_database("edge_xero")
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as s:
        for body in (b"not json at all", b"<xml/>"):
            status, headers, reply = s.post_xero(body)
            expect_eq((status, reply), (200, b""), f"{body!r}: 200 with an empty body")
            expect("set-cookie" not in headers, "no cookie", headers)
            status, _, reply = s.post_xero(body, key="wrong-key")
            expect_eq((status, reply), (401, b""), f"{body!r} with a bad signature: 401")
        status, _, _ = s.post_xero(b"not json at all")
        expect_eq(status, 200, "the same bytes again (a retry)")
    rows = h.sql_rows(db, "SELECT event_id, event_type, status, convert_from(body, 'UTF8'), last_error IS NOT NULL,"
                          " processed_at IS NOT NULL FROM webhook_events ORDER BY id")
    expect_eq(len(rows), 2, "one row per distinct body (a retry is a duplicate)")
    for r in rows:
        expect(r[0].startswith("unparsable:") and len(r[0]) == len("unparsable:") + 64, "event id from the digest", r)
        expect_eq(r[1:3], ["unparsable", "ignored"], "event type and status")
        expect_eq(r[4:], ["t", "t"], "a reason and a processed time")
    expect_eq(rows[0][3], "not json at all", "the raw bytes are kept")
    reason = h.sql_value(db, "SELECT last_error FROM webhook_events ORDER BY id LIMIT 1")
    expect_in("unparsable body (body_malformed)", reason, "the reason names the problem code")


def test_stripe_thin_event_is_stored_ignored():
    db = h.new_database("edge_thin")
    ping = h.fixture("stripe/thin_event_v2_core_event_destination_ping.json")
    related = json.dumps({"id": "evt_thin_2", "object": "v2.core.event",
                          "type": "v1.billing.meter.error_report_triggered", "created": "2024-03-07T18:27:56.000Z",
                          "livemode": False,
                          "related_object": {"id": "bm_123", "type": "billing.meter",
                                             "url": "/v1/billing/meters/bm_123"}}).encode()
    with h.Settled(db, env={"SETTLED_WORKERS": 0}) as s:
        for body in (ping, related, ping):
            status, _, reply = s.post_stripe(body)
            expect_eq(status, 200, f"thin event answered 200 ({reply!r})")
        status, _, _ = s.post_stripe(ping, secret="whsec_other")
        expect_eq(status, 400, "a thin event with a bad signature is refused as any event")
    rows = h.sql_rows(db, "SELECT event_id, event_type, resource_id, status, last_error FROM webhook_events"
                          " ORDER BY id")
    expect_eq([r[:4] for r in rows],
              [["evt_test_789", "v2.core.event_destination.ping", None, "ignored"],
               ["evt_thin_2", "v1.billing.meter.error_report_triggered", "bm_123", "ignored"]],
              "thin events stored once each, ignored, with the related object as the resource")
    expect_in("thin event (v2.core.event)", rows[0][4], "the documented reason")


def test_slow_upload_finishes_after_sigterm():
    db = h.new_database("edge_slow")
    s = h.Settled(db, env={"SETTLED_WORKERS": 0, "SETTLED_SHUTDOWN_TIMEOUT_MS": 5000})
    body = json.dumps({"id": "evt_slow_1", "object": "event", "type": "customer.updated",
                       "data": {"object": {"id": "cus_slow"}}, "pad": "x" * 2000}).encode()
    request = post_bytes("/webhooks/stripe", body, "Stripe-Signature", h.sign_stripe(body))
    half = len(request) - len(body) // 2
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(request[:half])
            time.sleep(0.3)  # the server has read the headers and half the body
            t_term = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)  # longer than the old flush grace (200 ms), well inside the shutdown timeout
            c.sendall(request[half:])
            head, reply = read_reply(c)
            expect(head.startswith(b"HTTP/1.1 200"), "the slow upload is answered 200", (head[:200], reply))
            expect_in(b"connection: close", head.lower(), "and told that the connection closes")
        rc = s.proc.wait(timeout=10)
        print(f"# exited {time.monotonic() - t_term:.2f} s after SIGTERM")
        expect_eq(rc, 0, "exit status")
        s.check_log()
    finally:
        s.kill9()
    expect_eq(h.sql_value(db, "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_slow_1'"), "1",
              "the slow upload is stored")


if __name__ == "__main__":
    h.run(globals())
