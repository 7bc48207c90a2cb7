#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""portal_compare.py: checks, before tests/load/bench_portal.sh measures anything, that the servers answer the
portal routes alike, as parsed JSON (key order ignored), for the same client token:

- every page of GET /v1/invoices?limit=50, each server following its own next_cursor (null on both at the end);
- GET /v1/invoices/{id} for a sample of the client's invoice ids (status 200 and the same document);
- 404 on both for invoices that are not the client's (another customer's, another organisation's) and for the
  client's own DRAFT, SUBMITTED and DELETED ones;
- 401 on both without a token and with a token whose signature is wrong.

With one server (--reference-only) it checks the same statuses and that every listed invoice is one of the
client's, without a second opinion. Exit status 0 when all agree, 1 when any differs, 2 on a usage error.

  portal_compare.py --token FILE --ids FILE --hidden FILE --foreign FILE [--samples N] NAME=URL [NAME=URL]
"""
import argparse
import json
import sys
import urllib.error
import urllib.request


def get(base, path, token):
    req = urllib.request.Request(base + path, headers={"Accept": "application/json"})
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = {"unparsable": body[:200].decode("utf-8", "replace")}
    return status, doc


def lines(path):
    with open(path, encoding="ascii") as f:
        return [x.strip() for x in f if x.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--token", required=True)
    ap.add_argument("--ids", required=True, help="the client's visible invoice ids, newest first")
    ap.add_argument("--hidden", required=True, help="the client's own invisible ids (DRAFT, SUBMITTED, DELETED)")
    ap.add_argument("--foreign", required=True, help="ids of other customers' invoices")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("servers", nargs="+", metavar="NAME=URL")
    a = ap.parse_args()
    servers = [tuple(s.split("=", 1)) for s in a.servers]
    if any(len(s) != 2 for s in servers) or len(servers) > 2:
        ap.error("one or two NAME=URL")
    token = lines(a.token)[0]
    ids, hidden, foreign = lines(a.ids), lines(a.hidden), lines(a.foreign)
    problems = []
    checks = 0

    def agree(what, answers, want_status):
        nonlocal checks
        checks += 1
        for name, (status, _) in answers.items():
            if status != want_status:
                problems.append(f"{what}: {name} answered {status}, expected {want_status}")
                return False
        docs = [doc for _, doc in answers.values()]
        if want_status == 200 and len(docs) == 2 and docs[0] != docs[1]:
            names = list(answers)
            problems.append(f"{what}: the documents differ\n  {names[0]}: {json.dumps(docs[0], sort_keys=True)[:1500]}"
                            f"\n  {names[1]}: {json.dumps(docs[1], sort_keys=True)[:1500]}")
            return False
        return True

    # every page of the list, each server following its own cursor
    cursors = {name: None for name, _ in servers}
    listed = []
    for page in range(1, 1000):
        answers = {}
        for name, base in servers:
            path = "/v1/invoices?limit=50" + ("" if cursors[name] is None else "&cursor=" + cursors[name])
            answers[name] = get(base, path, token)
        if not all(s == 200 and isinstance(d, dict) and isinstance(d.get("data"), list) for s, d in answers.values()):
            agree(f"GET /v1/invoices page {page}", answers, 200)
            problems.append(f"GET /v1/invoices page {page}: not a list document")
            break
        stripped = {n: (s, d["data"]) for n, (s, d) in answers.items()}
        agree(f"GET /v1/invoices page {page} (data)", stripped, 200)
        nexts = {n: d.get("next_cursor") for n, (_, d) in answers.items()}
        if len({c is None for c in nexts.values()}) != 1:
            problems.append(f"GET /v1/invoices page {page}: next_cursor null on one server only: {nexts}")
            break
        listed += [inv.get("id") for inv in next(iter(stripped.values()))[1]]
        if next(iter(nexts.values())) is None:
            break
        cursors = nexts
    if listed != ids:
        problems.append(f"the pages list {len(listed)} invoices; the client has {len(ids)} visible ones, newest first"
                        f" (first differing: {next((x for x in zip(listed, ids) if x[0] != x[1]), None)})")

    step = max(1, len(ids) // max(1, a.samples))
    for i in ids[::step][:a.samples]:
        agree(f"GET /v1/invoices/{i}", {n: get(b, "/v1/invoices/" + i, token) for n, b in servers}, 200)
    for i in hidden[:5] + foreign[:5]:
        agree(f"GET /v1/invoices/{i} (not the client's)",
              {n: get(b, "/v1/invoices/" + i, token) for n, b in servers}, 404)
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for label, t in (("no token", None), ("a bad signature", bad)):
        agree(f"GET /v1/invoices with {label}", {n: get(b, "/v1/invoices", t) for n, b in servers}, 401)

    for p in problems[:10]:
        print("  DIFF " + p)
    if len(problems) > 10:
        print(f"  ... and {len(problems) - 10} more")
    who = " and ".join(n for n, _ in servers)
    if problems:
        print(f"FAIL: {who}: {len(problems)} of {checks} checks failed")
        return 1
    print(f"OK: {who} answer alike: {checks} checks ({len(listed)} listed invoices in "
          f"{(len(listed) + 49) // 50} pages, {min(a.samples, len(ids))} details, 10 refused ids, 2 refused tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
