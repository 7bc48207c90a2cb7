# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# tests/load/benchlib.sh: what the load benchmarks (bench_intake.sh, bench_portal.sh) share: CPU and memory
# accounting from /proc, the Node references' packages, stopping a server they started, figure formatting.
# Sourced after deploy/lib.sh, never run.

# die MESSAGE: the benchmark's setup failed (exit status 2)
die() {
    printf '%s: error: %s\n' "$(basename "$0" .sh)" "$*" >&2
    exit 2
}

# child_pids PID: the direct children of PID (node:cluster's workers, the postmaster's backends)
child_pids() {
    grep -l "^PPid:[[:space:]]*$1\$" /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3
}

# cpu_ticks PID...: user + system clock ticks used so far by the given processes (those still alive)
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# pg_ticks DATA: clock ticks used so far by the cluster in DATA: the postmaster, its live children, and (cutime +
# cstime of the postmaster) the children it has reaped, so backends that end during a run are counted too
pg_ticks() {
    local pm t
    pm=$(head -n 1 "$1/postmaster.pid")
    t=$(sed 's/^.*) //' "/proc/$pm/stat" | awk '{print $12 + $13 + $14 + $15}')
    # shellcheck disable=SC2046 # one word per pid
    echo $((t + $(cpu_ticks $(child_pids "$pm"))))
}

# hwm_kib PID...: the sum of the processes' peak resident set (VmHWM), in KiB; fails when one is gone
hwm_kib() {
    local p kv total=0
    for p in "$@"; do
        kv=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null)
        [ -n "$kv" ] || return 1
        total=$((total + kv))
    done
    echo "$total"
}

# children_cpu FILE: seconds of CPU used by this shell's waited-for children, from `times >FILE` (which
# must run in this shell itself: a subshell's children start from zero)
children_cpu() {
    sed -n 2p "$1" | awk '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] }
        printf "%.2f", s }'
}

bench_hz=$(getconf CLK_TCK)
# cpu_s TICKS: clock ticks as seconds
cpu_s() { awk -v t="$1" -v hz="$bench_hz" 'BEGIN {printf "%.1f", t / hz}'; }
# ms MICROSECONDS: as milliseconds
ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}'; }
# mark VALUE >=|<= TARGET: met or MISSED
mark() { if awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {exit !((op == ">=") ? v >= t : v <= t)}'; then echo met; else echo MISSED; fi; }
# core_s SECONDS: the core-seconds of the machine in that many seconds
core_s() { awk -v s="$1" -v n="$(nproc)" 'BEGIN {printf "%.0f", s * n}'; }

# node_packages NODEDIR LOG: installs the Node references' packages into NODEDIR/node_modules with `npm ci` (the exact
# tree of package-lock.json), again only when package.json or the lock file changes. Returns 1 when npm ci fails.
node_packages() {
    local nodedir=$1 log=$2 stamp want
    stamp=$nodedir/node_modules/.bench_intake-installed
    want=$(cat "$nodedir/package.json" "$nodedir/package-lock.json" | sha256sum | cut -d' ' -f1)
    [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
    step "installing the Node references' packages: npm ci in tests/load/node (as pinned in package-lock.json)"
    (cd "$nodedir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        return 1
    }
    echo "$want" >"$stamp"
}

# node_ver NODEDIR PACKAGE: the installed version of a package of the Node references
node_ver() { node -p "require('$1/node_modules/$2/package.json').version"; }

# stop_server NAME PID: SIGTERM, then up to 30 s for it to exit (then SIGKILL, with its children); sets exit_rc to
# its exit status, or "killed"
stop_server() {
    step "SIGTERM $1 (pid $2)"
    kill -TERM "$2"
    exit_rc=
    for _ in $(seq 1 300); do
        if ! kill -0 "$2" 2>/dev/null; then
            wait "$2"
            exit_rc=$?
            break
        fi
        sleep 0.1
    done
    if [ -z "$exit_rc" ]; then
        note "$1 did not exit within 30 s of SIGTERM: killed"
        # shellcheck disable=SC2046 # one word per pid
        kill -KILL $(child_pids "$2") "$2" 2>/dev/null
        wait "$2" 2>/dev/null
        exit_rc=killed
    fi
}

# need_node WHAT: stops the script (its die) unless node >= 20 and npm are installed; WHAT says what needs them
need_node() {
    local major
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then die "$1 needs node (>= 20) and npm"; fi
    major=$(node -p 'process.versions.node.split(".")[0]') || die "node does not run"
    [ "$major" -ge 20 ] || die "$1 needs Node.js >= 20 (this is $(node --version))"
}

# release_binary NAME: sets bin to build/release/gateway/settled when it is empty, building it first (Release) when
# build is yes; stops the script when there is no binary. NAME names the log of a failed build.
# shellcheck disable=SC2154 # bin, build and top are the calling script's
release_binary() {
    local log=${TMPDIR:-/tmp}/$1_build.$$.log
    if [ -z "$bin" ]; then
        bin=$top/build/release/gateway/settled
        if [ "$build" = yes ]; then
            build_tree build/release -DCMAKE_BUILD_TYPE=Release -- --target settled >"$log" 2>&1 || {
                tail -n 40 "$log" >&2
                die "Release build failed (log: $log)"
            }
            rm -f "$log"
        fi
    fi
    [ -x "$bin" ] || die "no settled binary at $bin (build it, or pass --bin PATH)"
}

# bench_workdir NAME: unsets every SETTLED_* variable (settled rejects unknown ones and must see only what the script
# sets) and sets work to a new temporary folder that the service user can reach (the cluster lives inside it)
bench_workdir() {
    local v
    while read -r v; do unset "$v"; done < <(compgen -e | grep '^SETTLED_')
    work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || die "mktemp failed"
    chmod 755 "$work"
}

# the defaults of the options bench_option takes (a script sets its own duration)
connections=64
wrk_threads=2
server_threads=
node_workers=0
node_pool=16
bin=
build=yes
keep=no

# bench_option ARGS...: takes the options every benchmark has from the front of ARGS into the calling script's
# variables (--duration, --connections, --wrk-threads, --server-threads, --node-workers, --node-pool, --bin,
# --no-build, --keep) and sets shifted to the number of words used; returns 1 for any other option
# shellcheck disable=SC2034 # the variables are the calling script's
bench_option() {
    shifted=2
    case "$1" in
    --duration) duration=$2 ;;
    --connections) connections=$2 ;;
    --wrk-threads) wrk_threads=$2 ;;
    --server-threads) server_threads=$2 ;;
    --node-workers) node_workers=$2 ;;
    --node-pool) node_pool=$2 ;;
    --bin) bin=$2; build=no ;;
    --no-build) build=no; shifted=1 ;;
    --keep) keep=yes; shifted=1 ;;
    *) return 1 ;;
    esac
}
