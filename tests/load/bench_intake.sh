#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench_intake.sh: measures durable webhook intake (signed Stripe deliveries committed to PostgreSQL)
# with wrk on loopback, side by side with a reference receiver (Fastify + stripe-node + pg) and a probe
# of PostgreSQL's own ceiling for the same rows, and checks that every acknowledged event is stored.
# It prints figures; it is not a test. Method and results: docs/performance.md.
#
#   tests/load/bench_intake.sh [--duration S] [--connections C] [--events N] [--wrk-threads T]
#                              [--server-threads N] [--db-connections N] [--db-max-batch N] [--queue-workers N]
#                              [--body-size B (>= 2026)] [--lua-count] [--bin PATH] [--no-build] [--keep]
#                              [--reference node|none] [--node-workers N] [--node-pool N]
#                              [--ceiling-batches "8 32" | none]
#
# It builds build/release/gateway/settled (Release) unless --bin or --no-build is given, starts a
# throwaway PostgreSQL 15 cluster (fsync=on, synchronous_commit=on) on 127.0.0.1, generates N distinct
# signed payment_intent.succeeded events of 2,048 bytes (--body-size), and then, each on a fresh database
# of that cluster (created and migrated by `settled migrate`):
#   1. settled serve, driven by  wrk -t2 -c64 -d<S>s --latency -s tests/load/stripe.lua  (each event sent
#      at most once); its peak RSS (VmHWM), CPU, then SIGTERM;
#   2. the reference receiver tests/load/node/receiver.js (--reference node, the default when node and npm
#      are installed; its packages are installed once with `npm ci`), one process, the same wrk load and
#      the same events file;
#   3. the ceiling probe: pgbench -M prepared, one multi-row INSERT of B inbox rows (2 KB bytea bodies,
#      the same columns) per transaction, with as many clients as settled has database connections
#      (loops x connections per loop), for the same duration, once per B of --ceiling-batches;
# and prints each receiver's figures, then settled's accepts/s as a multiple of the reference's and as a
# fraction of the best ceiling.
# Exit status: 0 when every 2xx response's event is in webhook_events for every receiver measured, 1 when
# any is missing, 2 on a setup failure. It stops only what it started, by PID (and its own cluster with
# pg_ctl).
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 2
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=deploy/lib.sh
. "$top/deploy/lib.sh"
# shellcheck source=tests/load/benchlib.sh
. "$here/benchlib.sh"

duration=15
events=
db_connections=
db_max_batch=
queue_workers=0
lua_count=0
body_size=2048
reference=
ceiling_batches="8 32"
usage() { sed -n '8,12p' "$here/bench_intake.sh" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    --events) events=$2; shift 2 ;;
    --db-connections) db_connections=$2; shift 2 ;;
    --db-max-batch) db_max_batch=$2; shift 2 ;;
    --queue-workers) queue_workers=$2; shift 2 ;;
    --lua-count) lua_count=1; shift ;;
    --body-size) body_size=$2; shift 2 ;;
    --reference) reference=$2; shift 2 ;;
    --ceiling-batches) ceiling_batches=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *)
        bench_option "$@" || { usage >&2; die "unknown argument: $1"; }
        shift "$shifted"
        ;;
    esac
done
for v in duration connections wrk_threads body_size node_pool; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer"
done
[[ $node_workers =~ ^[0-9]+$ ]] || die "--node-workers must be 0 (one process) or a positive integer"
[[ $queue_workers =~ ^[0-9]+$ ]] || die "--queue-workers must be 0 (intake alone) or a positive integer"
# The signatures are made before the run and both receivers reject those older than 300 s (Stripe's
# tolerance); the events are signed again before a run that would end past it (see fresh_events).
[ "$duration" -le 240 ] || die "--duration is at most 240 s: the pre-signed events must stay within the 300 s tolerance"
# Enough events for 40,000 accepts/s (twice the target) for the whole run: wrk keeps counting time
# after a thread runs out, so running out would understate the rate (it is detected and reported).
[ -n "$events" ] || events=$((40000 * duration))
[[ $events =~ ^[1-9][0-9]*$ ]] || die "--events must be a positive integer"
for v in server_threads db_connections db_max_batch; do
    [ -z "${!v}" ] || [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer"
done
[ "$ceiling_batches" = none ] || [[ $ceiling_batches =~ ^[1-9][0-9]*( +[1-9][0-9]*)*$ ]] ||
    die "--ceiling-batches takes batch sizes separated by spaces (\"8 32\"), or none"
[ "$ceiling_batches" = none ] && ceiling_batches=
for b in $ceiling_batches; do [ "$b" -le 1000 ] || die "--ceiling-batches: $b rows per transaction is too many (at most 1000)"; done

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v psql >/dev/null || die "psql is not installed (apt-get install postgresql-client-15)"
[ -x "$SETTLED_PGBIN/initdb" ] || die "PostgreSQL 15 server binaries not found in $SETTLED_PGBIN"
pgbench=$SETTLED_PGBIN/pgbench
[ -z "$ceiling_batches" ] || [ -x "$pgbench" ] || die "pgbench not found at $pgbench (Debian's postgresql-15 has it), or pass --ceiling-batches none"
reference_note=
case "$reference" in
"")
    if command -v node >/dev/null && command -v npm >/dev/null; then
        reference=node
    else
        reference=none
        reference_note="node or npm is not installed: the Node reference receiver is not run (--reference none)"
    fi
    ;;
