#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# deploy/test.sh: the second of the README's two commands, and what CI runs (.ci/run). On a fresh
# Debian 12 it installs what is missing, checks formatting, builds with ASan/UBSan, compiles every target
# in Release with warnings as errors (so the optimiser's warnings cannot creep in), starts a throwaway
# PostgreSQL 15 and Redis on free loopback ports, and runs every test (unit, integration, fault) with
# ctest. Exits with ctest's status. Everything it starts lives in one temporary folder that is removed
# on exit, together with the servers it started.
#
# The tests find their servers through the environment this script exports:
#   SETTLED_TEST_PG_URL     postgresql://settled@127.0.0.1:PORT/postgres (superuser, trust auth)
#   SETTLED_TEST_REDIS_URL  redis://127.0.0.1:PORT
#   SETTLED_TEST_PGBIN      /usr/lib/postgresql/15/bin (for tests that start their own cluster)
#   SETTLED_TEST_RUN_AS     the OS user that must own such a cluster ("settled" as root, else empty)
#   SETTLED_TEST_TMP        the throwaway folder (removed on exit)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

ensure_packages

step "checking formatting of gateway/ connectors/ tests/ (clang-format $(clang-format --version | sed 's/.*version \([0-9.]*\).*/\1/'))"
mapfile -t sources < <(find gateway connectors tests -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)
unformatted=()
for f in "${sources[@]}"; do
    clang-format --style=file "$f" | cmp -s - "$f" || unformatted+=("$f")
done
if [ ${#unformatted[@]} -gt 0 ]; then
    printf '         not formatted: %s\n' "${unformatted[@]}"
    note "fix with: clang-format -i ${unformatted[*]}"
    die "formatting check failed: ${#unformatted[@]} of ${#sources[@]} files differ from .clang-format"
fi
note "${#sources[@]} files match .clang-format"

build_tree build/asan -DSETTLED_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
# Every target, tests included, in Release: the optimiser runs analyses (-Wdangling-pointer and others) that the
# Debug build does not. The folder is deploy/run.sh's, so a later build there (and this one) is incremental.
build_tree build/release -DCMAKE_BUILD_TYPE=Release -DSETTLED_SANITIZE=OFF -DSETTLED_WERROR=ON

ensure_os_user
tmp=$(mktemp -d "${TMPDIR:-/tmp}/settled-test.XXXXXX")
chmod 755 "$tmp" # the service user must reach the clusters inside
pgdata=
rdir=

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    step "cleaning up $tmp"
    # Our own cluster and Redis, then any cluster a test started inside $tmp and left running.
    [ -n "$pgdata" ] && pg_stop "$pgdata"
    [ -n "$rdir" ] && redis_stop "$rdir"
    local pidfile
    while IFS= read -r pidfile; do
        pg_stop "$(dirname "$pidfile")"
    done < <(find "$tmp" -name postmaster.pid 2>/dev/null)
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pgdata=$tmp/pg
pg_port=$(free_port)
step "starting a throwaway PostgreSQL 15 on 127.0.0.1:$pg_port"
pg_init "$pgdata" "$pg_port" trust
# fsync off: the cluster is thrown away, and only crashes of settled (not of the OS) are tested.
pg_start "$pgdata" "$pg_port" -c fsync=off

rdir=$tmp/redis
redis_port=$(free_port)
step "starting a throwaway Redis on 127.0.0.1:$redis_port"
redis_start "$rdir" "$redis_port" no

# Nothing of the caller's own settled configuration may leak into the tests.
while IFS= read -r var; do
    unset "$var"
done < <(compgen -e | grep '^SETTLED_' || true)
export SETTLED_TEST_PG_URL="postgresql://settled@127.0.0.1:$pg_port/postgres"
export SETTLED_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export SETTLED_TEST_PGBIN=$SETTLED_PGBIN
export SETTLED_TEST_RUN_AS=
is_root && SETTLED_TEST_RUN_AS=$SETTLED_OS_USER
export SETTLED_TEST_TMP=$tmp
export ASAN_OPTIONS=halt_on_error=1:print_stacktrace=1:detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Leaks inside system libraries that the project cannot free may be listed there, one justified line each.
if [ -f tests/lsan.supp ]; then
    export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
fi
export PYTHONDONTWRITEBYTECODE=1

step "running the tests (ctest, build/asan)"
rc=0
ctest --test-dir build/asan --output-on-failure --no-tests=error -j2 || rc=$?
if [ "$rc" -eq 0 ]; then
    step "all tests passed"
else
    step "tests FAILED (ctest exit $rc)"
fi
exit "$rc"
