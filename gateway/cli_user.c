/* SPDX-License-Identifier: MIT */
/* cli_user.c: `settled user add|list|disable`: the operator's way to make, invite, see and lock out portal users,
 * over domain/auth.h (hashes, tokens) and domain/accounts.h (the database). */
#include "cli_user.h"
#include <inttypes.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include "account_mail.h"
#include "accounts.h"
#include "args.h"
#include "auth.h"
#include "crypto.h"
#include "mem.h"
#include "db.h"
#include "redis_sync.h"
#include "session.h"

void gw_cli_user_usage(FILE *out)
{
    fprintf(
        out,
        "usage: settled user add --organisation SLUG --email E --role admin|client [--customer ID]\n"
        "                        [--invite [--portal-url URL]] [--actor NAME]\n"
        "       settled user list [--organisation SLUG]\n"
        "       settled user disable --organisation SLUG --email E [--actor NAME]\n"
        "       settled user reset --organisation SLUG --email E [--portal-url URL]\n"
        "\n"
        "  add       make a portal user of the organisation. An admin is the organisation's staff; a client is\n"
        "            a user of one of its customers, named by --customer (the customer's id, required for a\n"
        "            client, refused for an admin). The password is read from standard input when that is not\n"
        "            a terminal (one line; the newline is not part of it), else asked for twice without echo:\n"
        "            10 to 1024 bytes with at least 4 distinct characters. It is stored as a scrypt hash only.\n"
        "            --invite     store an invitation instead (valid 72 hours, single use) whose link lets the\n"
        "                         user choose a password; no password is read. With SETTLED_SMTP_URL the link\n"
        "                         is e-mailed (through the outbox) and not shown; without it nothing is sent\n"
        "                         and the link is printed once, for you to hand over\n"
        "            --portal-url the portal's address for the link (default SETTLED_PORTAL_URL, else "
        "http://SETTLED_LISTEN)\n"
        "  list      the users (of one organisation, or of all): id, organisation, email, role, customer,\n"
        "            status, created, last sign-in. Never a password hash.\n"
        "  disable   lock a user out: it can no longer sign in, and every refresh token it holds is revoked\n"
        "            and its access tokens are denied at once through Redis (SETTLED_REDIS_URL; when Redis cannot\n"
        "            be reached they keep working until they expire, SETTLED_ACCESS_TOKEN_TTL: the command says so)\n"
        "  reset     make a password reset link for the user (single use, valid 30 minutes) and print it, for an\n"
        "            admin to hand over (POST /v1/auth/password-reset e-mails one to the user instead)\n"
        "\n"
        "Every change is audited as cli:<your OS user>, or cli:NAME with --actor.\n"
        "\n"
        "exit codes: 0 done; 1 failed (the database, an unknown organisation, customer or user, an email already\n"
        "            taken, disabling a sign-up that waits for verification or approval); 2 usage error (an unknown "
        "option, a missing or invalid value, a weak password)\n");
}

static gw_dbs_t *open_db(const gw_config_t *cfg, const char *cmd)
{
    if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
        fprintf(stderr, "settled: SETTLED_DATABASE_URL: required by %s\n", cmd);
        return NULL;
    }
    char msg[512];
    gw_dbs_t *s = gw_dbs_connect(cfg->database_url, msg, sizeof(msg));
    if (s == NULL)
        fprintf(stderr, "settled: %s\n", msg);
    return s;
}

/* "cli:<OS user>" or "cli:NAME", and a fresh correlation id for the audit rows of this run. */
static void actor_of(const char *name, char actor[160], char correlation[40])
{
    if (name == NULL) {
        struct passwd *pw = getpwuid(geteuid());
        name = pw != NULL ? pw->pw_name : "unknown";
    }
    snprintf(actor, 160, "cli:%s", name);
    unsigned char raw[8];
    gw_crypto_random(raw, sizeof(raw));
    char hex[17];
    gw_hex_encode(raw, sizeof(raw), hex);
    snprintf(correlation, 40, "cli-%s", hex);
}

/* Finds the organisation called slug; prints why not and returns -1 (exit 1). */
static int find_organisation(gw_dbs_t *s, const char *cmd, const char *slug, int64_t *org)
{
    gw_err_t err = GW_ERR_INIT;
    int rc = gw_accounts_organisation(s, slug, org, &err);
    if (rc < 0)
        fprintf(stderr, "settled: %s: %s\n", cmd, err.detail);
    else if (rc == 0)
        fprintf(stderr, "settled: %s: unknown organisation %s\n", cmd, slug);
    return rc == 1 ? 0 : -1;
}

/* ---- passwords ---- */

