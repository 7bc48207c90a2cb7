#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench_portal.sh: measures the portal API's two client read routes, GET /v1/invoices?limit=50 and
# GET /v1/invoices/{id}, with wrk on loopback, side by side with a reference server a Node team would write
# (tests/load/node/portal.js: Fastify + pg + @fastify/jwt), both against the same seeded database in the same run,
# after checking that both answer the same JSON. It prints figures; it is not a test. docs/performance.md, "Portal API".
#
#   tests/load/bench_portal.sh [--duration S] [--warmup S] [--connections C] [--wrk-threads T]
#                              [--customers N] [--invoices N] [--samples N] [--server-threads N]
#                              [--node-workers N] [--node-pool N] [--bin PATH] [--no-build] [--keep]
#                              [--reference-only]
#
# It builds build/release/gateway/settled (Release) unless --bin or --no-build is given, starts a throwaway
# PostgreSQL 15 cluster on 127.0.0.1, makes one database with `settled migrate` and fills it with
# tests/load/portal_seed.sql (2 organisations, --customers customers, --invoices invoices with their lines,
# payments and payment states; the seeding time is printed), mints an HS256 access token for the first customer
# of the first organisation (python3's hmac), starts settled serve and the Node reference on the same database,
# runs tests/load/portal_compare.py (every page of the list, a sample of details, refused ids and tokens), and then,
# for each server and route, a --warmup s wrk run that is not counted and a measured
#   wrk -t2 -c64 -d<S>s --latency -s tests/load/portal.lua URL -- token [ids]
# (the detail route rotates over all the client's visible invoice ids), and prints req/s, p50, p99, the CPU used
# by the server and by PostgreSQL, and each server's peak RSS (VmHWM), side by side, with settled's multiple of the
# reference. --reference-only measures the reference alone (for a settled build without the portal routes).
# Exit status: 0 when the servers answered alike and every measured response was 2xx; 1 when they differed or a
# run had non-2xx responses or socket errors; 2 on a setup failure. It stops only what it started, by PID (and
# its own cluster with pg_ctl).
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 2
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=deploy/lib.sh
. "$top/deploy/lib.sh"
# shellcheck source=tests/load/benchlib.sh
. "$here/benchlib.sh"

duration=10
warmup=2
customers=1000
invoices=100000
samples=20
reference_only=no
usage() { sed -n '8,11p' "$here/bench_portal.sh" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    --warmup) warmup=$2; shift 2 ;;
    --customers) customers=$2; shift 2 ;;
    --invoices) invoices=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    --reference-only) reference_only=yes; shift ;;
    -h | --help) usage; exit 0 ;;
    *)
        bench_option "$@" || { usage >&2; die "unknown argument: $1"; }
        shift "$shifted"
        ;;
    esac
done
for v in duration connections wrk_threads customers invoices samples node_pool; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer"
done
[[ $warmup =~ ^[0-9]+$ ]] || die "--warmup must be 0 or a positive integer"
[[ $node_workers =~ ^[0-9]+$ ]] || die "--node-workers must be 0 (one process) or a positive integer"
[ -z "$server_threads" ] || [[ $server_threads =~ ^[1-9][0-9]*$ ]] || die "--server-threads must be a positive integer"
[ "$customers" -ge 2 ] || die "--customers must be at least 2 (one per organisation)"
[ "$invoices" -ge "$customers" ] || die "--invoices must be at least --customers"
[ "$duration" -le 600 ] || die "--duration is at most 600 s (the access token lives an hour)"

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v psql >/dev/null || die "psql is not installed (apt-get install postgresql-client-15)"
command -v python3 >/dev/null || die "python3 is not installed"
[ -x "$SETTLED_PGBIN/initdb" ] || die "PostgreSQL 15 server binaries not found in $SETTLED_PGBIN"
need_node "the Node reference"

release_binary bench_portal
bench_workdir bench_portal
pgdata=$work/pg
settled_pid=
node_pid=
wrk_pid=
pg_started=no

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    if [ -n "$wrk_pid" ] && kill -0 "$wrk_pid" 2>/dev/null; then
        kill -TERM "$wrk_pid" 2>/dev/null
        wait "$wrk_pid" 2>/dev/null
    fi
    for p in "$settled_pid" "$node_pid"; do
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
            # shellcheck disable=SC2046 # one word per pid
            kill -KILL $(child_pids "$p") "$p" 2>/dev/null
            wait "$p" 2>/dev/null
        fi
    done
    [ "$pg_started" = yes ] && pg_stop "$pgdata"
    if [ "$keep" = yes ]; then
        printf 'kept %s\n' "$work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

