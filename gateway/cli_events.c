/* SPDX-License-Identifier: MIT */
/* cli_events.c: `settled events list|show|forward` and `settled replay`: flags, tables, the progress bar and the
 * summaries, over domain/replay.h. */
#include "cli_events.h"
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "db.h"
#include "http_client.h"
#include "mem.h"
#include "replay.h"

#define RESET_CHUNK 100 /* events reset per transaction */

void gw_cli_events_usage(FILE *out)
{
    fprintf(out,
            "usage: settled events list [--provider P] [--status S] [--type T] [--since T] [--limit N] [--json]\n"
            "       settled events show ID [--json]\n"
            "       settled events forward ID --to URL --secret SECRET|-\n"
            "\n"
            "  list      the stored webhook events, newest first (default 50, at most 10000)\n"
            "            --provider  stripe, xero or gocardless\n"
            "            --status    pending, processing, done, ignored, failed or dead (several: dead,failed)\n"
            "            --type      an event type (INVOICE.UPDATE) or its category (INVOICE)\n"
            "            --since     received at or after a time (2026-01-31T00:00:00Z) or an age (90s, 30m, 2h, 7d)\n"
            "  show      one event: metadata, headers, attempts, last error, replays, and the raw body pretty-printed\n"
            "  forward   post the event's stored delivery, byte for byte, to URL (http or https), signed for its\n"
            "            provider with SECRET ('-': read it from standard input), to test a receiver of your own\n"
            "\n"
            "exit codes: 0 done; 1 failed (the database, an unknown id, a receiver that did not answer 2xx);\n"
            "            2 usage error (an unknown option, a missing or invalid value)\n");
}

void gw_cli_replay_usage(FILE *out)
{
    fprintf(out,
            "usage: settled replay ID... [--dry-run] [--json] [--actor NAME]\n"
            "       settled replay --since T [--provider P] [--status S] [--type T] [--limit N] [--dry-run] [--json]\n"
            "                      [--actor NAME]\n"
            "\n"
            "Processes stored events again from their raw bytes: each goes back to pending with attempts 0, due\n"
            "now, and the workers (settled serve or settled work) are woken. Every replayed event gets an audit row\n"
            "(event.replay) naming who asked: cli:<your OS user>, or cli:NAME with --actor. An event a worker is\n"
            "processing right now is left alone.\n"
            "\n"
            "  ID...      event ids (the id column of `settled events list`)\n"
            "  --since    every event received since a time (2026-01-31T00:00:00Z) or an age (90s, 30m, 2h, 7d),\n"
            "             narrowed by --provider, --type and --status (default: failed,dead)\n"
            "  --dry-run  process each event in a transaction that is rolled back (provider calls: GETs only) and\n"
            "             print what would change: table, key, field, before -> after. Nothing is changed.\n"
            "  --json     the result as JSON\n"
            "\n"
            "exit codes: 0 done; 1 failed or an id is unknown; 2 usage error\n");
}

static bool is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* An event id: digits only, positive. */
static bool parse_id(const char *s, int64_t *out)
{
    if (s == NULL || s[0] == '\0' || strspn(s, "0123456789") != strlen(s) || strlen(s) > 18)
        return false;
    *out = strtoll(s, NULL, 10);
    return *out > 0;
}

