#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench_intake.sh: measures durable webhook intake (signed Stripe deliveries committed to PostgreSQL)
# with wrk on loopback, and checks that every acknowledged event is in the table. It prints figures;
# it is not a test. Method and results: docs/performance.md.
#
#   tests/load/bench_intake.sh [--duration S] [--connections C] [--events N] [--wrk-threads T]
#                              [--server-threads N] [--db-connections N] [--db-max-batch N]
#                              [--body-size B (>= 2026)] [--lua-count] [--bin PATH] [--no-build] [--keep]
#
# It builds build/release/gateway/settled (Release) unless --bin or --no-build is given, starts a
# throwaway PostgreSQL 15 cluster (fsync=on, synchronous_commit=on) and settled on 127.0.0.1, generates
# N distinct signed payment_intent.succeeded events of 2,048 bytes (--body-size), drives them with
#   wrk -t2 -c64 -d<S>s --latency -s tests/load/stripe.lua
# (each event sent at most once), samples settled's peak RSS (VmHWM), stops settled (SIGTERM) and
# PostgreSQL, and prints the figures next to the targets.
# Exit status: 0 when every 2xx response's event is in webhook_events, 1 when any is missing,
# 2 on a setup failure. It stops only what it started, by PID (and its own cluster with pg_ctl).
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 2
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=deploy/lib.sh
. "$top/deploy/lib.sh"
die() {
    printf 'bench_intake: error: %s\n' "$*" >&2
    exit 2
}

duration=15
connections=64
wrk_threads=2
events=
server_threads=
db_connections=
db_max_batch=
lua_count=0
body_size=2048
bin=
build=yes
keep=no
usage() { sed -n '7,9p' "$here/bench_intake.sh" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    --wrk-threads) wrk_threads=$2; shift 2 ;;
    --server-threads) server_threads=$2; shift 2 ;;
    --db-connections) db_connections=$2; shift 2 ;;
    --db-max-batch) db_max_batch=$2; shift 2 ;;
    --lua-count) lua_count=1; shift ;;
    --body-size) body_size=$2; shift 2 ;;
    --bin) bin=$2; build=no; shift 2 ;;
    --no-build) build=no; shift ;;
    --keep) keep=yes; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for v in duration connections wrk_threads body_size; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer"
done
# The signatures are made before the run and settled rejects those older than 300 s (Stripe's tolerance).
[ "$duration" -le 240 ] || die "--duration is at most 240 s: the pre-signed events must stay within the 300 s tolerance"
# Enough events for 40,000 accepts/s (twice the target) for the whole run: wrk keeps counting time
# after a thread runs out, so running out would understate the rate (it is detected and reported).
[ -n "$events" ] || events=$((40000 * duration))
[[ $events =~ ^[1-9][0-9]*$ ]] || die "--events must be a positive integer"
for v in server_threads db_connections db_max_batch; do
    [ -z "${!v}" ] || [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer"
done

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v psql >/dev/null || die "psql is not installed (apt-get install postgresql-client-15)"
[ -x "$SETTLED_PGBIN/initdb" ] || die "PostgreSQL 15 server binaries not found in $SETTLED_PGBIN"

if [ -z "$bin" ]; then
    bin=$top/build/release/gateway/settled
    if [ "$build" = yes ]; then
        build_tree build/release -DCMAKE_BUILD_TYPE=Release -- --target settled >"${TMPDIR:-/tmp}/bench_intake_build.$$.log" 2>&1 || {
            tail -n 40 "${TMPDIR:-/tmp}/bench_intake_build.$$.log" >&2
            die "Release build failed (log: ${TMPDIR:-/tmp}/bench_intake_build.$$.log)"
        }
        rm -f "${TMPDIR:-/tmp}/bench_intake_build.$$.log"
    fi
fi
[ -x "$bin" ] || die "no settled binary at $bin (build it, or pass --bin PATH)"

# settled rejects unknown SETTLED_* keys and must see only what this script sets.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^SETTLED_')

work=$(mktemp -d "${TMPDIR:-/tmp}/bench_intake.XXXXXX") || die "mktemp failed"
chmod 755 "$work" # the service user must reach the cluster's directory inside it
pgdata=$work/pg
settled_pid=
wrk_pid=
pg_started=no

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$wrk_pid" ] && kill -0 "$wrk_pid" 2>/dev/null; then
        kill -TERM "$wrk_pid" 2>/dev/null
        wait "$wrk_pid" 2>/dev/null
    fi
    if [ -n "$settled_pid" ] && kill -0 "$settled_pid" 2>/dev/null; then
        kill -KILL "$settled_pid" 2>/dev/null
        wait "$settled_pid" 2>/dev/null
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

ensure_os_user
pg_port=$(free_port)
step "PostgreSQL 15 on 127.0.0.1:$pg_port (fsync=on, synchronous_commit=on) in $pgdata"
pg_init "$pgdata" "$pg_port" trust
pg_started=yes
pg_start "$pgdata" "$pg_port" -c fsync=on -c synchronous_commit=on -c full_page_writes=on
psql_q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U settled -d "${2:-settled_bench}" -c "$1"; }
psql_q "CREATE DATABASE settled_bench" postgres >/dev/null || die "CREATE DATABASE failed"
db_url="postgresql://settled@127.0.0.1:$pg_port/settled_bench"

