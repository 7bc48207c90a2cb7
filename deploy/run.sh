#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# deploy/run.sh: the first of the README's two commands. On a fresh Debian 12 it installs what is
# missing, builds a Release binary, starts a private PostgreSQL 15 and Redis under .settled/ (unless
# SETTLED_DATABASE_URL / SETTLED_REDIS_URL point elsewhere), migrates, and serves a demo on
# 127.0.0.1:8080 with generated webhook secrets.
#
#   deploy/run.sh          install, build, start, migrate, serve (Ctrl-C stops the server)
#   deploy/run.sh --stop   stop the PostgreSQL and Redis that earlier runs left running in .settled/
#
# Settings of this script (removed from the environment before settled starts):
#   SETTLED_DEV_DIR         state folder (default: .settled in the repository; gitignored)
#   SETTLED_DEV_PG_PORT     port of the local PostgreSQL (default 55433)
#   SETTLED_DEV_REDIS_PORT  port of the local Redis (default 56380)
#   SETTLED_DEV_XERO_PORT   port of the offline mock Xero API (default 57080); it is started (demo mode)
#                           unless SETTLED_XERO_API_BASE points at a Xero of your own
#   SETTLED_DEV_STRIPE_PORT, SETTLED_DEV_GOCARDLESS_PORT  ports of the mock Stripe and GoCardless APIs
#                           (57081, 57082), started unless SETTLED_STRIPE_API_BASE / _GOCARDLESS_API_BASE are set
#   SETTLED_DEV_SMTP_PORT   SMTP port of the demo's mail sink (tests/mock/smtp_sink.py, default 57025; its control
#                           API on the next port), started unless SETTLED_SMTP_URL is set; mail lands in <state>/mail
# Any SETTLED_* setting of settled itself (docs/configuration.md) is passed through; SETTLED_LISTEN
# defaults to 127.0.0.1:8080 and SETTLED_ORGANISATION to "demo".
set -euo pipefail

cd "$(dirname "$0")/.."
top=$(pwd)
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

state=$(realpath -m "${SETTLED_DEV_DIR:-$top/.settled}")
pg_port=${SETTLED_DEV_PG_PORT:-55433}
redis_port=${SETTLED_DEV_REDIS_PORT:-56380}
xero_port=${SETTLED_DEV_XERO_PORT:-57080}
stripe_port=${SETTLED_DEV_STRIPE_PORT:-57081}
gocardless_port=${SETTLED_DEV_GOCARDLESS_PORT:-57082}
smtp_port=${SETTLED_DEV_SMTP_PORT:-57025}
unset SETTLED_DEV_DIR SETTLED_DEV_PG_PORT SETTLED_DEV_REDIS_PORT SETTLED_DEV_XERO_PORT SETTLED_DEV_STRIPE_PORT \
    SETTLED_DEV_GOCARDLESS_PORT SETTLED_DEV_SMTP_PORT

