/* SPDX-License-Identifier: MIT */
/*
 * smtp.c: one e-mail through SMTP with libcurl (smtp.h).
 */
#include "smtp.h"
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "crypto.h"
#include "mem.h"

/* Appends the base64 of [s, s + n) (crypto.h's codec); with wrap, in lines of 76 characters ending in CRLF. */
static void put_base64(gw_strbuf_t *b, const unsigned char *s, size_t n, bool wrap)
{
    char *enc = gw_xmalloc(GW_BASE64_ENCODED_SIZE(n));
    size_t len = gw_base64_encode(s, n, 0, enc);
    for (size_t i = 0; i < len; i += 76) {
        size_t take = len - i < 76 ? len - i : 76;
        gw_strbuf_put(b, enc + i, take);
        if (wrap)
            gw_strbuf_put(b, "\r\n", 2);
    }
    free(enc);
}

static bool plain_ascii(const char *s)
{
    for (; *s != '\0'; ++s)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

char *gw_smtp_encode_header(const char *value)
{
    gw_strbuf_t b = {0};
    if (plain_ascii(value)) {
        gw_strbuf_puts(&b, value);
        return b.p != NULL ? b.p : gw_xstrdup("");
    }
    /* encoded words of at most 45 bytes (60 base64 characters, 72 with the delimiters: under RFC 2047's 75),
     * never splitting a UTF-8 sequence; control characters become spaces */
    size_t n = strlen(value), i = 0;
    unsigned char *clean = gw_xmalloc(n + 1);
    for (size_t j = 0; j != n; ++j) {
        unsigned char c = (unsigned char)value[j];
        clean[j] = c < 0x20 || c == 0x7f ? ' ' : c;
    }
    while (i < n) {
        size_t take = n - i < 45 ? n - i : 45;
        while (take > 0 && i + take < n && (clean[i + take] & 0xc0) == 0x80)
            --take; /* the next byte continues a sequence: end this word before its first byte */
        if (take == 0)
            take = n - i < 45 ? n - i : 45;
        if (i != 0)
            gw_strbuf_puts(&b, "\r\n ");
        gw_strbuf_puts(&b, "=?UTF-8?B?");
        put_base64(&b, clean + i, take, false);
        gw_strbuf_puts(&b, "?=");
        i += take;
    }
    free(clean);
    return b.p;
}

/* Appends a body part's text as base64, with CRLF line ends. */
static void put_part(gw_strbuf_t *b, const char *type, const char *body)
{
    gw_strbuf_puts(b, "Content-Type: ");
    gw_strbuf_puts(b, type);
    gw_strbuf_puts(b, "; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    gw_strbuf_t crlf = {0};
    for (const char *p = body; *p != '\0'; ++p) {
        if (*p == '\n' && (p == body || p[-1] != '\r'))
            gw_strbuf_put(&crlf, "\r", 1);
        gw_strbuf_put(&crlf, p, 1);
    }
    put_base64(b, (const unsigned char *)(crlf.p != NULL ? crlf.p : ""), crlf.len, true);
    free(crlf.p);
}

char *gw_smtp_compose(const gw_smtp_message_t *msg)
{
    gw_strbuf_t b = {0};
    char date[64];
    time_t t = (time_t)msg->date;
    struct tm tm;
    gmtime_r(&t, &tm);
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    snprintf(date, sizeof(date), "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    char *subject = gw_smtp_encode_header(msg->subject != NULL ? msg->subject : "");
    gw_strbuf_puts(&b, "Date: ");
    gw_strbuf_puts(&b, date);
    gw_strbuf_puts(&b, "\r\nMessage-ID: <");
    gw_strbuf_puts(&b, msg->message_id);
    gw_strbuf_puts(&b, ">\r\nFrom: ");
    gw_strbuf_puts(&b, msg->from);
    gw_strbuf_puts(&b, "\r\nTo: ");
    gw_strbuf_puts(&b, msg->to);
    gw_strbuf_puts(&b, "\r\nSubject: ");
    gw_strbuf_puts(&b, subject);
    gw_strbuf_puts(&b, "\r\nMIME-Version: 1.0\r\n");
    free(subject);
    if (msg->list_unsubscribe != NULL) {
        gw_strbuf_puts(&b, "List-Unsubscribe: ");
        gw_strbuf_puts(&b, msg->list_unsubscribe);
        gw_strbuf_puts(&b, "\r\n");
        if (msg->one_click)
            gw_strbuf_puts(&b, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    }
    if (msg->html == NULL) {
        put_part(&b, "text/plain", msg->text);
        return b.p;
    }
    /* the boundary: from the Message-ID, which is unique; base64 never contains "=_" */
    char boundary[160];
    snprintf(boundary, sizeof(boundary), "=_settled_%.100s", msg->message_id);
    for (char *p = boundary; *p != '\0'; ++p)
        if (*p == '@')
            *p = '_';
    gw_strbuf_puts(&b, "Content-Type: multipart/alternative; boundary=\"");
    gw_strbuf_puts(&b, boundary);
    gw_strbuf_puts(&b, "\"\r\n\r\n--");
    gw_strbuf_puts(&b, boundary);
    gw_strbuf_puts(&b, "\r\n");
    put_part(&b, "text/plain", msg->text);
    gw_strbuf_puts(&b, "--");
    gw_strbuf_puts(&b, boundary);
    gw_strbuf_puts(&b, "\r\n");
    put_part(&b, "text/html", msg->html);
    gw_strbuf_puts(&b, "--");
    gw_strbuf_puts(&b, boundary);
    gw_strbuf_puts(&b, "--\r\n");
    return b.p;
}

typedef struct st_upload_t {
    const char *data;
    size_t len, off;
} upload_t;

static size_t read_cb(char *out, size_t size, size_t nmemb, void *arg)
{
    upload_t *u = arg;
    size_t room = size * nmemb, left = u->len - u->off, n = left < room ? left : room;
    memcpy(out, u->data + u->off, n);
    u->off += n;
    return n;
}

/* Keeps the server's last refusal (a 4xx or 5xx reply line; CURLINFO_HEADER_IN carries them for SMTP). */
typedef struct st_replies_t {
    char last[300];
    char command[12]; /* the first word of the last command sent: MAIL, RCPT, DATA, EHLO, AUTH, STARTTLS */
    char refused[12]; /* the command the last refusal answered ("" for the greeting) */
} replies_t;

static int debug_cb(CURL *h, curl_infotype type, char *data, size_t size, void *arg)
{
    (void)h;
    replies_t *r = arg;
    if (type == CURLINFO_HEADER_OUT) {
        size_t i = 0;
        for (; i != size && i + 1 < sizeof(r->command) && data[i] >= 'A' && data[i] <= 'Z'; ++i)
            r->command[i] = data[i];
        r->command[i] = '\0';
        return 0;
    }
    if (type != CURLINFO_HEADER_IN || size < 3 || (data[0] != '4' && data[0] != '5'))
        return 0; /* only refusals: the reason of a failure, not the 221 to the QUIT after it */
    size_t n = size < sizeof(r->last) - 1 ? size : sizeof(r->last) - 1;
    memcpy(r->last, data, n);
    r->last[n] = '\0';
    memcpy(r->refused, r->command, sizeof(r->refused));
    for (char *p = r->last; *p != '\0'; ++p)
        if (*p == '\r' || *p == '\n')
            *p = '\0';
    return 0;
}

gw_smtp_status_t gw_smtp_send(const gw_smtp_server_t *server, const gw_smtp_message_t *msg, int *reply, char *err,
                              size_t errlen)
{
    *reply = 0;
    err[0] = '\0';
    char *text = gw_smtp_compose(msg);
    upload_t up = {.data = text, .len = strlen(text)};
    replies_t replies = {.last = "", .command = "", .refused = ""};
    char curl_err[CURL_ERROR_SIZE] = "";
    char from[300], to[300];
    snprintf(from, sizeof(from), "<%s>", msg->from);
    snprintf(to, sizeof(to), "<%s>", msg->to);
    struct curl_slist *rcpt = curl_slist_append(NULL, to);
    CURL *h = curl_easy_init();
    if (h == NULL || rcpt == NULL) {
        snprintf(err, errlen, "cannot start libcurl");
        curl_slist_free_all(rcpt);
        free(text);
        return GW_SMTP_TEMPORARY;
    }
    bool implicit_tls = strncmp(server->url, "smtps://", 8) == 0;
    curl_easy_setopt(h, CURLOPT_URL, server->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(h, CURLOPT_USE_SSL,
                     (long)(implicit_tls || server->starttls_required ? CURLUSESSL_ALL : CURLUSESSL_NONE));
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(h, CURLOPT_READDATA, &up);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up.len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, server->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, server->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, debug_cb);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, &replies);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L); /* for debug_cb only: nothing is printed */
    if (server->user != NULL && server->user[0] != '\0') {
        curl_easy_setopt(h, CURLOPT_USERNAME, server->user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, server->password != NULL ? server->password : "");
    }
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    *reply = (int)code;
    curl_easy_cleanup(h);
    curl_slist_free_all(rcpt);
    free(text);
    if (rc == CURLE_OK)
        return GW_SMTP_SENT;
    const char *why = replies.last[0] != '\0' && code >= 400 ? replies.last
                      : curl_err[0] != '\0'                  ? curl_err
                                                             : curl_easy_strerror(rc);
    snprintf(err, errlen, "SMTP: %s", why);
    /* a 5xx to MAIL, RCPT, DATA or the message is final; one to the greeting, EHLO, STARTTLS or AUTH is our
     * configuration or the server's state, which may be fixed: tried again */
    bool envelope = strcmp(replies.refused, "MAIL") == 0 || strcmp(replies.refused, "RCPT") == 0 ||
                    strcmp(replies.refused, "DATA") == 0;
    if (code >= 500 && code < 600 && envelope && rc != CURLE_LOGIN_DENIED && rc != CURLE_USE_SSL_FAILED &&
        rc != CURLE_OPERATION_TIMEDOUT)
        return GW_SMTP_PERMANENT;
    return GW_SMTP_TEMPORARY;
}
