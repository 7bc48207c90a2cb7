/* SPDX-License-Identifier: MIT */
/* config.c: tests the settings table: defaults, every type's bounds and bad values, the file syntax, the
 * precedence of the environment, webhook sources, redaction, and that docs and sample config list every key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config.h"

/* --- helpers ------------------------------------------------------------------------------------------------ */

#define ENV(...) ((char *[]){__VA_ARGS__, NULL})

static char err[1024];

/* A SETTLED_SECRET_KEY that passes: 32 different bytes, base64 (as `openssl rand -base64 32` writes them). */
#define GOOD_KEY "yMnKy8zNzs/Q0dLT1NXW19jZ2tvc3d7f4OHi4+Tl5uc="

/* Loads from env (and the file at path, if any) and fails the test, showing the error, unless it loads. */
static void load_ok(gw_config_t *cfg, const char *path, char **env)
{
    err[0] = '\0';
    if (gw_config_load(cfg, path, env, err, sizeof(err)) != 0)
        fail_msg("expected the configuration to load, got: %s", err);
}

/* Loads from env and the file at path and checks that it fails with exactly the message expected. */
static void load_fails(const char *path, char **env, const char *expected)
{
    gw_config_t cfg;
    memset(err, 'x', sizeof(err));
    int ret = gw_config_load(&cfg, path, env, err, sizeof(err));
    if (ret != -1)
        gw_config_free(&cfg);
    if (ret != -1 || strcmp(err, expected) != 0)
        fail_msg("expected failure \"%s\", got %d \"%s\"", expected, ret, ret == -1 ? err : "");
    /* a failed load leaves nothing to free */
    assert_int_equal(cfg.nsources, 0);
    assert_null(cfg.sources);
    assert_null(cfg.listen_host);
}

/* Loads KEY=value from the environment and checks the error message. */
static void env_fails(const char *kv, const char *expected)
{
    load_fails(NULL, ENV((char *)kv), expected);
}

/* Returns what gw_config_dump writes (malloc'd). The text is returned in an allocation of its own, not in the
 * memstream's: once the address of the stream's pointer variable has escaped, GCC's optimiser (-Wdangling-pointer,
 * Release builds) cannot rule out that the variable ends up pointing at itself, and then takes every pointer into
 * the result for one into this function's dead frame. */
static char *dump(const gw_config_t *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    assert_non_null(fp);
    gw_config_dump(cfg, fp);
    fclose(fp);
    char *text = malloc(len + 1);
    assert_non_null(text);
    memcpy(text, buf, len + 1);
    free(buf);
    return text;
}

/* Checks that the dump of the configuration loaded from KEY=value has the line expected. */
static void env_dumps(const char *kv, const char *expected_line)
{
    gw_config_t cfg;
    load_ok(&cfg, NULL, ENV((char *)kv));
    char *text = dump(&cfg), needle[512];
    snprintf(needle, sizeof(needle), "\n%s\n", expected_line);
    if (strncmp(text, needle + 1, strlen(needle + 1)) != 0 && strstr(text, needle) == NULL)
        fail_msg("after %s expected the line \"%s\" in the dump:\n%s", kv, expected_line, text);
    free(text);
    gw_config_free(&cfg);
}

static void assert_not_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) != NULL)
        fail_msg("\"%s\" must not appear in:\n%s", needle, haystack);
}

/* Writes text into a new temporary file; returns its path (malloc'd). */
static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/settled-config-test-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    return path;
}

static void remove_temp(char *path)
{
    unlink(path);
    free(path);
}

static char *read_whole(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0, len = 0, got;
    do {
        cap += 65536;
        buf = realloc(buf, cap + 1);
        assert_non_null(buf);
        got = fread(buf + len, 1, cap - len, fp);
        len += got;
    } while (len == cap);
    buf[len] = '\0';
    fclose(fp);
    return buf;
}

/* The keys gw_config_list_keys prints, as a malloc'd NULL-terminated array of malloc'd strings. */
static char **list_keys(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    gw_config_list_keys(fp);
    fclose(fp);
    size_t n = 0;
    char **keys = calloc(len + 1, sizeof(*keys));
    for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
        keys[n++] = strdup(line);
    free(buf);
    return keys;
}

static void free_keys(char **keys)
{
    for (char **k = keys; *k != NULL; ++k)
        free(*k);
    free(keys);
}

static bool is_key_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '<' || c == '>';
}

/* Whether text mentions key as a whole word (so SETTLED_X does not count as a mention of SETTLED_X__<SOURCE>). */
static bool mentions(const char *text, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = text; (p = strstr(p, key)) != NULL; ++p)
        if ((p == text || !is_key_char(p[-1])) && !is_key_char(p[n]))
            return true;
    return false;
}

/* --- defaults and types ------------------------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    gw_config_t cfg;
    load_ok(&cfg, NULL, ENV("PATH=/usr/bin", "HOME=/root"));
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg.threads, cores < 1 ? 1 : cores > 64 ? 64 : cores);
    assert_null(cfg.database_url);
    assert_int_equal(cfg.db_connections, 2);
    assert_int_equal(cfg.db_max_batch, 64);
    assert_int_equal(cfg.db_commit_timeout_ms, 4000);
    assert_int_equal(cfg.db_queue_limit, 4096);
    assert_null(cfg.redis_url);
    assert_int_equal(cfg.body_limit, 1048576);
    assert_int_equal(cfg.stripe_tolerance, 300);
    assert_int_equal(cfg.retry_after, 5);
    assert_int_equal(cfg.shutdown_timeout_ms, 10000);
    assert_int_equal(cfg.log_level, GW_LOG_INFO);
    assert_true(cfg.access_log);
    assert_null(cfg.config_path);
    assert_string_equal(cfg.organisation, "default");
    assert_null(cfg.stripe_api_base);
    assert_null(cfg.xero_api_base);
    assert_null(cfg.xero_identity_base);
    assert_null(cfg.gocardless_api_base);
    assert_null(cfg.jwt_secret);
    assert_null(cfg.secret_key);
    assert_int_equal(cfg.nsources, 0); /* no secrets, no sources */
    assert_null(gw_config_find_source(&cfg, "stripe", "default", 7));
    gw_config_free(&cfg);

    /* NULL envp is an empty environment; an empty value means the default */
    load_ok(&cfg, NULL, NULL);
    assert_int_equal(cfg.db_connections, 2);
    gw_config_free(&cfg);
    load_ok(&cfg, NULL, ENV("SETTLED_DB_CONNECTIONS=", "SETTLED_LISTEN=  ", "SETTLED_STRIPE_WEBHOOK_SECRETS="));
    assert_int_equal(cfg.db_connections, 2);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.nsources, 0);
    gw_config_free(&cfg);
}

static void test_int_bounds(void **state)
{
    static const struct {
        const char *key;
        long long min, max;
    } ints[] = {
        {"SETTLED_THREADS", 0, 64},
        {"SETTLED_DB_CONNECTIONS", 1, 16},
        {"SETTLED_DB_MAX_BATCH", 1, 1024},
        {"SETTLED_DB_COMMIT_TIMEOUT_MS", 100, 60000},
        {"SETTLED_DB_QUEUE_LIMIT", 1, 1000000},
        {"SETTLED_STRIPE_TOLERANCE", 0, 86400},
        {"SETTLED_RETRY_AFTER", 1, 3600},
        {"SETTLED_SHUTDOWN_TIMEOUT_MS", 0, 600000},
        {"SETTLED_INSTANCES", 1, 1000},
    };
    static const char *const bad[] = {
        "abc", "1.5", "0x10", "1e3", "12abc", "+", "-", "--1", "1 2", "99999999999999999999", "-99999999999999999999"};
    for (size_t i = 0; i != sizeof(ints) / sizeof(ints[0]); ++i) {
        char kv[128], expected[256], line[128];
        snprintf(expected, sizeof(expected), "%s: must be an integer from %lld to %lld", ints[i].key, ints[i].min,
                 ints[i].max);
        snprintf(kv, sizeof(kv), "%s=%lld", ints[i].key, ints[i].min - 1);
        env_fails(kv, expected);
        snprintf(kv, sizeof(kv), "%s=%lld", ints[i].key, ints[i].max + 1);
        env_fails(kv, expected);
        for (size_t j = 0; j != sizeof(bad) / sizeof(bad[0]); ++j) {
            snprintf(kv, sizeof(kv), "%s=%s", ints[i].key, bad[j]);
            env_fails(kv, expected);
        }
        snprintf(kv, sizeof(kv), "%s=%lld", ints[i].key, ints[i].max);
        snprintf(line, sizeof(line), "%s=%lld", ints[i].key, ints[i].max);
        env_dumps(kv, line);
        if (ints[i].min != 0) { /* SETTLED_THREADS=0 means the number of cores */
            snprintf(kv, sizeof(kv), "%s= %lld ", ints[i].key, ints[i].min);
            snprintf(line, sizeof(line), "%s=%lld", ints[i].key, ints[i].min);
            env_dumps(kv, line);
        }
    }
    gw_config_t cfg;
    load_ok(&cfg, NULL, ENV("SETTLED_THREADS=3", "SETTLED_DB_CONNECTIONS=+7", "SETTLED_SHUTDOWN_TIMEOUT_MS=0"));
    assert_int_equal(cfg.threads, 3);
    assert_int_equal(cfg.db_connections, 7);
    assert_int_equal(cfg.shutdown_timeout_ms, 0);
    gw_config_free(&cfg);
}

