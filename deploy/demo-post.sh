#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# deploy/demo-post.sh: signs a webhook payload the way its provider would, with the demo secrets that
# deploy/run.sh generated, and posts it to the running demo, so the intake can be tried by hand.
#
#   deploy/demo-post.sh PROVIDER FILE [SOURCE]   PROVIDER is stripe, xero or gocardless; FILE is sent
#                                                byte for byte; SOURCE posts to /webhooks/PROVIDER/SOURCE
#                                                with the secrets of that source
#   deploy/demo-post.sh --psql [PSQL ARGS...]    psql on the demo database, e.g.
#                                                -c 'SELECT provider, event_id, status FROM webhook_events'
#   deploy/demo-post.sh --settled COMMAND ...    a settled command on the demo database (the Release binary of
#                                                deploy/run.sh), e.g. notify --organisation demo --customer 1
#                                                --kind invoice_due
#
# Secrets come from the environment (SETTLED_STRIPE_WEBHOOK_SECRETS, SETTLED_XERO_WEBHOOK_KEY,
# SETTLED_GOCARDLESS_WEBHOOK_SECRETS, with a __SOURCE suffix for a named source; the first of a comma
# list signs), else from .settled/demo.env. The target is http://$SETTLED_LISTEN (default
# 127.0.0.1:8080). Secrets are passed to the signer through the environment, never on a command line.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
state=$(realpath -m "${SETTLED_DEV_DIR:-$top/.settled}")
demo_env=$state/demo.env

usage() {
    sed -n '5,10s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

# demo_database_url: the demo's database (SETTLED_DATABASE_URL, else the one deploy/run.sh wrote down).
demo_database_url() {
    if [ -n "${SETTLED_DATABASE_URL:-}" ]; then
        printf '%s\n' "$SETTLED_DATABASE_URL"
        return
    fi
    [ -r "$state/database_url" ] || {
        echo "error: no SETTLED_DATABASE_URL and no readable $state/database_url (has deploy/run.sh run?)" >&2
        exit 1
    }
    cat "$state/database_url"
}

if [ "${1:-}" = "--psql" ]; then
    shift
    url=$(demo_database_url) || exit 1
    exec psql -X "$url" "$@"
fi
if [ "${1:-}" = "--settled" ]; then
    shift
    url=$(demo_database_url) || exit 1
    bin=$top/build/release/gateway/settled
    [ -x "$bin" ] || { echo "error: $bin is not built (has deploy/run.sh run?)" >&2; exit 1; }
    if [ -z "${SETTLED_REDIS_URL:-}" ] && [ -r "$state/redis_url" ]; then
        SETTLED_REDIS_URL=$(cat "$state/redis_url")
        export SETTLED_REDIS_URL
    fi
    SETTLED_DATABASE_URL=$url exec "$bin" "$@"
fi

if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
provider=$1
file=$2
source=${3:-}
case "$provider" in
stripe) key=SETTLED_STRIPE_WEBHOOK_SECRETS ;;
xero) key=SETTLED_XERO_WEBHOOK_KEY ;;
gocardless) key=SETTLED_GOCARDLESS_WEBHOOK_SECRETS ;;
*) usage ;;
esac
[ -r "$file" ] || {
    echo "error: cannot read $file" >&2
    exit 1
}
path=/webhooks/$provider
if [ -n "$source" ]; then
    [[ "$source" =~ ^[A-Za-z0-9_-]+$ ]] || {
        echo "error: a source name is letters, digits, '_' and '-'" >&2
        exit 1
    }
    key=${key}__$(printf '%s' "$source" | tr '[:lower:]-' '[:upper:]_')
    path=$path/$source
fi

secret=${!key:-}
if [ -z "$secret" ] && [ -r "$demo_env" ]; then
    secret=$(sed -n "s/^$key=//p" "$demo_env" | head -n 1)
fi
if [ -z "$secret" ]; then
    echo "error: no secret for $provider${source:+/$source}: set $key or run deploy/run.sh first" >&2
    [ -e "$demo_env" ] && [ ! -r "$demo_env" ] && echo "       ($demo_env exists but is not readable by this user)" >&2
    exit 1
fi

# Prints "Header-Name: value" for the file, computed as the provider's SDKs do (providers/PROVIDERS.md).
header=$(SIGN_SECRET=${secret%%,*} python3 - "$provider" "$file" <<'PY'
import base64, hashlib, hmac, os, sys, time
provider, path = sys.argv[1], sys.argv[2]
key = os.environ["SIGN_SECRET"].encode()
body = open(path, "rb").read()
if provider == "stripe":
    t = int(time.time())
    mac = hmac.new(key, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    print(f"Stripe-Signature: t={t},v1={mac}")
elif provider == "xero":
    print("x-xero-signature: " + base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode())
else:
    print("Webhook-Signature: " + hmac.new(key, body, hashlib.sha256).hexdigest())
PY
)

url=http://${SETTLED_LISTEN:-127.0.0.1:8080}$path
echo "POST $url ($(wc -c <"$file") bytes, ${header%%:*} signed)" >&2
exec curl -sS -i -w '\n' -X POST -H "Content-Type: application/json" -H "$header" --data-binary "@$file" "$url"
