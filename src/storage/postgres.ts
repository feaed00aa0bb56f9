// PostgreSQL storage backend (node-postgres pool). Single statements are atomic on their own; the
// read-then-write paths (offline quota, roster version bump) run in explicit transactions on one
// pooled client. COMMIT returns only after the WAL record is flushed (synchronous_commit=on, the
// server default), which is what OfflineStore.push's durability promise relies on.
// bigint/count(*) columns arrive as strings from pg and are converted with Number().
import pg from 'pg';
import { pendingMigrations, SCHEMA_MIGRATIONS_DDL } from './migrations.js';
import { postgresPubsub, postgresPubsubUserCleanup, PUBSUB_USER_DELETE_CTES } from './pubsub-postgres.js';
import { postgresArchive } from './archive-postgres.js';
import { postgresUploads } from './upload-postgres.js';
import { ALERT_USER_DELETE_CTES, postgresAlerts } from './alerts-postgres.js';
import { POLL_USER_DELETE_CTES, postgresPolls } from './polls-postgres.js';
import { TOKEN_USER_DELETE_CTES, postgresTokens } from './tokens-postgres.js';
import { SSO_USER_DELETE_CTES, postgresSsoCache, postgresSsoIdentities, postgresWebSessions } from './sso-postgres.js';
import { postgresMuc } from './muc-postgres.js';
import type {
  AccountRecord,
  AccountStore,
  BlockStore,
  KeyValStore,
  OfflineStore,
  RosterItem,
  RosterStore,
  Storage,
} from './types.js';

export interface PostgresOptions {
  /** postgres://user:password@host:port/database; takes precedence over the separate fields. */
  url?: string;
  host?: string;
  port?: number;
  user?: string;
  password?: string;
  database?: string;
  /** Pool size (pg default: 10). */
  max?: number;
}

// Advisory lock keys (two-int form: class, object) so Parley's locks cannot collide with other
// applications' single-bigint advisory locks on a shared server.
const LOCK_CLASS_MIGRATE = 0x5061726c; // 'Parl'
const LOCK_CLASS_OFFLINE = 0x5061726d;

interface RosterRow {
  contact: string;
  name: string | null;
  subscription: RosterItem['subscription'];
  ask: boolean;
  approved: boolean;
  groups: string;
}

function rowToItem(r: RosterRow): RosterItem {
  const item: RosterItem = {
    jid: r.contact,
    subscription: r.subscription,
    ask: r.ask,
    approved: r.approved,
    groups: JSON.parse(r.groups) as string[],
  };
  if (r.name !== null) item.name = r.name;
  return item;
}

async function withTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  let broken: Error | undefined;
  try {
    await c.query('BEGIN');
    const result = await fn(c);
    await c.query('COMMIT');
    return result;
  } catch (err) {
    try {
      await c.query('ROLLBACK');
    } catch (rollbackErr) {
      // The connection is in an unknown state: make the pool discard it instead of reusing it.
      broken = rollbackErr as Error;
    }
    throw err;
  } finally {
    c.release(broken);
  }
}

async function migrate(pool: pg.Pool): Promise<void> {
  await withTransaction(pool, async (c) => {
    // Serializes concurrent first starts (CREATE TABLE IF NOT EXISTS alone races on the catalog).
    await c.query('SELECT pg_advisory_xact_lock($1, 0)', [LOCK_CLASS_MIGRATE]);
    await c.query(SCHEMA_MIGRATIONS_DDL);
    const { rows } = await c.query<{ version: number }>('SELECT version FROM schema_migrations');
    for (const m of pendingMigrations(rows.map((r) => r.version))) {
      await c.query(m.postgres);
      await c.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
        m.version,
        m.name,
        Date.now(),
      ]);
    }
  });
}

