/* SPDX-License-Identifier: MIT */
/*
 * Tests of gateway/cli.c that need no network or database: the parameters of a --callback URL (found, percent-decoded,
 * refused when malformed), the refresh token read from standard input, and the usage errors and missing settings of
 * `settled connect` and `settled sync`, which answer before anything is opened, with their exit codes and messages.
 * The commands themselves are covered end to end by tests/integration/test_xero_oauth.py and test_pipeline.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "../../../gateway/cli.c"

static void expect_query(const char *url, const char *name, int rc, const char *want)
{
    char *got = (char *)"unchanged";
    int r = query_value(url, name, &got);
    if (r != rc)
        fail_msg("%s in %s: returned %d, expected %d", name, url, r, rc);
    if (want == NULL) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_query_value(void **state)
{
    expect_query("http://h/cb?code=abc&state=s1", "code", 0, "abc");
    expect_query("http://h/cb?code=abc&state=s1", "state", 0, "s1");
    expect_query("http://h/cb?state=x%2By%3D&code=a+b", "state", 0, "x+y=");
    expect_query("http://h/cb?state=x%2By%3D&code=a+b", "code", 0, "a b");
    expect_query("http://h/cb?code=", "code", 0, "");
    expect_query("http://h/cb?code=1&code=2", "code", 0, "1");    /* the first one */
    expect_query("http://h/cb?code=1#state=2", "state", 1, NULL); /* the fragment is not the query */
    expect_query("http://h/cb?code=1#state=2", "code", 0, "1");
    expect_query("http://h/cb?codex=1&xcode=2&code", "code", 1, NULL); /* names match whole */
    expect_query("http://h/code=1", "code", 1, NULL);                  /* no query at all */
    expect_query("http://h/cb?", "code", 1, NULL);
    expect_query("http://h/cb?error=access_denied", "error", 0, "access_denied");
    /* malformed values are refused, not passed on half-decoded */
    expect_query("http://h/cb?code=a%zz&state=s", "code", -1, NULL);
    expect_query("http://h/cb?code=a%4&state=s", "code", -1, NULL);
    expect_query("http://h/cb?code=a%00b&state=s", "code", -1, NULL);
    expect_query("http://h/cb?code=a%zz&state=s", "state", 0, "s"); /* only the malformed one */
}

static char *line_of(const char *text)
{
    FILE *in = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(in);
    char *line = read_line(in);
    fclose(in);
    return line;
}

static void test_read_line(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {{"tok\n", "tok"},       {"tok", "tok"},   {"tok\r\n", "tok"}, {"tok  \n", "tok"},
                 {"tok\nmore\n", "tok"}, {"a b\n", "a b"}, {"\n", ""}};
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char *got = line_of(cases[i].in);
        assert_non_null(got);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
    assert_null(line_of("")); /* end of input at once */
}

typedef int (*command_t)(const gw_config_t *, int, char **);

/* Runs cmd with the NULL-terminated arguments of ap, stdout and stderr captured into *out and *err (malloc'd).
 * Returns its exit code. */