static void test_size(void **state)
{
    static const struct {
        const char *value;
        size_t bytes;
    } good[] = {{"1024", 1024},  {"1k", 1024},    {"1K", 1024},      {"4096", 4096},       {"512k", 524288},
                {"2m", 2097152}, {"2M", 2097152}, {"64m", 67108864}, {"65536K", 67108864}, {"67108864", 67108864}};
    static const char *const bad[] = {"1023",
                                      "0",
                                      "1",
                                      "0k",
                                      "65m",
                                      "67108865",
                                      "1g",
                                      "1G",
                                      "k",
                                      "m",
                                      "-1k",
                                      "1.5m",
                                      "1kb",
                                      "1KiB",
                                      "1 k",
                                      "k1",
                                      "18446744073709551616",
                                      "18014398509481984k",
                                      "abc"};
    for (size_t i = 0; i != sizeof(good) / sizeof(good[0]); ++i) {
        gw_config_t cfg;
        char kv[64];
        snprintf(kv, sizeof(kv), "SETTLED_BODY_LIMIT=%s", good[i].value);
        load_ok(&cfg, NULL, ENV(kv));
        if (cfg.body_limit != good[i].bytes)
            fail_msg("%s: expected %zu, got %zu", kv, good[i].bytes, cfg.body_limit);
        gw_config_free(&cfg);
    }
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        char kv[64];
        snprintf(kv, sizeof(kv), "SETTLED_BODY_LIMIT=%s", bad[i]);
        env_fails(kv, "SETTLED_BODY_LIMIT: must be a size from 1024 to 67108864 bytes (suffix k or m for KiB or MiB)");
    }
}

static void test_bool(void **state)
{
    static const char *const yes[] = {"true", "TRUE", "1", "yes", "Yes", "on", "ON"};
    static const char *const no[] = {"false", "False", "0", "no", "NO", "off", "Off"};
    static const char *const bad[] = {"maybe", "2", "y", "n", "t", "f", "truee", "-1", "enabled"};
    char kv[64];
    gw_config_t cfg;
    for (size_t i = 0; i != sizeof(yes) / sizeof(yes[0]); ++i) {
        snprintf(kv, sizeof(kv), "SETTLED_ACCESS_LOG=%s", no[i]);
        load_ok(&cfg, NULL, ENV(kv));
        assert_false(cfg.access_log);
        gw_config_free(&cfg);
        snprintf(kv, sizeof(kv), "SETTLED_ACCESS_LOG=%s", yes[i]);
        load_ok(&cfg, NULL, ENV(kv, "SETTLED_THREADS=1"));
        assert_true(cfg.access_log);
        gw_config_free(&cfg);
    }
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        snprintf(kv, sizeof(kv), "SETTLED_ACCESS_LOG=%s", bad[i]);
        env_fails(kv, "SETTLED_ACCESS_LOG: must be true or false (or 1/0, yes/no, on/off)");
    }
}

static void test_log_level(void **state)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i != 4; ++i) {
        gw_config_t cfg;
        char kv[64];
        snprintf(kv, sizeof(kv), "SETTLED_LOG_LEVEL=%s", names[i]);
        load_ok(&cfg, NULL, ENV(kv));
        assert_int_equal(cfg.log_level, i);
        gw_config_free(&cfg);
        env_dumps(kv, kv);
    }
    env_fails("SETTLED_LOG_LEVEL=verbose", "SETTLED_LOG_LEVEL: must be one of debug, info, warn, error");
    env_fails("SETTLED_LOG_LEVEL=warning", "SETTLED_LOG_LEVEL: must be one of debug, info, warn, error");
    env_fails("SETTLED_LOG_LEVEL=2", "SETTLED_LOG_LEVEL: must be one of debug, info, warn, error");
}

static void test_listen(void **state)
{
    static const struct {
        const char *value, *host;
        uint16_t port;
        const char *dumped;
    } good[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"},
        {"0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"},
        {"localhost:65535", "localhost", 65535, "localhost:65535"},
        {"gw-1.example.com:443", "gw-1.example.com", 443, "gw-1.example.com:443"},
        {"[::1]:8080", "::1", 8080, "[::1]:8080"},
        {"[::]:9000", "::", 9000, "[::]:9000"},
        {"[2001:db8::5]:80", "2001:db8::5", 80, "[2001:db8::5]:80"},
        {" 10.1.2.3:80 ", "10.1.2.3", 80, "10.1.2.3:80"},
    };
    static const char *const bad[] = {
        "127.0.0.1",     "127.0.0.1:",     "127.0.0.1:0",  "127.0.0.1:65536", "127.0.0.1:-1",    "127.0.0.1:80x",
        "127.0.0.1:+80", ":8080",          "::1:8080",     "[::1]8080",       "[::1]",           "[]:80",
        "[zz::1]:80",    "[127.0.0.1]:80", "256.1.1.1:80", "1.2.3:80",        "-bad.example:80", "bad-.example:80",
        "a..b:80",       "under_score:80", "host name:80", "*:8080",          "http://x:80"};
    for (size_t i = 0; i != sizeof(good) / sizeof(good[0]); ++i) {
        gw_config_t cfg;
        char kv[128], line[128];
        snprintf(kv, sizeof(kv), "SETTLED_LISTEN=%s", good[i].value);
        load_ok(&cfg, NULL, ENV(kv));
        assert_string_equal(cfg.listen_host, good[i].host);
        assert_int_equal(cfg.listen_port, good[i].port);
        gw_config_free(&cfg);
        snprintf(line, sizeof(line), "SETTLED_LISTEN=%s", good[i].dumped);
        env_dumps(kv, line);
    }
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        char kv[128];
        snprintf(kv, sizeof(kv), "SETTLED_LISTEN=%s", bad[i]);
        env_fails(kv, "SETTLED_LISTEN: must be host:port with a port from 1 to 65535 and an IPv4 address, a host name "
                      "or an IPv6 address in brackets (e.g. 127.0.0.1:8080, [::1]:8080)");
    }
}

/* SETTLED_OPS_LISTEN: an address as SETTLED_LISTEN, or off; its default is 127.0.0.1:9464. */
static void test_ops_listen(void **state)
{
    gw_config_t cfg;
    load_ok(&cfg, NULL, ENV("SETTLED_THREADS=1"));
    assert_string_equal(cfg.ops_listen_host, "127.0.0.1");
    assert_int_equal(cfg.ops_listen_port, 9464);
    gw_config_free(&cfg);
    load_ok(&cfg, NULL, ENV("SETTLED_OPS_LISTEN=[::1]:9999"));
    assert_string_equal(cfg.ops_listen_host, "::1");
    assert_int_equal(cfg.ops_listen_port, 9999);
    gw_config_free(&cfg);
    load_ok(&cfg, NULL, ENV("SETTLED_OPS_LISTEN=off"));
    assert_null(cfg.ops_listen_host);
    gw_config_free(&cfg);
    env_dumps("SETTLED_OPS_LISTEN=off", "SETTLED_OPS_LISTEN=off");
    static const char *const bad[] = {"127.0.0.1", "127.0.0.1:0", "OFF", "none", "::1:80"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        char kv[128];
        snprintf(kv, sizeof(kv), "SETTLED_OPS_LISTEN=%s", bad[i]);
        env_fails(kv, "SETTLED_OPS_LISTEN: must be off or host:port with a port from 1 to 65535 and an IPv4 address, "
                      "a host name or an IPv6 address in brackets (e.g. 127.0.0.1:9464)");
    }
}

static void test_organisation_slug(void **state)
{
    static const char *const good[] = {"a",
                                       "0",
                                       "acme",
                                       "acme-eu",
                                       "acme_eu",
                                       "9lives",
                                       "a23456789012345678901234567890123456789012345678901234567890123"};
    static const char *const bad[] = {"Acme",
                                      "-acme",
                                      "_acme",
                                      "acme eu",
                                      "acme.eu",
                                      "acmé",
                                      "a234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i != sizeof(good) / sizeof(good[0]); ++i) {
        gw_config_t cfg;
        char kv[128];
        snprintf(kv, sizeof(kv), "SETTLED_ORGANISATION=%s", good[i]);
        load_ok(&cfg, NULL, ENV(kv));
        assert_string_equal(cfg.organisation, good[i]);
        gw_config_free(&cfg);
    }
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        char kv[128];
        snprintf(kv, sizeof(kv), "SETTLED_ORGANISATION=%s", bad[i]);
        env_fails(kv, "SETTLED_ORGANISATION: must be 1 to 63 lower-case letters, digits, '_' or '-', starting with a "
                      "letter or digit");
    }
}

static void test_strings(void **state)
{
    gw_config_t cfg;
    load_ok(&cfg, NULL,
            ENV("SETTLED_DATABASE_URL=postgresql://settled@127.0.0.1:5432/settled",
                "SETTLED_REDIS_URL=redis://127.0.0.1:6379/0", "SETTLED_STRIPE_API_BASE=http://127.0.0.1:9001",
                "SETTLED_XERO_API_BASE=https://api.xero.com",
                "SETTLED_XERO_IDENTITY_BASE=http://localhost:9002/identity",
                "SETTLED_GOCARDLESS_API_BASE=http://[::1]:9003/", "SETTLED_XERO_CLIENT_SECRET= xero-secret ",
                "SETTLED_SECRET_KEY=" GOOD_KEY));
    assert_string_equal(cfg.database_url, "postgresql://settled@127.0.0.1:5432/settled");
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6379/0");
    assert_string_equal(cfg.stripe_api_base, "http://127.0.0.1:9001");
    assert_string_equal(cfg.xero_api_base, "https://api.xero.com");
    assert_string_equal(cfg.xero_identity_base, "http://localhost:9002/identity");
    assert_string_equal(cfg.gocardless_api_base, "http://[::1]:9003/");
    assert_string_equal(cfg.xero_client_secret, "xero-secret");
    assert_string_equal(cfg.secret_key, GOOD_KEY);
    gw_config_free(&cfg);

    load_ok(&cfg, NULL, ENV("SETTLED_DATABASE_URL=host=/run/postgresql dbname=settled"));
    assert_string_equal(cfg.database_url, "host=/run/postgresql dbname=settled");
    gw_config_free(&cfg);

    env_fails("SETTLED_DATABASE_URL=settled",
              "SETTLED_DATABASE_URL: must be a postgresql:// URI or a key=value connection string");
    env_fails("SETTLED_DATABASE_URL=mysql://u:hunter2@h/db",
              "SETTLED_DATABASE_URL: must be a postgresql:// URI or a key=value connection string");
    env_fails("SETTLED_DATABASE_URL=host=h\tpassword=hunter2\x01",
              "SETTLED_DATABASE_URL: must not contain control characters");
    env_fails("SETTLED_STRIPE_API_BASE=api.stripe.com",
              "SETTLED_STRIPE_API_BASE: must be an http:// or https:// URL (e.g. https://api.example.com)");
    env_fails("SETTLED_XERO_API_BASE=ftp://x",
              "SETTLED_XERO_API_BASE: must be an http:// or https:// URL (e.g. https://api.example.com)");
    env_fails("SETTLED_XERO_IDENTITY_BASE=https://",
              "SETTLED_XERO_IDENTITY_BASE: must have a host after the scheme (e.g. https://api.example.com)");
    env_fails("SETTLED_GOCARDLESS_API_BASE=http://a b",
              "SETTLED_GOCARDLESS_API_BASE: must be an http:// or https:// URL without spaces");
    env_fails("SETTLED_REDIS_URL=redis://x\x7f", "SETTLED_REDIS_URL: must not contain control characters");

    /* a secret that is too long is refused without being echoed */
    char kv[1200] = "SETTLED_XERO_CLIENT_SECRET=";
    memset(kv + strlen(kv), 'S', 1025);
    env_fails(kv, "SETTLED_XERO_CLIENT_SECRET: must be at most 1024 bytes");
    kv[strlen(kv) - 1] = '\0';
    load_ok(&cfg, NULL, ENV(kv));
    assert_int_equal(strlen(cfg.xero_client_secret), 1024);
    gw_config_free(&cfg);
}