# The offline mock provider APIs (tests/mock/<name>_api.py --demo), kept running across runs like PostgreSQL.
mock_pid() { # NAME (xero, stripe, gocardless; smtp: the mail sink)
    local pid script=$1_api.py
    [ "$1" = smtp ] && script=smtp_sink.py
    pid=$(cat "$state/$1-mock.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null && grep -q "$script" "/proc/$pid/cmdline" 2>/dev/null && printf '%s\n' "$pid"
}

# Starts mock NAME on PORT unless it runs; sets fresh_mock=yes when it was started now.
start_mock() { # NAME PORT
    local name=$1 port=$2 pid
    fresh_mock=no
    if pid=$(mock_pid "$name"); then
        step "reusing the running mock $name API (pid $pid, 127.0.0.1:$port)"
        return 0
    fi
    port_in_use "$port" && die "port $port is taken; set SETTLED_DEV_${name^^}_PORT to move the mock $name API"
    step "starting the mock $name API (demo mode, 127.0.0.1:$port)"
    nohup python3 "$top/tests/mock/${name}_api.py" --port "$port" --demo -q >"$state/$name-mock.log" 2>&1 &
    echo $! >"$state/$name-mock.pid"
    for _ in $(seq 50); do
        curl -fs "http://127.0.0.1:$port/_mock/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$port/_mock/health" >/dev/null 2>&1 ||
        die "the mock $name API did not start (see $state/$name-mock.log)"
    fresh_mock=yes
}

# Where PostgreSQL's and Redis's files live. Normally $state; when we run as root and the service user
# cannot reach $state (a parent folder such as /root is private), a folder under /var/lib instead.
data_root() {
    if is_root && id -u "$SETTLED_OS_USER" >/dev/null 2>&1 && ! as_service test -x "$state" 2>/dev/null; then
        local alt
        alt=/var/lib/settled-dev/$(printf '%s' "$state" | sha256sum | cut -c1-12)
        mkdir -p "$alt"
        chmod 711 /var/lib/settled-dev "$alt"
        printf '%s\n' "$alt"
    else
        printf '%s\n' "$state"
    fi
}

if [ "${1:-}" = "--stop" ]; then
    [ -d "$state" ] || exit 0
    root=$(data_root)
    step "stopping the local PostgreSQL and Redis in $root"
    pg_stop "$root/pg"
    redis_stop "$root/redis"
    for name in xero stripe gocardless smtp; do
        if pid=$(mock_pid "$name"); then
            step "stopping the mock $name API (pid $pid)"
            kill "$pid"
        fi
    done
    exit 0
elif [ $# -gt 0 ]; then
    die "usage: deploy/run.sh [--stop]"
fi

ensure_packages
build_tree build/release -DCMAKE_BUILD_TYPE=Release -- --target settled
bin=$top/build/release/gateway/settled
[ -x "$bin" ] || die "the build produced no $bin"

mkdir -p "$state"
chmod 711 "$state" # the service user may pass through; every file in it stays private
local_services=no
if [ -z "${SETTLED_DATABASE_URL:-}" ] || [ -z "${SETTLED_REDIS_URL:-}" ]; then
    local_services=yes
    ensure_os_user
fi
root=$(data_root)

# Demo secrets: generated once, kept in $state/demo.env (mode 600), reused by later runs and by
# deploy/demo-post.sh. A value already set in the environment wins over the file.
demo_env=$state/demo.env
demo_value() { # KEY GENERATED-VALUE: appends KEY to demo.env unless it is there
    (umask 077 && touch "$demo_env")
    grep -q "^$1=" "$demo_env" || printf '%s=%s\n' "$1" "$2" >>"$demo_env"
}
demo_get() {
    sed -n "s/^$1=//p" "$demo_env" | head -n 1
}
if [ -f "$root/pg/PG_VERSION" ] && ! grep -q '^SETTLED_DEV_PG_PASSWORD=' "$demo_env" 2>/dev/null; then
    die "$demo_env lost the password of the existing local PostgreSQL; run 'deploy/run.sh --stop' and remove $state to start over"
fi
[ -f "$demo_env" ] || step "generating demo secrets into $demo_env"
demo_value SETTLED_STRIPE_WEBHOOK_SECRETS "whsec_demo_$(openssl rand -hex 16)"
demo_value SETTLED_XERO_WEBHOOK_KEY "$(openssl rand -hex 32)"
demo_value SETTLED_GOCARDLESS_WEBHOOK_SECRETS "$(openssl rand -hex 24)"
demo_value SETTLED_DEV_PG_PASSWORD "$(openssl rand -hex 16)"
demo_value SETTLED_SECRET_KEY "$(openssl rand -base64 32)"
demo_value SETTLED_JWT_SECRET "$(openssl rand -base64 32)"
# the demo portal users' passwords: the demo's own, printed below (never a real secret)
demo_value SETTLED_DEV_ADMIN_PASSWORD "demo-admin-$(openssl rand -hex 4)"
demo_value SETTLED_DEV_CLIENT_PASSWORD "demo-client-$(openssl rand -hex 4)"
chmod 600 "$demo_env"
for key in SETTLED_STRIPE_WEBHOOK_SECRETS SETTLED_XERO_WEBHOOK_KEY SETTLED_GOCARDLESS_WEBHOOK_SECRETS SETTLED_SECRET_KEY \
    SETTLED_JWT_SECRET; do
    if [ -z "${!key:-}" ]; then
        export "$key=$(demo_get "$key")"
    fi
done
pg_password=$(demo_get SETTLED_DEV_PG_PASSWORD)

if [ "$local_services" = yes ] && [ "$root" != "$state" ]; then
    note "user '$SETTLED_OS_USER' cannot reach $state (a parent folder is private): keeping the database files in $root"
fi

if [ -z "${SETTLED_DATABASE_URL:-}" ]; then
    pgdata=$root/pg
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        step "creating a PostgreSQL 15 cluster in $pgdata (127.0.0.1:$pg_port)"
        pwfile=$(mktemp)
        printf '%s\n' "$pg_password" >"$pwfile"
        is_root && chown "$SETTLED_OS_USER:" "$pwfile"
        pg_init "$pgdata" "$pg_port" scram-sha-256 "$pwfile"
        rm -f "$pwfile"
    fi
    if pg_running "$pgdata"; then
        pg_port=$(pg_port "$pgdata")
        step "reusing the running PostgreSQL in $pgdata (127.0.0.1:$pg_port)"
    else
        step "starting PostgreSQL in $pgdata (127.0.0.1:$pg_port)"
        pg_start "$pgdata" "$pg_port"
    fi
    if [ -z "$(PGPASSWORD=$pg_password psql -X -At -h 127.0.0.1 -p "$pg_port" -U settled -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = 'settled'")" ]; then
        step "creating database 'settled'"
        PGPASSWORD=$pg_password psql -X -q -h 127.0.0.1 -p "$pg_port" -U settled -d postgres \
            -v ON_ERROR_STOP=1 -c 'CREATE DATABASE settled' || die "could not create database 'settled'"
    fi
    export SETTLED_DATABASE_URL="postgresql://settled:$pg_password@127.0.0.1:$pg_port/settled"
    (umask 077 && printf '%s\n' "$SETTLED_DATABASE_URL" >"$state/database_url")
    db_shown="postgresql://settled:***@127.0.0.1:$pg_port/settled (password in $demo_env)"
else
    db_shown="from SETTLED_DATABASE_URL"
fi

if [ -z "${SETTLED_REDIS_URL:-}" ]; then
    rdir=$root/redis
    if pid=$(redis_pid "$rdir"); then
        redis_port=$(cat "$rdir/port" 2>/dev/null || printf '%s' "$redis_port")
        step "reusing the running Redis (pid $pid, 127.0.0.1:$redis_port)"
    else
        step "starting Redis in $rdir (127.0.0.1:$redis_port)"
        redis_start "$rdir" "$redis_port" yes
        printf '%s\n' "$redis_port" >"$rdir/port"
    fi
    export SETTLED_REDIS_URL="redis://127.0.0.1:$redis_port"
fi
# for deploy/demo-post.sh --settled, whose commands share the quotas and deny lists
(umask 077 && printf '%s\n' "$SETTLED_REDIS_URL" >"$state/redis_url")

step "migrating the database"
"$bin" migrate || die "settled migrate failed"

export SETTLED_ORGANISATION=${SETTLED_ORGANISATION:-demo}

# The demo's portal users: an admin of the demo organisation, and a client of its demo customer "Acme Parts Co."
# (bk@krave.co, the contact that fixtures/xero/webhook_contact_update.json names, so that the contact matches the
# customer by email once that webhook is posted). Made once: a later run finds them and changes nothing.
demo_admin=admin@$SETTLED_ORGANISATION.example
demo_client=client@$SETTLED_ORGANISATION.example
demo_sql() { psql -X -qAt -v ON_ERROR_STOP=1 -v org="$SETTLED_ORGANISATION" -d "$SETTLED_DATABASE_URL" "$@"; }
demo_customer=$(demo_sql <<'SQL'
INSERT INTO organisations (slug, name) VALUES (:'org', :'org') ON CONFLICT (slug) DO NOTHING;
INSERT INTO customers (organisation_id, name, email)
SELECT o.id, 'Acme Parts Co.', 'bk@krave.co' FROM organisations o
WHERE o.slug = :'org'
  AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.organisation_id = o.id AND c.email_normalised = 'bk@krave.co');
SELECT min(c.id) FROM customers c JOIN organisations o ON o.id = c.organisation_id
WHERE o.slug = :'org' AND c.email_normalised = 'bk@krave.co';
SQL
) || die "seeding the demo customer failed"
demo_user() { # EMAIL PASSWORD-KEY ROLE [--customer ID]: adds the user unless the organisation has it
    local email=$1 key=$2
    shift 2
    # (the query on standard input: psql interpolates :'variables' there, not in -c)
    [ -n "$(printf '%s\n' "SELECT 1 FROM users u JOIN organisations o ON o.id = u.organisation_id
        WHERE o.slug = :'org' AND u.email_normalised = norm_email(:'email');" | demo_sql -v email="$email")" ] &&
        return 0
    step "adding the demo portal user $email"
    printf '%s\n' "$(demo_get "$key")" | "$bin" user add --organisation "$SETTLED_ORGANISATION" --email "$email" \
        --role "$@" --actor demo >/dev/null || die "settled user add $email failed"
}
demo_user "$demo_admin" SETTLED_DEV_ADMIN_PASSWORD admin
demo_user "$demo_client" SETTLED_DEV_CLIENT_PASSWORD client --customer "$demo_customer"

# Xero, offline: the project's mock plays Xero's identity, login and API hosts, seeded with a demo tenant,
# so webhooks posted with demo-post.sh are fetched, mirrored and matched like real ones.
xero_shown="from SETTLED_XERO_API_BASE"
if [ -z "${SETTLED_XERO_API_BASE:-}" ]; then
    start_mock xero "$xero_port"
    export SETTLED_XERO_API_BASE=http://127.0.0.1:$xero_port SETTLED_XERO_IDENTITY_BASE=http://127.0.0.1:$xero_port \
        SETTLED_XERO_LOGIN_BASE=http://127.0.0.1:$xero_port SETTLED_XERO_CLIENT_ID=${SETTLED_XERO_CLIENT_ID:-demo-client} \
        SETTLED_XERO_CLIENT_SECRET=${SETTLED_XERO_CLIENT_SECRET:-demo-secret}
    # a freshly started mock knows only its seed refresh token: (re)connect with it
    if [ "$fresh_mock" = yes ]; then
        step "connecting the mock's demo Xero tenant"
        "$bin" connect xero --refresh-token demo-refresh-token || die "settled connect xero failed"
    fi
    xero_shown="mock Xero API on http://127.0.0.1:$xero_port (demo tenant 'Demo Company (NZ)')"
fi

export SETTLED_LISTEN=${SETTLED_LISTEN:-127.0.0.1:8080}
listen_port=${SETTLED_LISTEN##*:}

# Stripe and GoCardless, offline: the mocks post their signed webhooks to this server and answer its
# refetches, so deploy/demo-pay.sh can move demo invoices to paid end to end.
stripe_shown="from SETTLED_STRIPE_API_BASE"
if [ -z "${SETTLED_STRIPE_API_BASE:-}" ]; then
    start_mock stripe "$stripe_port"
    export SETTLED_STRIPE_API_BASE=http://127.0.0.1:$stripe_port SETTLED_STRIPE_SECRET_KEY=${SETTLED_STRIPE_SECRET_KEY:-sk_test_demo}
    printf '{"url":"http://%s/webhooks/stripe","secret":"%s"}' "$SETTLED_LISTEN" "${SETTLED_STRIPE_WEBHOOK_SECRETS%%,*}" |
        curl -fs -X PUT -H 'Content-Type: application/json' --data-binary @- \
            "http://127.0.0.1:$stripe_port/_mock/webhook" >/dev/null || die "configuring the mock Stripe's webhook failed"
    stripe_shown="mock Stripe API on http://127.0.0.1:$stripe_port"
fi
gocardless_shown="from SETTLED_GOCARDLESS_API_BASE"
if [ -z "${SETTLED_GOCARDLESS_API_BASE:-}" ]; then
    start_mock gocardless "$gocardless_port"
    export SETTLED_GOCARDLESS_API_BASE=http://127.0.0.1:$gocardless_port \
        SETTLED_GOCARDLESS_ACCESS_TOKEN=${SETTLED_GOCARDLESS_ACCESS_TOKEN:-gc_sandbox_demo_token}
    printf '{"url":"http://%s/webhooks/gocardless","secret":"%s"}' "$SETTLED_LISTEN" "${SETTLED_GOCARDLESS_WEBHOOK_SECRETS%%,*}" |
        curl -fs -X PUT -H 'Content-Type: application/json' --data-binary @- \
            "http://127.0.0.1:$gocardless_port/_mock/webhook" >/dev/null || die "configuring the mock GoCardless's webhook failed"
    gocardless_shown="mock GoCardless API on http://127.0.0.1:$gocardless_port"
fi
# E-mail, offline: settled's own SMTP sink receives the notification e-mails into a Maildir (docs/operations.md,
# "E-mail: reading the demo's mail, dead notifications").
mail_shown="through SETTLED_SMTP_URL"
if [ -z "${SETTLED_SMTP_URL:-}" ]; then
    smtp_ctl=$((smtp_port + 1))
    if pid=$(mock_pid smtp); then
        step "reusing the running mail sink (pid $pid, smtp://127.0.0.1:$smtp_port)"
    else
        port_in_use "$smtp_port" && die "port $smtp_port is taken; set SETTLED_DEV_SMTP_PORT to move the mail sink"
        port_in_use "$smtp_ctl" && die "port $smtp_ctl is taken; set SETTLED_DEV_SMTP_PORT to move the mail sink"
        step "starting the mail sink (smtp://127.0.0.1:$smtp_port, Maildir $state/mail)"
        nohup python3 "$top/tests/mock/smtp_sink.py" --port "$smtp_ctl" --smtp-port "$smtp_port" \
            --maildir "$state/mail" -q >"$state/smtp-mock.log" 2>&1 &
        echo $! >"$state/smtp-mock.pid"
        for _ in $(seq 50); do
            curl -fs "http://127.0.0.1:$smtp_ctl/_mock/info" >/dev/null 2>&1 && break
            sleep 0.1
        done
        curl -fs "http://127.0.0.1:$smtp_ctl/_mock/info" >/dev/null 2>&1 ||
            die "the mail sink did not start (see $state/smtp-mock.log)"
    fi
    export SETTLED_SMTP_URL=smtp://127.0.0.1:$smtp_port SETTLED_SMTP_STARTTLS=off \
        SETTLED_SMTP_FROM=${SETTLED_SMTP_FROM:-billing@demo.settled.invalid} \
        SETTLED_PORTAL_URL=${SETTLED_PORTAL_URL:-http://$SETTLED_LISTEN}
    mail_shown="mail sink smtp://127.0.0.1:$smtp_port; read the mail in $state/mail/new or at http://127.0.0.1:$smtp_ctl/_mock/messages"
fi
printf 'SETTLED_DEV_XERO_PORT=%s\nSETTLED_DEV_STRIPE_PORT=%s\nSETTLED_DEV_GOCARDLESS_PORT=%s\n' "$xero_port" "$stripe_port" "$gocardless_port" >"$state/mock_ports"
if port_in_use "$listen_port"; then
    die "something already listens on port $listen_port (another settled?); stop it or set SETTLED_LISTEN=127.0.0.1:PORT"
fi

cat <<EOF

  settled demo: organisation '$SETTLED_ORGANISATION', listening on http://$SETTLED_LISTEN
  database:  $db_shown
  redis:     $SETTLED_REDIS_URL
  xero:      $xero_shown
  stripe:    $stripe_shown
  gocardless: $gocardless_shown
  e-mail:    $mail_shown

  Demo webhook secrets (generated once, kept in $demo_env):
    SETTLED_STRIPE_WEBHOOK_SECRETS=$SETTLED_STRIPE_WEBHOOK_SECRETS
    SETTLED_XERO_WEBHOOK_KEY=$SETTLED_XERO_WEBHOOK_KEY
    SETTLED_GOCARDLESS_WEBHOOK_SECRETS=$SETTLED_GOCARDLESS_WEBHOOK_SECRETS

  Demo portal users of '$SETTLED_ORGANISATION' (the demo's own passwords, kept in $demo_env):
    admin:  $demo_admin / $(demo_get SETTLED_DEV_ADMIN_PASSWORD)
    client: $demo_client / $(demo_get SETTLED_DEV_CLIENT_PASSWORD)  (customer $demo_customer, Acme Parts Co.)
  Sign in as the client and read its invoices (docs/api.md):
    curl -s -X POST http://$SETTLED_LISTEN/v1/auth/login -H 'Content-Type: application/json' \\
      -d '{"email":"$demo_client","password":"$(demo_get SETTLED_DEV_CLIENT_PASSWORD)"}'
    curl -s -H "Authorization: Bearer <access_token>" http://$SETTLED_LISTEN/v1/invoices

  In another terminal, post signed fixtures:
    deploy/demo-post.sh stripe fixtures/stripe/event_payment_intent_succeeded.json
    deploy/demo-post.sh xero fixtures/xero/webhook_contact_update.json
    deploy/demo-post.sh gocardless fixtures/gocardless/webhook_payment_confirmed.json
    curl -s http://$SETTLED_LISTEN/readyz
  and look at the inbox, and at what the workers made of the Xero event:
    deploy/demo-post.sh --psql -c 'SELECT provider, event_id, event_type, status FROM webhook_events'
    deploy/demo-post.sh --psql -c 'SELECT name, email, customer_id FROM xero_contacts'
    deploy/demo-post.sh --psql -c 'SELECT invoice_number, status, total, amount_due FROM xero_invoices'
    deploy/demo-post.sh --psql -c 'SELECT external_name, reasons FROM matching_queue'

  A card payment and a direct debit, end to end through the mocks (webhooks, refetch, ledger, state):
    deploy/demo-pay.sh
    deploy/demo-post.sh --psql -c 'SELECT invoice_id, currency, outstanding_minor, state FROM invoice_payment_state'

  Notification e-mails (docs/collections.md, "E-mail and notifications"): send the demo client a reminder
    deploy/demo-post.sh --settled notify --organisation $SETTLED_ORGANISATION --customer $demo_customer --kind invoice_due
  and read it in the mail sink (above).

  Ctrl-C stops the server; 'deploy/run.sh --stop' also stops the local PostgreSQL and Redis.

EOF
step "exec settled serve"
exec "$bin" serve
