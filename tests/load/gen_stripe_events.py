#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Generates N distinct, signed ~2 KB Stripe payment_intent.succeeded deliveries for the intake benchmark.

Storing N whole 2 KB bodies would make a file of N x 2 KB (600 MB for 300k events) that each wrk
thread would have to hold in Lua memory. Instead the body is a fixed template with a few
placeholders, written once (<out>.tmpl), and each event is one short line of <out> holding what
varies: the signature timestamp, the v1 signature, a unique token and the amount. stripe.lua rebuilds
the body byte for byte from the template (a table.concat, a few microseconds) and sends the
precomputed signature, so wrk does no hashing while it measures.

Line format (space-separated, one event per line):  <t> <v1 hex> <token> <amount>
Template format: the body text, with the placeholders {{TOKEN}}, {{T}} and {{AMOUNT}}.

Usage: gen_stripe_events.py --count N --secret whsec_... --out events.txt [--body-size 2048]
       gen_stripe_events.py --check events.txt      (rebuild and re-verify every event, prints one sample)
"""
import argparse
import hashlib
import hmac
import os
import sys
import time

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# A payment_intent.succeeded event as Stripe sends it (pretty-printed, 2-space indent), modelled on
# fixtures/stripe/event_payment_intent_succeeded.json. The ids of the event, intent, charge, payment
# method and request all derive from the one unique token; the customer and padding are constant.
TEMPLATE_HEAD = """{
  "id": "evt_{{TOKEN}}",
  "object": "event",
  "api_version": "2023-10-16",
  "created": {{T}},
  "data": {
    "object": {
      "id": "pi_{{TOKEN}}",
      "object": "payment_intent",
      "amount": {{AMOUNT}},
      "amount_capturable": 0,
      "amount_details": {
        "tip": {}
      },
      "amount_received": {{AMOUNT}},
      "application": null,
      "application_fee_amount": null,
      "automatic_payment_methods": null,
      "canceled_at": null,
      "cancellation_reason": null,
      "capture_method": "automatic",
      "client_secret": "pi_{{TOKEN}}_secret_bench",
      "confirmation_method": "automatic",
      "created": {{T}},
      "currency": "gbp",
      "customer": "cus_PbEnchCustomer0001",
      "description": "Invoice INV-{{AMOUNT}} settled by card",
      "invoice": null,
      "last_payment_error": null,
      "latest_charge": "ch_{{TOKEN}}",
      "livemode": false,
      "metadata": {
        "xero_invoice_number": "INV-{{AMOUNT}}",
        "portal_customer": "bench-customer-0001",
        "notes": "%PAD%"
      },
      "next_action": null,
      "on_behalf_of": null,
      "payment_method": "pm_{{TOKEN}}",
      "payment_method_options": {
        "card": {
          "installments": null,
          "mandate_options": null,
          "network": null,
          "request_three_d_secure": "automatic"
        }
      },
      "payment_method_types": [
        "card"
      ],
      "processing": null,
      "receipt_email": "accounts@example.com",
      "review": null,
      "setup_future_usage": null,
      "shipping": null,
      "statement_descriptor": null,
      "statement_descriptor_suffix": null,
      "status": "succeeded",
      "transfer_data": null,
      "transfer_group": null
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {
    "id": "req_{{TOKEN}}",
    "idempotency_key": "{{TOKEN}}-bench"
  },
  "type": "payment_intent.succeeded"
}"""

TOKEN_LEN = 24  # like Stripe's ids: evt_ + 24 alphanumerics
T_LEN = 10
AMOUNT_LEN = 6  # amounts are 100000..999999 minor units, always 6 digits, so every body has one size


def make_template(body_size):
    """Returns the template with its padding sized so that every filled-in body is body_size bytes."""
    filled = (TEMPLATE_HEAD.replace("{{TOKEN}}", "x" * TOKEN_LEN).replace("{{T}}", "x" * T_LEN)
              .replace("{{AMOUNT}}", "x" * AMOUNT_LEN).replace("%PAD%", ""))
    pad = body_size - len(filled.encode())
    if pad < 0:
        sys.exit(f"--body-size {body_size} is below the template's minimum of {len(filled)} bytes")
    words = "Payment received with thanks; allocated against the open balance of the account. "
    padding = (words * (pad // len(words) + 1))[:pad]
    return TEMPLATE_HEAD.replace("%PAD%", padding)


def split_template(tmpl):
    """Splits the template into literal segments and placeholder names, in order."""
    parts, names, rest = [], [], tmpl
    while True:
        i = rest.find("{{")
        if i < 0:
            parts.append(rest)
            return parts, names
        j = rest.index("}}", i)
        parts.append(rest[:i])
        names.append(rest[i + 2:j])
        rest = rest[j + 2:]


def fill(parts, names, values):
    out = []
    for k, name in enumerate(names):
        out.append(parts[k])
        out.append(values[name])
    out.append(parts[-1])
    return "".join(out).encode()


def token_for(nonce, i):
    digits = []
    while True:
        i, r = divmod(i, 62)
        digits.append(ALPHABET[r])
        if i == 0:
            break
    return nonce + "".join(reversed(digits)).rjust(TOKEN_LEN - len(nonce), "0")


def generate(args):
    tmpl = make_template(args.body_size)
    parts, names = split_template(tmpl)
    secret = args.secret.encode()
    nonce = "".join(ALPHABET[b % 62] for b in os.urandom(8))
    t = str(int(time.time()))
    amount_seed = int.from_bytes(os.urandom(4), "little")
    with open(args.out + ".tmpl", "w", encoding="utf-8", newline="") as f:
        f.write(tmpl)
    with open(args.out, "w", encoding="ascii", newline="\n") as f:
        buf = []
        for i in range(args.count):
            tok = token_for(nonce, i)
            amount = str(100000 + (amount_seed + i * 7919) % 900000)
            body = fill(parts, names, {"TOKEN": tok, "T": t, "AMOUNT": amount})
            sig = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
            buf.append(f"{t} {sig} {tok} {amount}\n")
            if len(buf) >= 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    print(f"generated {args.count} events of {args.body_size} bytes, t={t}, into {args.out} (+ .tmpl)",
          file=sys.stderr)


def check(path, secret):
    with open(path + ".tmpl", encoding="utf-8", newline="") as f:
        parts, names = split_template(f.read())
    seen = set()
    n = 0
    with open(path, encoding="ascii") as f:
        for line in f:
            t, sig, tok, amount = line.split()
            body = fill(parts, names, {"TOKEN": tok, "T": t, "AMOUNT": amount})
            if secret is not None:
                want = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
                if want != sig:
                    sys.exit(f"bad signature on line {n + 1}")
            if tok in seen:
                sys.exit(f"duplicate token {tok} on line {n + 1}")
            seen.add(tok)
            n += 1
            if n == 1:
                sample = (t, sig, body)
    print(f"{n} events, all distinct{', signatures verified' if secret else ''}; body size {len(sample[2])}")
    return sample


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300000)
    ap.add_argument("--secret", default="whsec_bench_secret")
    ap.add_argument("--out", default="events.txt")
    ap.add_argument("--body-size", type=int, default=2048)
    ap.add_argument("--check", metavar="FILE", help="verify a generated file instead of writing one")
    args = ap.parse_args()
    if args.check:
        check(args.check, args.secret)
    else:
        generate(args)


if __name__ == "__main__":
    main()