/* Reads one line from the terminal on fd without echo, after prompt on stderr. Returns its length or -1. */
static long read_hidden(int fd, const char *prompt, char *buf, size_t cap)
{
    struct termios old, quiet;
    if (tcgetattr(fd, &old) != 0)
        return -1;
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL;
    /* echo off before the prompt: what is typed after it is kept (TCSAFLUSH drops only what came before) */
    if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0)
        return -1;
    fputs(prompt, stderr);
    fflush(stderr);
    size_t n = 0;
    long ret = -1;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r <= 0)
            break;
        if (c == '\n') {
            ret = (long)n;
            break;
        }
        if (n + 1 < cap)
            buf[n] = c;
        ++n; /* counted even past cap, so a too long password is refused, not cut */
    }
    tcsetattr(fd, TCSANOW, &old); /* not TCSAFLUSH: a line typed ahead (the repeat) must survive */
    if (ret > (long)cap - 1)
        ret = (long)cap; /* too long: the caller refuses it */
    return ret;
}

/* Reads the password: all of standard input when it is not a terminal (one trailing newline, or CRLF, removed),
 * else twice from the terminal without echo. Returns its length, or -1 with a message printed. */
static long read_password(char *buf, size_t cap)
{
    long n;
    if (isatty(STDIN_FILENO) != 1) {
        size_t got = 0;
        ssize_t r;
        while (got < cap && (r = read(STDIN_FILENO, buf + got, cap - got)) > 0)
            got += (size_t)r;
        if (got > 0 && buf[got - 1] == '\n')
            --got;
        if (got > 0 && buf[got - 1] == '\r')
            --got;
        n = (long)got;
    } else {
        char again[GW_AUTH_PASSWORD_MAX + 2];
        n = read_hidden(STDIN_FILENO, "Password: ", buf, cap);
        long m = n >= 0 ? read_hidden(STDIN_FILENO, "Repeat it: ", again, sizeof(again)) : -1;
        if (n < 0 || m < 0) {
            fprintf(stderr, "settled: user add: could not read the password from the terminal\n");
            explicit_bzero(again, sizeof(again));
            return -1;
        }
        bool same = n == m && (n > (long)cap || memcmp(buf, again, (size_t)n) == 0);
        explicit_bzero(again, sizeof(again));
        if (!same) {
            fprintf(stderr, "settled: user add: the two passwords differ\n");
            return -1;
        }
    }
    if (memchr(buf, '\0', (size_t)(n < (long)cap ? n : (long)cap)) != NULL) {
        fprintf(stderr, "settled: user add: the password contains a NUL byte\n");
        return -1;
    }
    return n;
}

/* ---- add ---- */

typedef struct st_add_args_t {
    const char *organisation, *email, *role, *customer, *portal_url, *actor;
    bool invite;
} add_args_t;

/* The message for a refusal of auth_user_create or auth_invitation_create, and its exit code. */
static int refusal(const add_args_t *a, const char *result)
{
    if (result == gw_accounts_email_taken)
        fprintf(stderr, "settled: user add: %s already has a user with the email %s\n", a->organisation, a->email);
    else if (result == gw_accounts_customer_unknown)
        fprintf(stderr,
                "settled: user add: %s has no customer %s (a customer of another organisation cannot be "
                "given)\n",
                a->organisation, a->customer);
    else if (result == gw_accounts_email_invalid)
        fprintf(stderr, "settled: user add: --email: not an email address\n");
    else if (result == gw_accounts_customer_required)
        fprintf(stderr, "settled: user add: a client needs --customer\n");
    else if (result == gw_accounts_customer_not_allowed)
        fprintf(stderr, "settled: user add: an admin has no --customer\n");
    else
        fprintf(stderr, "settled: user add: refused (%s)\n", result);
    return result == gw_accounts_email_taken || result == gw_accounts_customer_unknown ? 1 : GW_ARGS_USAGE;
}

