/* SPDX-License-Identifier: MIT */
/* cli_notify.c: `settled notify`: an operator's (and the demo's and tests') way to send a customer one rendered
 * notification through the outbox, once per --dedupe key. */
#include "cli_notify.h"
#include <inttypes.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "accounts.h"
#include "args.h"
#include "db.h"
#include "money.h"
#include "notifications.h"

void gw_cli_notify_usage(FILE *out)
{
    fprintf(out, "usage: settled notify --organisation SLUG --customer ID --kind KIND [--invoice ID]\n"
                 "                      [--channel email|portal] [--dedupe KEY] [--to ADDRESS]\n"
                 "                      [--amount DECIMAL --currency CODE] [--actor NAME]\n"
                 "\n"
                 "Render the template of KIND (invoice_due, due_today, overdue, final_notice, receipt,\n"
                 "collection_failed, method_expiring, mandate_ended) for the customer and enqueue it in the\n"
                 "notification outbox; settled work (or serve) sends the e-mails through SETTLED_SMTP_URL.\n"
                 "  --invoice   settled's id of the invoice it is about (its number, amount due and due date)\n"
                 "  --channel   email (default: to the customer's address, or --to) or portal\n"
                 "  --dedupe    the key that makes it once-only (default KIND:customer:ID:invoice:ID:CHANNEL)\n"
                 "  --amount    the amount shown instead of the amount due (a receipt's payment), with --currency\n"
                 "A reminder for a customer who opted out is stored as suppressed and not sent. Prints the\n"
                 "notification's id and status. Audited as cli:<your OS user>, or cli:NAME with --actor.\n"
                 "\n"
                 "exit codes: 0 enqueued (or already, under the same key); 1 failed (the database, an unknown\n"
                 "            organisation or customer, a customer without an address); 2 usage error\n");
}

int gw_cli_notify(const gw_config_t *cfg, int argc, char **argv)
{
    const char *org = NULL, *customer = NULL, *kind = NULL, *invoice = NULL, *channel = "email", *dedupe = NULL;
    const char *to = NULL, *amount = NULL, *currency = NULL, *actor_name = NULL, *config = NULL;
    for (int i = 0; i < argc; ++i) {
        int r;
        if ((r = gw_args_value("notify", argc, argv, &i, "--organisation", &org)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--customer", &customer)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--kind", &kind)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--invoice", &invoice)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--channel", &channel)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--dedupe", &dedupe)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--to", &to)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--amount", &amount)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--currency", &currency)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--actor", &actor_name)) != 0 ||
            (r = gw_args_value("notify", argc, argv, &i, "--config", &config)) != 0) {
            if (r < 0)
                return GW_ARGS_USAGE;
            continue;
        }
        return gw_args_unknown("notify", argv[i]);
    }
    char *end = NULL;
    long long cust = customer != NULL ? strtoll(customer, &end, 10) : 0;
    if (org == NULL || customer == NULL || kind == NULL || end == NULL || *end != '\0' || cust <= 0) {
        fprintf(stderr, "settled: notify: --organisation, --customer (a number) and --kind are required\n");
        return GW_ARGS_USAGE;
    }
    if (!gw_notify_kind_valid(kind) || gw_notify_is_account(kind)) { /* those are the accounts' (account_mail.h) */
        fprintf(stderr, "settled: notify: --kind: not a kind of notification settled renders: %s\n", kind);
        return GW_ARGS_USAGE;
    }
    if (strcmp(channel, "email") != 0 && strcmp(channel, "portal") != 0) {
        fprintf(stderr, "settled: notify: --channel: email or portal\n");
        return GW_ARGS_USAGE;
    }
    int64_t minor = 0;
    char code[4] = "";
    if ((amount != NULL) != (currency != NULL) ||
        (amount != NULL && (gw_currency_normalise(currency, code) != 0 || gw_currency_exponent(code) < 0 ||
                            gw_money_parse(amount, strlen(amount), gw_currency_exponent(code), &minor) != 0))) {
        fprintf(stderr, "settled: notify: --amount and --currency go together: a decimal and an ISO 4217 code\n");
        return GW_ARGS_USAGE;
    }
    if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by notify\n");
        return 1;
    }
    char msg[512];
    gw_dbs_t *db = gw_dbs_connect(cfg->database_url, msg, sizeof(msg));
    if (db == NULL) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    int64_t org_id = 0;
    gw_err_t err = GW_ERR_INIT;
    int found = gw_accounts_organisation(db, org, &org_id, &err);
    if (found != 1) {
        fprintf(stderr, "settled: notify: %s\n", found < 0 ? err.detail : "unknown organisation");
        gw_dbs_close(db);
        return 1;
    }
    char key[256], actor[160];
    if (dedupe == NULL)
        snprintf(key, sizeof(key), "%s:customer:%s:invoice:%s:%s", kind, customer, invoice != NULL ? invoice : "-",
                 channel);
    else
        snprintf(key, sizeof(key), "%s", dedupe);
    if (actor_name == NULL) {
        struct passwd *pw = getpwuid(geteuid());
        actor_name = pw != NULL ? pw->pw_name : "unknown";
    }
    snprintf(actor, sizeof(actor), "cli:%s", actor_name);
    gw_notify_t n = {.organisation_id = org_id,
                     .customer_id = cust,
                     .invoice_id = invoice,
                     .kind = kind,
                     .channel = channel,
                     .dedupe_key = key,
                     .recipient = to,
                     .actor = actor,
                     .correlation = NULL};
    char id[24], status[16];
    bool created = false;
    int rc = gw_notify_customer(db, cfg->portal_url, &n, amount != NULL, minor, code, id, status, &created, msg,
                                sizeof(msg));
    gw_dbs_close(db);
    if (rc != 0) {
        fprintf(stderr, "settled: notify: %s\n", msg);
        return 1;
    }
    printf("notification %s %s%s\n", id, status, created ? "" : " (already enqueued under this key)");
    return 0;
}