nodedir=$here/node
node_packages "$nodedir" "$work/npm.log" || die "npm ci failed in tests/load/node (the npm registry must be reachable)"
if [ "$node_workers" -gt 0 ]; then node_how="$node_workers worker processes (node:cluster), a pool of $node_pool each"
else node_how="one process, a pool of $node_pool connections"; fi
node_desc="node $(node --version), fastify $(node_ver "$nodedir" fastify), pg $(node_ver "$nodedir" pg), @fastify/jwt $(node_ver "$nodedir" @fastify/jwt) (fast-jwt $(node_ver "$nodedir" fast-jwt)), @fastify/etag $(node_ver "$nodedir" @fastify/etag); $node_how"

ensure_os_user
pg_port=$(free_port)
step "PostgreSQL 15 on 127.0.0.1:$pg_port in $pgdata"
pg_init "$pgdata" "$pg_port" trust
pg_started=yes
pg_start "$pgdata" "$pg_port" -c fsync=on -c synchronous_commit=on -c max_wal_size=4GB
psql_q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U settled -d "${2:-postgres}" -c "$1"; }
db=portal
db_url=postgresql://settled@127.0.0.1:$pg_port/$db
psql_q "CREATE DATABASE $db" >/dev/null || die "CREATE DATABASE $db failed"
SETTLED_DATABASE_URL=$db_url "$bin" migrate >"$work/migrate.log" 2>&1 || {
    cat "$work/migrate.log" >&2
    die "settled migrate failed"
}

step "seeding: 2 organisations, $customers customers, $invoices invoices (tests/load/portal_seed.sql)"
t0=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 -v customers="$customers" -v invoices="$invoices" -h 127.0.0.1 -p "$pg_port" -U settled \
    -d "$db" -f "$here/portal_seed.sql" >"$work/seed.log" 2>&1 || {
    cat "$work/seed.log" >&2
    die "seeding failed"
}
seed_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
seed_counts=$(psql_q "SELECT format('%s invoices, %s lines, %s payments, %s refunds, %s ledger entries, %s payment states; %s',
    (SELECT count(*) FROM xero_invoices), (SELECT count(*) FROM xero_invoice_lines), (SELECT count(*) FROM payments),
    (SELECT count(*) FROM refunds), (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM invoice_payment_states),
    pg_size_pretty(pg_database_size(current_database())))" "$db") || die "cannot count the seeded rows"
note "seeded in $seed_s s: $seed_counts"

# The client: the first customer of the first organisation. Its ids as the API shows them (newest first), its
# own hidden ones, and a few of other customers (of both organisations).
read -r org_id customer_id < <(psql_q "SELECT c.organisation_id, c.id FROM customers c
    JOIN organisations o ON o.id = c.organisation_id WHERE o.slug = 'bench-north' ORDER BY c.id LIMIT 1" "$db" | tr '|' ' ')
[ -n "${customer_id:-}" ] || die "no customer was seeded"
visible="i.type = 'ACCREC' AND i.status NOT IN ('DRAFT', 'SUBMITTED', 'DELETED')"
client_invoices() {
    psql_q "SELECT i.settled_invoice_id FROM xero_invoices i JOIN xero_contacts c ON c.organisation_id = i.organisation_id
             AND c.tenant_id = i.tenant_id AND c.contact_id = i.contact_id
             WHERE c.organisation_id = $org_id AND c.customer_id = $customer_id AND $1
             ORDER BY coalesce(i.date, '0001-01-01') DESC, i.settled_invoice_id DESC" "$db"
}
client_invoices "$visible" >"$work/ids.txt" || die "cannot list the client's invoices"
client_invoices "NOT ($visible)" >"$work/hidden.txt" || die "cannot list the client's hidden invoices"
psql_q "(SELECT i.settled_invoice_id FROM xero_invoices i JOIN xero_contacts c USING (organisation_id, tenant_id, contact_id)
          WHERE c.customer_id <> $customer_id AND i.organisation_id = $org_id AND i.status = 'AUTHORISED' LIMIT 3)
        UNION ALL
        (SELECT settled_invoice_id FROM xero_invoices WHERE organisation_id <> $org_id AND status = 'PAID' LIMIT 2)" \
    "$db" >"$work/foreign.txt" || die "cannot list other customers' invoices"