/* The value of option argv[*i] ("--x V"): argv[*i + 1], or NULL with a message when it is missing. */
static const char *option_value(int argc, char **argv, int *i, const char *cmd)
{
    if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0) {
        fprintf(stderr, "settled: %s: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

/* Parses the filter options shared by list and replay. Returns 1 if argv[*i] was one (consumed), 0 if not, -1 on
 * a usage error (printed). */
static int filter_option(int argc, char **argv, int *i, const char *cmd, gw_events_filter_t *f)
{
    const char *opt = argv[*i];
    const char **slot = strcmp(opt, "--provider") == 0 ? &f->provider
                        : strcmp(opt, "--status") == 0 ? &f->statuses
                        : strcmp(opt, "--type") == 0   ? &f->type
                        : strcmp(opt, "--since") == 0  ? &f->since
                                                       : NULL;
    if (slot == NULL && strcmp(opt, "--limit") != 0)
        return 0;
    const char *v = option_value(argc, argv, i, cmd);
    if (v == NULL)
        return -1;
    if (slot != NULL) {
        *slot = v;
        return 1;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || end == v || n < 1 || n > GW_EVENTS_LIMIT_MAX) {
        fprintf(stderr, "settled: %s: --limit: from 1 to %d, not %s\n", cmd, GW_EVENTS_LIMIT_MAX, v);
        return -1;
    }
    f->limit = n;
    return 1;
}

static gw_dbs_t *open_db(const gw_config_t *cfg, const char *cmd)
{
    if (!is_set(cfg->database_url)) {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by %s\n", cmd);
        return NULL;
    }
    char msg[512];
    gw_dbs_t *s = gw_dbs_connect(cfg->database_url, msg, sizeof(msg));
    if (s == NULL)
        fprintf(stderr, "settled: %s\n", msg);
    return s;
}

/* The exit code of a domain error: 2 for a bad argument, else 1. */
static int fail(const char *cmd, const gw_err_t *err)
{
    fprintf(stderr, "settled: %s: %s\n", cmd, err->detail);
    return err->code == gw_err_invalid_argument ? 2 : 1;
}

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static json_t *event_json(const gw_event_t *e)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(e->id));
    json_object_set_new(o, "organisation_id", json_integer(e->organisation_id));
    const char *names[] = {"provider",    "source",      "account",    "event_id",        "event_type",
                           "resource_id", "status",      "last_error", "correlation_id",  "lease_owner",
                           "received_at", "verified_at", "stored_at",  "next_attempt_at", "processed_at"};
    const char *values[] = {e->provider,    e->source,      e->account,    e->event_id,        e->event_type,
                            e->resource_id, e->status,      e->last_error, e->correlation_id,  e->lease_owner,
                            e->received_at, e->verified_at, e->stored_at,  e->next_attempt_at, e->processed_at};
    for (size_t k = 0; k != sizeof(names) / sizeof(names[0]); ++k)
        json_object_set_new(o, names[k], str_or_null(values[k]));
    json_object_set_new(o, "attempts", json_integer(e->attempts));
    return o;
}

static void print_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    printf("%s\n", text);
    free(text);
    json_decref(doc);
}

/* One line of at most width characters of s, without its line breaks: for table cells. */
static void cell(char *out, size_t cap, const char *s, size_t width)
{
    size_t n = 0;
    for (const char *p = s != NULL ? s : "-"; *p != '\0' && n + 1 < cap && n < width; ++p)
        out[n++] = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
    if (s != NULL && strlen(s) > width && n >= 3)
        memcpy(out + n - 3, "...", 3);
    out[n] = '\0';
}

/* ---- events list ---- */

static int events_list(const gw_config_t *cfg, int argc, char **argv)
{
    gw_events_filter_t f = {0};
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        int rc = filter_option(argc, argv, &i, "events list", &f);
        if (rc < 0)
            return 2;
        if (rc > 0)
            continue;
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            ++i;
        } else {
            fprintf(stderr, "settled: events list: unknown argument: %s\n", argv[i]);
            gw_cli_events_usage(stderr);
            return 2;
        }
    }
    gw_err_t err = GW_ERR_INIT;
    if (gw_events_filter_check(&f, &err) != 0)
        return fail("events list", &err);
    gw_dbs_t *s = open_db(cfg, "events list");
    if (s == NULL)
        return 1;
    gw_event_list_t list;
    int rc = gw_events_list(s, &f, &list, &err);
    gw_dbs_close(s);
    if (rc != 0)
        return fail("events list", &err);
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i != list.n; ++i)
            json_array_append_new(a, event_json(&list.events[i]));
        print_json(a);
    } else {
        printf("%-8s %-24s %-10s %-10s %-22s %-10s %3s  %s\n", "ID", "RECEIVED", "PROVIDER", "SOURCE", "TYPE", "STATUS",
               "ATT", "LAST ERROR");
        for (size_t i = 0; i != list.n; ++i) {
            const gw_event_t *e = &list.events[i];
            char received[25], source[11], type[23], error[61];
            cell(received, sizeof(received), e->received_at, 24);
            cell(source, sizeof(source), e->source, 10);
            cell(type, sizeof(type), e->event_type, 22);
            cell(error, sizeof(error), e->last_error, 60);
            printf("%-8" PRId64 " %-24s %-10s %-10s %-22s %-10s %3d  %s\n", e->id, received, e->provider, source, type,
                   e->status, e->attempts, e->last_error != NULL ? error : "");
        }
        printf("%zu event%s%s\n", list.n, list.n == 1 ? "" : "s",
               list.n == (size_t)(f.limit > 0 ? f.limit : GW_EVENTS_LIMIT_DEFAULT) ? " (the limit: --limit N for more)"
                                                                                   : "");
    }
    gw_event_list_free(&list);
    return 0;
}