static int user_add(const gw_config_t *cfg, const add_args_t *a)
{
    if (a->organisation == NULL || a->email == NULL || a->role == NULL) {
        fprintf(stderr, "settled: user add: --organisation, --email and --role are required\n");
        gw_cli_user_usage(stderr);
        return GW_ARGS_USAGE;
    }
    bool client = strcmp(a->role, "client") == 0;
    if (!client && strcmp(a->role, "admin") != 0) {
        fprintf(stderr, "settled: user add: --role must be admin or client\n");
        return GW_ARGS_USAGE;
    }
    int64_t customer = 0;
    if (a->customer != NULL) {
        char *end;
        long long v = strtoll(a->customer, &end, 10);
        if (a->customer[0] < '1' || a->customer[0] > '9' || *end != '\0' || v <= 0) {
            fprintf(stderr, "settled: user add: --customer must be a customer's id (a positive whole number)\n");
            return GW_ARGS_USAGE;
        }
        customer = v;
    }
    if (client && customer == 0) {
        fprintf(stderr, "settled: user add: a client needs --customer (the id of the customer it belongs to)\n");
        return GW_ARGS_USAGE;
    }
    if (!client && customer != 0) {
        fprintf(stderr, "settled: user add: an admin belongs to no customer: leave out --customer\n");
        return GW_ARGS_USAGE;
    }
    if (strchr(a->email, '@') == NULL || strlen(a->email) > 254) {
        fprintf(stderr, "settled: user add: --email: not an email address\n");
        return GW_ARGS_USAGE;
    }
    if (a->portal_url != NULL && !a->invite) {
        fprintf(stderr, "settled: user add: --portal-url goes with --invite\n");
        return GW_ARGS_USAGE;
    }
    if (a->portal_url != NULL && strncmp(a->portal_url, "https://", 8) != 0 &&
        strncmp(a->portal_url, "http://", 7) != 0) {
        fprintf(stderr, "settled: user add: --portal-url must be an http:// or https:// URL\n");
        return GW_ARGS_USAGE;
    }

    char *hash = NULL;
    if (!a->invite) {
        char pw[GW_AUTH_PASSWORD_MAX + 2];
        long n = read_password(pw, sizeof(pw));
        if (n < 0)
            return GW_ARGS_USAGE;
        gw_err_t err = GW_ERR_INIT;
        hash = gw_auth_password_hash(pw, (size_t)(n < (long)sizeof(pw) ? n : (long)sizeof(pw)), &err);
        explicit_bzero(pw, sizeof(pw));
        if (hash == NULL) {
            fprintf(stderr, "settled: user add: %s\n", err.detail);
            return err.code == gw_err_invalid_argument ? GW_ARGS_USAGE : 1;
        }
    }

    int ret = 1;
    gw_dbs_t *s = open_db(cfg, "user add");
    if (s == NULL)
        goto Exit;
    int64_t org;
    if (find_organisation(s, "user add", a->organisation, &org) != 0)
        goto Exit;
    char actor[160], correlation[40];
    actor_of(a->actor, actor, correlation);
    gw_err_t err = GW_ERR_INIT;
    const char *result;
    if (a->invite) {
        /* with SMTP the link goes out by e-mail only (through the outbox); without it nothing could send the mail,
         * so the link is printed once for the operator to hand over, and nothing is enqueued */
        bool mail = gw_account_mail_configured(cfg);
        char token[64], digest[65], expires[64], link[600];
        int64_t notification = 0;
        gw_rendered_t msg = {0};
        if (gw_auth_refresh_token(token, digest) != 0) /* the same kind of one-time token */
            goto Exit;
        gw_account_mail_link(cfg, a->portal_url, GW_ACCOUNT_PAGE_INVITE, token, link, sizeof(link));
        explicit_bzero(token, sizeof(token));
        if (mail && gw_account_mail_render(s, org, "invitation", link, &msg, &err) != 0) {
            fprintf(stderr, "settled: user add: %s\n", err.detail);
            explicit_bzero(link, sizeof(link));
            goto Exit;
        }
        int rc = gw_accounts_invite(s, org, a->email, a->role, customer, digest, mail ? &msg : NULL, actor, correlation,
                                    &result, expires, &notification, &err);
        if (msg.text != NULL)
            explicit_bzero(msg.text, strlen(msg.text)), explicit_bzero(msg.html, strlen(msg.html));
        gw_rendered_free(&msg);
        if (rc != 0 || result != gw_accounts_created) {
            explicit_bzero(link, sizeof(link));
            if (rc != 0)
                fprintf(stderr, "settled: user add: %s\n", err.detail);
            else
                ret = refusal(a, result);
            goto Exit;
        }
        if (mail)
            printf("invited %s to %s as %s%s, valid once until %s; the link is e-mailed to them (notification "
                   "%" PRId64 ")\n",
                   a->email, a->organisation, client ? "a client of customer " : "an admin", client ? a->customer : "",
                   expires, notification);
        else
            printf("invited %s to %s as %s%s, valid once until %s; SETTLED_SMTP_URL is not set, so no e-mail is "
                   "sent: send them this link yourself (it is shown only now):\n%s\n",
                   a->email, a->organisation, client ? "a client of customer " : "an admin", client ? a->customer : "",
                   expires, link);
        explicit_bzero(link, sizeof(link));
    } else {
        int64_t id;
        if (gw_accounts_user_create(s, org, a->email, a->role, customer, hash, actor, correlation, &result, &id,
                                    &err) != 0) {
            fprintf(stderr, "settled: user add: %s\n", err.detail);
            goto Exit;
        }
        if (result != gw_accounts_created) {
            ret = refusal(a, result);
            goto Exit;
        }
        printf("added user %" PRId64 ": %s, %s of %s%s%s\n", id, a->email, a->role, a->organisation,
               client ? ", customer " : "", client ? a->customer : "");
    }
    ret = 0;
Exit:
    gw_dbs_close(s);
    if (hash != NULL)
        gw_free_secret(hash);
    return ret;
}

