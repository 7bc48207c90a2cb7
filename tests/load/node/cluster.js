// SPDX-License-Identifier: MIT
'use strict';
/*
 * cluster.js: what the reference servers of tests/load (receiver.js, portal.js) share: their command line
 * (--port, --host, --pool, --workers) and how they run: one process by default (Node's usual deployment: one event
 * loop, one core), or with --workers N that many node:cluster workers sharing the port, each with its own pool, the
 * primary only forking them and forwarding SIGTERM.
 */
const cluster = require('node:cluster');
const { parseArgs } = require('node:util');

// options(name): the parsed command line, or exit 2 with a message naming the server
function options(name) {
    const { values: opts } = parseArgs({
        options: {
            port: { type: 'string', default: '8080' },
            host: { type: 'string', default: '127.0.0.1' },
            pool: { type: 'string', default: '16' },
            workers: { type: 'string', default: '0' },
        },
    });
    const out = { host: opts.host, port: Number(opts.port), pool: Number(opts.pool), workers: Number(opts.workers) };
    for (const [flag, v, min] of [['--port', out.port, 1], ['--pool', out.pool, 1], ['--workers', out.workers, 0]]) {
        if (!Number.isInteger(v) || v < min) {
            console.error(`${name}: ${flag} must be an integer >= ${min}`);
            process.exit(2);
        }
    }
    return out;
}

// run(name, opts, serve): serve() in this process, or in opts.workers forked workers
function run(name, opts, serve) {
    if (opts.workers > 0 && cluster.isPrimary) {
        const children = [];
        let stopping = false;
        for (let i = 0; i < opts.workers; ++i) children.push(cluster.fork());
        let ready = 0;
        cluster.on('message', (_w, msg) => {
            if (msg === 'ready' && ++ready === opts.workers) console.log(`${name}: ${opts.workers} workers ready`);
        });
        cluster.on('exit', (w, code, signal) => {
            if (!stopping) {
                console.error(`${name}: worker ${w.process.pid} exited (${signal || code}); stopping`);
                stopping = true;
                for (const c of children) c.process.kill('SIGTERM');
                process.exitCode = 1;
            }
        });
        process.on('SIGTERM', () => {
            stopping = true;
            for (const c of children) c.process.kill('SIGTERM');
        });
        return;
    }
    serve().catch((err) => {
        console.error(`${name}: ${err.message}`);
        process.exit(1);
    });
}

// listening(name, what): tells the primary (or the log) that this process serves
function listening(name, what) {
    if (cluster.isWorker) process.send('ready');
    else console.log(`${name}: ${what}`);
}

// stopOnSigterm(app, pool): on SIGTERM, stop accepting, let the requests in flight finish, close the pool, exit 0
function stopOnSigterm(app, pool) {
    let closing = false;
    process.on('SIGTERM', async () => {
        if (closing) return;
        closing = true;
        try {
            await app.close();
            await pool.end();
        } finally {
            process.exit(0);
        }
    });
}

module.exports = { options, run, listening, stopOnSigterm };