static int vrun(command_t cmd, const gw_config_t *cfg, char **out, char **err, const char *arg0, va_list ap)
{
    char *argv[16];
    int argc = 0;
    for (const char *a = arg0; a != NULL && argc != 15; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    argv[argc] = NULL;

    fflush(stdout);
    fflush(stderr);
    FILE *fo = tmpfile(), *fe = tmpfile();
    assert_non_null(fo);
    assert_non_null(fe);
    int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
    dup2(fileno(fo), STDOUT_FILENO);
    dup2(fileno(fe), STDERR_FILENO);
    int rc = cmd(cfg, argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, STDOUT_FILENO);
    dup2(saved_err, STDERR_FILENO);
    close(saved_out);
    close(saved_err);
    FILE *files[] = {fo, fe};
    char **texts[] = {out, err};
    for (int i = 0; i != 2; ++i) {
        long n = ftell(files[i]);
        rewind(files[i]);
        *texts[i] = calloc(1, (size_t)n + 1);
        assert_int_equal(fread(*texts[i], 1, (size_t)n, files[i]), (size_t)n);
        fclose(files[i]);
    }
    return rc;
}

static int run(command_t cmd, const gw_config_t *cfg, char **out, char **err, const char *arg0, ...)
{
    va_list ap;
    va_start(ap, arg0);
    int rc = vrun(cmd, cfg, out, err, arg0, ap);
    va_end(ap);
    return rc;
}

/* Runs cmd and checks its exit code, that want_err is in its stderr, and that want_out is in its stdout (NULL:
 * that it printed nothing there). */
static void expect_run(command_t cmd, const gw_config_t *cfg, int want_rc, const char *want_out, const char *want_err,
                       const char *arg0, ...)
{
    char *out, *err;
    va_list ap;
    va_start(ap, arg0);
    int rc = vrun(cmd, cfg, &out, &err, arg0, ap);
    va_end(ap);
    const char *what = arg0 != NULL ? arg0 : "(no arguments)";
    if (rc != want_rc || (want_out != NULL && strstr(out, want_out) == NULL) ||
        (want_err != NULL && strstr(err, want_err) == NULL))
        fail_msg("%s ...: exit %d (expected %d)\nstdout:\n%s\nstderr:\n%s\nexpected in stdout: %s\nexpected in "
                 "stderr: %s",
                 what, rc, want_rc, out, err, want_out != NULL ? want_out : "-", want_err != NULL ? want_err : "-");
    if (want_out == NULL && out[0] != '\0')
        fail_msg("%s ...: unexpected stdout:\n%s", what, out);
    free(out);
    free(err);
}

static void test_connect_usage(void **state)
{
    gw_config_t cfg = {0};
    const char *usage = "usage: settled connect xero --refresh-token TOKEN|- [--organisation SLUG]";
    expect_run(gw_cli_connect, &cfg, 2, NULL, "settled: connect: unknown provider (only xero", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, "settled: connect: unknown provider: stripe (only xero", "stripe", NULL);
    expect_run(gw_cli_connect, &cfg, 0, usage, NULL, "xero", "--help", NULL);
    expect_run(gw_cli_connect, &cfg, 0, usage, NULL, "xero", "-h", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, "settled: connect xero: unknown option --bogus", "xero", "--bogus", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, "settled: connect xero: unexpected argument extra", "xero", "extra",
               NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, "settled: connect xero: --refresh-token needs a value", "xero",
               "--refresh-token", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, "settled: connect xero: --organisation needs a value", "xero", "--check",
               "--organisation", NULL);
    /* an option is not the value of the one before it; '-' is (standard input) */
    expect_run(gw_cli_connect, &cfg, 2, NULL, "settled: connect xero: --callback needs a value", "xero", "--callback",
               "--check", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, "--organisation needs a value", "xero", "--check",
               "--organisation=", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, "SETTLED_ORGANISATION: required", "xero", "--refresh-token", "-", NULL);
    const char *one = "give exactly one of --refresh-token, --authorize, --callback and --check";
    expect_run(gw_cli_connect, &cfg, 2, NULL, one, "xero", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, one, "xero", "--authorize", "--check", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, one, "xero", "--refresh-token", "t", "--callback", "u", NULL);
    expect_run(gw_cli_connect, &cfg, 2, NULL, one, "xero", "--authorize", "--force-refresh", NULL);
    /* usage errors print the usage too */
    expect_run(gw_cli_connect, &cfg, 2, NULL, usage, "xero", "--authorize", "--check", NULL);
    /* the organisation: from the settings or the flag */
    expect_run(gw_cli_connect, &cfg, 2, NULL, "SETTLED_ORGANISATION: required (or give --organisation SLUG)", "xero",
               "--check", NULL);
    /* --config belongs to main and is skipped */
    expect_run(gw_cli_connect, &cfg, 1, NULL, "SETTLED_DATABASE_URL: required to connect Xero", "xero", "--check",
               "--config", "/nonexistent", "--organisation", "acme", NULL);
}

/* A missing setting is named before any database, network or organisation is touched (the URL is never reached). */
static void test_connect_names_missing_settings(void **state)
{
    gw_config_t cfg = {.organisation = "acme", .database_url = "postgresql://127.0.0.1:1/unreachable"};
    expect_run(gw_cli_connect, &cfg, 1, NULL,
               "settled: SETTLED_XERO_CLIENT_ID: required to connect Xero (the client id", "xero", "--check", NULL);
    cfg.xero_client_id = "cid";
    expect_run(gw_cli_connect, &cfg, 1, NULL, "settled: SETTLED_XERO_CLIENT_SECRET: required", "xero",
               "--refresh-token", "t", NULL);
    /* --authorize needs no client secret, but the key and the redirect URI */
    expect_run(gw_cli_connect, &cfg, 1, NULL, "settled: SETTLED_SECRET_KEY: required", "xero", "--authorize", NULL);
    cfg.secret_key = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";
    expect_run(gw_cli_connect, &cfg, 1, NULL, "settled: SETTLED_XERO_REDIRECT_URI: required to connect Xero (where",
               "xero", "--authorize", NULL);
    cfg.xero_client_secret = "cs";
    expect_run(gw_cli_connect, &cfg, 1, NULL, "settled: SETTLED_XERO_REDIRECT_URI: required", "xero", "--callback",
               "http://h/cb?code=a&state=b", NULL);
    cfg.secret_key = "not-a-key-but-a-passphrase";
    char *out, *err;
    assert_int_equal(run(gw_cli_connect, &cfg, &out, &err, "xero", "--check", NULL), 1);
    assert_non_null(strstr(err, "settled: SETTLED_SECRET_KEY: must be"));
    assert_null(strstr(err, "not-a-key-but-a-passphrase")); /* never echoed */
    free(out);
    free(err);
}

static void test_sync_usage(void **state)
{
    gw_config_t cfg = {0};
    const char *usage = "usage: settled sync xero [--since 2026-01-31T00:00:00Z] [--tenant TENANT_ID]";
    expect_run(gw_cli_sync, &cfg, 0, usage, NULL, "xero", "--help", NULL);
    expect_run(gw_cli_sync, &cfg, 0, usage, NULL, "xero", "-h", NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, usage, NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, usage, "paypal", NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, "settled: sync: unknown provider: paypal (xero, stripe or gocardless)",
               "paypal", NULL);
    /* stripe and gocardless: their own options, and a source that must be configured */
    expect_run(gw_cli_sync, &cfg, 0, "settled sync stripe|gocardless [--since T] [--source NAME]", NULL, "stripe",
               "--help", NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, "settled: sync stripe: unknown option --tenant", "stripe", "--tenant", "x",
               NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, "settled: sync gocardless: --since needs a value", "gocardless", "--since",
               NULL);
    expect_run(gw_cli_sync, &cfg, 1, NULL, "settled: sync stripe: no stripe webhook source named default", "stripe",
               NULL);
    expect_run(gw_cli_sync, &cfg, 1, NULL, "settled: sync gocardless: no gocardless webhook source named eu",
               "gocardless", "--source", "eu", NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, "settled: sync xero: unknown option --bogus", "xero", "--bogus", NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, "settled: sync xero: --since needs a value", "xero", "--since", NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, "settled: sync xero: --since needs a value", "xero", "--since", "--tenant",
               "0b5b8c4e-0000-4000-8000-000000000001", NULL);
    expect_run(gw_cli_sync, &cfg, 2, NULL, "settled: sync xero: --tenant needs a value", "xero", "--tenant", NULL);
    /* a tenant id that cannot be one is unknown, said before any database is needed */
    expect_run(gw_cli_sync, &cfg, 1, NULL, "settled: sync xero: unknown tenant nonsense: Xero tenant ids are UUIDs",
               "xero", "--tenant", "nonsense", NULL);
    expect_run(gw_cli_sync, &cfg, 1, NULL, "unknown tenant 0b5b8c4e-0000-4000-8000-00000000000g", "xero",
               "--tenant=0b5b8c4e-0000-4000-8000-00000000000g", NULL);
    assert_true(is_uuid("0B5B8C4E-0000-4000-8000-000000000001"));
    assert_false(is_uuid("0b5b8c4e00004000800000000000000001"));
    assert_false(is_uuid("0b5b8c4e-0000-4000-8000-0000000000011"));
    expect_run(gw_cli_sync, &cfg, 1, NULL, "settled: SETTLED_DATABASE_URL: required by sync", "xero", NULL);
    expect_run(gw_cli_sync, &cfg, 1, NULL, "settled: SETTLED_DATABASE_URL: required by sync", "xero", "--config", "f",
               "--tenant", "0b5b8c4e-0000-4000-8000-000000000001", NULL);
    assert_string_equal(kind_name("xero.creditnotes"), "creditnotes");
    assert_string_equal(kind_name("plain"), "plain");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_value),   cmocka_unit_test(test_read_line),
        cmocka_unit_test(test_connect_usage), cmocka_unit_test(test_connect_names_missing_settings),
        cmocka_unit_test(test_sync_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
