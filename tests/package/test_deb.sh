#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_deb.sh: builds the .deb of this build folder with CPack and checks it as an operator would get it: its
# Depends are the runtime packages of every library the binary links (and no -dev package), it holds the binary,
# settled(8), the two systemd units (which systemd-analyze accepts, with the hardening docs/install.md promises),
# the settings file as a conffile and the docs; and the binary unpacked into a throwaway root (dpkg -x: nothing is
# installed on this system) runs: --version prints the project's version, check-config accepts the shipped
# settings file, and, when SETTLED_TEST_PG_URL is set, migrate applies its embedded schema to a new database.
#
# Environment (tests/CMakeLists.txt): SETTLED_BUILD_DIR, SETTLED_SOURCE_DIR, SETTLED_VERSION; optionally
# SETTLED_TEST_PG_URL and SETTLED_TEST_TMP (the folder to work in).
set -euo pipefail

fails=0
ok() { printf 'ok - %s\n' "$*"; }
not_ok() {
    printf 'not ok - %s\n' "$*"
    fails=$((fails + 1))
}
check() { # check WHAT CMD...: ok when CMD succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}
die() {
    printf 'not ok - %s\n1 failed\n' "$*"
    exit 1
}

: "${SETTLED_BUILD_DIR:?}" "${SETTLED_SOURCE_DIR:?}" "${SETTLED_VERSION:?}"
for tool in cpack dpkg-deb dpkg-shlibdeps readelf ldd; do
    command -v "$tool" >/dev/null || die "$tool is missing (deploy/lib.sh installs dpkg-dev, binutils, cmake)"
done

tmp=$(mktemp -d "${SETTLED_TEST_TMP:-${TMPDIR:-/tmp}}/test-deb.XXXXXX")
dbname=
cleanup() {
    if [ -n "$dbname" ]; then
        psql -q -X -d "$SETTLED_TEST_PG_URL" -c "DROP DATABASE IF EXISTS \"$dbname\"" >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- build it ----
if ! cpack -G DEB --config "$SETTLED_BUILD_DIR/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1; then
    cat "$tmp/cpack.log"
    die "cpack -G DEB failed"
fi
debs=("$tmp"/out/settled_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || die "cpack made no settled_*.deb (log: $(tail -3 "$tmp/cpack.log"))"
deb=${debs[0]}
arch=$(dpkg --print-architecture)
check "file name settled_${SETTLED_VERSION}_${arch}.deb" [ "$(basename "$deb")" = "settled_${SETTLED_VERSION}_${arch}.deb" ]
check "Package: settled" [ "$(dpkg-deb -f "$deb" Package)" = settled ]
check "Version: $SETTLED_VERSION" [ "$(dpkg-deb -f "$deb" Version)" = "$SETTLED_VERSION" ]

# ---- Depends ----
depends=$(dpkg-deb -f "$deb" Depends)
printf '# Depends: %s\n' "$depends"
dep_names=$(printf '%s\n' "$depends" | tr ',' '\n' | sed 's/(.*//; s/|.*//; s/ //g' | sort -u)
has_dep() { printf '%s\n' "$dep_names" | grep -qx "$1"; }
for pkg in libc6 libpq5 libcurl4 libjansson4 libssl3 libhiredis0.14 libh2o-evloop0.13 adduser; do
    check "Depends names $pkg" has_dep "$pkg"
done
check "Depends names no -dev package" bash -c '! printf "%s\n" "$1" | grep -q -- "-dev$"' _ "$dep_names"
# every shared library the binary links is provided by a package the .deb depends on
bin=$SETTLED_BUILD_DIR/gateway/settled
while read -r lib; do
    path=$(ldd "$bin" | awk -v l="$lib" '$1 == l { print $3 }')
    [ -n "$path" ] || {
        not_ok "NEEDED $lib: not found by ldd"
        continue
    }
    owner=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null || dpkg -S "$path" 2>/dev/null || true)
    owner=${owner%%:*}
    if [ -z "$owner" ]; then
        not_ok "NEEDED $lib ($path): no Debian package owns it"
    elif has_dep "$owner"; then
        ok "NEEDED $lib is in Depends ($owner)"
    else
        not_ok "NEEDED $lib comes from $owner, which Depends does not name"
    fi
done < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')

# ---- contents ----
dpkg-deb -c "$deb" | awk '{ print $NF }' | sed 's|^\./|/|' >"$tmp/files"
for f in /usr/bin/settled /usr/share/man/man8/settled.8.gz /lib/systemd/system/settled.service \
    /lib/systemd/system/settled-work.service /etc/settled/settled.env /usr/lib/sysusers.d/settled.conf \
    /usr/share/doc/settled/install.md /usr/share/doc/settled/operations.md /usr/share/doc/settled/configuration.md \
    /usr/share/doc/settled/settled.conf.sample /usr/share/doc/settled/README.md; do
    check "the package holds $f" grep -qx "$f" "$tmp/files"
done
check "the package installs nothing under /usr/local" bash -c '! grep -q "^/usr/local" "$1"' _ "$tmp/files"
env_mode=$(dpkg-deb -c "$deb" | awk '$NF == "./etc/settled/settled.env" { print $1 }')
check "/etc/settled/settled.env is -rw-r----- (it will hold secrets), is $env_mode" [ "$env_mode" = "-rw-r-----" ]
dpkg-deb -e "$deb" "$tmp/control"
check "conffiles lists /etc/settled/settled.env" grep -qx /etc/settled/settled.env "$tmp/control/conffiles"
for script in postinst postrm; do
    check "$script is executable and parses" bash -c '[ -x "$1" ] && sh -n "$1"' _ "$tmp/control/$script"
done
check "postinst creates the user settled (systemd-sysusers, else adduser)" \
    bash -c 'grep -q "systemd-sysusers settled.conf" "$1" && grep -q "adduser --system" "$1"' _ "$tmp/control/postinst"

# ---- unpacked into a throwaway root ----
root=$tmp/root
dpkg -x "$deb" "$root"
version=$("$root/usr/bin/settled" --version 2>&1) || true
check "settled --version from the package prints 'settled $SETTLED_VERSION' (got '$version')" \
    [ "$version" = "settled $SETTLED_VERSION" ]
clean_env=(env -i PATH=/usr/bin:/bin HOME="$tmp" ASAN_OPTIONS="${ASAN_OPTIONS:-}" LSAN_OPTIONS="${LSAN_OPTIONS:-}")
if out=$("${clean_env[@]}" "$root/usr/bin/settled" check-config --config "$root/etc/settled/settled.env" 2>&1); then
    check "check-config accepts the shipped settled.env" grep -qx '# configuration is valid' <<<"$out"
else
    not_ok "check-config --config etc/settled/settled.env exited non-zero: $out"
fi
# the file is the units' EnvironmentFile, and settled reads it with --config: a bad line in it is refused, by key
printf 'SETTLED_THREADS=lots\n' >"$tmp/bad.env"
out=$("${clean_env[@]}" "$root/usr/bin/settled" check-config --config "$tmp/bad.env" 2>&1) && rc=0 || rc=$?
check "check-config refuses a bad settings file with exit 1 naming the key (exit $rc: $out)" \
    bash -c '[ "$1" = 1 ] && grep -q "^settled: .*SETTLED_THREADS: must" <<<"$2"' _ "$rc" "$out"
if [ -n "${SETTLED_TEST_PG_URL:-}" ] && command -v psql >/dev/null; then
    dbname=pkg_$$_$RANDOM
    psql -q -X -d "$SETTLED_TEST_PG_URL" -c "CREATE DATABASE \"$dbname\"" >/dev/null
    db_url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' \
        "$SETTLED_TEST_PG_URL" "$dbname")
    if out=$("${clean_env[@]}" SETTLED_DATABASE_URL="$db_url" "$root/usr/bin/settled" migrate 2>&1); then
        found=$(psql -X -At -d "$db_url" -c "SELECT to_regclass('webhook_events') IS NOT NULL")
        check "settled migrate from the package created webhook_events (no schema files beside it)" [ "$found" = t ]
    else
        not_ok "settled migrate from the package failed: $out"
    fi
else
    printf '# skipped migrate: SETTLED_TEST_PG_URL or psql missing\n'
fi

# ---- the man page ----
man_src=$(gzip -dc "$root/usr/share/man/man8/settled.8.gz")
check "settled.8 is section 8 of version $SETTLED_VERSION" grep -q "^\.TH SETTLED 8 .*settled $SETTLED_VERSION" <<<"$man_src"
for cmd in $("$root/usr/bin/settled" help --commands); do
    check "settled.8 has a section for $cmd" grep -qxF ".SS ${cmd//-/\\-}" <<<"$man_src"
done
check "settled.8 shows connect's own help" grep -q 'settled connect xero \\-\\-refresh\\-token' <<<"$man_src"
if command -v man >/dev/null; then
    warnings=$(MANWIDTH=100 man --warnings -l "$root/usr/share/man/man8/settled.8.gz" 2>&1 >/dev/null || true)
    check "man renders settled.8 without warnings ($warnings)" [ -z "$warnings" ]
fi

# ---- the units ----
for unit in settled settled-work; do
    f=$root/lib/systemd/system/$unit.service
    want_exec="ExecStart=/usr/bin/settled $([ $unit = settled ] && echo serve || echo work)"
    for line in "$want_exec" Type=notify User=settled Group=settled EnvironmentFile=/etc/settled/settled.env \
        ProtectSystem=strict NoNewPrivileges=yes PrivateTmp=yes Restart=on-failure WantedBy=multi-user.target; do
        check "$unit.service has $line" grep -qx "$line" "$f"
    done
    if command -v systemd-analyze >/dev/null; then
        # every complaint counts, except that this system has no /usr/bin/settled (nothing is installed here)
        complaints=$(systemd-analyze verify --man=no "$f" 2>&1 |
            grep -v 'Command /usr/bin/settled is not executable' || true)
        check "systemd-analyze verify accepts $unit.service${complaints:+: $complaints}" [ -z "$complaints" ]
    fi
done
check "sysusers.d declares the user settled" grep -q '^u settled ' "$root/usr/lib/sysusers.d/settled.conf"

if [ "$fails" -eq 0 ]; then
    echo "all passed"
else
    echo "$fails failed"
fi
[ "$fails" -eq 0 ]