static void test_secret_lists(void **state)
{
    gw_config_t cfg;
    load_ok(&cfg, NULL,
            ENV("SETTLED_STRIPE_WEBHOOK_SECRETS= whsec_one , whsec_two,whsec_three ",
                "SETTLED_XERO_WEBHOOK_KEY= xk,with,commas ", "SETTLED_GOCARDLESS_WEBHOOK_SECRETS=gc"));
    assert_int_equal(cfg.nsources, 3);
    gw_source_t *s = gw_config_find_source(&cfg, "stripe", "default", 7);
    assert_non_null(s);
    assert_ptr_equal(s->connector, &cn_stripe_connector);
    assert_int_equal(s->secrets.count, 3);
    assert_int_equal(s->secrets.keys[0].len, 9);
    assert_memory_equal(s->secrets.keys[0].base, "whsec_one", 9);
    assert_memory_equal(s->secrets.keys[1].base, "whsec_two", 9);
    assert_int_equal(s->secrets.keys[2].len, 11);
    assert_memory_equal(s->secrets.keys[2].base, "whsec_three", 11);
    s = gw_config_find_source(&cfg, "xero", "default", 7);
    assert_non_null(s);
    assert_ptr_equal(s->connector, &cn_xero_connector);
    assert_int_equal(s->secrets.count, 1); /* one key, commas and all */
    assert_int_equal(s->secrets.keys[0].len, 14);
    assert_memory_equal(s->secrets.keys[0].base, "xk,with,commas", 14);
    s = gw_config_find_source(&cfg, "gocardless", "default", 7);
    assert_non_null(s);
    assert_ptr_equal(s->connector, &cn_gocardless_connector);
    assert_string_equal(s->organisation, "default");
    gw_config_free(&cfg);

    static const struct {
        const char *kv, *expected;
    } bad[] = {
        {"SETTLED_STRIPE_WEBHOOK_SECRETS=whsec_TOPSECRET1,,whsec_TOPSECRET2",
         "SETTLED_STRIPE_WEBHOOK_SECRETS: secret 2 of 3 is empty (separate secrets with single commas)"},
        {"SETTLED_STRIPE_WEBHOOK_SECRETS=whsec_TOPSECRET1,",
         "SETTLED_STRIPE_WEBHOOK_SECRETS: secret 2 of 2 is empty (separate secrets with single commas)"},
        {"SETTLED_GOCARDLESS_WEBHOOK_SECRETS=,TOPSECRET",
         "SETTLED_GOCARDLESS_WEBHOOK_SECRETS: secret 1 of 2 is empty (separate secrets with single commas)"},
        {"SETTLED_GOCARDLESS_WEBHOOK_SECRETS=TOPSECRET,  ,x",
         "SETTLED_GOCARDLESS_WEBHOOK_SECRETS: secret 2 of 3 is empty (separate secrets with single commas)"},
        {"SETTLED_STRIPE_WEBHOOK_SECRETS__EU=TOPSECRET,,",
         "SETTLED_STRIPE_WEBHOOK_SECRETS__EU: secret 2 of 3 is empty (separate secrets with single commas)"},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        env_fails(bad[i].kv, bad[i].expected);
        assert_not_contains(err, "TOPSECRET");
    }

    /* 1024 bytes per secret is the most */
    char kv[1200] = "SETTLED_STRIPE_WEBHOOK_SECRETS=a,";
    size_t off = strlen(kv);
    memset(kv + off, 'T', 1024);
    kv[off + 1024] = '\0';
    load_ok(&cfg, NULL, ENV(kv));
    assert_int_equal(cfg.sources[0].secrets.keys[1].len, 1024);
    gw_config_free(&cfg);
    strcat(kv, "T");
    env_fails(kv, "SETTLED_STRIPE_WEBHOOK_SECRETS: secret 2 of 2 is longer than 1024 bytes");
    assert_not_contains(err, "TTTT");
    char xk[1200] = "SETTLED_XERO_WEBHOOK_KEY=";
    memset(xk + strlen(xk), 'X', 1025);
    env_fails(xk, "SETTLED_XERO_WEBHOOK_KEY: must be at most 1024 bytes");
    assert_not_contains(err, "XXXX");
}

/* --- file and environment ----------------------------------------------------------------------------------- */

static void test_file(void **state)
{
    char *path = write_temp("# settled configuration\n"
                            "\n"
                            "   # an indented comment\n"
                            "SETTLED_THREADS=3\n"
                            "  SETTLED_DB_MAX_BATCH =  10  \r\n"
                            "SETTLED_LISTEN=\"[::1]:9090\"\n"
                            "SETTLED_STRIPE_WEBHOOK_SECRETS=\"whsec_a#b, whsec_c\"\n"
                            "SETTLED_XERO_WEBHOOK_KEY=key=with=equals\n"
                            "SETTLED_REDIS_URL=\"\"\n"
                            "SETTLED_TEST_SOMETHING=ignored\n"
                            "SETTLED_LOG_LEVEL=debug"); /* no newline at the end */
    gw_config_t cfg;
    load_ok(&cfg, path, ENV("SETTLED_THREADS=5", "SETTLED_ACCESS_LOG=off"));
    assert_string_equal(cfg.config_path, path);
    assert_int_equal(cfg.threads, 5); /* the environment wins */
    assert_int_equal(cfg.db_max_batch, 10);
    assert_false(cfg.access_log);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 9090);
    assert_null(cfg.redis_url);
    assert_int_equal(cfg.log_level, GW_LOG_DEBUG);
    gw_source_t *s = gw_config_find_source(&cfg, "stripe", "default", 7);
    assert_non_null(s);
    assert_int_equal(s->secrets.count, 2);
    assert_memory_equal(s->secrets.keys[0].base, "whsec_a#b", 9); /* '#' starts a comment only at a line's start */
    s = gw_config_find_source(&cfg, "xero", "default", 7);
    assert_non_null(s);
    assert_memory_equal(s->secrets.keys[0].base, "key=with=equals", 15);
    gw_config_free(&cfg);

    /* SETTLED_CONFIG names the file when no path is given; the path argument wins over it */
    char env_config[256];
    snprintf(env_config, sizeof(env_config), "SETTLED_CONFIG=%s", path);
    load_ok(&cfg, NULL, ENV(env_config));
    assert_int_equal(cfg.threads, 3);
    assert_string_equal(cfg.config_path, path);
    env_dumps(env_config, env_config);
    gw_config_free(&cfg);
    char *other = write_temp("SETTLED_THREADS=7\n");
    load_ok(&cfg, other, ENV(env_config));
    assert_int_equal(cfg.threads, 7);
    gw_config_free(&cfg);
    remove_temp(other);
    remove_temp(path);

    load_fails(NULL, ENV("SETTLED_CONFIG=/nonexistent/settled.conf"),
               "SETTLED_CONFIG: cannot read /nonexistent/settled.conf: No such file or directory");
    load_fails("/nonexistent/settled.conf", NULL,
               "/nonexistent/settled.conf: cannot read the config file: No such file or directory");
}

