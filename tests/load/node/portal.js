// SPDX-License-Identifier: MIT
'use strict';
/*
 * portal.js: the reference server of tests/load/bench_portal.sh. What a competent Node.js team would write for the
 * two client routes of settled's portal API (docs/api.md, "Invoices"), against the same database: Fastify, a
 * pg Pool with named (prepared) parameterised statements, @fastify/jwt (fast-jwt) for the access token and
 * @fastify/etag for ETag / If-None-Match. Money leaves as decimal strings computed in SQL from the exact numerics
 * (never a JavaScript number), in the currency's ISO 4217 decimals.
 *
 *   node portal.js [--port 8080] [--host 127.0.0.1] [--pool 16] [--workers N]
 *
 * Environment: DATABASE_URL and JWT_SECRET (required; settled's SETTLED_JWT_SECRET), JWT_ISSUER (default
 * "settled"), JWT_AUDIENCE (default "settled-portal").
 *
 *   GET /v1/invoices?limit=N&cursor=C  {"data": [invoice...], "next_cursor": "..." | null}, newest first
 *   GET /v1/invoices/{id}              one invoice with its lines and payments; 404 when not the caller's
 *   GET /readyz                        200 once the pool is connected
 *
 * A request needs "Authorization: Bearer <token>": HS256 only, signature, exp and nbf (30 s leeway), iss, aud, and
 * the claims sub, org, customer (decimal strings), role "client", jti; else 401. The caller sees only invoices of
 * its own customer (its organisation's sales invoices whose Xero contact is linked to that customer), never DRAFT,
 * SUBMITTED or DELETED ones; an admin token gets 403 (this reference serves clients only).
 */
const { options, run, listening, stopOnSigterm } = require('./cluster');

const opts = options('portal');
run('portal', opts, serve);

// ISO 4217 exponents in SQL: the currencies with 0, 3 and 4 decimals, every other three-letter code 2
const exponent = (code) => `CASE WHEN ${code} IN ('BIF','CLP','DJF','GNF','ISK','JPY','KMF','KRW','PYG','RWF','UGX','UYI',
        'VND','VUV','XAF','XOF','XPF') THEN 0 WHEN ${code} IN ('BHD','IQD','JOD','KWD','LYD','OMR','TND') THEN 3
        WHEN ${code} IN ('CLF','UYW') THEN 4 WHEN ${code} ~ '^[A-Z]{3}$' THEN 2 END`;
// an exact numeric as a string with e decimals; NULL when it has more (never rounded)
const money = (v, e) => `CASE WHEN ${v} = round(${v}, ${e}) THEN round(${v}, ${e})::text END`;
// minor units (bigint) as a string with e decimals
const minor = (m, e) => `round(${m}::numeric / 10::numeric ^ ${e}, ${e})::text`;
// a unit price: the currency's decimals, more (up to Xero's 4) only when it has them
const unit = (v, e) => `CASE WHEN scale(trim_scale(${v})) <= ${e} THEN round(${v}, ${e})::text ELSE trim_scale(${v})::text END`;

const SORT = `coalesce(i.date, '0001-01-01')`;
const COLUMNS = `
    i.settled_invoice_id AS id, i.invoice_id::text AS xero_invoice_id, i.invoice_number AS number, i.status,
    CASE WHEN i.status = 'VOIDED' THEN 'voided' ELSE coalesce(s.state, 'unreconciled') END AS payment_state,
    upper(i.currency_code) AS currency, i.date::text AS date, i.due_date::text AS due_date,
    ${money('i.total', 'x.e')} AS total, ${money('i.amount_credited', 'x.e')} AS amount_credited,
    CASE WHEN s.net_paid_minor IS NOT NULL THEN ${minor('s.net_paid_minor', 'x.se')}
         ELSE ${money('i.amount_paid', 'x.e')} END AS amount_paid,
    CASE WHEN s.outstanding_minor IS NOT NULL THEN ${minor('s.outstanding_minor', 'x.se')}
         ELSE ${money('i.amount_due', 'x.e')} END AS amount_outstanding,
    ${SORT}::text AS sort_date`;