/* ---- events show ---- */

/* Prints bytes as text, each byte that is not printable ASCII, a line break or a tab as \xNN. */
static void print_escaped(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i != n; ++i) {
        if ((b[i] >= 0x20 && b[i] < 0x7f) || b[i] == '\n' || b[i] == '\t')
            putchar(b[i]);
        else
            printf("\\x%02x", b[i]);
    }
    putchar('\n');
}

/* Prints text indented by two spaces on every line. */
static void print_indented(const char *text)
{
    for (const char *p = text; *p != '\0';) {
        size_t len = strcspn(p, "\n");
        printf("  %.*s\n", (int)len, p);
        p += len + (p[len] == '\n');
    }
}

static int events_show(const gw_config_t *cfg, int argc, char **argv)
{
    int64_t id = 0;
    bool json = false, have_id = false;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            ++i;
        } else if (!have_id && argv[i][0] != '-') {
            if (!parse_id(argv[i], &id)) {
                fprintf(stderr, "settled: events show: not an event id: %s (a number, the ID of `events list`)\n",
                        argv[i]);
                return 2;
            }
            have_id = true;
        } else {
            fprintf(stderr, "settled: events show: unknown argument: %s\n", argv[i]);
            gw_cli_events_usage(stderr);
            return 2;
        }
    }
    if (!have_id) {
        fprintf(stderr, "settled: events show: give an event id\n");
        gw_cli_events_usage(stderr);
        return 2;
    }
    gw_dbs_t *s = open_db(cfg, "events show");
    if (s == NULL)
        return 1;
    gw_event_t e;
    gw_err_t err = GW_ERR_INIT;
    char **history = NULL;
    long nhistory = 0;
    if (gw_events_get(s, 0, id, &e, &err) != 0 || (nhistory = gw_events_history(s, 0, id, &history, &err)) < 0) {
        gw_dbs_close(s);
        return fail("events show", &err);
    }
    gw_dbs_close(s);
    json_error_t jerr;
    json_t *body = json_loadb((const char *)e.body, e.body_len, JSON_DECODE_ANY, &jerr);
    json_t *headers = e.headers != NULL ? json_loads(e.headers, 0, &jerr) : NULL;
    if (json) {
        json_t *o = event_json(&e);
        json_object_set_new(o, "headers", headers != NULL ? headers : json_null());
        json_object_set_new(o, "body", body != NULL ? body : json_null());
        if (body == NULL)
            json_object_set_new(o, "body_text", json_stringn_nocheck((const char *)e.body, e.body_len));
        json_t *h = json_array();
        for (long i = 0; i != nhistory; ++i)
            json_array_append_new(h, json_string(history[i]));
        json_object_set_new(o, "replays", h);
        print_json(o);
    } else {
        printf("event %" PRId64 "\n", e.id);
        const char *names[] = {"provider", "source",    "account",        "event id",     "type",     "resource",
                               "status",   "attempts",  "last error",     "next attempt", "received", "verified",
                               "stored",   "processed", "correlation id", "lease owner"};
        char attempts[16];
        snprintf(attempts, sizeof(attempts), "%d", e.attempts);
        const char *values[] = {e.provider,   e.source,          e.account,        e.event_id,
                                e.event_type, e.resource_id,     e.status,         attempts,
                                e.last_error, e.next_attempt_at, e.received_at,    e.verified_at,
                                e.stored_at,  e.processed_at,    e.correlation_id, e.lease_owner};
        for (size_t k = 0; k != sizeof(names) / sizeof(names[0]); ++k)
            printf("  %-15s %s\n", names[k], values[k] != NULL ? values[k] : "-");
        printf("headers\n");
        if (headers != NULL) {
            char *t = json_dumps(headers, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            print_indented(t);
            free(t);
            json_decref(headers);
        } else {
            printf("  -\n");
        }
        printf("replays\n");
        for (long i = 0; i != nhistory; ++i)
            printf("  %s\n", history[i]);
        if (nhistory == 0)
            printf("  none\n");
        printf("body (%zu bytes%s)\n", e.body_len, body != NULL ? ", pretty-printed" : ", not JSON: as stored");
        if (body != NULL) {
            char *t = json_dumps(body, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
            printf("%s\n", t);
            free(t);
            json_decref(body);
        } else {
            print_escaped(e.body, e.body_len);
        }
    }
    for (long i = 0; i != nhistory; ++i)
        free(history[i]);
    free(history);
    gw_event_free(&e);
    return 0;
}

/* ---- events forward ---- */

static char *read_secret_line(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

static int events_forward(const gw_config_t *cfg, int argc, char **argv)
{
    int64_t id = 0;
    bool have_id = false;
    const char *to = NULL, *secret_arg = NULL;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--to") == 0 || strcmp(argv[i], "--secret") == 0) {
            bool is_to = argv[i][2] == 't';
            /* '-' is a value here (the secret from stdin) */
            if (i + 1 >= argc) {
                fprintf(stderr, "settled: events forward: %s needs a value\n", argv[i]);
                return 2;
            }
            *(is_to ? &to : &secret_arg) = argv[++i];
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            ++i;
        } else if (!have_id && argv[i][0] != '-') {
            if (!parse_id(argv[i], &id)) {
                fprintf(stderr, "settled: events forward: not an event id: %s\n", argv[i]);
                return 2;
            }
            have_id = true;
        } else {
            fprintf(stderr, "settled: events forward: unknown argument: %s\n", argv[i]);
            gw_cli_events_usage(stderr);
            return 2;
        }
    }
    if (!have_id || to == NULL || secret_arg == NULL) {
        fprintf(stderr, "settled: events forward: give an event id, --to URL and --secret SECRET\n");
        gw_cli_events_usage(stderr);
        return 2;
    }
    if (strncmp(to, "http://", 7) != 0 && strncmp(to, "https://", 8) != 0) {
        fprintf(stderr, "settled: events forward: --to: only http:// and https:// URLs, not %.100s\n", to);
        return 2;
    }
    char *secret = strcmp(secret_arg, "-") == 0 ? read_secret_line() : gw_xstrdup(secret_arg);
    if (!is_set(secret)) {
        fprintf(stderr, "settled: events forward: --secret: the secret is empty\n");
        gw_free_secret(secret);
        return 2;
    }
    gw_dbs_t *s = open_db(cfg, "events forward");
    if (s == NULL) {
        gw_free_secret(secret);
        return 1;
    }
    gw_event_t e;
    gw_err_t err = GW_ERR_INIT;
    int rc = gw_events_get(s, 0, id, &e, &err);
    gw_dbs_close(s);
    if (rc != 0) {
        gw_free_secret(secret);
        return fail("events forward", &err);
    }
    char signature[512];
    if (gw_replay_sign(e.provider, secret, e.body, e.body_len, (int64_t)time(NULL), signature, sizeof(signature)) !=
        0) {
        fprintf(stderr, "settled: events forward: cannot sign a %s delivery\n", e.provider);
        gw_free_secret(secret);
        gw_event_free(&e);
        return 1;
    }
    gw_free_secret(secret);
    if (gw_http_init_config(cfg) != 0) {
        fprintf(stderr, "settled: cannot start the HTTP client\n");
        gw_event_free(&e);
        return 1;
    }
    char forwarded[64];
    snprintf(forwarded, sizeof(forwarded), "X-Settled-Forwarded-Event: %" PRId64, e.id);
    const char *headers[] = {"Content-Type: application/json", signature, forwarded, "User-Agent: settled-forward",
                             NULL};
    gw_http_request_t req = {
        .method = "POST", .url = to, .headers = headers, .body = (const char *)e.body, .body_len = e.body_len};
    gw_http_response_t res;
    gw_http_do(&req, &res);
    explicit_bzero(signature, sizeof(signature));
    int ret = 0;
    if (res.status == 0) {
        fprintf(stderr, "settled: events forward: %s: %s\n", to, res.error != NULL ? res.error : "failed");
        ret = 1;
    } else {
        printf("event %" PRId64 " (%s, %zu bytes) forwarded to %s: HTTP %ld\n", e.id, e.provider, e.body_len, to,
               res.status);
        ret = res.status >= 200 && res.status < 300 ? 0 : 1;
    }
    gw_http_response_free(&res);
    gw_http_shutdown();
    gw_event_free(&e);
    return ret;
}