node)
    need_node "--reference node"
    ;;
none) reference_note="--reference none: the Node reference receiver is not run" ;;
*) die "--reference is node or none" ;;
esac
[ "$reference" = node ] && need_node "the Node reference"

release_binary bench_intake
bench_workdir bench_intake
pgdata=$work/pg
receiver_pid=
wrk_pid=
pgbench_pid=
pg_started=no

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "$wrk_pid" "$pgbench_pid"; do
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null
            wait "$p" 2>/dev/null
        fi
    done
    if [ -n "$receiver_pid" ] && kill -0 "$receiver_pid" 2>/dev/null; then
        # shellcheck disable=SC2046 # one word per pid
        kill -KILL $(child_pids "$receiver_pid") "$receiver_pid" 2>/dev/null
        wait "$receiver_pid" 2>/dev/null
    fi
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

# The reference's packages: installed once into tests/load/node/node_modules with `npm ci` (the exact tree of
# package-lock.json), again only when the lock file changes.
node_desc=
if [ "$reference" = node ]; then
    nodedir=$here/node
    node_packages "$nodedir" "$work/npm.log" ||
        die "npm ci failed in tests/load/node (the npm registry must be reachable), or pass --reference none"
    if [ "$node_workers" -gt 0 ]; then node_how="$node_workers worker processes (node:cluster), a pool of $node_pool each"
    else node_how="one process, a pool of $node_pool connections"; fi
    node_desc="node $(node --version), fastify $(node_ver "$nodedir" fastify), stripe $(node_ver "$nodedir" stripe), pg $(node_ver "$nodedir" pg); $node_how"
fi

ensure_os_user
pg_port=$(free_port)
step "PostgreSQL 15 on 127.0.0.1:$pg_port (fsync=on, synchronous_commit=on) in $pgdata"
pg_init "$pgdata" "$pg_port" trust
pg_started=yes
# A fresh cluster has no WAL segments to recycle: each new 16 MB segment would be zero-filled while commits wait on
# it (about 75 ms, twice a second at these rates), which a server that has run for a while no longer pays. The same
# settings hold for every receiver and the ceiling probe; durability is unchanged (fsync, synchronous_commit).
pg_start "$pgdata" "$pg_port" -c fsync=on -c synchronous_commit=on -c full_page_writes=on \
    -c wal_init_zero=off -c max_wal_size=4GB
psql_q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U settled -d "${2:-postgres}" -c "$1"; }
db_url_of() { echo "postgresql://settled@127.0.0.1:$pg_port/$1"; }

# fresh_db NAME: a new database of the cluster, migrated by settled (the same schema for every receiver and probe)
fresh_db() {
    psql_q "CREATE DATABASE $1" >/dev/null || die "CREATE DATABASE $1 failed"
    SETTLED_DATABASE_URL=$(db_url_of "$1") "$bin" migrate >"$work/migrate.$1.log" 2>&1 || {
        cat "$work/migrate.$1.log" >&2
        die "settled migrate failed on $1"
    }
}
# drop_db NAME: frees the disk of a database once its figures are taken (kept with --keep)
drop_db() {
    [ "$keep" = yes ] || psql_q "DROP DATABASE $1" >/dev/null || note "DROP DATABASE $1 failed"
}
# inbox_table DB: the inbox's base table (inbox_events since migration 0003, webhook_events before it)
inbox_table() {
    psql_q "SELECT relname FROM pg_class WHERE relname IN ('inbox_events', 'webhook_events') AND relkind = 'r'
             AND pg_table_is_visible(oid) ORDER BY relname = 'inbox_events' DESC LIMIT 1" "$1"
}

