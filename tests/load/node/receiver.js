// SPDX-License-Identifier: MIT
'use strict';
/*
 * receiver.js: the reference receiver of tests/load/bench_intake.sh. What a careful Node.js developer would
 * deploy instead of settled for Stripe webhooks: Fastify, stripe-node's own signature check on the raw
 * bytes, and one INSERT through a pg Pool, answered 200 only once the row is committed. It stores the
 * same row as settled's intake (gateway/api/intake.c), in the same inbox table, with the same conflict
 * rule, so that the two are measured doing the same durable work.
 *
 *   node receiver.js [--port 8080] [--host 127.0.0.1] [--pool 16] [--workers N]
 *
 * Environment: DATABASE_URL (required), STRIPE_WEBHOOK_SECRET (required, whsec_...), ORGANISATION (the
 * organisation's slug, default "default", created if missing, as settled does).
 *
 *   POST /webhooks/stripe  200 {"received":true} after the COMMIT; 400 on a bad signature or body;
 *                          503 (Retry-After: 5) when the database fails, so Stripe delivers again
 *   GET  /readyz           200 once the pool is connected
 *
 * One process by default (Node's usual deployment: one event loop, one core). --workers N forks N processes
 * with node:cluster that share the port, each with its own pool of --pool connections.
 */
const { options, run, listening, stopOnSigterm } = require('./cluster');

const opts = options('receiver');
const port = opts.port;
const poolSize = opts.pool;
run('receiver', opts, serve);

async function serve() {
    const Fastify = require('fastify');
    const Stripe = require('stripe');
    const { Pool } = require('pg');

    const databaseUrl = process.env.DATABASE_URL;
    const secret = process.env.STRIPE_WEBHOOK_SECRET;
    const orgSlug = process.env.ORGANISATION || 'default';
    if (!databaseUrl || !secret) throw new Error('DATABASE_URL and STRIPE_WEBHOOK_SECRET must be set');

    // No API key is needed to check signatures; the client is never used to call Stripe.
    const stripe = new Stripe('sk_test_unused');
    // The session settings of settled's own intake connections (gateway/infra/db.c), so that PostgreSQL does the same
    // work for both: settled.notify = off, because the schema wakes its queue workers with a statement trigger whose
    // NOTIFY takes a cluster-wide lock through every commit and so serialises concurrent inserters (a session opts
    // out so, docs/data-model.md; settled notifies once per 100 ms instead); and generic plans for the prepared
    // INSERT, planned once rather than on every execution.
    const pool = new Pool({
        connectionString: databaseUrl, max: poolSize, idleTimeoutMillis: 0,
        options: '-c settled.notify=off -c plan_cache_mode=force_generic_plan',
    });
    pool.on('error', (err) => console.error(`receiver: idle database client failed: ${err.message}`));

    // Once at start: the inbox's base table (webhook_events, or inbox_events with webhook_events a view over it)
    // and the organisation, created if missing (settled's gateway/domain/orgs.c does the same).
    const { rows: tables } = await pool.query(
        `SELECT c.relname FROM pg_class c
          WHERE c.relname IN ('inbox_events', 'webhook_events') AND c.relkind = 'r' AND pg_table_is_visible(c.oid)
          ORDER BY c.relname = 'inbox_events' DESC LIMIT 1`);
    if (tables.length === 0) throw new Error('no inbox table (inbox_events or webhook_events): run settled migrate');
    const table = tables[0].relname;
    const { rows: orgs } = await pool.query(
        `WITH ins AS (INSERT INTO organisations (slug, name) VALUES ($1, $1) ON CONFLICT (slug) DO NOTHING RETURNING id)
         SELECT id FROM ins UNION ALL SELECT id FROM organisations WHERE slug = $1`, [orgSlug]);
    const organisationId = orgs[0].id;

    // The statement settled's intake runs for a one-event delivery; named, so pg prepares it once per connection.
    const insertEvent = {
        name: 'insert_event',
        text: `INSERT INTO ${table} (organisation_id, provider, source, account, event_id, event_type, resource_id,
                                     body, headers, verified_at, received_at, correlation_id)
               VALUES ($1, 'stripe', 'default', $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (provider, source, event_id) DO NOTHING`,
    };

    // Open every connection now, so that the first requests do not pay for the connects.
    const clients = await Promise.all(Array.from({ length: poolSize }, () => pool.connect()));
    for (const c of clients) c.release();

    let seq = 0;
    const prefix = `node${process.pid.toString(16)}-`;
    const app = Fastify({
        logger: false,
        bodyLimit: 1048576, // settled's SETTLED_BODY_LIMIT default
        requestIdHeader: 'x-request-id',
        genReqId: () => prefix + (++seq).toString(16).padStart(16, '0'),
    });

    app.get('/readyz', async () => ({ ready: true }));

    // The webhook route in a plugin of its own, so that its raw-body parser does not change any other route.
    app.register(async (scope) => {
        // Stripe signs the exact bytes: keep the body as the raw Buffer, never parsed and re-serialised (Fastify's
        // own application/json parser would win over a catch-all, so it goes first).
        scope.removeAllContentTypeParsers();
        scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

        scope.post('/webhooks/stripe', {
            schema: { response: { 200: { type: 'object', properties: { received: { type: 'boolean' } } } } },
        }, async (request, reply) => {
            const receivedAt = new Date();
            const raw = request.body;
            reply.header('x-request-id', request.id);
            let event;
            try {
                event = stripe.webhooks.constructEvent(raw, request.headers['stripe-signature'], secret);
            } catch (err) {
                reply.code(400);
                return { error: err.type === 'StripeSignatureVerificationError' ? 'bad signature' : 'bad body' };
            }
            const verifiedAt = new Date();
            if (typeof event.id !== 'string' || event.id === '' || typeof event.type !== 'string' || event.type === '') {
                reply.code(400);
                return { error: 'the event has no id or type' };
            }
            const object = event.data && event.data.object;
            const headers = {};
            for (const h of ['content-type', 'user-agent', 'origin', 'x-forwarded-for']) {
                if (request.headers[h] !== undefined) headers[h] = request.headers[h];
            }
            try {
                await pool.query({
                    ...insertEvent,
                    values: [organisationId, typeof event.account === 'string' ? event.account : null, event.id,
                        event.type, object && typeof object.id === 'string' ? object.id : null, raw,
                        JSON.stringify(headers), verifiedAt, receivedAt, request.id],
                });
            } catch (err) {
                reply.code(503).header('retry-after', '5');
                return { error: 'the event was not stored; retry later' };
            }
            return { received: true };
        });
    });

    await app.listen({ port, host: opts.host });
    listening('receiver', `listening on ${opts.host}:${port}, table ${table}, pool ${poolSize}`);
    stopOnSigterm(app, pool);
}