int gw_cli_events(const gw_config_t *cfg, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "help") == 0) {
        gw_cli_events_usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    for (int i = 1; i < argc; ++i)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            gw_cli_events_usage(stdout);
            return 0;
        }
    if (strcmp(argv[0], "list") == 0)
        return events_list(cfg, argc, argv);
    if (strcmp(argv[0], "show") == 0)
        return events_show(cfg, argc, argv);
    if (strcmp(argv[0], "forward") == 0)
        return events_forward(cfg, argc, argv);
    fprintf(stderr, "settled: events: unknown subcommand: %s\n", argv[0]);
    gw_cli_events_usage(stderr);
    return 2;
}

/* ---- replay ---- */

/* The progress bar, on stdout when it is a terminal: drawn in place, once per change. */
typedef struct st_progress_t {
    bool tty;
    size_t total, drawn;
    bool shown;
} progress_t;

static void progress(progress_t *p, size_t done)
{
    if (!p->tty || p->total == 0 || (p->shown && done == p->drawn))
        return;
    enum { WIDTH = 30 };
    size_t filled = done * WIDTH / p->total;
    char bar[WIDTH + 1];
    for (size_t i = 0; i != WIDTH; ++i)
        bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    printf("\r[%s] %zu/%zu", bar, done, p->total);
    fflush(stdout);
    p->drawn = done;
    p->shown = true;
}