nids=$(wc -l <"$work/ids.txt")
[ "$nids" -gt 0 ] || die "the client has no visible invoice"
note "the client: customer $customer_id of organisation $org_id, $nids visible invoices ($(wc -l <"$work/hidden.txt") hidden)"

jwt_secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
python3 - "$jwt_secret" "$org_id" "$customer_id" >"$work/token.txt" <<'PY' || die "cannot mint the access token"
import base64, hashlib, hmac, json, os, sys, time
secret, org, customer = sys.argv[1:4]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
claims = b64(json.dumps({"sub": "1", "org": org, "customer": customer, "role": "client", "iss": "settled",
                         "aud": "settled-portal", "iat": now, "nbf": now, "exp": now + 3600,
                         "jti": b64(os.urandom(16))}, separators=(",", ":")).encode())
sig = b64(hmac.new(secret.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest())
print(f"{head}.{claims}.{sig}")
PY

# wait_ready NAME PID PORT: until GET /readyz answers 200 (30 s at most)
wait_ready() {
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || break
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$3/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    tail -n 30 "$work/$1.log" >&2
    die "$1 did not become ready on port $3"
}

settled_note=
if [ "$reference_only" = no ]; then
    settled_port=$(free_port)
    step "settled serve on 127.0.0.1:$settled_port (threads: ${server_threads:-default}, no queue workers)"
    (
        # no queue workers: the reference does no background work either, and nothing may re-derive the seeded
        # payment states during the run; no Redis: the guard's deny-list lookup is skipped, as the reference has none
        export SETTLED_LISTEN=127.0.0.1:$settled_port SETTLED_DATABASE_URL=$db_url SETTLED_JWT_SECRET=$jwt_secret \
            SETTLED_WORKERS=0 SETTLED_ACCESS_LOG=false SETTLED_LOG_LEVEL=warn
        [ -n "$server_threads" ] && export SETTLED_THREADS=$server_threads
        exec "$bin" serve
    ) >"$work/settled.log" 2>&1 &
    settled_pid=$!
    wait_ready settled "$settled_pid" "$settled_port"
    code=$(curl -s -o "$work/probe.json" -w '%{http_code}' -H "Authorization: Bearer $(cat "$work/token.txt")" \
        "http://127.0.0.1:$settled_port/v1/invoices?limit=1")
    if [ "$code" != 200 ]; then
        cat "$work/probe.json" >&2 2>/dev/null
        echo >&2
        die "settled answers GET /v1/invoices with $code, not 200: this build has no portal routes or cannot check tokens (the portal API is not on this branch yet?). Measure the reference alone with --reference-only."
    fi
else
    settled_note="--reference-only: settled is not measured"
fi

node_port=$(free_port)
step "node tests/load/node/portal.js on 127.0.0.1:$node_port ($node_desc)"
(
    export DATABASE_URL=$db_url JWT_SECRET=$jwt_secret NODE_ENV=production
    exec node "$nodedir/portal.js" --port "$node_port" --pool "$node_pool" --workers "$node_workers"
) >"$work/node.log" 2>&1 &
node_pid=$!
wait_ready node "$node_pid" "$node_port"

status=0
step "comparing the answers (tests/load/portal_compare.py)"
servers=("node=http://127.0.0.1:$node_port")
[ "$reference_only" = no ] && servers=("settled=http://127.0.0.1:$settled_port" "${servers[@]}")
python3 "$here/portal_compare.py" --token "$work/token.txt" --ids "$work/ids.txt" --hidden "$work/hidden.txt" \
    --foreign "$work/foreign.txt" --samples "$samples" "${servers[@]}"
case $? in
0) ;;
1) status=1; note "the servers do not answer alike: measuring anyway, and exiting 1" ;;
*) die "portal_compare.py failed" ;;
esac

# Figures by "SERVER.ROUTE.field".
declare -A R
# the detail route (the one with targets) first; each run starts once the previous one's queries are done
routes="detail list"
route_path() { if [ "$1" = list ]; then echo "/v1/invoices?limit=50"; else echo "/v1/invoices/{id}"; fi; }

