#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# deploy/demo-pay.sh: a card payment and a direct debit, end to end, against the running demo of
# deploy/run.sh and its mock provider APIs. It adds two new invoices to the mock Xero's demo tenant (the
# mirror does not have them yet), pays the first with a Stripe PaymentIntent and the second with a
# GoCardless payment on the demo mandate, each naming its invoice in its metadata (xero_invoice_id),
# and waits until settled shows both invoices paid in invoice_payment_state:
#
#   mock Stripe/GoCardless --signed webhook--> settled --refetch--> mock --> ledger --> the invoice,
#   which settled fetches from the mock Xero first because the payment named it before it was mirrored.
#
#   deploy/demo-pay.sh [AMOUNT]    AMOUNT in pence (default 12000, i.e. 120.00 GBP)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
state=$(realpath -m "${SETTLED_DEV_DIR:-$top/.settled}")
amount=${1:-12000}
case $amount in '' | *[!0-9]*) echo "usage: deploy/demo-pay.sh [AMOUNT in pence]" >&2; exit 2 ;; esac
[ "$amount" -ge 100 ] || { echo "error: AMOUNT must be at least 100 (1.00 GBP)" >&2; exit 2; }

[ -r "$state/mock_ports" ] || { echo "error: no $state/mock_ports: start the demo with deploy/run.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$state/mock_ports"
xero=http://127.0.0.1:$SETTLED_DEV_XERO_PORT
stripe=http://127.0.0.1:$SETTLED_DEV_STRIPE_PORT
gc=http://127.0.0.1:$SETTLED_DEV_GOCARDLESS_PORT
psql_demo() { "$top/deploy/demo-post.sh" --psql -qAt -c "$1"; }
ctl() { # METHOD URL [JSON]
    curl -fsS -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$2" >/dev/null ||
        { echo "error: $1 $2 failed (is the demo running?)" >&2; exit 1; }
}

tenant=$(psql_demo "SELECT tenant_id FROM xero_tenants ORDER BY created_at LIMIT 1")
[ -n "$tenant" ] || { echo "error: no connected Xero tenant (is deploy/run.sh running with the mock Xero?)" >&2; exit 1; }
major=$((amount / 100)).$(printf '%02d' $((amount % 100)))
now_ms=$(($(date +%s) * 1000))
# The invoices belong to the demo client's customer (Acme Parts Co., whose Xero contact the matching linked), so that
# the demo client sees them in the portal (GET /v1/invoices); a random contact when that contact is not mirrored yet.
contact=$(psql_demo "SELECT x.contact_id FROM xero_contacts x JOIN customers c ON c.id = x.customer_id
                     WHERE c.email_normalised = 'bk@krave.co' ORDER BY x.contact_id LIMIT 1")
[ -n "$contact" ] || contact=$(cat /proc/sys/kernel/random/uuid)
new_invoice() { # ID NUMBER
    printf '{"Type":"ACCREC","InvoiceID":"%s","InvoiceNumber":"%s","Contact":{"ContactID":"%s","Name":"Acme Parts Co."},"Status":"AUTHORISED","LineAmountTypes":"NoTax","DateString":"%s","DueDateString":"%s","SubTotal":%s,"TotalTax":0.00,"Total":%s,"AmountDue":%s,"AmountPaid":0.00,"AmountCredited":0.00,"CurrencyCode":"GBP","UpdatedDateUTC":"/Date(%s+0000)/"}' \
        "$1" "$2" "$contact" "$(date -u +%Y-%m-%dT00:00:00)" \
        "$(date -u -d '+30 days' +%Y-%m-%dT00:00:00)" "$major" "$major" "$major" "$now_ms"
}
card_inv=$(cat /proc/sys/kernel/random/uuid)
dd_inv=$(cat /proc/sys/kernel/random/uuid)
suffix=$(date +%H%M%S)
ctl PUT "$xero/_mock/tenants/$tenant/invoices/$card_inv" "$(new_invoice "$card_inv" "DEMO-CARD-$suffix")"
ctl PUT "$xero/_mock/tenants/$tenant/invoices/$dd_inv" "$(new_invoice "$dd_inv" "DEMO-DD-$suffix")"
echo "two new invoices of $major GBP in the mock Xero: $card_inv (card), $dd_inv (direct debit)"

# the card: a PaymentIntent naming its invoice, then succeeding (the mock signs and posts the events)
pi=pi_demo_$suffix$RANDOM
ctl PUT "$stripe/_mock/objects/payment_intents/$pi" \
    "{\"amount\":$amount,\"currency\":\"gbp\",\"customer\":\"cus_demo\",\"metadata\":{\"xero_invoice_id\":\"$card_inv\"}}"
ctl POST "$stripe/_mock/payment_intents/$pi/succeed" '{}'
echo "Stripe: $pi succeeded"

# the direct debit: a payment on the demo mandate, submitted and confirmed by the mock GoCardless
pm=PM0DEMO$suffix$RANDOM
ctl PUT "$gc/_mock/objects/payments/$pm" \
    "{\"amount\":$amount,\"currency\":\"GBP\",\"status\":\"pending_submission\",\"links\":{\"mandate\":\"MD000DEMO00001\"},\"metadata\":{\"xero_invoice_id\":\"$dd_inv\"}}"
ctl POST "$gc/_mock/payments/$pm/submitted" '{}'
ctl POST "$gc/_mock/payments/$pm/confirmed" '{}'
echo "GoCardless: $pm submitted and confirmed"

echo "waiting for settled (webhooks, refetch, mirror, reconciliation) ..."
for _ in $(seq 150); do
    paid=$(psql_demo "SELECT count(*) FROM invoice_payment_state WHERE invoice_id IN ('$card_inv', '$dd_inv') AND state = 'paid'")
    [ "$paid" = 2 ] && break
    sleep 0.2
done
"$top/deploy/demo-post.sh" --psql -c "SELECT x.invoice_number, s.currency, s.due_minor, s.paid_minor,
    s.outstanding_minor, s.state FROM invoice_payment_state s JOIN xero_invoices x USING (organisation_id, tenant_id, invoice_id)
    WHERE s.invoice_id IN ('$card_inv', '$dd_inv') ORDER BY 1"
[ "$paid" = 2 ] || { echo "error: the invoices are not both paid after 30 s; see webhook_events (deploy/demo-post.sh --psql)" >&2; exit 1; }
echo "both invoices are paid."