step "settled migrate"
SETTLED_DATABASE_URL=$db_url "$bin" migrate >"$work/migrate.log" 2>&1 || {
    cat "$work/migrate.log" >&2
    die "settled migrate failed"
}

secret=whsec_bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
step "generating $events signed events of $body_size bytes"
python3 "$here/gen_stripe_events.py" --count "$events" --secret "$secret" --body-size "$body_size" --out "$work/events.txt" ||
    die "event generation failed"

port=$(free_port)
step "settled serve on 127.0.0.1:$port (threads: ${server_threads:-default}, db connections per loop: ${db_connections:-default}, max batch: ${db_max_batch:-default})"
(
    export SETTLED_LISTEN=127.0.0.1:$port SETTLED_DATABASE_URL=$db_url SETTLED_STRIPE_WEBHOOK_SECRETS=$secret \
        SETTLED_ACCESS_LOG=false SETTLED_LOG_LEVEL=warn
    [ -n "$server_threads" ] && export SETTLED_THREADS=$server_threads
    [ -n "$db_connections" ] && export SETTLED_DB_CONNECTIONS=$db_connections
    [ -n "$db_max_batch" ] && export SETTLED_DB_MAX_BATCH=$db_max_batch
    exec "$bin" serve
) >"$work/settled.log" 2>&1 &
settled_pid=$!
ready=no
for _ in $(seq 1 300); do
    kill -0 "$settled_pid" 2>/dev/null || break
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [ "$ready" != yes ]; then
    tail -n 30 "$work/settled.log" >&2
    die "settled did not become ready on port $port"
fi

commits() { psql_q "SELECT xact_commit FROM pg_stat_database WHERE datname = 'settled_bench'"; }
# cpu_ticks PID...: user + system clock ticks used so far by the given processes (those still alive)
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
# pg_pids: the postmaster of our cluster and its children
pg_pids() {
    local pm
    pm=$(head -n 1 "$pgdata/postmaster.pid")
    echo "$pm"
    grep -l "^PPid:[[:space:]]*$pm\$" /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3
}
hz=$(getconf CLK_TCK)
# children_cpu FILE: seconds of CPU used by this shell's waited-for children, from `times >FILE` (which
# must run in this shell itself: a subshell's children start from zero)
children_cpu() {
    sed -n 2p "$1" | awk '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] }
        printf "%.2f", s }'
}
times >"$work/times0"
commits_before=$(commits)
settled_ticks0=$(cpu_ticks "$settled_pid")
# shellcheck disable=SC2046 # one word per pid
pg_ticks0=$(cpu_ticks $(pg_pids))
step "wrk -t$wrk_threads -c$connections -d${duration}s --latency -s tests/load/stripe.lua"
STRIPE_LUA_COUNT=$lua_count wrk -t"$wrk_threads" -c"$connections" -d"${duration}s" --latency -s "$here/stripe.lua" \
    "http://127.0.0.1:$port/webhooks/stripe" -- "$work/events.txt" "$wrk_threads" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
wait "$wrk_pid"
wrk_rc=$?
wrk_pid=
times >"$work/times1"
wrk_cpu=$(awk -v a="$(children_cpu "$work/times0")" -v b="$(children_cpu "$work/times1")" 'BEGIN {printf "%.1f", b - a}')
sed 's/^/    /' "$work/wrk.out" | grep -v '^    BENCH'
[ "$wrk_rc" -eq 0 ] || die "wrk exited with status $wrk_rc"
bench_line=$(grep '^BENCH ' "$work/wrk.out") || die "wrk printed no BENCH line"

settled_ticks1=$(cpu_ticks "$settled_pid")
# shellcheck disable=SC2046 # one word per pid
pg_ticks1=$(cpu_ticks $(pg_pids))
hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$settled_pid/status" 2>/dev/null)
[ -n "$hwm_kb" ] || die "settled (pid $settled_pid) is gone before the end of the run"

step "SIGTERM settled (pid $settled_pid)"
kill -TERM "$settled_pid"
exit_rc=
for _ in $(seq 1 300); do
    if ! kill -0 "$settled_pid" 2>/dev/null; then
        wait "$settled_pid"
        exit_rc=$?
        break
    fi
    sleep 0.1
done
if [ -z "$exit_rc" ]; then
    note "settled did not exit within 30 s of SIGTERM: killed"
    kill -KILL "$settled_pid"
    wait "$settled_pid" 2>/dev/null
    exit_rc=killed