secret=whsec_bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
gen_events() {
    step "generating $events signed events of $body_size bytes"
    python3 "$here/gen_stripe_events.py" --count "$events" --secret "$secret" --body-size "$body_size" --out "$work/events.txt" ||
        die "event generation failed"
    events_t=$(head -c 10 "$work/events.txt")
}
gen_events
# fresh_events: signs the events again (the same count and shape, a new timestamp) when a run starting now would
# end past the receivers' 300 s tolerance; the receivers run on separate databases, so the same ids are fine.
fresh_events() {
    if [ $(($(date +%s) - events_t + duration + 30)) -gt 300 ]; then
        note "the events were signed $(($(date +%s) - events_t)) s ago: signing them again for this run"
        gen_events
    fi
}

# pg_settle DB: waits (at most 10 s) until no client backend of DB is left, reaped by the postmaster: a backend that
# ends while pg_ticks runs could otherwise be missed both as a live child and in the postmaster's cutime. (Client
# backends are titled "postgres: settled DB 127.0.0.1(port) ..."; an autovacuum worker on DB may go on working.)
pg_settle() {
    local pm c busy
    pm=$(head -n 1 "$pgdata/postmaster.pid")
    for _ in $(seq 1 200); do
        busy=no
        for c in $(child_pids "$pm"); do
            if grep -q "^State:[[:space:]]*Z" "/proc/$c/status" 2>/dev/null ||
                tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null | grep -q "^postgres: settled $1 "; then
                busy=yes
                break
            fi
        done
        [ "$busy" = no ] && return 0
        sleep 0.05
    done
    note "backends of $1 still there 10 s after the run: PostgreSQL's CPU figure may be short"
}
commits() { psql_q "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"; }

# start_receiver NAME DB PORT: starts settled or the Node reference on 127.0.0.1:PORT against DB; sets receiver_pid
start_receiver() {
    local name=$1 url port=$3
    url=$(db_url_of "$2")
    if [ "$name" = settled ]; then
        step "settled serve on 127.0.0.1:$port (threads: ${server_threads:-default}, db connections per loop: ${db_connections:-default}, max batch: ${db_max_batch:-default}, queue workers: $queue_workers)"
        (
            export SETTLED_LISTEN=127.0.0.1:$port SETTLED_DATABASE_URL=$url SETTLED_STRIPE_WEBHOOK_SECRETS=$secret \
                SETTLED_ACCESS_LOG=false SETTLED_LOG_LEVEL=warn
            [ -n "$server_threads" ] && export SETTLED_THREADS=$server_threads
            [ -n "$db_connections" ] && export SETTLED_DB_CONNECTIONS=$db_connections
            [ -n "$db_max_batch" ] && export SETTLED_DB_MAX_BATCH=$db_max_batch
            # the reference and the probe only store: by default settled's queue workers are off too, so the
            # three are measured doing the same work (with workers on they also claim and process the events)
            export SETTLED_WORKERS=$queue_workers
            exec "$bin" serve
        ) >"$work/settled.log" 2>&1 &
    else
        step "node tests/load/node/receiver.js on 127.0.0.1:$port ($node_desc)"
        (
            export DATABASE_URL=$url STRIPE_WEBHOOK_SECRET=$secret NODE_ENV=production
            exec node "$here/node/receiver.js" --port "$port" --pool "$node_pool" --workers "$node_workers"
        ) >"$work/node.log" 2>&1 &
    fi
    receiver_pid=$!
    for _ in $(seq 1 300); do
        kill -0 "$receiver_pid" 2>/dev/null || break
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    tail -n 30 "$work/$name.log" >&2
    die "$name did not become ready on port $port"
}

# stop_receiver NAME: stops the receiver (stop_server); sets exit_rc
stop_receiver() {
    stop_server "$1" "$receiver_pid"
    receiver_pid=
}

# Figures of each receiver, by "NAME.field".
declare -A R
status=0