/* ---- list ---- */

static const char *or_dash(const char *s)
{
    return s != NULL ? s : "-";
}

static void on_user(void *arg, const gw_account_t *u)
{
    printf("%-6s %-16s %-32s %-6s %-8s %-16s %-20s %s\n", u->id, u->organisation, u->email, u->role,
           or_dash(u->customer_id), u->status, u->created_at, or_dash(u->last_login_at));
}

static int user_list(const gw_config_t *cfg, const char *organisation)
{
    int ret = 1;
    gw_dbs_t *s = open_db(cfg, "user list");
    if (s == NULL)
        return 1;
    int64_t org = 0;
    if (organisation != NULL && find_organisation(s, "user list", organisation, &org) != 0)
        goto Exit;
    printf("%-6s %-16s %-32s %-6s %-8s %-16s %-20s %s\n", "ID", "ORGANISATION", "EMAIL", "ROLE", "CUSTOMER", "STATUS",
           "CREATED", "LAST SIGN-IN");
    gw_err_t err = GW_ERR_INIT;
    long long n = gw_accounts_user_list(s, org, on_user, NULL, &err);
    if (n < 0) {
        fprintf(stderr, "settled: user list: %s\n", err.detail);
        goto Exit;
    }
    printf("(%lld user%s)\n", n, n == 1 ? "" : "s");
    ret = 0;
Exit:
    gw_dbs_close(s);
    return ret;
}

/* ---- disable ---- */

static int user_disable(const gw_config_t *cfg, const char *organisation, const char *email, const char *actor_name)
{
    if (organisation == NULL || email == NULL) {
        fprintf(stderr, "settled: user disable: --organisation and --email are required\n");
        gw_cli_user_usage(stderr);
        return GW_ARGS_USAGE;
    }
    int ret = 1;
    gw_dbs_t *s = open_db(cfg, "user disable");
    if (s == NULL)
        return 1;
    int64_t org;
    if (find_organisation(s, "user disable", organisation, &org) != 0)
        goto Exit;
    char actor[160], correlation[40];
    actor_of(actor_name, actor, correlation);
    const char *result;
    long long revoked;
    int64_t user_id = 0;
    gw_err_t err = GW_ERR_INIT;
    if (gw_accounts_user_disable(s, org, email, actor, correlation, &result, &revoked, &user_id, &err) != 0) {
        fprintf(stderr, "settled: user disable: %s\n", err.detail);
        goto Exit;
    }
    if (result == gw_accounts_unknown) {
        fprintf(stderr, "settled: user disable: %s has no user with the email %s\n", organisation, email);
        goto Exit;
    }
    if (result == gw_accounts_pending) {
        fprintf(stderr,
                "settled: user disable: %s of %s is a sign-up still waiting for its e-mail verification or an "
                "admin's approval: it cannot sign in, and it is left as it is (a disabled client needs a customer)\n",
                email, organisation);
        goto Exit;
    }
    printf("%s %s of %s; revoked %lld refresh token%s\n",
           result == gw_accounts_already ? "already disabled:" : "disabled", email, organisation, revoked,
           revoked == 1 ? "" : "s");
    /* the access tokens it holds: denied in Redis until the last of them expires */
    gw_redis_sync_t *redis =
        cfg->redis_url != NULL && cfg->redis_url[0] != '\0' ? gw_redis_sync_create(cfg->redis_url, 2000, 2000) : NULL;
    if (gw_session_deny_user(redis, cfg, user_id) == 0)
        printf("its access tokens are refused from now on\n");
    else
        fprintf(stderr,
                "settled: user disable: warning: Redis %s, so its access tokens keep working until they expire "
                "(at most %d s); run this again once Redis is back to refuse them at once\n",
                redis == NULL ? "is not configured (SETTLED_REDIS_URL)" : "did not take the deny key",
                cfg->access_token_ttl);
    gw_redis_sync_destroy(redis);
    ret = 0;
Exit:
    gw_dbs_close(s);
    return ret;
}

