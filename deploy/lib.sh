# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# deploy/lib.sh: what deploy/run.sh and deploy/test.sh share, so that "the two commands" install,
# build and start PostgreSQL and Redis in exactly the same way. Sourced, never run.
#
# Everything here works on a fresh minimal Debian 12 as root, as a user with sudo, or (when every
# package is already there) as a plain user. It only ever stops processes it started itself.

# The Debian packages the build, the tests and the demo need (the README lists the same).
SETTLED_PACKAGES=(
    build-essential cmake pkg-config
    libh2o-evloop-dev libpq-dev libjansson-dev libssl-dev libhiredis-dev libcurl4-openssl-dev libjwt-dev
    libcmocka-dev
    dpkg-dev # tests/package/test_deb.sh: cpack's .deb (dpkg-shlibdeps derives its Depends)
    postgresql-15 redis-server pgbouncer
    python3 python3-yaml curl openssl ca-certificates clang-format wrk git # python3-yaml: tests/integration/openapi_check.py reads docs/openapi.yaml
)
SETTLED_PGBIN=/usr/lib/postgresql/15/bin
# The OS user that owns the PostgreSQL and Redis processes when the scripts run as root: initdb refuses
# to run as root, and nothing a demo starts needs root.
SETTLED_OS_USER=settled

_settled_t0=$(date +%s)

# step MESSAGE: one progress line, with the seconds since the script started.
step() {
    printf '[%4ss] ==> %s\n' "$(($(date +%s) - _settled_t0))" "$*"
}

# note MESSAGE: an indented detail under the current step.
note() {
    printf '         %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

is_root() {
    [ "$(id -u)" -eq 0 ]
}

# as_root CMD...: runs CMD as root: directly when we are root, else through sudo (non-interactive when
# there is no terminal to ask for a password on).
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [ -t 0 ]; then
            sudo "$@"
        else
            sudo -n "$@"
        fi
    else
        die "'$*' needs root, and this user is not root and has no sudo. Re-run as root (or install sudo)."
    fi
}

# as_service CMD...: runs CMD as the user that owns the local PostgreSQL/Redis: $SETTLED_OS_USER when
# we are root (from /, since it may not enter our folder; paths given must be absolute), else ourselves.
as_service() {
    if is_root; then
        (cd / && runuser -u "$SETTLED_OS_USER" -- "$@")
    else
        "$@"
    fi
}

# missing_packages: prints the packages of SETTLED_PACKAGES that dpkg does not list as installed.
missing_packages() {
    local p status
    for p in "${SETTLED_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || printf '%s\n' "$p"
    done
}

# ensure_packages: installs whatever is missing with apt-get (one `apt-get update` first). Needs root
# or sudo only when something is missing.
ensure_packages() {
    step "checking Debian packages"
    command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: these scripts need Debian 12 (or a derivative)"
    local missing
    missing=$(missing_packages | tr '\n' ' ')
    missing=${missing% }
    if [ -z "$missing" ]; then
        note "all ${#SETTLED_PACKAGES[@]} packages are installed"
        return 0
    fi
    note "missing: $missing"
    if is_root; then
        note "installing them with apt-get (running as root)"
    elif command -v sudo >/dev/null 2>&1; then
        note "installing Debian packages needs root: running apt-get through sudo"
    else
        die "installing the missing Debian packages needs root, and this user has no sudo. Run this script as root, or as root: apt-get install $missing"
    fi
    export DEBIAN_FRONTEND=noninteractive
    step "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
        die "apt-get update failed (root is needed to install: $missing)"
    step "apt-get install $missing"
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing ||
        die "apt-get install failed (root is needed to install: $missing)"
    missing=$(missing_packages | tr '\n' ' ')
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
}

# ensure_os_user: creates the system user $SETTLED_OS_USER when we are root and it does not exist.
ensure_os_user() {
    is_root || return 0
    id -u "$SETTLED_OS_USER" >/dev/null 2>&1 && return 0
    step "creating system user '$SETTLED_OS_USER' (initdb refuses to run as root)"
    useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin "$SETTLED_OS_USER" ||
        die "useradd $SETTLED_OS_USER failed"
}

# service_can_use DIR: true when the service user can create files in DIR (it must be able to reach
# it through every parent directory).
service_can_use() {
    as_service test -w "$1" -a -x "$1" 2>/dev/null
}