# measure NAME: one receiver on a fresh database under the wrk load; prints its figures and checks its rows
measure() {
    local name=$1 db=bench_$1 port pids hwm_kb rt0 rt1 pt0 pt1 c0 c1 wrk_rc bench_line kv
    fresh_db "$db"
    port=$(free_port)
    start_receiver "$name" "$db" "$port"
    fresh_events
    # every run starts from a clean checkpoint, so no run pays for the previous one's dirty pages
    psql_q CHECKPOINT >/dev/null
    c0=$(commits "$db")
    pids="$receiver_pid $(child_pids "$receiver_pid")"
    times >"$work/times0"
    # shellcheck disable=SC2086 # one word per pid
    rt0=$(cpu_ticks $pids)
    pt0=$(pg_ticks "$pgdata")
    step "wrk -t$wrk_threads -c$connections -d${duration}s --latency -s tests/load/stripe.lua ($name)"
    STRIPE_LUA_COUNT=$lua_count wrk -t"$wrk_threads" -c"$connections" -d"${duration}s" --latency -s "$here/stripe.lua" \
        "http://127.0.0.1:$port/webhooks/stripe" -- "$work/events.txt" "$wrk_threads" >"$work/wrk.$name.out" 2>&1 &
    wrk_pid=$!
    wait "$wrk_pid"
    wrk_rc=$?
    wrk_pid=
    times >"$work/times1"
    # shellcheck disable=SC2086 # one word per pid
    rt1=$(cpu_ticks $pids)
    pt1=$(pg_ticks "$pgdata")
    # shellcheck disable=SC2086 # one word per pid
    hwm_kb=$(hwm_kib $pids) || die "$name (a process of pids $pids) is gone before the end of the run"
    sed 's/^/    /' "$work/wrk.$name.out" | grep -v '^    BENCH'
    [ "$wrk_rc" -eq 0 ] || die "wrk exited with status $wrk_rc"
    bench_line=$(grep '^BENCH ' "$work/wrk.$name.out") || die "wrk printed no BENCH line"
    stop_receiver "$name"
    c1=$(commits "$db")
    rows=$(psql_q "SELECT count(*) FROM webhook_events WHERE provider = 'stripe'" "$db") || die "row count failed"
    drop_db "$db"

    local -A B
    for kv in ${bench_line#BENCH }; do B[${kv%%=*}]=${kv#*=}; done
    local ok2xx secs rps aps rss_mib ncommits batch rcpu pgcpu wrkcpu label
    ok2xx=$((B[requests] - B[non2xx]))
    secs=$(awk -v d="${B[duration_us]}" 'BEGIN {printf "%.3f", d / 1e6}')
    rps=$(awk -v r="${B[requests]}" -v s="$secs" 'BEGIN {printf "%.0f", r / s}')
    aps=$(awk -v r="$ok2xx" -v s="$secs" 'BEGIN {printf "%.0f", r / s}')
    rss_mib=$(awk -v k="$hwm_kb" 'BEGIN {printf "%.1f", k / 1024}')
    # each 2xx is one committed event; commits also count the readiness checks and the count queries
    ncommits=$((c1 - c0))
    batch=$(awk -v a="$ok2xx" -v c="$ncommits" 'BEGIN {if (c > 0) printf "%.1f", a / c; else print "n/a"}')
    rcpu=$(cpu_s $((rt1 - rt0)))
    pgcpu=$(cpu_s $((pt1 - pt0)))
    wrkcpu=$(awk -v a="$(children_cpu "$work/times0")" -v b="$(children_cpu "$work/times1")" 'BEGIN {printf "%.1f", b - a}')
    R[$name.aps]=$aps R[$name.p50]=$(ms "${B[p50_us]}") R[$name.p99]=$(ms "${B[p99_us]}") R[$name.rss]=$rss_mib
    R[$name.cpu]=$rcpu R[$name.pgcpu]=$pgcpu R[$name.wrkcpu]=$wrkcpu R[$name.secs]=$secs R[$name.ok2xx]=$ok2xx

    echo
    if [ "$name" = settled ]; then
        echo "settled intake benchmark: $(nproc) cores, wrk -t$wrk_threads -c$connections -d${duration}s on loopback, $body_size-byte events, PostgreSQL fsync=on synchronous_commit=on"
        echo "binary: $bin"
        label=settled
    else
        echo "node reference receiver: $(nproc) cores, the same wrk load, events and cluster settings, a fresh database"
        echo "ran: $node_desc"
        label=node
    fi
    printf '  %-28s %12s   %s\n' "figure" "value" "target"
    printf '  %-28s %12s\n' "requests/s (all statuses)" "$rps"
    if [ "$name" = settled ]; then
        printf '  %-28s %12s   >= 20000 (%s)\n' "accepts/s (2xx)" "$aps" "$(mark "$aps" '>=' 20000)"
    else
        printf '  %-28s %12s\n' "accepts/s (2xx)" "$aps"
    fi
    printf '  %-28s %12s\n' "latency p50 (ms)" "$(ms "${B[p50_us]}")"
    printf '  %-28s %12s\n' "latency p90 (ms)" "$(ms "${B[p90_us]}")"
    if [ "$name" = settled ]; then
        printf '  %-28s %12s   <= 20 (%s)\n' "latency p99 (ms)" "$(ms "${B[p99_us]}")" "$(mark "$(ms "${B[p99_us]}")" '<=' 20)"
    else
        printf '  %-28s %12s\n' "latency p99 (ms)" "$(ms "${B[p99_us]}")"
    fi
    printf '  %-28s %12s\n' "latency max (ms)" "$(ms "${B[max_us]}")"
    printf '  %-28s %12s\n' "2xx responses" "$ok2xx"
    printf '  %-28s %12s\n' "non-2xx responses" "${B[non2xx]}"
    printf '  %-28s %12s\n' "socket errors (c/r/w/t)" "${B[connect_err]}/${B[read_err]}/${B[write_err]}/${B[timeouts]}"
    printf '  %-28s %12s   >= 2xx responses\n' "rows in webhook_events" "$rows"
    printf '  %-28s %12s\n' "commits (xact_commit delta)" "$ncommits"
    printf '  %-28s %12s\n' "events per commit" "$batch"
    printf '  %-28s %12s   of %s core-seconds\n' "CPU s $label/PG/wrk" "$rcpu/$pgcpu/$wrkcpu" "$(core_s "$secs")"
    printf '  %-28s %12s\n' "CPU µs per accept $label/PG" "$(awk -v a="$rcpu" -v b="$pgcpu" -v n="$ok2xx" \
        'BEGIN {if (n > 0) printf "%.0f/%.0f", a * 1e6 / n, b * 1e6 / n; else print "n/a"}')"
    if [ "$name" = settled ]; then
        printf '  %-28s %12s   <= 40 (%s)\n' "settled peak RSS (MiB)" "$rss_mib" "$(mark "$rss_mib" '<=' 40)"
        printf '  %-28s %12s   0\n' "settled exit after SIGTERM" "$exit_rc"
    else
        printf '  %-28s %12s\n' "node peak RSS (MiB)" "$rss_mib"
        printf '  %-28s %12s   0\n' "node exit after SIGTERM" "$exit_rc"
    fi
    if [ "$lua_count" = 1 ]; then
        printf '  %-28s %12s\n' "2xx counted in Lua" "${B[lua_2xx]}"
        printf '  %-28s %12s\n' "non-2xx counted in Lua" "${B[lua_non2xx]}"
    fi
    if [ "${B[threads_exhausted]}" -gt 0 ]; then
        echo "  note: ${B[threads_exhausted]} wrk thread(s) ran out of events (${B[sent]} of ${B[loaded]} sent, ${B[fillers]} bad-signature fillers);"
        echo "        wrk still divides by the whole duration, so the rates above are understated: rerun with a larger --events."
    fi
    if grep -qiE 'error|fatal|assert' "$work/$name.log"; then
        echo "  $name logged errors (first lines):"
        grep -iE 'error|fatal|assert' "$work/$name.log" | head -n 5 | sed 's/^/    /'
    fi
    if [ "$rows" -lt "$ok2xx" ]; then
        echo "FAIL: $name: $((ok2xx - rows)) acknowledged event(s) missing: $rows rows < $ok2xx 2xx responses"
        status=1
    else
        echo "OK: every acknowledged event is stored ($name: $rows rows >= $ok2xx 2xx responses)"
    fi
    echo
}

# ceiling B: PostgreSQL alone committing the same inbox rows, B per transaction, through pgbench -M prepared with as
# many clients as settled has database connections, and at least 4 (2 loops x 2 connections, settled's default), so
# that running settled with fewer connections never lowers the ceiling it is compared with; sets C[B.rows_s] and
# prints the figures
declare -A C
ceiling_clients=$(( ${server_threads:-$(nproc)} * ${db_connections:-2} ))
[ "$ceiling_clients" -lt 4 ] && ceiling_clients=4
ceiling_body=$work/ceiling_body.txt
ceiling() {
    local b=$1 db=bench_ceiling_$1 table org script=$work/ceiling_$1.sql i out rc tps xacts rows pt0 pt1 pgcpu bcpu jobs
    fresh_db "$db"
    table=$(inbox_table "$db") || die "cannot look up the inbox table in $db"
    [ -n "$table" ] || die "no inbox table in $db"
    org=$(psql_q "WITH ins AS (INSERT INTO organisations (slug, name) VALUES ('default', 'default')
                               ON CONFLICT (slug) DO NOTHING RETURNING id)
                  SELECT id FROM ins UNION ALL SELECT id FROM organisations WHERE slug = 'default'" "$db") || die "organisation failed"
    psql_q "CREATE SEQUENCE ceiling_event_id" "$db" >/dev/null || die "CREATE SEQUENCE failed"
    {
        echo "-- the ceiling probe of tests/load/bench_intake.sh: one transaction of $b inbox rows"
        echo "INSERT INTO $table (organisation_id, provider, source, account, event_id, event_type, resource_id,"
        echo "                    body, headers, verified_at, received_at, correlation_id)"
        echo "SELECT :org::bigint, 'stripe', 'default', NULL, 'evt_' || t.tok, 'payment_intent.succeeded', 'pi_' || t.tok,"
        echo "       t.body, t.headers, now(), now(), 'pgbench-' || :client_id::text"
        echo "  FROM (SELECT lpad(nextval('ceiling_event_id')::text, 24, '0') AS tok, v.body, v.headers"
        printf '          FROM (VALUES '
        for ((i = 0; i < b; i++)); do
            [ "$i" -eq 0 ] || printf ',\n                       '
            printf '(:body::bytea, :headers::jsonb)'
        done
        echo ") AS v (body, headers)) AS t"
        echo "ON CONFLICT (provider, source, event_id) DO NOTHING;"
    } >"$script"
    jobs=$((ceiling_clients < $(nproc) ? ceiling_clients : $(nproc)))
    psql_q CHECKPOINT >/dev/null
    times >"$work/times0"
    pt0=$(pg_ticks "$pgdata")
    step "ceiling probe: pgbench -n -M prepared -c $ceiling_clients -j $jobs -T $duration, $b rows of $(wc -c <"$ceiling_body") bytes per transaction into $table"
    # the session settings of settled's intake connections (gateway/infra/db.c): no NOTIFY trigger, generic plans
    PGOPTIONS="-c settled.notify=off -c plan_cache_mode=force_generic_plan" \
        "$pgbench" -n -M prepared -c "$ceiling_clients" -j "$jobs" -T "$duration" -f "$script" \
        -D org="$org" -D body="$(cat "$ceiling_body")" \
        -D headers='{"content-type": "application/json; charset=utf-8", "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}' \
        -h 127.0.0.1 -p "$pg_port" -U settled "$db" >"$work/pgbench.$b.out" 2>&1 &
    pgbench_pid=$!
    wait "$pgbench_pid"
    rc=$?
    pgbench_pid=
    times >"$work/times1"
    pg_settle "$db"
    pt1=$(pg_ticks "$pgdata")
    out=$work/pgbench.$b.out
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$out" >&2
        die "pgbench failed (status $rc; script $script)"
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
    xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    if [ -z "$tps" ] || [ -z "$xacts" ]; then
        cat "$out" >&2
        die "cannot read pgbench's figures"
    fi
    rows=$(psql_q "SELECT count(*) FROM $table" "$db") || die "row count failed"
    drop_db "$db"
    pgcpu=$(cpu_s $((pt1 - pt0)))
    bcpu=$(awk -v a="$(children_cpu "$work/times0")" -v b="$(children_cpu "$work/times1")" 'BEGIN {printf "%.1f", b - a}')
    C[$b.rows_s]=$(awk -v t="$tps" -v b="$b" 'BEGIN {printf "%.0f", t * b}')
    grep -E '^(latency average|tps)' "$out" | sed 's/^/    /'
    printf '  %-28s %12s\n' "transactions/s" "$(awk -v t="$tps" 'BEGIN {printf "%.0f", t}')"
    printf '  %-28s %12s\n' "rows/s (B = $b)" "${C[$b.rows_s]}"
    printf '  %-28s %12s   = %s transactions x %s\n' "rows in $table" "$rows" "$xacts" "$b"
    printf '  %-28s %12s   of %s core-seconds\n' "CPU s PG/pgbench" "$pgcpu/$bcpu" "$(core_s "$duration")"
    printf '  %-28s %12s\n' "CPU µs per row PG" "$(awk -v a="$pgcpu" -v n="$rows" 'BEGIN {if (n > 0) printf "%.0f", a * 1e6 / n; else print "n/a"}')"
    [ "$rows" -eq $((xacts * b)) ] || note "rows differ from transactions x $b: an event id was reused or a transaction was cut at the end"
    echo
}

measure settled
[ "$reference" = node ] && measure node

if [ -n "$ceiling_batches" ]; then
    # the body of the first event, byte for byte (the probe sends it as a text parameter, which has no backslash)
    python3 - "$work/events.txt" "$ceiling_body" <<'PY' || die "cannot build the probe's body"
import re, sys
events, out = sys.argv[1], sys.argv[2]
tmpl = open(events + ".tmpl", encoding="utf-8", newline="").read()
t, _sig, tok, amount = open(events, encoding="ascii").readline().split()
body = tmpl.replace("{{TOKEN}}", tok).replace("{{T}}", t).replace("{{AMOUNT}}", amount)
assert "\\" not in body and "{{" not in body
open(out, "w", encoding="utf-8", newline="").write(body)
PY
    echo "PostgreSQL ceiling probe: the same cluster and settings, $ceiling_clients clients (settled's loops x database connections), ${duration} s per batch size"
    for b in $ceiling_batches; do ceiling "$b"; done
fi

# the summary: settled against the reference and the ceiling, in this run
best_b=
for b in $ceiling_batches; do
    if [ -z "$best_b" ] || [ "${C[$b.rows_s]}" -gt "${C[$best_b.rows_s]}" ]; then best_b=$b; fi
done
echo "summary ($(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end):"
printf '  %-27s %8s\n' "settled accepts/s" "${R[settled.aps]}"
if [ "$reference" = node ]; then
    if [ "${R[node.aps]}" -gt 0 ]; then
        x=$(awk -v s="${R[settled.aps]}" -v n="${R[node.aps]}" 'BEGIN {printf "%.1f", s / n}')
        printf '  %-27s %8s    settled/node  %sx  (target >= 4x: %s)\n' "node reference accepts/s" "${R[node.aps]}" "$x" "$(mark "$x" '>=' 4)"
    else
        printf '  %-27s %8s    settled/node  n/a  (the reference accepted nothing: see its figures above)\n' "node reference accepts/s" 0
    fi
else
    printf '  %-27s %8s    (%s)\n' "node reference accepts/s" "-" "$reference_note"
fi
if [ -n "$best_b" ]; then
    y=$(awk -v s="${R[settled.aps]}" -v c="${C[$best_b.rows_s]}" 'BEGIN {printf "%.0f", 100 * s / c}')
    printf '  %-27s %8s    settled/ceiling  %s%%  (target >= 50%%: %s)\n' "PostgreSQL ceiling rows/s" "${C[$best_b.rows_s]}" "$y" "$(mark "$y" '>=' 50)"
    ceil_all=
    for b in $ceiling_batches; do ceil_all+="${ceil_all:+, }B=$b: ${C[$b.rows_s]}"; done
    printf '  %-27s %8s    (the best of %s rows/s)\n' "" "" "$ceil_all"
else
    printf '  %-27s %8s    (--ceiling-batches none)\n' "PostgreSQL ceiling rows/s" "-"
fi
printf '  %-27s %8s    (target <= 20: %s)\n' "settled p99 (ms), -c$connections" "${R[settled.p99]}" "$(mark "${R[settled.p99]}" '<=' 20)"
printf '  %-27s %8s    (target <= 40: %s)\n' "settled peak RSS (MiB)" "${R[settled.rss]}" "$(mark "${R[settled.rss]}" '<=' 40)"
[ "$status" -eq 0 ] && echo "OK: every acknowledged event is stored, for every receiver measured"
exit "$status"