fi
settled_pid=
commits_after=$(commits)
rows=$(psql_q "SELECT count(*) FROM webhook_events WHERE provider = 'stripe'") || die "row count failed"

declare -A B
for kv in ${bench_line#BENCH }; do B[${kv%%=*}]=${kv#*=}; done
ok2xx=$((B[requests] - B[non2xx]))
secs=$(awk -v d="${B[duration_us]}" 'BEGIN {printf "%.3f", d / 1e6}')
rps=$(awk -v r="${B[requests]}" -v s="$secs" 'BEGIN {printf "%.0f", r / s}')
aps=$(awk -v r="$ok2xx" -v s="$secs" 'BEGIN {printf "%.0f", r / s}')
ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}'; }
rss_mib=$(awk -v k="$hwm_kb" 'BEGIN {printf "%.1f", k / 1024}')
# each 2xx is one committed event; commits also count the few transactions of migrate/readiness checks
ncommits=$((commits_after - commits_before))
batch=$(awk -v a="$ok2xx" -v c="$ncommits" 'BEGIN {if (c > 0) printf "%.1f", a / c; else print "n/a"}')
cpu_s() { awk -v t="$1" -v hz="$hz" 'BEGIN {printf "%.1f", t / hz}'; }
settled_cpu=$(cpu_s $((settled_ticks1 - settled_ticks0)))
pg_cpu=$(cpu_s $((pg_ticks1 - pg_ticks0)))
mark() { if awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {exit !((op == ">=") ? v >= t : v <= t)}'; then echo met; else echo MISSED; fi; }

echo
echo "settled intake benchmark: $(nproc) cores, wrk -t$wrk_threads -c$connections -d${duration}s on loopback, $body_size-byte events, PostgreSQL fsync=on synchronous_commit=on"
echo "binary: $bin"
printf '  %-28s %12s   %s\n' "figure" "value" "target"
printf '  %-28s %12s\n' "requests/s (all statuses)" "$rps"
printf '  %-28s %12s   >= 20000 (%s)\n' "accepts/s (2xx)" "$aps" "$(mark "$aps" '>=' 20000)"
printf '  %-28s %12s\n' "latency p50 (ms)" "$(ms "${B[p50_us]}")"
printf '  %-28s %12s\n' "latency p90 (ms)" "$(ms "${B[p90_us]}")"
printf '  %-28s %12s   <= 20 (%s)\n' "latency p99 (ms)" "$(ms "${B[p99_us]}")" "$(mark "$(ms "${B[p99_us]}")" '<=' 20)"
printf '  %-28s %12s\n' "latency max (ms)" "$(ms "${B[max_us]}")"
printf '  %-28s %12s\n' "2xx responses" "$ok2xx"
printf '  %-28s %12s\n' "non-2xx responses" "${B[non2xx]}"
printf '  %-28s %12s\n' "socket errors (c/r/w/t)" "${B[connect_err]}/${B[read_err]}/${B[write_err]}/${B[timeouts]}"
printf '  %-28s %12s   >= 2xx responses\n' "rows in webhook_events" "$rows"
printf '  %-28s %12s\n' "commits (xact_commit delta)" "$ncommits"
printf '  %-28s %12s\n' "events per commit" "$batch"
printf '  %-28s %12s   of %s core-seconds\n' "CPU s settled/PG/wrk" "$settled_cpu/$pg_cpu/$wrk_cpu" \
    "$(awk -v s="$secs" -v n="$(nproc)" 'BEGIN {printf "%.0f", s * n}')"
printf '  %-28s %12s   <= 40 (%s)\n' "settled peak RSS (MiB)" "$rss_mib" "$(mark "$rss_mib" '<=' 40)"
printf '  %-28s %12s   0\n' "settled exit after SIGTERM" "$exit_rc"
if [ "$lua_count" = 1 ]; then
    printf '  %-28s %12s\n' "2xx counted in Lua" "${B[lua_2xx]}"
    printf '  %-28s %12s\n' "non-2xx counted in Lua" "${B[lua_non2xx]}"
fi
if [ "${B[threads_exhausted]}" -gt 0 ]; then
    echo "  note: ${B[threads_exhausted]} wrk thread(s) ran out of events (${B[sent]} of ${B[loaded]} sent, ${B[fillers]} bad-signature fillers);"
    echo "        wrk still divides by the whole duration, so the rates above are understated: rerun with a larger --events."
fi
if grep -qiE 'error|fatal|assert' "$work/settled.log"; then
    echo "  settled logged errors (first lines):"
    grep -iE 'error|fatal|assert' "$work/settled.log" | head -n 5 | sed 's/^/    /'
fi

status=0
if [ "$rows" -lt "$ok2xx" ]; then
    echo "FAIL: $((ok2xx - rows)) acknowledged event(s) missing: $rows rows < $ok2xx 2xx responses"
    status=1
fi
[ "$status" -eq 0 ] && echo "OK: every acknowledged event is stored ($rows rows >= $ok2xx 2xx responses)"
exit "$status"