// the caller's invoices: $1 organisation, $2 customer
const FROM = `
    FROM xero_contacts c
    JOIN xero_invoices i ON i.organisation_id = c.organisation_id AND i.tenant_id = c.tenant_id
                        AND i.contact_id = c.contact_id
    LEFT JOIN invoice_payment_states s ON s.organisation_id = i.organisation_id AND s.tenant_id = i.tenant_id
                                      AND s.invoice_id = i.invoice_id
    CROSS JOIN LATERAL (SELECT ${exponent('upper(i.currency_code)')} AS e, ${exponent('s.currency')} AS se) x
    WHERE c.organisation_id = $1 AND c.customer_id = $2
      AND i.type = 'ACCREC' AND i.status NOT IN ('DRAFT', 'SUBMITTED', 'DELETED')`;
const ORDER = `ORDER BY ${SORT} DESC, i.settled_invoice_id DESC`;

const listFirst = { name: 'invoices_first', text: `SELECT ${COLUMNS} ${FROM} ${ORDER} LIMIT $3` };
const listAfter = {
    name: 'invoices_after',
    text: `SELECT ${COLUMNS} ${FROM} AND (${SORT}, i.settled_invoice_id) < ($3::date, $4::text) ${ORDER} LIMIT $5`,
};
const detail = {
    name: 'invoice_detail',
    text: `SELECT ${COLUMNS},
        (SELECT coalesce(json_agg(json_build_object(
                    'position', l.position, 'description', l.description,
                    'quantity', trim_scale(l.quantity)::text, 'unit_amount', ${unit('l.unit_amount', 'x.e')},
                    'line_amount', ${money('l.line_amount', 'x.e')}, 'tax_amount', ${money('l.tax_amount', 'x.e')},
                    'account_code', l.account_code, 'item_code', l.item_code) ORDER BY l.position), '[]')
           FROM xero_invoice_lines l
          WHERE l.organisation_id = i.organisation_id AND l.tenant_id = i.tenant_id AND l.invoice_id = i.invoice_id)
            AS lines,
        (SELECT coalesce(json_agg(json_build_object(
                    'id', p.id::text, 'provider', p.provider::text, 'status', p.status,
                    'amount', ${minor('p.amount_minor', exponent('p.currency'))}, 'currency', p.currency::text,
                    'method', p.method,
                    'created_at', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
                    ORDER BY p.created_at, p.id), '[]')
           FROM payments p
          WHERE p.organisation_id = i.organisation_id AND p.xero_tenant_id = i.tenant_id::text
            AND p.xero_invoice_id = i.invoice_id AND NOT p.from_writeback) AS payments
        ${FROM} AND i.settled_invoice_id = $3`,
};

const str = { type: ['string', 'null'] };
const invoiceProps = {
    id: { type: 'string' }, xero_invoice_id: { type: 'string' }, number: str, status: str, payment_state: str,
    currency: str, date: str, due_date: str, total: str, amount_credited: str, amount_paid: str,
    amount_outstanding: str,
};
const arrayOf = (properties) => ({ type: 'array', items: { type: 'object', properties } });
const detailSchema = {
    type: 'object',
    properties: {
        ...invoiceProps,
        lines: arrayOf({
            position: { type: 'integer' }, description: str, quantity: str, unit_amount: str, line_amount: str,
            tax_amount: str, account_code: str, item_code: str,
        }),
        payments: arrayOf({
            id: { type: 'string' }, provider: str, status: str, amount: str, currency: str, method: str, created_at: str,
        }),
    },
};
const problemSchema = {
    type: 'object',
    properties: { type: { type: 'string' }, title: { type: 'string' }, status: { type: 'integer' }, code: { type: 'string' } },
};

function invoiceOf(row) {
    const { sort_date: _sort, lines: _lines, payments: _payments, ...inv } = row;
    return inv;
}

function problem(reply, status, code, title) {
    return reply.code(status).type('application/problem+json').send({ type: 'about:blank', title, status, code });
}

const DECIMAL_ID = /^[1-9][0-9]{0,17}$/;
const CURSOR = /^([0-9]{4}-[0-9]{2}-[0-9]{2}):([A-Za-z0-9_-]{1,99})$/;

