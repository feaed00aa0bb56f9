// PostgreSQL backend against a real server started for this file (test/helpers/postgres.ts): the
// storage contract, cross-pool quota safety, and the migration bookkeeping.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage } from '../../src/storage/index.js';
import { LATEST_SCHEMA_VERSION, SchemaTooNewError } from '../../src/storage/migrations.js';
import { openPostgres } from '../../src/storage/postgres.js';
import { type PostgresServer, startPostgres } from '../helpers/postgres.js';
import { storageContract } from './contract.js';
import { archiveContract } from './archive-contract.js';
import { pubsubContract } from './pubsub-contract.js';
import { uploadContract } from './upload-contract.js';
import { alertsContract } from './alerts-contract.js';
import { pollsContract } from './polls-contract.js';
import { mucContract } from './muc-contract.js';
import { tokensContract } from './tokens-contract.js';
import { ssoContract } from './sso-contract.js';

let server: PostgresServer;

beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.stop();
});

/** Runs SQL on the server's maintenance database or on a given one. */
async function admin<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: server.urlFor(database) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

let dbSeq = 0;
async function freshDatabase(): Promise<string> {
  const name = `parley_t${++dbSeq}`;
  await admin('postgres', (c) => c.query(`CREATE DATABASE ${name}`));
  return name;
}

storageContract('postgres', () => openPostgres({ url: server.url }));
archiveContract('postgres', () => openPostgres({ url: server.url }));
pubsubContract('postgres', () => openPostgres({ url: server.url }));
uploadContract('postgres', () => openPostgres({ url: server.url }));
alertsContract('postgres', () => openPostgres({ url: server.url }));
pollsContract('postgres', () => openPostgres({ url: server.url }));
mucContract('postgres', () => openPostgres({ url: server.url }));
ssoContract('postgres', () => openPostgres({ url: server.url }));
tokensContract('postgres', () => openPostgres({ url: server.url }), () =>
  admin(new URL(server.url).pathname.slice(1), async (c) => JSON.stringify((await c.query('SELECT * FROM xmpp_tokens')).rows)),
);

describe('postgres specifics', () => {
  it('opens through openStorage with separate connection fields', async () => {
    const url = new URL(server.url);
    const s = await openStorage({
      type: 'postgres',
      host: url.hostname,
      port: Number(url.port),
      user: 'postgres',
      database: url.pathname.slice(1),
      max: 2,
    });
    expect(s.kind).toBe('postgres');
    await s.ping();
    await s.close();
    await s.close(); // idempotent
  });

  it('the offline quota holds across separate pools (two Parley nodes, one database)', async () => {
    const [a, b] = await Promise.all([openPostgres({ url: server.url }), openPostgres({ url: server.url })]);
    try {
      const user = `multi-${Date.now()}@example.com`;
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).offline.push(user, `<m${i}/>`, i, 10)),
      );
      expect(results.filter((r) => r !== null)).toHaveLength(10);
      expect(await a.offline.count(user)).toBe(10);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a failed open rejects with the connection error', async () => {
    await expect(openPostgres({ url: server.urlFor('no_such_database') })).rejects.toThrow(/no_such_database/);
  });
});

describe('postgres migrations', () => {
  it('opening twice is idempotent and keeps the data', async () => {
    const db = await freshDatabase();
    const a = await openPostgres({ url: server.urlFor(db) });
    await a.keyval.set('u@example.com', 's', 'k', 'v');
    await a.close();
    const b = await openPostgres({ url: server.urlFor(db) });
    expect(await b.keyval.get('u@example.com', 's', 'k')).toBe('v');
    await b.close();
    const versions = await admin(db, async (c) =>
      (await c.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')).rows.map(
        (r) => r.version,
      ),
    );
    expect(versions).toEqual(Array.from({ length: LATEST_SCHEMA_VERSION }, (_, i) => i + 1));
  });

  it('concurrent first opens of an empty database all succeed (migration lock)', async () => {
    const db = await freshDatabase();
    const all = await Promise.all(Array.from({ length: 4 }, () => openPostgres({ url: server.urlFor(db), max: 2 })));
    for (const s of all) await s.ping();
    await Promise.all(all.map((s) => s.close()));
    const n = await admin(db, async (c) => (await c.query('SELECT count(*)::int AS n FROM schema_migrations')).rows[0].n);
    expect(n).toBe(LATEST_SCHEMA_VERSION);
  });

  it('refuses a database at a future schema version', async () => {
    const db = await freshDatabase();
    await (await openPostgres({ url: server.urlFor(db) })).close();
    await admin(db, (c) =>
      c.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
        LATEST_SCHEMA_VERSION + 1,
        'from the future',
        Date.now(),
      ]),
    );
    const err = await openPostgres({ url: server.urlFor(db) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SchemaTooNewError);
    expect((err as SchemaTooNewError).databaseVersion).toBe(LATEST_SCHEMA_VERSION + 1);
    // Nothing was changed by the refused open.
    const n = await admin(db, async (c) => (await c.query('SELECT count(*)::int AS n FROM schema_migrations')).rows[0].n);
    expect(n).toBe(LATEST_SCHEMA_VERSION + 1);
  });
});
