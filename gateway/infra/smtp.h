/* SPDX-License-Identifier: MIT */
/*
 * smtp.h: sending one e-mail through an SMTP server with libcurl (no other library): the message is composed here
 * (RFC 5322 headers, a multipart/alternative body of text and HTML, each base64), the envelope is MAIL FROM and
 * one RCPT TO. smtp://host[:port] uses STARTTLS, required unless starttls_required is false (plain SMTP, for local
 * tests); smtps://host[:port] is TLS from the start. The password is handed to libcurl and never logged.
 *
 * Blocking: the caller's thread (the mailer's).
 */
#ifndef GW_SMTP_H
#define GW_SMTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct st_gw_smtp_server_t {
    const char *url;      /* smtp://host[:port] or smtps://host[:port] */
    const char *user;     /* NULL or "": no AUTH */
    const char *password; /* secret */
    bool starttls_required;
    long timeout_ms, connect_timeout_ms;
} gw_smtp_server_t;

typedef struct st_gw_smtp_message_t {
    const char *from, *to;  /* bare addresses */
    const char *subject;    /* UTF-8; RFC 2047 encoded when not ASCII */
    const char *message_id; /* without the angle brackets */
    const char *text;
    const char *html;             /* NULL: a text/plain message */
    const char *list_unsubscribe; /* the List-Unsubscribe value (<https://...>, <mailto:...>); NULL: none */
    bool one_click;               /* also List-Unsubscribe-Post: List-Unsubscribe=One-Click */
    long date;                    /* seconds since the epoch, for the Date header */
} gw_smtp_message_t;

typedef enum en_gw_smtp_status_t {
    GW_SMTP_SENT,      /* the server answered 250 to the end of DATA */
    GW_SMTP_TEMPORARY, /* no connection, a timeout, a 4xx, TLS or AUTH failed: try again later */
    GW_SMTP_PERMANENT, /* a 5xx for the sender, the recipient or the message: trying again cannot help */
} gw_smtp_status_t;

/* Composes msg into a malloc'd RFC 5322 message with CRLF line ends (for the tests, and gw_smtp_send). */
char *gw_smtp_compose(const gw_smtp_message_t *msg);
/* Encodes a header value as RFC 2047 encoded words (=?UTF-8?B?...?=, folded) when it is not printable ASCII;
 * otherwise copies it. malloc'd. */
char *gw_smtp_encode_header(const char *value);

/* Sends msg through server. Returns how it went, with the server's last reply code in *reply (0: none) and the
 * reason (the server's reply line, or libcurl's error) in err. */
gw_smtp_status_t gw_smtp_send(const gw_smtp_server_t *server, const gw_smtp_message_t *msg, int *reply, char *err,
                              size_t errlen);

#endif