async function serve() {
    const Fastify = require('fastify');
    const { Pool } = require('pg');

    const databaseUrl = process.env.DATABASE_URL;
    const secret = process.env.JWT_SECRET;
    if (!databaseUrl || !secret) throw new Error('DATABASE_URL and JWT_SECRET must be set');
    if (Buffer.byteLength(secret) < 32) throw new Error('JWT_SECRET must be at least 32 bytes');

    const pool = new Pool({ connectionString: databaseUrl, max: opts.pool, idleTimeoutMillis: 0 });
    pool.on('error', (err) => console.error(`portal: idle database client failed: ${err.message}`));
    // open every connection now, so that the first requests do not pay for the connects
    const clients = await Promise.all(Array.from({ length: opts.pool }, () => pool.connect()));
    for (const c of clients) c.release();

    const app = Fastify({ logger: false });
    await app.register(require('@fastify/etag'));
    await app.register(require('@fastify/jwt'), {
        secret,
        verify: {
            algorithms: ['HS256'],
            allowedIss: process.env.JWT_ISSUER || 'settled',
            allowedAud: process.env.JWT_AUDIENCE || 'settled-portal',
            clockTolerance: 30000, // ms
            requiredClaims: ['exp', 'nbf', 'iat', 'sub', 'org', 'role', 'jti'],
        },
    });

    app.get('/readyz', async () => ({ ready: true }));

    app.register(async (api) => {
        // who calls: every /v1 route needs a client's valid access token
        api.addHook('onRequest', async (request, reply) => {
            try {
                await request.jwtVerify();
            } catch {
                reply.header('www-authenticate', 'Bearer realm="settled"');
                return problem(reply, 401, 'unauthenticated', 'A valid access token is required.');
            }
            const u = request.user;
            if (u.role !== 'client') return problem(reply, 403, 'forbidden', 'This server serves clients only.');
            if (![u.sub, u.org, u.customer].every((v) => typeof v === 'string' && DECIMAL_ID.test(v))) {
                return problem(reply, 401, 'unauthenticated', 'A valid access token is required.');
            }
            request.scope = { org: u.org, customer: u.customer };
            reply.header('cache-control', 'private, no-cache');
        });

        api.get('/v1/invoices', {
            schema: {
                querystring: {
                    type: 'object',
                    properties: {
                        limit: { type: 'integer', minimum: 1, maximum: 100, default: 25 },
                        cursor: { type: 'string', minLength: 1, maxLength: 256 },
                    },
                },
                response: {
                    200: {
                        type: 'object',
                        properties: { data: arrayOf(invoiceProps), next_cursor: str },
                    },
                    '4xx': problemSchema,
                },
            },
        }, async (request, reply) => {
            const { limit, cursor } = request.query;
            const { org, customer } = request.scope;
            let result;
            if (cursor === undefined) {
                result = await pool.query({ ...listFirst, values: [org, customer, limit + 1] });
            } else {
                const m = CURSOR.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
                if (m === null || Number.isNaN(Date.parse(m[1]))) {
                    return problem(reply, 400, 'parameter_invalid', "'cursor' is not a cursor this server issued.");
                }
                result = await pool.query({ ...listAfter, values: [org, customer, m[1], m[2], limit + 1] });
            }
            const rows = result.rows;
            const shown = rows.slice(0, limit);
            const last = shown[shown.length - 1];
            return {
                data: shown.map(invoiceOf),
                next_cursor: rows.length > limit && last
                    ? Buffer.from(`${last.sort_date}:${last.id}`).toString('base64url') : null,
            };
        });

        api.get('/v1/invoices/:id', {
            schema: {
                params: { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } },
                response: { 200: detailSchema, '4xx': problemSchema },
            },
        }, async (request, reply) => {
            const { org, customer } = request.scope;
            const { rows } = await pool.query({ ...detail, values: [org, customer, request.params.id] });
            if (rows.length === 0) return problem(reply, 404, 'not_found', 'No such invoice.');
            return { ...invoiceOf(rows[0]), lines: rows[0].lines, payments: rows[0].payments };
        });
    });

    app.setErrorHandler((err, _request, reply) => {
        if (err.validation) return problem(reply, 400, 'parameter_invalid', err.message);
        console.error(`portal: ${err.message}`);
        reply.header('retry-after', '5');
        return problem(reply, 503, 'store_unavailable', 'The database cannot answer now; retry later.');
    });

    await app.listen({ port: opts.port, host: opts.host });
    listening('portal', `listening on ${opts.host}:${opts.port}, pool ${opts.pool}`);
    stopOnSigterm(app, pool);
}