/* ---- reset ---- */

static int user_reset(const gw_config_t *cfg, const add_args_t *a)
{
    if (a->organisation == NULL || a->email == NULL) {
        fprintf(stderr, "settled: user reset: --organisation and --email are required\n");
        gw_cli_user_usage(stderr);
        return GW_ARGS_USAGE;
    }
    if (a->portal_url != NULL && strncmp(a->portal_url, "https://", 8) != 0 &&
        strncmp(a->portal_url, "http://", 7) != 0) {
        fprintf(stderr, "settled: user reset: --portal-url must be an http:// or https:// URL\n");
        return GW_ARGS_USAGE;
    }
    int ret = 1;
    char token[64] = {0};
    gw_dbs_t *s = open_db(cfg, "user reset");
    if (s == NULL)
        return 1;
    int64_t org;
    if (find_organisation(s, "user reset", a->organisation, &org) != 0)
        goto Exit;
    char actor[160], correlation[40], digest[65], expires[64], link[600];
    actor_of(a->actor, actor, correlation);
    if (gw_auth_refresh_token(token, digest) != 0) /* the same kind of one-time token */
        goto Exit;
    int64_t user_id = 0;
    gw_err_t err = GW_ERR_INIT;
    if (gw_accounts_reset_create(s, org, a->email, digest, correlation, &user_id, expires, &err) != 0) {
        fprintf(stderr, "settled: user reset: %s\n", err.detail);
        goto Exit;
    }
    if (user_id == 0) {
        fprintf(stderr, "settled: user reset: %s has no active user with the email %s\n", a->organisation, a->email);
        goto Exit;
    }
    gw_account_mail_link(cfg, a->portal_url, GW_ACCOUNT_PAGE_RESET, token, link, sizeof(link));
    printf("password reset for %s of %s, valid once until %s; hand them this link (it is shown only now):\n%s\n",
           a->email, a->organisation, expires, link);
    explicit_bzero(link, sizeof(link));
    ret = 0;
Exit:
    explicit_bzero(token, sizeof(token));
    gw_dbs_close(s);
    return ret;
}

int gw_cli_user(const gw_config_t *cfg, int argc, char **argv)
{
    if (argc == 0) {
        fprintf(stderr, "settled: user: add, list, disable or reset?\n");
        gw_cli_user_usage(stderr);
        return GW_ARGS_USAGE;
    }
    const char *sub = argv[0];
    bool add = strcmp(sub, "add") == 0, list = strcmp(sub, "list") == 0, disable = strcmp(sub, "disable") == 0,
         reset = strcmp(sub, "reset") == 0;
    if (!add && !list && !disable && !reset) {
        fprintf(stderr, "settled: user: unknown subcommand %s (add, list, disable or reset)\n", sub);
        return GW_ARGS_USAGE;
    }
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "user %s", sub);
    add_args_t a = {0};
    const char *config = NULL;
    for (int i = 1; i < argc; ++i) {
        int rc = gw_args_value(cmd, argc, argv, &i, "--organisation", &a.organisation);
        if (rc == 0)
            rc = gw_args_value(cmd, argc, argv, &i, "--config", &config);
        if (rc == 0 && !list)
            rc = gw_args_value(cmd, argc, argv, &i, "--email", &a.email);
        if (rc == 0 && !list)
            rc = gw_args_value(cmd, argc, argv, &i, "--actor", &a.actor);
        if (rc == 0 && add)
            rc = gw_args_value(cmd, argc, argv, &i, "--role", &a.role);
        if (rc == 0 && add)
            rc = gw_args_value(cmd, argc, argv, &i, "--customer", &a.customer);
        if (rc == 0 && (add || reset))
            rc = gw_args_value(cmd, argc, argv, &i, "--portal-url", &a.portal_url);
        if (rc < 0)
            return GW_ARGS_USAGE;
        if (rc > 0)
            continue;
        if (add && strcmp(argv[i], "--invite") == 0)
            a.invite = true;
        else
            return gw_args_unknown(cmd, argv[i]);
    }
    if (a.actor != NULL && (a.actor[0] == '\0' || strlen(a.actor) > 100)) {
        fprintf(stderr, "settled: %s: --actor: a name of 1 to 100 characters\n", cmd);
        return GW_ARGS_USAGE;
    }
    if (add)
        return user_add(cfg, &a);
    if (list)
        return user_list(cfg, a.organisation);
    if (reset)
        return user_reset(cfg, &a);
    return user_disable(cfg, a.organisation, a.email, a.actor);
}