# own_dir DIR: creates DIR, owned by the service user, mode 700.
own_dir() {
    mkdir -p "$1"
    if is_root; then
        chown "$SETTLED_OS_USER:" "$1"
    fi
    chmod 700 "$1"
}

# build_tree DIR CMAKE_ARGS... [-- BUILD_ARGS...]: configures and builds the project into DIR.
build_tree() {
    local dir=$1
    shift
    local cfg=() bld=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        cfg+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    bld=("$@")
    step "configuring $dir (${cfg[*]})"
    cmake -S . -B "$dir" "${cfg[@]}" || die "cmake configure failed"
    step "building $dir"
    cmake --build "$dir" -j "$(nproc)" "${bld[@]}" || die "build failed"
}

# free_port: prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# port_in_use PORT: true when something listens on 127.0.0.1:PORT.
port_in_use() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

# pg_init DATA PORT AUTH [PWFILE]: initialises a PostgreSQL 15 cluster in DATA (if it has none yet),
# listening on 127.0.0.1:PORT only, no Unix socket, superuser "settled". AUTH is "trust" or
# "scram-sha-256" (then PWFILE holds the superuser's password and must be readable by the service user).
pg_init() {
    local data=$1 port=$2 auth=$3 pwfile=${4:-}
    if [ -f "$data/PG_VERSION" ]; then
        return 0
    fi
    own_dir "$data"
    local args=(-D "$data" -U settled -E UTF8 --locale=C.UTF-8 --auth-local=reject --auth-host="$auth")
    [ -n "$pwfile" ] && args+=(--pwfile="$pwfile")
    as_service "$SETTLED_PGBIN/initdb" "${args[@]}" >"$data.initdb.log" 2>&1 || {
        cat "$data.initdb.log" >&2
        die "initdb failed for $data"
    }
    cat >>"$data/postgresql.conf" <<EOF

# settled: a private cluster on loopback only (deploy/lib.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 200
EOF
}

# pg_running DATA: true when the cluster in DATA runs.
pg_running() {
    as_service "$SETTLED_PGBIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

# pg_port DATA: the port of the running cluster in DATA (line 4 of postmaster.pid).
pg_port() {
    sed -n 4p "$1/postmaster.pid"
}

# pg_start DATA PORT [EXTRA POSTGRES OPTIONS]: starts the cluster in DATA on PORT and waits until it
# accepts connections. Its log is DATA/server.log.
pg_start() {
    local data=$1 port=$2
    shift 2
    if port_in_use "$port"; then
        die "port $port on 127.0.0.1 is taken by another process; pick another port"
    fi
    as_service "$SETTLED_PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 -o "-p $port $*" start >/dev/null || {
        tail -n 30 "$data/server.log" >&2 2>/dev/null || true
        die "PostgreSQL did not start (log: $data/server.log)"
    }
}

# pg_stop DATA: stops the cluster in DATA (fast shutdown) if it runs.
pg_stop() {
    if pg_running "$1"; then
        as_service "$SETTLED_PGBIN/pg_ctl" -D "$1" -m fast -w -t 60 stop >/dev/null || true
    fi
}

# redis_pid DIR: prints the pid of the redis-server started with its pidfile in DIR, if it still runs.
redis_pid() {
    local f=$1/redis.pid pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
    redis-server*) printf '%s\n' "$pid" ;;
    *) return 1 ;;
    esac
}

# redis_start DIR PORT PERSIST: starts redis-server on 127.0.0.1:PORT with DIR for its pid, log and
# (when PERSIST is "yes") snapshot files, and waits until it answers PING.
redis_start() {
    local dir=$1 port=$2 persist=$3
    if port_in_use "$port"; then
        die "port $port on 127.0.0.1 is taken by another process; pick another port"
    fi
    own_dir "$dir"
    local save=(--save '')
    [ "$persist" = yes ] && save=(--save 60 100)
    as_service redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --daemonize yes \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "${save[@]}" --appendonly no ||
        die "redis-server did not start (log: $dir/redis.log)"
    for _ in $(seq 1 100); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
    die "redis-server on port $port does not answer PING (log: $dir/redis.log)"
}

# redis_stop DIR: stops the redis-server whose pidfile is in DIR (and that we therefore started).
redis_stop() {
    local pid
    pid=$(redis_pid "$1") || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