/* Clears the bar's line, so that the next output starts at its beginning. */
static void progress_clear(progress_t *p)
{
    if (p->shown) {
        printf("\r\033[K");
        p->shown = false;
    }
}

static void print_diff(const gw_replay_diff_t *d)
{
    printf("event %" PRId64 ": would end %s%s%s; %zu audit row%s\n", d->id, d->outcome,
           d->last_error != NULL ? ": " : "", d->last_error != NULL ? d->last_error : "", d->audit_rows,
           d->audit_rows == 1 ? "" : "s");
    for (size_t i = 0; i != d->n; ++i) {
        const gw_replay_change_t *c = &d->changes[i];
        printf("  %s %s %s: %s -> %s\n", c->table, c->key, c->field, c->before != NULL ? c->before : "(none)",
               c->after != NULL ? c->after : "(none)");
    }
}

/* The dry run of every id: one rolled-back transaction each. */
static int replay_dry_run(const gw_config_t *cfg, gw_dbs_t *s, const int64_t *ids, size_t n, bool json)
{
    char msg[512];
    gw_dbs_t *token_db = gw_dbs_connect(cfg->database_url, msg, sizeof(msg));
    if (token_db == NULL) {
        fprintf(stderr, "settled: %s\n", msg);
        return 1;
    }
    if (gw_http_init_config(cfg) != 0) {
        fprintf(stderr, "settled: cannot start the HTTP client\n");
        gw_dbs_close(token_db);
        return 1;
    }
    progress_t bar = {.tty = !json && isatty(STDOUT_FILENO), .total = n};
    json_t *events = json ? json_array() : NULL;
    size_t done = 0, other = 0, changes = 0, errors = 0;
    for (size_t i = 0; i != n; ++i) {
        progress(&bar, i);
        gw_replay_diff_t d;
        gw_err_t err = GW_ERR_INIT;
        if (gw_replay_dry_run(cfg, s, token_db, 0, ids[i], &d, &err) != 0) {
            progress_clear(&bar);
            fprintf(stderr, "settled: replay --dry-run: event %" PRId64 ": %s\n", ids[i], err.detail);
            ++errors;
            continue;
        }
        progress_clear(&bar);
        if (json)
            json_array_append_new(events, gw_replay_diff_json(&d));
        else
            print_diff(&d);
        fflush(stdout);
        ++*(strcmp(d.outcome, "done") == 0 ? &done : &other);
        changes += d.n;
        gw_replay_diff_free(&d);
    }
    progress_clear(&bar);
    gw_http_shutdown();
    gw_dbs_close(token_db);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "dry_run", json_true());
        json_object_set_new(o, "events", events);
        json_object_set_new(o, "errors", json_integer((json_int_t)errors));
        print_json(o);
    } else {
        printf("dry run: %zu event%s: %zu would be done, %zu would not; %zu change%s; %zu error%s; nothing was "
               "changed\n",
               n, n == 1 ? "" : "s", done, other, changes, changes == 1 ? "" : "s", errors, errors == 1 ? "" : "s");
    }
    return errors != 0;
}