export async function openPostgres(opts: PostgresOptions): Promise<Storage> {
  const config: pg.PoolConfig = { application_name: 'parley' };
  if (opts.url !== undefined) config.connectionString = opts.url;
  if (opts.host !== undefined) config.host = opts.host;
  if (opts.port !== undefined) config.port = opts.port;
  if (opts.user !== undefined) config.user = opts.user;
  if (opts.password !== undefined) config.password = opts.password;
  if (opts.database !== undefined) config.database = opts.database;
  if (opts.max !== undefined) config.max = opts.max;
  const pool = new pg.Pool(config);
  // An idle pooled connection that dies (server restart, network) emits 'error' on the pool; with no
  // listener that would crash the process. The pool drops the connection itself, and the next query
  // either gets a fresh one or rejects, which is where the error is reported.
  pool.on('error', () => {});

  try {
    await migrate(pool);
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }

  const q = <R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]) =>
    pool.query<R>(text, values);

  const bumpVersion = async (c: pg.PoolClient, user: string): Promise<string> => {
    // The row lock taken here also orders concurrent roster changes of one user.
    const { rows } = await c.query<{ version: string }>(
      `INSERT INTO roster_versions (user_jid, version) VALUES ($1, 1)
       ON CONFLICT (user_jid) DO UPDATE SET version = roster_versions.version + 1
       RETURNING version::text`,
      [user],
    );
    return rows[0]!.version;
  };

  const accounts: AccountStore = {
    async create(r: AccountRecord) {
      const res = await q(
        `INSERT INTO accounts (jid, username, host, scram, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (jid) DO NOTHING`,
        [r.jid, r.username, r.host, JSON.stringify(r.scram), r.createdAt],
      );
      return res.rowCount === 1;
    },
    async get(jid) {
      const { rows } = await q<{ jid: string; username: string; host: string; scram: string; created_at: string }>(
        'SELECT jid, username, host, scram, created_at FROM accounts WHERE jid = $1',
        [jid],
      );
      const row = rows[0];
      if (!row) return null;
      return {
        jid: row.jid,
        username: row.username,
        host: row.host,
        scram: JSON.parse(row.scram) as AccountRecord['scram'],
        createdAt: Number(row.created_at),
      };
    },
    async setScram(jid, scram) {
      const res = await q('UPDATE accounts SET scram = $2 WHERE jid = $1', [jid, JSON.stringify(scram)]);
      return res.rowCount === 1;
    },
    async remove(jid) {
      // One transaction: all of the user's data goes, or none does. The rows keyed by the user go
      // in one statement; the subscriptions and affiliations kept inside channel records first.
      return withTransaction(pool, async (c) => {
        await postgresPubsubUserCleanup(c, jid);
        const res = await c.query(
          `WITH r AS (DELETE FROM roster_items WHERE user_jid = $1),
                v AS (DELETE FROM roster_versions WHERE user_jid = $1),
                p AS (DELETE FROM roster_pending WHERE user_jid = $1),
                o AS (DELETE FROM offline WHERE user_jid = $1),
                k AS (DELETE FROM keyval WHERE user_jid = $1),
                ${PUBSUB_USER_DELETE_CTES}
                ${ALERT_USER_DELETE_CTES}
                ${POLL_USER_DELETE_CTES}
                ${TOKEN_USER_DELETE_CTES}
                ${SSO_USER_DELETE_CTES}
                b AS (DELETE FROM blocks WHERE user_jid = $1),
                ar AS (DELETE FROM archive WHERE user_jid = $1),
                au AS (DELETE FROM archive_users WHERE user_jid = $1),
                ap AS (DELETE FROM archive_prefs WHERE user_jid = $1)
           DELETE FROM accounts WHERE jid = $1`,
          [jid],
        );
        return res.rowCount === 1;
      });
    },
    async list(host) {
      // COLLATE "C": byte order, the same as SQLite's, whatever the database's locale.
      const { rows } = await q<{ jid: string }>(
        'SELECT jid FROM accounts WHERE host = $1 ORDER BY jid COLLATE "C"',
        [host],
      );
      return rows.map((r) => r.jid);
    },
    async count(host) {
      const { rows } = await q<{ n: string }>('SELECT count(*) AS n FROM accounts WHERE host = $1', [host]);
      return Number(rows[0]!.n);
    },
    async missingAmong(jids) {
      if (!jids.length) return [];
      const { rows } = await q<{ jid: string }>('SELECT jid FROM accounts WHERE jid = ANY($1::text[])', [jids]);
      const found = new Set(rows.map((r) => r.jid));
      return jids.filter((j) => !found.has(j));
    },
  };

  const roster: RosterStore = {
    async get(user) {
      // One statement, so version and items come from the same snapshot.
      const { rows } = await q<{ version: string; items: [string, string | null, string, boolean, boolean, string][] }>(
        `SELECT COALESCE((SELECT version FROM roster_versions WHERE user_jid = $1), 0)::text AS version,
                COALESCE((SELECT json_agg(json_build_array(contact, name, subscription, ask, approved, groups)
                                          ORDER BY contact COLLATE "C")
                            FROM roster_items WHERE user_jid = $1), '[]'::json) AS items`,
        [user],
      );
      const row = rows[0]!;
      return {
        version: row.version,
        items: row.items.map(([contact, name, subscription, ask, approved, groups]) =>
          rowToItem({ contact, name, subscription: subscription as RosterItem['subscription'], ask, approved, groups }),
        ),
      };
    },
    async getItem(user, contact) {
      const { rows } = await q<RosterRow>(
        `SELECT contact, name, subscription, ask, approved, groups FROM roster_items
         WHERE user_jid = $1 AND contact = $2`,
        [user, contact],
      );
      return rows[0] ? rowToItem(rows[0]) : null;
    },
    async setItem(user, item) {
      return withTransaction(pool, async (c) => {
        // The WHERE makes re-setting an identical item a no-op (rowCount 0): no version bump.
        const res = await c.query(
          `INSERT INTO roster_items AS ri (user_jid, contact, name, subscription, ask, approved, groups)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (user_jid, contact) DO UPDATE
             SET name = EXCLUDED.name, subscription = EXCLUDED.subscription, ask = EXCLUDED.ask,
                 approved = EXCLUDED.approved, groups = EXCLUDED.groups
             WHERE (ri.name, ri.subscription, ri.ask, ri.approved, ri.groups)
                   IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.subscription, EXCLUDED.ask, EXCLUDED.approved, EXCLUDED.groups)`,
          [user, item.jid, item.name ?? null, item.subscription, item.ask, item.approved, JSON.stringify(item.groups)],
        );
        if (res.rowCount === 1) return bumpVersion(c, user);
        const { rows } = await c.query<{ version: string }>(
          'SELECT COALESCE((SELECT version FROM roster_versions WHERE user_jid = $1), 0)::text AS version',
          [user],
        );
        return rows[0]!.version;
      });
    },
    async removeItem(user, contact) {
      return withTransaction(pool, async (c) => {
        const res = await c.query('DELETE FROM roster_items WHERE user_jid = $1 AND contact = $2', [user, contact]);
        return res.rowCount === 1 ? bumpVersion(c, user) : null;
      });
    },
    async count(user) {
      const { rows } = await q<{ n: string }>('SELECT count(*) AS n FROM roster_items WHERE user_jid = $1', [user]);
      return Number(rows[0]!.n);
    },
    async addPendingIn(user, contact, stanza) {
      await q(
        `INSERT INTO roster_pending (user_jid, contact, stanza) VALUES ($1, $2, $3)
         ON CONFLICT (user_jid, contact) DO UPDATE SET stanza = EXCLUDED.stanza`,
        [user, contact, stanza],
      );
    },
    async removePendingIn(user, contact) {
      await q('DELETE FROM roster_pending WHERE user_jid = $1 AND contact = $2', [user, contact]);
    },
    async listPendingIn(user) {
      const { rows } = await q<{ contact: string; stanza: string }>(
        'SELECT contact, stanza FROM roster_pending WHERE user_jid = $1 ORDER BY contact COLLATE "C"',
        [user],
      );
      return rows;
    },
  };

  const offline: OfflineStore = {
    async push(user, stanza, stamp, quota) {
      if (!(quota > 0)) return null;
      return withTransaction(pool, async (c) => {
        // Per-user lock held until COMMIT: concurrent pushes for one user queue here, and each count
        // (a new statement, so a new READ COMMITTED snapshot) sees every message committed before it.
        await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_CLASS_OFFLINE, user]);
        const { rows } = await c.query<{ n: string }>('SELECT count(*) AS n FROM offline WHERE user_jid = $1', [user]);
        if (!(Number(rows[0]!.n) < quota)) return null;
        const ins = await c.query<{ id: string }>(
          'INSERT INTO offline (user_jid, stanza, stamp) VALUES ($1, $2, $3) RETURNING id',
          [user, stanza, stamp],
        );
        return Number(ins.rows[0]!.id);
      });
    },
    async list(user, limit) {
      // LIMIT NULL means no limit.
      const lim = limit === undefined || !Number.isFinite(limit) ? null : Math.max(0, Math.floor(limit));
      const { rows } = await q<{ id: string; stanza: string; stamp: string }>(
        'SELECT id, stanza, stamp FROM offline WHERE user_jid = $1 ORDER BY id LIMIT $2',
        [user, lim],
      );
      return rows.map((r) => ({ id: Number(r.id), stanza: r.stanza, stamp: Number(r.stamp) }));
    },
    async remove(user, ids) {
      if (ids.length === 0) return;
      await q('DELETE FROM offline WHERE user_jid = $1 AND id = ANY($2::bigint[])', [user, ids]);
    },
    async count(user) {
      const { rows } = await q<{ n: string }>('SELECT count(*) AS n FROM offline WHERE user_jid = $1', [user]);
      return Number(rows[0]!.n);
    },
    async total() {
      const { rows } = await q<{ n: string }>('SELECT count(*) AS n FROM offline');
      return Number(rows[0]!.n);
    },
  };

  const keyval: KeyValStore = {
    async get(user, store, key) {
      const { rows } = await q<{ value: string }>(
        'SELECT value FROM keyval WHERE user_jid = $1 AND store = $2 AND key = $3',
        [user, store, key],
      );
      return rows[0]?.value ?? null;
    },
    async set(user, store, key, value) {
      await q(
        `INSERT INTO keyval (user_jid, store, key, value) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_jid, store, key) DO UPDATE SET value = EXCLUDED.value`,
        [user, store, key, value],
      );
    },
    async delete(user, store, key) {
      await q('DELETE FROM keyval WHERE user_jid = $1 AND store = $2 AND key = $3', [user, store, key]);
    },
    async count(user, store) {
      const { rows } = await q<{ n: string }>(
        'SELECT count(*) AS n FROM keyval WHERE user_jid = $1 AND store = $2',
        [user, store],
      );
      return Number(rows[0]!.n);
    },
  };

  const blocks: BlockStore = {
    async list(user) {
      const { rows } = await q<{ jid: string }>(
        'SELECT jid FROM blocks WHERE user_jid = $1 ORDER BY jid COLLATE "C"',
        [user],
      );
      return rows.map((r) => r.jid);
    },
    async add(user, jids) {
      if (jids.length === 0) return;
      await q(
        'INSERT INTO blocks (user_jid, jid) SELECT $1, j FROM unnest($2::text[]) AS j ON CONFLICT DO NOTHING',
        [user, jids],
      );
    },
    async remove(user, jids) {
      if (jids.length === 0) return;
      await q('DELETE FROM blocks WHERE user_jid = $1 AND jid = ANY($2::text[])', [user, jids]);
    },
    async clear(user) {
      await q('DELETE FROM blocks WHERE user_jid = $1', [user]);
    },
  };

  let closing: Promise<void> | undefined;
  return {
    kind: 'postgres',
    accounts,
    roster,
    offline,
    keyval,
    blocks,
    archive: postgresArchive(pool),
    pubsub: postgresPubsub(pool, (fn) => withTransaction(pool, fn)),
    uploads: postgresUploads(pool, (fn) => withTransaction(pool, fn)),
    alerts: postgresAlerts(pool, (fn) => withTransaction(pool, fn)),
    polls: postgresPolls(pool, (fn) => withTransaction(pool, fn)),
    tokens: postgresTokens(pool),
    ssoCache: postgresSsoCache(pool),
    webSessions: postgresWebSessions(pool),
    ssoIdentities: postgresSsoIdentities(pool),
    muc: postgresMuc(pool),
    async ping() {
      await q('SELECT 1');
    },
    close() {
      closing ??= pool.end();
      return closing;
    },
  };
}