static void test_file_errors(void **state)
{
    static const struct {
        const char *text, *expected; /* expected without the "path:" prefix */
    } cases[] = {
        {"SETTLED_THREADS=1\nSETTLED_THREADS\n", "2: expected KEY=value"},
        {"\n\nwhsec_ALONE_ON_A_LINE\n", "3: expected KEY=value"},
        {"=whsec_NO_KEY\n", "1: expected KEY=value, found no key before '='"},
        {"# ok\nSETTLED_NOPE=1\n", "2: SETTLED_NOPE: unknown setting (docs/configuration.md lists them all)"},
        {"SETTLED_THREDS=1\n", "1: SETTLED_THREDS: unknown setting (did you mean SETTLED_THREADS?)"},
        {"LISTEN=127.0.0.1:80\n", "1: LISTEN: not a setting of settled (settings start with SETTLED_)"},
        {"export SETTLED_THREADS=1\n",
         "1: export?SETTLED_THREADS: not a setting of settled (settings start with SETTLED_)"},
        {"\n\n\nSETTLED_DB_CONNECTIONS=17\n", "4: SETTLED_DB_CONNECTIONS: must be an integer from 1 to 16"},
        {"SETTLED_THREADS=1\nSETTLED_THREADS=2\n", "2: SETTLED_THREADS: set twice in the file (first on line 1)"},
        {"SETTLED_STRIPE_WEBHOOK_SECRETS=\"whsec_UNCLOSED\n",
         "1: SETTLED_STRIPE_WEBHOOK_SECRETS: the value's opening double quote is not closed at the end of the line"},
        {"SETTLED_LOG_LEVEL=\"\n",
         "1: SETTLED_LOG_LEVEL: the value's opening double quote is not closed at the end of the line"},
        {"SETTLED_CONFIG=/etc/other.conf\n",
         "1: SETTLED_CONFIG: names the config file, so it can only be set in the environment"},
        {"SETTLED_STRIPE_WEBHOOK_SECRETS=whsec_SECRET,,x\n",
         "1: SETTLED_STRIPE_WEBHOOK_SECRETS: secret 2 of 3 is empty (separate secrets with single commas)"},
        {"SETTLED_ORGANISATION__NOBODY=acme\n",
         "1: SETTLED_ORGANISATION__NOBODY: there is no webhook source \"nobody\" (define it with "
         "SETTLED_STRIPE_WEBHOOK_SECRETS__NOBODY, SETTLED_XERO_WEBHOOK_KEY__NOBODY or "
         "SETTLED_GOCARDLESS_WEBHOOK_SECRETS__NOBODY)"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char *path = write_temp(cases[i].text), expected[1024];
        snprintf(expected, sizeof(expected), "%s:%s", path, cases[i].expected);
        load_fails(path, NULL, expected);
        assert_not_contains(err, "whsec_");
        remove_temp(path);
    }

    /* a NUL byte in the file */
    char *path = write_temp("");
    FILE *fp = fopen(path, "w");
    fwrite("SETTLED_THREADS=1\nSETTLED_A\0B=1\n", 1, 32, fp);
    fclose(fp);
    char expected[512];
    snprintf(expected, sizeof(expected), "%s:2: contains a NUL byte", path);
    load_fails(path, NULL, expected);
    remove_temp(path);

    /* a bad value in the file is reported although the environment overrides another key of the file */
    path = write_temp("SETTLED_THREADS=65\nSETTLED_RETRY_AFTER=0\n");
    snprintf(expected, sizeof(expected), "%s:2: SETTLED_RETRY_AFTER: must be an integer from 1 to 3600", path);
    load_fails(path, ENV("SETTLED_THREADS=4"), expected);
    remove_temp(path);
}

static void test_unknown_keys(void **state)
{
    env_fails("SETTLED_LISTN=127.0.0.1:80", "SETTLED_LISTN: unknown setting (did you mean SETTLED_LISTEN?)");
    env_fails("SETTLED_STRIPE_WEBHOOK_SECRET=whsec_TYPO",
              "SETTLED_STRIPE_WEBHOOK_SECRET: unknown setting (did you mean SETTLED_STRIPE_WEBHOOK_SECRETS?)");
    assert_not_contains(err, "whsec_TYPO");
    env_fails("SETTLED_FROBNICATE=1", "SETTLED_FROBNICATE: unknown setting (docs/configuration.md lists them all)");
    env_fails("SETTLED_=1", "SETTLED_: unknown setting (docs/configuration.md lists them all)");
    env_fails("SETTLED_DATABASE_URL__EU=x",
              "SETTLED_DATABASE_URL__EU: unknown setting (docs/configuration.md lists them all)");
    env_fails("SETTLED_STRIPE_WEBHOOK_SECRETS_EU=x",
              "SETTLED_STRIPE_WEBHOOK_SECRETS_EU: unknown setting (did you mean SETTLED_STRIPE_WEBHOOK_SECRETS__EU?)");

    /* the test harness's keys, other programs' variables and entries without '=' are ignored */
    gw_config_t cfg;
    load_ok(&cfg, NULL,
            ENV("SETTLED_TEST_PG_URL=postgresql://x@y/z", "SETTLED_TEST_ANYTHING=1", "SETTLED_BIN=/x/settled",
                "SETTLED_SOURCE_DIR=/src", "SETTLEDX=1", "settled_listen=nonsense", "SETTLED_THREADS", "PATH=/bin",
                "=x"));
    gw_config_free(&cfg);

    /* the first of two equal keys in the environment counts, as with getenv */
    load_ok(&cfg, NULL, ENV("SETTLED_THREADS=2", "SETTLED_THREADS=99"));
    assert_int_equal(cfg.threads, 2);
    gw_config_free(&cfg);
}

/* --- sources ------------------------------------------------------------------------------------------------ */

static void test_sources(void **state)
{
    gw_config_t cfg;
    load_ok(&cfg, NULL,
            ENV("SETTLED_GOCARDLESS_WEBHOOK_SECRETS__UK=gc_uk", "SETTLED_ORGANISATION=acme",
                "SETTLED_STRIPE_WEBHOOK_SECRETS__EU=whsec_eu1,whsec_eu2", "SETTLED_STRIPE_WEBHOOK_SECRETS=whsec_main",
                "SETTLED_XERO_WEBHOOK_KEY__eu=xero_eu", "SETTLED_ORGANISATION__EU=acme-eu",
                "SETTLED_STRIPE_WEBHOOK_SECRETS__ACME_US-2=whsec_us", "SETTLED_XERO_WEBHOOK_KEY__EMPTY="));
    assert_string_equal(cfg.organisation, "acme");
    assert_int_equal(cfg.nsources, 5);
    /* sorted: provider in table order, default first, then by name */
    static const char *const order[][3] = {{"stripe", "default", "acme"},
                                           {"stripe", "acme_us-2", "acme"},
                                           {"stripe", "eu", "acme-eu"},
                                           {"xero", "eu", "acme-eu"},
                                           {"gocardless", "uk", "acme"}};
    for (size_t i = 0; i != 5; ++i) {
        assert_string_equal(cfg.sources[i].connector->name, order[i][0]);
        assert_string_equal(cfg.sources[i].name, order[i][1]);
        assert_string_equal(cfg.sources[i].organisation, order[i][2]);
        assert_int_equal(cfg.sources[i].organisation_id, 0);
    }

    gw_source_t *s = gw_config_find_source(&cfg, "stripe", "eu", 2);
    assert_ptr_equal(s, &cfg.sources[2]);
    assert_int_equal(s->secrets.count, 2);
    assert_memory_equal(s->secrets.keys[1].base, "whsec_eu2", 9);
    assert_ptr_equal(gw_config_find_source(&cfg, "stripe", "default", 7), &cfg.sources[0]);
    assert_ptr_equal(gw_config_find_source(&cfg, "stripe", NULL, 0), &cfg.sources[0]);
    assert_ptr_equal(gw_config_find_source(&cfg, "xero", "eu/extra", 2), &cfg.sources[3]); /* len bytes only */
    assert_ptr_equal(gw_config_find_source(&cfg, "gocardless", "uk", 2), &cfg.sources[4]);
    assert_null(gw_config_find_source(&cfg, "xero", "default", 7)); /* no secrets, no source */
    assert_null(gw_config_find_source(&cfg, "xero", "empty", 5));
    assert_null(gw_config_find_source(&cfg, "gocardless", "default", 7));
    assert_null(gw_config_find_source(&cfg, "stripe", "e", 1));
    assert_null(gw_config_find_source(&cfg, "stripe", "eu2", 3));
    assert_null(gw_config_find_source(&cfg, "paypal", "eu", 2));
    assert_null(gw_config_find_source(&cfg, "stripe", "EU", 2)); /* names are lower-case */

    char *text = dump(&cfg);
    static const char *const lines[] = {
        "SETTLED_STRIPE_WEBHOOK_SECRETS=<redacted: 1 value>\n",
        "SETTLED_XERO_WEBHOOK_KEY=<unset>\n",
        "SETTLED_GOCARDLESS_WEBHOOK_SECRETS=<unset>\n",
        "SETTLED_STRIPE_WEBHOOK_SECRETS__ACME_US-2=<redacted: 1 value>\n",
        "SETTLED_STRIPE_WEBHOOK_SECRETS__EU=<redacted: 2 values>\n",
        "SETTLED_XERO_WEBHOOK_KEY__EU=<redacted: 1 value>\n",
        "SETTLED_GOCARDLESS_WEBHOOK_SECRETS__UK=<redacted: 1 value>\n",
        "SETTLED_ORGANISATION__ACME_US-2=acme\n",
        "SETTLED_ORGANISATION__EU=acme-eu\n",
        "SETTLED_ORGANISATION__UK=acme\n",
        "# source stripe/default: POST /webhooks/stripe, organisation acme, 1 secret\n",
        "# source stripe/eu: POST /webhooks/stripe/eu, organisation acme-eu, 2 secrets\n",
        "# source xero/eu: POST /webhooks/xero/eu, organisation acme-eu, 1 secret\n",
    };
    for (size_t i = 0; i != sizeof(lines) / sizeof(lines[0]); ++i)
        if (strstr(text, lines[i]) == NULL)
            fail_msg("expected \"%s\" in the dump:\n%s", lines[i], text);
    char *once = strstr(text, "SETTLED_ORGANISATION__EU=");
    assert_null(strstr(once + 1, "SETTLED_ORGANISATION__EU=")); /* one line per source name */
    static const char *const secrets[] = {"whsec_main", "whsec_eu1", "whsec_eu2", "whsec_us", "xero_eu", "gc_uk"};
    for (size_t i = 0; i != sizeof(secrets) / sizeof(secrets[0]); ++i)
        assert_not_contains(text, secrets[i]);
    free(text);
    gw_config_free(&cfg);
}

/* SETTLED_STRIPE_SECRET_KEY__<SOURCE> and SETTLED_GOCARDLESS_ACCESS_TOKEN__<SOURCE>: the API key of one source's
 * account, else the provider's key; never printed. */
static void test_source_api_keys(void **state)
{
    (void)state;
    gw_config_t cfg;
    load_ok(&cfg, NULL,
            ENV("SETTLED_STRIPE_WEBHOOK_SECRETS=whsec_main", "SETTLED_STRIPE_WEBHOOK_SECRETS__EU=whsec_eu",
                "SETTLED_STRIPE_WEBHOOK_SECRETS__US=whsec_us", "SETTLED_STRIPE_SECRET_KEY=sk_test_main",
                "SETTLED_STRIPE_SECRET_KEY__EU=sk_test_eu", "SETTLED_GOCARDLESS_WEBHOOK_SECRETS__UK=gc_uk",
                "SETTLED_GOCARDLESS_ACCESS_TOKEN__uk=gc_token_uk"));
    assert_string_equal(gw_config_api_key(&cfg, "stripe", "eu"), "sk_test_eu");
    assert_string_equal(gw_config_api_key(&cfg, "stripe", "us"), "sk_test_main"); /* no key of its own */
    assert_string_equal(gw_config_api_key(&cfg, "stripe", NULL), "sk_test_main");
    assert_string_equal(gw_config_api_key(&cfg, "stripe", "default"), "sk_test_main");
    assert_string_equal(gw_config_api_key(&cfg, "gocardless", "uk"), "gc_token_uk");
    assert_null(gw_config_api_key(&cfg, "gocardless", NULL)); /* neither the default source's nor a global one */
    assert_null(gw_config_api_key(&cfg, "xero", NULL));
    char *text = dump(&cfg);
    assert_non_null(strstr(text, "SETTLED_STRIPE_SECRET_KEY__EU=<redacted: 1 value>\n"));
    assert_non_null(strstr(text, "SETTLED_GOCARDLESS_ACCESS_TOKEN__UK=<redacted: 1 value>\n"));
    assert_null(strstr(text, "SETTLED_STRIPE_SECRET_KEY__US"));
    assert_null(strstr(text, "sk_test_eu"));
    assert_null(strstr(text, "gc_token_uk"));
    free(text);
    gw_config_free(&cfg);

    /* a key for a source the provider does not have is an error naming the key that would define it */
    load_fails(NULL, ENV("SETTLED_XERO_WEBHOOK_KEY__EU=k", "SETTLED_STRIPE_SECRET_KEY__EU=sk_test_eu"),
               "SETTLED_STRIPE_SECRET_KEY__EU: there is no stripe webhook source \"eu\" (define it with "
               "SETTLED_STRIPE_WEBHOOK_SECRETS__EU)");
    env_fails("SETTLED_GOCARDLESS_ACCESS_TOKEN__DEFAULT=t",
              "SETTLED_GOCARDLESS_ACCESS_TOKEN__DEFAULT: the source name \"default\" is reserved: use "
              "SETTLED_GOCARDLESS_ACCESS_TOKEN");
}

static void test_source_errors(void **state)
{
    env_fails("SETTLED_ORGANISATION__GHOST=acme",
              "SETTLED_ORGANISATION__GHOST: there is no webhook source \"ghost\" (define it with "
              "SETTLED_STRIPE_WEBHOOK_SECRETS__GHOST, SETTLED_XERO_WEBHOOK_KEY__GHOST or "
              "SETTLED_GOCARDLESS_WEBHOOK_SECRETS__GHOST)");
    load_fails(
        NULL, ENV("SETTLED_STRIPE_WEBHOOK_SECRETS__EU=whsec_X", "SETTLED_ORGANISATION__EU=Acme EU"),
        "SETTLED_ORGANISATION__EU: must be 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter "
        "or digit");
    env_fails("SETTLED_STRIPE_WEBHOOK_SECRETS__DEFAULT=whsec_X",
              "SETTLED_STRIPE_WEBHOOK_SECRETS__DEFAULT: the source name \"default\" is reserved: use "
              "SETTLED_STRIPE_WEBHOOK_SECRETS");
    env_fails("SETTLED_ORGANISATION__default=acme",
              "SETTLED_ORGANISATION__default: the source name \"default\" is reserved: use SETTLED_ORGANISATION");
    static const char *const bad_names[] = {
        "SETTLED_XERO_WEBHOOK_KEY__=k",
        "SETTLED_XERO_WEBHOOK_KEY__-EU=k",
        "SETTLED_XERO_WEBHOOK_KEY___EU=k",
        "SETTLED_XERO_WEBHOOK_KEY__E.U=k",
        "SETTLED_XERO_WEBHOOK_KEY__ÉU=k",
        "SETTLED_XERO_WEBHOOK_KEY__A234567890123456789012345678901234567890123456789012345678901234=k"};
    for (size_t i = 0; i != sizeof(bad_names) / sizeof(bad_names[0]); ++i) {
        char expected[512];
        snprintf(
            expected, sizeof(expected),
            "%.*s: the source name after __ must be 1 to 63 letters, digits, '_' or '-', starting with a letter or "
            "digit",
            (int)(strchr(bad_names[i], '=') - bad_names[i]), bad_names[i]);
        for (char *p = expected; *p != ':'; ++p) /* error messages show non-ASCII bytes of keys as '?' */
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        env_fails(bad_names[i], expected);
    }
    /* 63 characters is the longest name */
    gw_config_t cfg;
    load_ok(&cfg, NULL,
            ENV("SETTLED_XERO_WEBHOOK_KEY__A23456789012345678901234567890123456789012345678901234567890123=k"));
    assert_int_equal(strlen(cfg.sources[0].name), 63);
    gw_config_free(&cfg);

    /* two keys that differ only in case name the same source */
    load_fails(NULL, ENV("SETTLED_STRIPE_WEBHOOK_SECRETS__EU=whsec_A", "SETTLED_STRIPE_WEBHOOK_SECRETS__eu=whsec_B"),
               "SETTLED_STRIPE_WEBHOOK_SECRETS__eu: source \"eu\" of stripe is already defined by another key");
    load_fails(
        NULL,
        ENV("SETTLED_STRIPE_WEBHOOK_SECRETS__EU=whsec_A", "SETTLED_ORGANISATION__EU=a", "SETTLED_ORGANISATION__Eu=b"),
        "SETTLED_ORGANISATION__Eu: source \"eu\" already gets its organisation from another key");
    assert_not_contains(err, "whsec_");
}

/* --- checks of values that parse: keys, URLs, scopes, settings nothing uses --------------------------------- */

#define KEY_HELP                                                                                                       \
    "32 random bytes written as 44 base64 characters or 64 hex digits, e.g. the output of `openssl rand -base64 32`"

static void test_value_checks(void **state)
{
    gw_config_t cfg;
    /* SETTLED_SECRET_KEY: 32 bytes, base64 (either alphabet) or hex */
    static const char *const good_keys[] = {
        "SETTLED_SECRET_KEY=" GOOD_KEY,
        "SETTLED_SECRET_KEY=101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f",
        "SETTLED_SECRET_KEY=-vv8_f7_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk=",
    };
    for (size_t i = 0; i != sizeof(good_keys) / sizeof(good_keys[0]); ++i) {
        load_ok(&cfg, NULL, ENV((char *)good_keys[i]));
        gw_config_free(&cfg);
    }
    static const struct {
        const char *kv, *expected;
    } bad[] = {
        {"SETTLED_SECRET_KEY=k", "SETTLED_SECRET_KEY: must be " KEY_HELP " (the value has 1 characters)"},
        {"SETTLED_SECRET_KEY=not-a-key-but-a-passphrase-0123",
         "SETTLED_SECRET_KEY: must be " KEY_HELP " (the value has 31 characters)"},
        /* 64 characters, not all hex */
        {"SETTLED_SECRET_KEY=101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2eZZ",
         "SETTLED_SECRET_KEY: must be " KEY_HELP " (the value has 64 characters, not all of them valid)"},
        /* 44 characters with '=' but not base64 */
        {"SETTLED_SECRET_KEY=yMnKy8zNzs/Q0dLT1NXW19jZ2tvc3d7f4OHi4+Tl5u!=",
         "SETTLED_SECRET_KEY: must be " KEY_HELP " (the value has 44 characters, not all of them valid)"},
        /* 32 bytes that are not random: all zero, one byte repeated, a pattern of 8 */
        {"SETTLED_SECRET_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
         "SETTLED_SECRET_KEY: must be 32 random bytes, but its bytes repeat too much to be random (all zero or a short "
         "pattern repeated); make one with `openssl rand -base64 32`"},
        {"SETTLED_SECRET_KEY=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "SETTLED_SECRET_KEY: must be 32 random bytes, but its bytes repeat too much to be random (all zero or a short "
         "pattern repeated); make one with `openssl rand -base64 32`"},
        {"SETTLED_SECRET_KEY=AQIDBAUGBwgBAgMEBQYHCAECAwQFBgcIAQIDBAUGBwg=",
         "SETTLED_SECRET_KEY: must be 32 random bytes, but its bytes repeat too much to be random (all zero or a short "
         "pattern repeated); make one with `openssl rand -base64 32`"},
        /* URLs: scheme, host, port, fragment, a base URL's query */
        {"SETTLED_XERO_API_BASE=https://:8080/api",
         "SETTLED_XERO_API_BASE: must have a host after the scheme (e.g. https://api.example.com)"},
        {"SETTLED_XERO_API_BASE=https://user:pw@/api",
         "SETTLED_XERO_API_BASE: must have a host after the scheme (e.g. https://api.example.com)"},
        {"SETTLED_STRIPE_API_BASE=http://api_stripe.com",
         "SETTLED_STRIPE_API_BASE: must have a host: the URL's host is not a host name or an IP address"},
        {"SETTLED_STRIPE_API_BASE=http://999.1.1.1",
         "SETTLED_STRIPE_API_BASE: must have a host: the URL's host is not a host name or an IP address"},
        {"SETTLED_STRIPE_API_BASE=http://127.0.0.1:99999",
         "SETTLED_STRIPE_API_BASE: must have a port from 1 to 65535 after the host's ':'"},
        {"SETTLED_STRIPE_API_BASE=http://127.0.0.1:/",
         "SETTLED_STRIPE_API_BASE: must have a port from 1 to 65535 after the host's ':'"},
        {"SETTLED_GOCARDLESS_API_BASE=http://127.0.0.1:80x",
         "SETTLED_GOCARDLESS_API_BASE: must have a port from 1 to 65535 after the host's ':'"},
        {"SETTLED_GOCARDLESS_API_BASE=http://[::1/",
         "SETTLED_GOCARDLESS_API_BASE: must have a host: the URL's IPv6 address is not closed with ']'"},
        {"SETTLED_GOCARDLESS_API_BASE=http://[::g]/",
         "SETTLED_GOCARDLESS_API_BASE: must have a host: the URL's bracketed host is not an IPv6 address"},
        {"SETTLED_XERO_LOGIN_BASE=https://login.xero.com/?x=1",
         "SETTLED_XERO_LOGIN_BASE: must be a base URL without a query ('?...'): paths are appended to it"},
        {"SETTLED_XERO_REDIRECT_URI=https://gw.example/v1/xero/callback#top",
         "SETTLED_XERO_REDIRECT_URI: must not have a fragment ('#...')"},
        {"SETTLED_REDIS_URL=localhost:6379",
         "SETTLED_REDIS_URL: must be redis://[[user]:password@]host[:port][/db] with a port from 1 to 65535 and a "
         "database from 0 to 1000 (TLS, rediss://, is not supported)"},
        {"SETTLED_REDIS_URL=redis://cache:0/1",
         "SETTLED_REDIS_URL: must be redis://[[user]:password@]host[:port][/db] with a port from 1 to 65535 and a "
         "database from 0 to 1000 (TLS, rediss://, is not supported)"},
        {"SETTLED_REDIS_URL=rediss://:PW_secret@cache",
         "SETTLED_REDIS_URL: must be redis://[[user]:password@]host[:port][/db] with a port from 1 to 65535 and a "
         "database from 0 to 1000 (TLS, rediss://, is not supported)"},
        /* Xero scopes without offline_access (a scope that merely contains the word does not count) */
        {"SETTLED_XERO_SCOPES=accounting.transactions accounting.contacts",
         "SETTLED_XERO_SCOPES: must include offline_access: without it Xero issues no refresh token, and every "
         "connection stops working when its first access token expires (after 30 minutes)"},
        {"SETTLED_XERO_SCOPES=offline_accessx accounting.contacts",
         "SETTLED_XERO_SCOPES: must include offline_access: without it Xero issues no refresh token, and every "
         "connection stops working when its first access token expires (after 30 minutes)"},
        /* names that go into log lines, metric labels and JSON unescaped */
        {"SETTLED_INSTANCE_ID=web \"1\"", "SETTLED_INSTANCE_ID: must be at most 64 letters, digits and . _ - : @"},
        {"SETTLED_REUSEPORT_GROUP=blue/green",
         "SETTLED_REUSEPORT_GROUP: must be at most 64 letters, digits and . _ - : @"},
        /* access tokens: a short HS256 key, an algorithm outside the three, the key files of the other kind */
        {"SETTLED_JWT_SECRET=jwt_TOPSECRET_0123456789abcdef",
         "SETTLED_JWT_SECRET: must be at least 32 bytes (RFC 7518 section 3.2), e.g. openssl rand -base64 32"},
        {"SETTLED_JWT_ALG=none", "SETTLED_JWT_ALG: must be HS256, RS256 or ES256"},
        {"SETTLED_JWT_ALG=HS384", "SETTLED_JWT_ALG: must be HS256, RS256 or ES256"},
        {"SETTLED_JWT_ALG=RS256", "SETTLED_JWT_PRIVATE_KEY_FILE: required with SETTLED_JWT_ALG=RS256"},
        {"SETTLED_JWT_PUBLIC_KEY_FILE=/etc/settled/jwt.pub",
         "SETTLED_JWT_PUBLIC_KEY_FILE: is only used with SETTLED_JWT_ALG=RS256 or ES256 (now HS256)"},
        {"SETTLED_ACCESS_TOKEN_TTL=30", "SETTLED_ACCESS_TOKEN_TTL: must be an integer from 60 to 86400"},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        env_fails(bad[i].kv, bad[i].expected);
        assert_not_contains(err, "PW_secret");
        assert_not_contains(err, "TOPSECRET");
    }

    /* the same refusals from the file name the file and line */
    char *path = write_temp("# keys\nSETTLED_SECRET_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
    char expected[512];
    snprintf(expected, sizeof(expected),
             "%s:2: SETTLED_SECRET_KEY: must be 32 random bytes, but its bytes repeat too much to be random (all zero "
             "or a short pattern repeated); make one with `openssl rand -base64 32`",
             path);
    load_fails(path, NULL, expected);
    remove_temp(path);

    /* good ones: offline_access anywhere in the list, an empty value (the default), hosts of every kind */
    load_ok(&cfg, NULL,
            ENV("SETTLED_XERO_SCOPES=accounting.contacts  offline_access",
                "SETTLED_JWT_SECRET=", "SETTLED_XERO_REDIRECT_URI=https://gw.example:8443/v1/xero/callback?from=xero",
                "SETTLED_STRIPE_API_BASE=http://u:p@[::1]:9001/v1", "SETTLED_REDIS_URL=redis://:p@cache.example/3"));
    assert_string_equal(cfg.xero_scopes, "accounting.contacts  offline_access");
    assert_null(cfg.jwt_secret);
    gw_config_free(&cfg);
}

/* --- printing ----------------------------------------------------------------------------------------------- */

static void test_dump(void **state)
{
    gw_config_t cfg;
    load_ok(&cfg, NULL,
            ENV("SETTLED_THREADS=4", "SETTLED_BODY_LIMIT=2m", "SETTLED_ACCESS_LOG=no",
                "SETTLED_XERO_CLIENT_SECRET=xero_TOPSECRET", "SETTLED_XERO_API_BASE=http://127.0.0.1:9999"));
    char *text = dump(&cfg);
    const char *expected = "SETTLED_CONFIG=\n"
                           "SETTLED_LISTEN=127.0.0.1:8080\n"
                           "SETTLED_THREADS=4\n"
                           "SETTLED_DATABASE_URL=\n"
                           "SETTLED_DB_CONNECTIONS=2\n"
                           "SETTLED_DB_MAX_BATCH=64\n"
                           "SETTLED_DB_COMMIT_TIMEOUT_MS=4000\n"
                           "SETTLED_DB_QUEUE_LIMIT=4096\n"
                           "SETTLED_REDIS_URL=\n"
                           "SETTLED_BODY_LIMIT=2097152\n"
                           "SETTLED_STRIPE_TOLERANCE=300\n"
                           "SETTLED_RETRY_AFTER=5\n"
                           "SETTLED_SHUTDOWN_TIMEOUT_MS=10000\n"
                           "SETTLED_LOG_LEVEL=info\n"
                           "SETTLED_ACCESS_LOG=false\n"
                           "SETTLED_OPS_LISTEN=127.0.0.1:9464\n"
                           "SETTLED_INSTANCE_ID=\n"
                           "SETTLED_REUSEPORT_GROUP=\n"
                           "SETTLED_ORGANISATION=default\n"
                           "SETTLED_STRIPE_WEBHOOK_SECRETS=<unset>\n"
                           "SETTLED_XERO_WEBHOOK_KEY=<unset>\n"
                           "SETTLED_GOCARDLESS_WEBHOOK_SECRETS=<unset>\n"
                           "SETTLED_STRIPE_API_BASE=\n"
                           "SETTLED_XERO_API_BASE=http://127.0.0.1:9999\n"
                           "SETTLED_XERO_IDENTITY_BASE=\n"
                           "SETTLED_GOCARDLESS_API_BASE=\n"
                           "SETTLED_STRIPE_SECRET_KEY=<unset>\n"
                           "SETTLED_GOCARDLESS_ACCESS_TOKEN=<unset>\n"
                           "SETTLED_JWT_SECRET=<unset>\n"
                           "SETTLED_JWT_ALG=HS256\n"
                           "SETTLED_JWT_PRIVATE_KEY_FILE=\n"
                           "SETTLED_JWT_PUBLIC_KEY_FILE=\n"
                           "SETTLED_JWT_ISSUER=settled\n"
                           "SETTLED_JWT_AUDIENCE=settled-portal\n"
                           "SETTLED_ACCESS_TOKEN_TTL=900\n"
                           "SETTLED_REFRESH_TOKEN_TTL=2592000\n"
                           "SETTLED_SECRET_KEY=<unset>\n"
                           "SETTLED_WORKERS=2\n"
                           "SETTLED_WORKER_BATCH=50\n"
                           "SETTLED_WORKER_LEASE_MS=60000\n"
                           "SETTLED_WORKER_POLL_MS=5000\n"
                           "SETTLED_RETRY_SCHEDULE=0s,10s,1m,5m,30m,2h,5h,10h,10h\n"
                           "SETTLED_WORKER_MAX_ATTEMPTS=10\n"
                           "SETTLED_WORKER_BACKOFF_MS=1000\n"
                           "SETTLED_WORKER_BACKOFF_MAX_MS=3600000\n"
                           "SETTLED_CIRCUIT_FAILURES=5\n"
                           "SETTLED_CIRCUIT_COOLDOWN_MS=30000\n"
                           "SETTLED_CIRCUIT_COOLDOWN_MAX_MS=600000\n"
                           "SETTLED_ALERT_WEBHOOK_URL=\n"
                           "SETTLED_ALERT_WEBHOOK_SECRET=<unset>\n"
                           "SETTLED_XERO_COALESCE_MS=500\n"
                           "SETTLED_PAYMENTS_COALESCE_MS=500\n"
                           "SETTLED_PAYMENTS_SYNC_INTERVAL=3600\n"
                           "SETTLED_XERO_CLIENT_ID=\n"
                           "SETTLED_XERO_CLIENT_SECRET=<redacted: 1 value>\n"
                           "SETTLED_XERO_REDIRECT_URI=\n"
                           "SETTLED_XERO_LOGIN_BASE=\n"
                           "SETTLED_XERO_SCOPES=offline_access accounting.transactions accounting.contacts\n"
                           "SETTLED_XERO_LIMIT_CONCURRENT=5\n"
                           "SETTLED_XERO_LIMIT_MINUTE=60\n"
                           "SETTLED_XERO_LIMIT_DAY=5000\n"
                           "SETTLED_XERO_LIMIT_APP_MINUTE=10000\n"
                           "SETTLED_STRIPE_LIMIT_CONCURRENT=10\n"
                           "SETTLED_STRIPE_LIMIT_SECOND=25\n"
                           "SETTLED_GOCARDLESS_LIMIT_CONCURRENT=10\n"
                           "SETTLED_GOCARDLESS_LIMIT_MINUTE=1000\n"
                           "SETTLED_QUOTA_FALLBACK_CONCURRENT=1\n"
                           "SETTLED_QUOTA_FALLBACK_MINUTE=20\n"
                           "SETTLED_INSTANCES=1\n"
                           "SETTLED_HTTP_TIMEOUT_MS=30000\n"
                           "SETTLED_HTTP_CONNECT_TIMEOUT_MS=5000\n"
                           "SETTLED_HTTP_MAX_HOST_CONNECTIONS=16\n"
                           "SETTLED_MATCH_CREATE_CUSTOMERS=false\n"
                           "SETTLED_XERO_SYNC_INTERVAL=3600\n"
                           "SETTLED_XERO_RETIRED_GRACE_HOURS=168\n"
                           "SETTLED_XERO_PAYMENT_ACCOUNT=\n"
                           "SETTLED_RETENTION_DAYS=0\n"
                           "SETTLED_API_BODY_LIMIT=65536\n"
                           "SETTLED_CORS_ORIGINS=\n"
                           "SETTLED_REFRESH_COOKIE=false\n"
                           "SETTLED_PORTAL_URL=\n"
                           "SETTLED_STRIPE_PUBLISHABLE_KEY=\n"
                           "SETTLED_SMTP_URL=\n"
                           "SETTLED_SMTP_FROM=\n"
                           "SETTLED_SMTP_USER=\n"
                           "SETTLED_SMTP_PASSWORD=<unset>\n"
                           "SETTLED_SMTP_STARTTLS=required\n"
                           "SETTLED_DUNNING_INTERVAL=300\n"
                           "SETTLED_DUNNING_GRACE_DAYS=3\n"
                           "SETTLED_PUBLIC_URL=\n"
                           "SETTLED_COLLECT_INTERVAL=300\n"
                           "SETTLED_COLLECT_CARD_RETRY_DAYS=3,5,7\n"
                           "SETTLED_COLLECT_DIRECT_DEBIT_LEAD_DAYS=7\n"
                           "SETTLED_COLLECT_DIRECT_DEBIT_RETRY=false\n"
                           "SETTLED_COLLECT_CATCH_UP_DAYS=3\n"
                           "# no webhook sources: set SETTLED_STRIPE_WEBHOOK_SECRETS, SETTLED_XERO_WEBHOOK_KEY or "
                           "SETTLED_GOCARDLESS_WEBHOOK_SECRETS\n";
    assert_string_equal(text, expected);
    free(text);
    gw_config_free(&cfg);

    /* every table key appears in the dump */
    char **keys = list_keys();
    load_ok(&cfg, NULL, NULL);
    text = dump(&cfg);
    for (char **k = keys; *k != NULL; ++k) {
        char needle[256];
        snprintf(needle, sizeof(needle), "%s=", *k);
        if (strchr(*k, '<') == NULL && strstr(text, needle) == NULL)
            fail_msg("%s is missing from the dump:\n%s", *k, text);
    }
    free(text);
    gw_config_free(&cfg);
    free_keys(keys);
}

static void test_dump_redacts_database_password(void **state)
{
    static const struct {
        const char *url, *shown;
    } cases[] = {
        {"postgresql://app:PW_hunter2@db.example:5432/settled", "postgresql://app:***@db.example:5432/settled"},
        {"postgres://app:PW_hunter2@db/settled?sslmode=require", "postgres://app:***@db/settled?sslmode=require"},
        {"postgresql://app@db/settled", "postgresql://app@db/settled"},
        {"postgresql://db/settled", "postgresql://db/settled"},
        {"postgresql://app:PW_p@ss:w0rd@db/settled", "postgresql://app:***@db/settled"},
        {"postgresql://app:PW_a/b?c@db/settled", "postgresql://app:***@db/settled"},
        {"postgresql://app:@db/x", "postgresql://app:***@db/x"},
        {"postgresql://db/settled?user=app&password=PW_hunter2&sslmode=require",
         "postgresql://db/settled?user=app&password=***&sslmode=require"},
        {"postgresql:///settled?host=/run/postgresql&password=PW_x",
         "postgresql:///settled?host=/run/postgresql&password=***"},
        {"postgresql://db/x?%70assword=PW_encoded", "postgresql://db/x?%70assword=***"},
        {"postgresql://db/x?sslpassword=PW_key", "postgresql://db/x?sslpassword=***"},
        {"host=db user=app password=PW_hunter2 dbname=settled", "host=db user=app password=*** dbname=settled"},
        {"host=db password = 'PW_with spaces \\' and quote' dbname=settled", "host=db password=*** dbname=settled"},
        {"password=PW_first host=db", "password=*** host=db"},
        {"host=db password=PW_esc\\ aped dbname=x", "host=db password=*** dbname=x"},
        {"host=db PASSWORD=PW_upper", "host=db PASSWORD=***"},
        {"host=db sslpassword=PW_key", "host=db sslpassword=***"},
        {"host=db password='PW_unterminated", "host=db password=***"},
        {"host=db garbage PW_after_garbage", "host=db ***"},
        {"  host=db  application_name='a b'  ", "host=db  application_name='a b'"}, /* values are trimmed */
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char kv[512], line[512];
        snprintf(kv, sizeof(kv), "SETTLED_DATABASE_URL=%s", cases[i].url);
        gw_config_t cfg;
        load_ok(&cfg, NULL, ENV(kv));
        char *text = dump(&cfg);
        snprintf(line, sizeof(line), "\nSETTLED_DATABASE_URL=%s\n", cases[i].shown);
        if (strstr(text, line) == NULL)
            fail_msg("for %s expected the line \"%s\" in:\n%s", cases[i].url, line + 1, text);
        assert_not_contains(text, "PW_");
        free(text);
        gw_config_free(&cfg);
    }
}

/* The password of a Redis URL, and of the user info of any URL setting, is never printed (as the database's). */
static void test_dump_redacts_url_passwords(void **state)
{
    static const struct {
        const char *key, *url, *shown;
    } cases[] = {
        {"SETTLED_REDIS_URL", "redis://:PW_hunter2@cache.example:6379/2", "redis://:***@cache.example:6379/2"},
        {"SETTLED_REDIS_URL", "redis://default:PW_hunter2@cache.example", "redis://default:***@cache.example"},
        {"SETTLED_REDIS_URL", "redis://PW_bare@cache.example", "redis://***@cache.example"}, /* all password */
        {"SETTLED_REDIS_URL", "redis://:@cache.example", "redis://:***@cache.example"},
        {"SETTLED_REDIS_URL", "redis://cache.example:6379/0", "redis://cache.example:6379/0"},
        {"SETTLED_XERO_API_BASE", "https://user:PW_hunter2@xero.example/api", "https://user:***@xero.example/api"},
        {"SETTLED_STRIPE_API_BASE", "http://PW_token@127.0.0.1:9001", "http://***@127.0.0.1:9001"},
        {"SETTLED_GOCARDLESS_API_BASE", "http://:PW_x@[::1]:9003/", "http://:***@[::1]:9003/"},
        {"SETTLED_XERO_IDENTITY_BASE", "http://localhost:9002/identity", "http://localhost:9002/identity"},
        {"SETTLED_XERO_LOGIN_BASE", "https://u:PW_login@login.example", "https://u:***@login.example"},
        {"SETTLED_XERO_REDIRECT_URI", "https://u:PW_cb@gw.example/v1/xero/callback",
         "https://u:***@gw.example/v1/xero/callback"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char kv[512], line[512];
        snprintf(kv, sizeof(kv), "%s=%s", cases[i].key, cases[i].url);
        gw_config_t cfg;
        load_ok(&cfg, NULL, ENV(kv));
        char *text = dump(&cfg);
        snprintf(line, sizeof(line), "\n%s=%s\n", cases[i].key, cases[i].shown);
        if (strstr(text, line) == NULL)
            fail_msg("for %s expected the line \"%s\" in:\n%s", cases[i].url, line + 1, text);
        assert_not_contains(text, "PW_");
        free(text);
        gw_config_free(&cfg);
    }
}

static void test_retry_settings(void **state)
{
    gw_config_t cfg;
    /* the default schedule: 9 waits, 10 attempts, at least a day */
    load_ok(&cfg, NULL, ENV("SETTLED_LISTEN=127.0.0.1:1"));
    assert_int_equal(cfg.retry_schedule.n, 9);
    assert_int_equal(cfg.worker_max_attempts, 10);
    assert_true(gw_retry_schedule_span_ms(&cfg.retry_schedule) >= 24LL * 3600 * 1000);
    gw_config_free(&cfg);

    load_ok(&cfg, NULL, ENV("SETTLED_RETRY_SCHEDULE=1s, 2m"));
    assert_int_equal(cfg.retry_schedule.n, 2);
    assert_int_equal(cfg.retry_schedule.ms[1], 120000);
    assert_int_equal(cfg.worker_max_attempts, 3);
    gw_config_free(&cfg);

    /* the deprecated backoff alone still works: translated into a schedule, doubling up to the cap */
    load_ok(&cfg, NULL,
            ENV("SETTLED_WORKER_MAX_ATTEMPTS=5", "SETTLED_WORKER_BACKOFF_MS=100", "SETTLED_WORKER_BACKOFF_MAX_MS=300"));
    assert_int_equal(cfg.retry_schedule.n, 4);
    assert_int_equal(cfg.retry_schedule.ms[0], 100);
    assert_int_equal(cfg.retry_schedule.ms[1], 200);
    assert_int_equal(cfg.retry_schedule.ms[2], 300);
    assert_int_equal(cfg.retry_schedule.ms[3], 300);
    assert_int_equal(cfg.worker_max_attempts, 5);
    gw_config_free(&cfg);

    /* contradictions and mistakes, each naming the key */
    load_fails(NULL, ENV("SETTLED_RETRY_SCHEDULE=1s", "SETTLED_WORKER_BACKOFF_MS=100"),
               "SETTLED_WORKER_BACKOFF_MS: deprecated, and contradicts SETTLED_RETRY_SCHEDULE, which sets every "
               "attempt and wait: remove it");
    env_fails("SETTLED_RETRY_SCHEDULE=1s,10", "SETTLED_RETRY_SCHEDULE: wait 2 (\"10\") needs a unit: ms, s, m, h or d "
                                              "(e.g. 10s, 5m, 2h)");
    load_fails(NULL, ENV("SETTLED_ALERT_WEBHOOK_URL=http://127.0.0.1:9/alerts"),
               "SETTLED_ALERT_WEBHOOK_SECRET: required with SETTLED_ALERT_WEBHOOK_URL");
    load_fails(NULL, ENV("SETTLED_ALERT_WEBHOOK_SECRET=s3cret"),
               "SETTLED_ALERT_WEBHOOK_URL: required with SETTLED_ALERT_WEBHOOK_SECRET");
    env_fails("SETTLED_ALERT_WEBHOOK_URL=alerts.example.com",
              "SETTLED_ALERT_WEBHOOK_URL: must be an http:// or https:// URL (e.g. https://api.example.com)");
    load_fails(NULL, ENV("SETTLED_COLLECT_CARD_RETRY_DAYS=3,,5"),
               "SETTLED_COLLECT_CARD_RETRY_DAYS: must be comma-separated days of 1..60 (at most 10), e.g. 3,5,7");
    load_fails(NULL, ENV("SETTLED_COLLECT_CARD_RETRY_DAYS=0"),
               "SETTLED_COLLECT_CARD_RETRY_DAYS: must be comma-separated days of 1..60 (at most 10), e.g. 3,5,7");
    load_fails(NULL, ENV("SETTLED_CIRCUIT_COOLDOWN_MS=5000", "SETTLED_CIRCUIT_COOLDOWN_MAX_MS=1000"),
               "SETTLED_CIRCUIT_COOLDOWN_MAX_MS: must be at least SETTLED_CIRCUIT_COOLDOWN_MS (5000)");
}

static void test_list_keys(void **state)
{
    char **keys = list_keys();
    static const char *const expected[] = {"SETTLED_CONFIG",
                                           "SETTLED_LISTEN",
                                           "SETTLED_DATABASE_URL",
                                           "SETTLED_REDIS_URL",
                                           "SETTLED_ORGANISATION",
                                           "SETTLED_ORGANISATION__<SOURCE>",
                                           "SETTLED_STRIPE_WEBHOOK_SECRETS",
                                           "SETTLED_STRIPE_WEBHOOK_SECRETS__<SOURCE>",
                                           "SETTLED_XERO_WEBHOOK_KEY",
                                           "SETTLED_XERO_WEBHOOK_KEY__<SOURCE>",
                                           "SETTLED_GOCARDLESS_WEBHOOK_SECRETS",
                                           "SETTLED_GOCARDLESS_WEBHOOK_SECRETS__<SOURCE>",
                                           "SETTLED_XERO_API_BASE",
                                           "SETTLED_STRIPE_API_BASE",
                                           "SETTLED_GOCARDLESS_API_BASE",
                                           "SETTLED_XERO_IDENTITY_BASE",
                                           "SETTLED_JWT_SECRET",
                                           "SETTLED_JWT_ALG",
                                           "SETTLED_JWT_PRIVATE_KEY_FILE",
                                           "SETTLED_JWT_PUBLIC_KEY_FILE",
                                           "SETTLED_JWT_ISSUER",
                                           "SETTLED_JWT_AUDIENCE",
                                           "SETTLED_ACCESS_TOKEN_TTL",
                                           "SETTLED_REFRESH_TOKEN_TTL",
                                           "SETTLED_SECRET_KEY",
                                           "SETTLED_STRIPE_SECRET_KEY",
                                           "SETTLED_GOCARDLESS_ACCESS_TOKEN",
                                           "SETTLED_STRIPE_LIMIT_SECOND",
                                           "SETTLED_GOCARDLESS_LIMIT_MINUTE",
                                           "SETTLED_BODY_LIMIT",
                                           "SETTLED_INSTANCES",
                                           "SETTLED_RETENTION_DAYS",
                                           "SETTLED_API_BODY_LIMIT",
                                           "SETTLED_CORS_ORIGINS",
                                           "SETTLED_REFRESH_COOKIE",
                                           "SETTLED_PORTAL_URL",
                                           "SETTLED_STRIPE_PUBLISHABLE_KEY",
                                           "SETTLED_SMTP_URL",
                                           "SETTLED_SMTP_FROM",
                                           "SETTLED_SMTP_USER",
                                           "SETTLED_SMTP_PASSWORD",
                                           "SETTLED_SMTP_STARTTLS",
                                           "SETTLED_DUNNING_INTERVAL",
                                           "SETTLED_DUNNING_GRACE_DAYS",
                                           "SETTLED_PUBLIC_URL",
                                           "SETTLED_COLLECT_INTERVAL",
                                           "SETTLED_COLLECT_CARD_RETRY_DAYS",
                                           "SETTLED_COLLECT_DIRECT_DEBIT_LEAD_DAYS",
                                           "SETTLED_COLLECT_DIRECT_DEBIT_RETRY",
                                           "SETTLED_COLLECT_CATCH_UP_DAYS"};
    size_t n = 0;
    for (char **k = keys; *k != NULL; ++k)
        ++n;
    assert_int_equal(n, 101); /* 95 settings, 6 of them with a per-source pattern */
    for (size_t i = 0; i != sizeof(expected) / sizeof(expected[0]); ++i) {
        bool found = false;
        for (char **k = keys; *k != NULL && !found; ++k)
            found = strcmp(*k, expected[i]) == 0;
        if (!found)
            fail_msg("%s is not listed", expected[i]);
    }
    /* every listed key loads (with a source for the per-source organisation), so the list is the table */
    for (char **k = keys; *k != NULL; ++k) {
        if (strcmp(*k, "SETTLED_CONFIG") == 0)
            continue;
        char kv[256];
        char *pattern = strstr(*k, "<SOURCE>");
        snprintf(kv, sizeof(kv), "%.*s%s=", pattern != NULL ? (int)(pattern - *k) : (int)strlen(*k), *k,
                 pattern != NULL ? "X1" : "");
        gw_config_t cfg;
        load_ok(&cfg, NULL, ENV(kv));
        gw_config_free(&cfg);
    }
    free_keys(keys);
}

/* --- docs --------------------------------------------------------------------------------------------------- */

/* Every key of the table is documented in docs/configuration.md and shown in deploy/settled.conf.sample, and
 * neither mentions a SETTLED_ key that does not exist. */
static void test_docs_sync(void **state)
{
    static const char *const files[] = {SETTLED_SOURCE_DIR "/docs/configuration.md",
                                        SETTLED_SOURCE_DIR "/deploy/settled.conf.sample"};
    char **keys = list_keys();
    char missing[4096] = "";
    for (size_t f = 0; f != 2; ++f) {
        char *text = read_whole(files[f]);
        for (char **k = keys; *k != NULL; ++k) {
            if (!mentions(text, *k)) {
                size_t off = strlen(missing);
                snprintf(missing + off, sizeof(missing) - off, "\n  %s does not mention %s", files[f], *k);
            }
        }
        /* the other way round: each SETTLED_ word must be a key, an instance of a pattern or a harness key,
         * except on lines that show the error about an unknown setting */
        for (const char *p = text; (p = strstr(p, "SETTLED_")) != NULL; ++p) {
            if (p != text && is_key_char(p[-1]))
                continue;
            const char *bol = p, *eol = strchr(p, '\n');
            while (bol != text && bol[-1] != '\n')
                --bol;
            char line[1024];
            snprintf(line, sizeof(line), "%.*s", (int)((eol != NULL ? eol : p + strlen(p)) - bol), bol);
            if (strstr(line, "unknown setting") != NULL)
                continue;
            size_t n = 0;
            while (is_key_char(p[n]))
                ++n;
            char word[256];
            snprintf(word, sizeof(word), "%.*s", (int)n, p);
            bool known = strcmp(word, "SETTLED_") == 0 || strncmp(word, "SETTLED_TEST_", 13) == 0 ||
                         strcmp(word, "SETTLED_BIN") == 0 || strcmp(word, "SETTLED_SOURCE_DIR") == 0;
            for (char **k = keys; *k != NULL && !known; ++k) {
                const char *pattern = strstr(*k, "__<SOURCE>");
                known =
                    strcmp(word, *k) == 0 || (pattern != NULL && strncmp(word, *k, (size_t)(pattern - *k) + 2) == 0 &&
                                              strlen(word) > (size_t)(pattern - *k) + 2);
            }
            if (!known) {
                size_t off = strlen(missing);
                snprintf(missing + off, sizeof(missing) - off, "\n  %s mentions %s, which is not a setting", files[f],
                         word);
            }
        }
        free(text);
    }
    free_keys(keys);
    if (missing[0] != '\0')
        fail_msg("docs and settings table disagree:%s", missing);
}

/* The sample config loads as it is, and also with every commented-out "# SETTLED_X=value" example enabled. */
static void test_sample_config_loads(void **state)
{
    const char *sample = SETTLED_SOURCE_DIR "/deploy/settled.conf.sample";
    gw_config_t cfg;
    load_ok(&cfg, sample, NULL);
    gw_config_free(&cfg);

    char *text = read_whole(sample), *out = NULL;
    size_t outlen = 0, enabled = 0;
    FILE *fp = open_memstream(&out, &outlen);
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char *p = line;
        if (*p == '#') {
            ++p;
            while (*p == ' ')
                ++p;
            char *eq = strchr(p, '=');
            bool example = strncmp(p, "SETTLED_", 8) == 0 && eq != NULL && strcspn(p, " <") > (size_t)(eq - p);
            if (example) {
                fprintf(fp, "%s\n", p);
                ++enabled;
                continue;
            }
        }
        fprintf(fp, "%s\n", line);
    }
    fclose(fp);
    char *path = write_temp(out);
    if (gw_config_load(&cfg, path, NULL, err, sizeof(err)) != 0)
        fail_msg("the sample with its examples enabled does not load: %s\n%s", err, out);
    assert_true(enabled >= 20);
    gw_config_free(&cfg);
    remove_temp(path);
    free(out);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_int_bounds),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_log_level),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_ops_listen),
        cmocka_unit_test(test_organisation_slug),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_secret_lists),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_value_checks),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_source_api_keys),
        cmocka_unit_test(test_source_errors),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_dump_redacts_database_password),
        cmocka_unit_test(test_dump_redacts_url_passwords),
        cmocka_unit_test(test_retry_settings),
        cmocka_unit_test(test_list_keys),
        cmocka_unit_test(test_docs_sync),
        cmocka_unit_test(test_sample_config_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