static int replay_reset(gw_dbs_t *s, const int64_t *ids, size_t n, const char *actor, bool json)
{
    progress_t bar = {.tty = !json && isatty(STDOUT_FILENO), .total = n};
    gw_replay_counts_t counts = {0};
    gw_err_t err = GW_ERR_INIT;
    int ret = 0;
    for (size_t i = 0; i < n; i += RESET_CHUNK) {
        progress(&bar, i);
        size_t k = n - i < RESET_CHUNK ? n - i : RESET_CHUNK;
        if (gw_replay_reset(s, 0, ids + i, k, actor, NULL, &counts, &err) != 0) {
            progress_clear(&bar);
            fprintf(stderr, "settled: replay: %s (%zu events were reset before this)\n", err.detail, counts.reset);
            ret = 1;
            break;
        }
    }
    if (ret == 0)
        progress(&bar, n);
    progress_clear(&bar);
    if (counts.unknown != 0 && ret == 0) {
        fprintf(stderr, "settled: replay: %zu of the ids name no stored event\n", counts.unknown);
        ret = 1;
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "dry_run", json_false());
        json_object_set_new(o, "selected", json_integer((json_int_t)n));
        json_object_set_new(o, "reset", json_integer((json_int_t)counts.reset));
        json_object_set_new(o, "busy", json_integer((json_int_t)counts.busy));
        json_object_set_new(o, "unknown", json_integer((json_int_t)counts.unknown));
        json_object_set_new(o, "actor", json_string(actor));
        print_json(o);
    } else {
        printf("replay: %zu event%s selected, %zu reset to pending (audited as %s), %zu being processed (left "
               "alone), %zu unknown; the workers process them now\n",
               n, n == 1 ? "" : "s", counts.reset, actor, counts.busy, counts.unknown);
    }
    return ret;
}

int gw_cli_replay(const gw_config_t *cfg, int argc, char **argv)
{
    gw_events_filter_t f = {0};
    bool dry = false, json = false;
    const char *actor_name = NULL;
    int64_t *ids = gw_xcalloc((size_t)argc + 1, sizeof(*ids));
    size_t nids = 0;
    int ret = 2;
    for (int i = 0; i < argc; ++i) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            gw_cli_replay_usage(stdout);
            ret = 0;
            goto Exit;
        }
    }
    for (int i = 0; i < argc; ++i) {
        int rc = filter_option(argc, argv, &i, "replay", &f);
        if (rc < 0)
            goto Exit;
        if (rc > 0)
            continue;
        if (strcmp(argv[i], "--dry-run") == 0) {
            dry = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--actor") == 0) {
            if ((actor_name = option_value(argc, argv, &i, "replay")) == NULL)
                goto Exit;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            ++i;
        } else if (argv[i][0] != '-') {
            if (!parse_id(argv[i], &ids[nids])) {
                fprintf(stderr, "settled: replay: not an event id: %s (a number, the ID of `events list`)\n", argv[i]);
                goto Exit;
            }
            ++nids;
        } else {
            fprintf(stderr, "settled: replay: unknown argument: %s\n", argv[i]);
            gw_cli_replay_usage(stderr);
            goto Exit;
        }
    }
    bool filtered = f.provider != NULL || f.statuses != NULL || f.type != NULL || f.limit != 0;
    if (nids != 0 && (f.since != NULL || filtered)) {
        fprintf(stderr, "settled: replay: give event ids or --since with filters, not both\n");
        goto Exit;
    }
    if (nids == 0 && f.since == NULL) {
        fprintf(stderr, "settled: replay: give event ids, or --since T (with --provider, --status, --type)\n");
        gw_cli_replay_usage(stderr);
        goto Exit;
    }
    if (actor_name != NULL && (actor_name[0] == '\0' || strlen(actor_name) > 100)) {
        fprintf(stderr, "settled: replay: --actor: a name of 1 to 100 characters\n");
        goto Exit;
    }
    if (f.since != NULL && f.statuses == NULL)
        f.statuses = "failed,dead";
    gw_err_t err = GW_ERR_INIT;
    if (gw_events_filter_check(&f, &err) != 0) {
        ret = fail("replay", &err);
        goto Exit;
    }
    gw_dbs_t *s = open_db(cfg, "replay");
    if (s == NULL) {
        ret = 1;
        goto Exit;
    }
    if (f.since != NULL) {
        free(ids);
        ids = NULL;
        if (gw_replay_select(s, &f, &ids, &nids, &err) != 0) {
            gw_dbs_close(s);
            ret = fail("replay", &err);
            goto Exit;
        }
    }
    if (dry) {
        ret = replay_dry_run(cfg, s, ids, nids, json);
    } else {
        char actor[160];
        if (actor_name == NULL) {
            struct passwd *pw = getpwuid(geteuid());
            actor_name = pw != NULL ? pw->pw_name : "unknown";
        }
        snprintf(actor, sizeof(actor), "cli:%s", actor_name);
        ret = replay_reset(s, ids, nids, actor, json);
    }
    gw_dbs_close(s);
Exit:
    free(ids);
    return ret;
}