# pg_quiet: waits (60 s at most) until no other backend of the database runs a query: a server may still be working
# off the queue of a run whose requests wrk gave up on (a slow route), which must not land in the next run
pg_quiet() {
    local n
    for _ in $(seq 1 600); do
        n=$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db' AND state = 'active'
                     AND pid <> pg_backend_pid()" "$db") || return 0
        [ "$n" = 0 ] && return 0
        sleep 0.1
    done
    note "the database still runs $n queries 60 s after the previous run: this run shares PostgreSQL with them"
}

# measure NAME PID PORT ROUTE: a --warmup wrk run, then the measured one; records the figures
measure() {
    local name=$1 pid=$2 port=$3 route=$4 url args pids rt0 rt1 pt0 pt1 rc kv bench_line
    if [ "$route" = list ]; then
        url="http://127.0.0.1:$port/v1/invoices?limit=50" args=("$work/token.txt")
    else
        url="http://127.0.0.1:$port/v1/invoices/" args=("$work/token.txt" "$work/ids.txt")
    fi
    pids="$pid $(child_pids "$pid")"
    pg_quiet
    if [ "$warmup" -gt 0 ]; then
        wrk -t"$wrk_threads" -c"$connections" -d"${warmup}s" -s "$here/portal.lua" "$url" -- "${args[@]}" \
            >"$work/wrk.$name.$route.warmup" 2>&1 &
        wrk_pid=$!
        wait "$wrk_pid" || die "wrk (warm-up) failed: $(tail -n 5 "$work/wrk.$name.$route.warmup")"
        wrk_pid=
    fi
    times >"$work/times0"
    # shellcheck disable=SC2086 # one word per pid
    rt0=$(cpu_ticks $pids)
    pt0=$(pg_ticks "$pgdata")
    step "wrk -t$wrk_threads -c$connections -d${duration}s --latency -s tests/load/portal.lua ($name, $(route_path "$route"))"
    wrk -t"$wrk_threads" -c"$connections" -d"${duration}s" --latency -s "$here/portal.lua" "$url" -- "${args[@]}" \
        >"$work/wrk.$name.$route" 2>&1 &
    wrk_pid=$!
    wait "$wrk_pid"
    rc=$?
    wrk_pid=
    times >"$work/times1"
    # shellcheck disable=SC2086 # one word per pid
    rt1=$(cpu_ticks $pids)
    pt1=$(pg_ticks "$pgdata")
    [ "$rc" -eq 0 ] || die "wrk exited with status $rc: $(tail -n 5 "$work/wrk.$name.$route")"
    bench_line=$(grep '^BENCH ' "$work/wrk.$name.$route") || die "wrk printed no BENCH line"
    local -A B
    for kv in ${bench_line#BENCH }; do B[${kv%%=*}]=${kv#*=}; done
    local k=$name.$route errs
    R[$k.rps]=$(awk -v r="${B[requests]}" -v d="${B[duration_us]}" 'BEGIN {printf "%.0f", r * 1e6 / d}')
    R[$k.p50]=$(ms "${B[p50_us]}") R[$k.p99]=$(ms "${B[p99_us]}") R[$k.max]=$(ms "${B[max_us]}")
    R[$k.kib]=$(awk -v b="${B[bytes]}" -v r="${B[requests]}" 'BEGIN {if (r > 0) printf "%.1f", b / r / 1024; else print 0}')
    R[$k.cpu]=$(cpu_s $((rt1 - rt0))) R[$k.pgcpu]=$(cpu_s $((pt1 - pt0)))
    R[$k.wrkcpu]=$(awk -v a="$(children_cpu "$work/times0")" -v b="$(children_cpu "$work/times1")" 'BEGIN {printf "%.1f", b - a}')
    R[$k.us]=$(awk -v a=$((rt1 - rt0)) -v b=$((pt1 - pt0)) -v w="${R[$k.wrkcpu]}" -v hz="$bench_hz" -v n="${B[requests]}" \
        'BEGIN {if (n > 0) printf "%.0f/%.0f/%.0f", a / hz * 1e6 / n, b / hz * 1e6 / n, w * 1e6 / n; else print "n/a"}')
    errs=$((B[connect_err] + B[read_err] + B[write_err] + B[timeouts]))
    R[$k.bad]="${B[non2xx]}/$errs"
    if [ "${B[requests]}" -eq 0 ]; then
        note "$name $(route_path "$route"): no response at all in ${duration} s (exit status 1)"
        status=1
    elif [ "${B[non2xx]}" -gt 0 ] || [ "$errs" -gt 0 ]; then
        note "$name $(route_path "$route"): ${B[non2xx]} non-2xx responses, $errs socket errors (exit status 1)"
        status=1
    fi
}

measured=
if [ "$reference_only" = no ]; then
    for r in $routes; do measure settled "$settled_pid" "$settled_port" "$r"; done
    R[settled.rss]=$(awk -v k="$(hwm_kib "$settled_pid")" 'BEGIN {printf "%.1f", k / 1024}')
    measured=settled
fi
for r in $routes; do measure node "$node_pid" "$node_port" "$r"; done
# shellcheck disable=SC2046 # one word per pid
R[node.rss]=$(awk -v k="$(hwm_kib "$node_pid" $(child_pids "$node_pid"))" 'BEGIN {printf "%.1f", k / 1024}')
measured="$measured node"

if [ -n "$settled_pid" ]; then
    stop_server settled "$settled_pid"
    R[settled.exit]=$exit_rc
    settled_pid=
fi
stop_server node "$node_pid"
R[node.exit]=$exit_rc
node_pid=
grep -qiE 'error|fatal|assert' "$work/settled.log" 2>/dev/null &&
    { echo "  settled logged errors (first lines):"; grep -iE 'error|fatal|assert' "$work/settled.log" | head -n 5 | sed 's/^/    /'; }
grep -qiE 'error' "$work/node.log" &&
    { echo "  the reference logged errors (first lines):"; grep -iE 'error' "$work/node.log" | head -n 5 | sed 's/^/    /'; }

echo
echo "portal benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end):"
echo "  wrk -t$wrk_threads -c$connections -d${duration}s on loopback after ${warmup}s of warm-up; one client token; the detail route over its $nids invoices"
echo "  database: $seed_counts, seeded in $seed_s s"
[ "$reference_only" = yes ] || echo "  settled: $bin (SETTLED_WORKERS=0, no Redis, threads ${server_threads:-default})"
[ -z "$settled_note" ] || echo "  settled: $settled_note"
echo "  reference: $node_desc"
printf '  %-26s %-8s %9s %8s %8s %8s %7s %17s %18s %10s\n' route server "req/s" "p50 ms" "p99 ms" "max ms" "KiB/rsp" \
    "CPU s srv/PG/wrk" "µs/req srv/PG/wrk" "non2xx/err"
for r in $routes; do
    for s in $measured; do
        k=$s.$r
        printf '  %-26s %-8s %9s %8s %8s %8s %7s %17s %18s %10s\n' "GET $(route_path "$r")" "$s" "${R[$k.rps]}" \
            "${R[$k.p50]}" "${R[$k.p99]}" "${R[$k.max]}" "${R[$k.kib]}" "${R[$k.cpu]}/${R[$k.pgcpu]}/${R[$k.wrkcpu]}" "${R[$k.us]}" "${R[$k.bad]}"
    done
done
for s in $measured; do printf '  %-26s %-8s %9s MiB   exit after SIGTERM: %s\n' "peak RSS (VmHWM)" "$s" "${R[$s.rss]}" "${R[$s.exit]}"; done
echo
echo "summary:"
if [ "$reference_only" = no ]; then
    for r in $routes; do
        x=$(awk -v s="${R[settled.$r.rps]}" -v n="${R[node.$r.rps]}" 'BEGIN {if (n > 0) printf "%.1f", s / n; else print "n/a"}')
        if [ "$r" = detail ]; then
            printf '  %-26s settled/node %5sx req/s  (target >= 3x: %s); settled p99 %s ms at -c%s (target <= 20: %s)\n' \
                "GET $(route_path "$r")" "$x" "$(mark "$x" '>=' 3)" "${R[settled.$r.p99]}" "$connections" \
                "$(mark "${R[settled.$r.p99]}" '<=' 20)"
        else
            printf '  %-26s settled/node %5sx req/s\n' "GET $(route_path "$r")" "$x"
        fi
    done
    printf '  %-26s settled/node %5sx less memory\n' "peak RSS" \
        "$(awk -v s="${R[settled.rss]}" -v n="${R[node.rss]}" 'BEGIN {if (s > 0) printf "%.1f", n / s; else print "n/a"}')"
else
    echo "  $settled_note; the reference's figures above are this run's only ones"
fi
[ "$status" -eq 0 ] && echo "OK: the servers answered alike and every measured response was 2xx"
exit "$status"
