// SQLite storage backend (better-sqlite3). better-sqlite3 is synchronous: every call below runs to
// completion on the event loop, so a method is atomic with respect to this process by construction;
// transactions are still used for atomicity on disk and against other processes sharing the file.
// Read-then-write transactions are BEGIN IMMEDIATE: a deferred one that upgrades to a writer after
// another connection committed fails with SQLITE_BUSY_SNAPSHOT, which busy_timeout cannot cure.
import Database from 'better-sqlite3';
import { pendingMigrations, SCHEMA_MIGRATIONS_DDL } from './migrations.js';
import { PUBSUB_USER_DELETES, sqlitePubsub, sqlitePubsubUserCleanup } from './pubsub-sqlite.js';
import { sqliteArchive } from './archive-sqlite.js';
import { sqliteUploads } from './upload-sqlite.js';
import { ALERT_USER_DELETES, sqliteAlerts } from './alerts-sqlite.js';
import { POLL_USER_DELETES, sqlitePolls } from './polls-sqlite.js';
import { TOKEN_USER_DELETES, sqliteTokens } from './tokens-sqlite.js';
import { SSO_USER_DELETES, sqliteSsoCache, sqliteSsoIdentities, sqliteWebSessions } from './sso-sqlite.js';
import { sqliteMuc } from './muc-sqlite.js';
import type {
  AccountRecord,
  AccountStore,
  BlockStore,
  KeyValStore,
  OfflineMessage,
  OfflineStore,
  RosterItem,
  RosterStore,
  Storage,
} from './types.js';

export interface SqliteOptions {
  /** File path, or ':memory:' (tests). */
  path: string;
}

const BUSY_TIMEOUT_MS = 5000;

interface AccountRow {
  jid: string;
  username: string;
  host: string;
  scram: string;
  created_at: number;
}

interface RosterRow {
  contact: string;
  name: string | null;
  subscription: RosterItem['subscription'];
  ask: number;
  approved: number;
  groups: string;
}

function rowToItem(r: RosterRow): RosterItem {
  const item: RosterItem = {
    jid: r.contact,
    subscription: r.subscription,
    ask: r.ask !== 0,
    approved: r.approved !== 0,
    groups: JSON.parse(r.groups) as string[],
  };
  if (r.name !== null) item.name = r.name;
  return item;
}

function sameItem(a: RosterItem, b: RosterItem): boolean {
  return (
    (a.name ?? null) === (b.name ?? null) &&
    a.subscription === b.subscription &&
    a.ask === b.ask &&
    a.approved === b.approved &&
    JSON.stringify(a.groups) === JSON.stringify(b.groups)
  );
}

function migrate(db: Database.Database): void {
  // IMMEDIATE: two processes opening the same fresh file must not both run version 1.
  db.transaction(() => {
    db.exec(SCHEMA_MIGRATIONS_DDL);
    const applied = db.prepare('SELECT version FROM schema_migrations').pluck().all() as number[];
    const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
    for (const m of pendingMigrations(applied)) {
      db.exec(m.sqlite);
      record.run(m.version, m.name, Date.now());
    }
  }).immediate();
}

export async function openSqlite(opts: SqliteOptions): Promise<Storage> {
  const db = new Database(opts.path, { timeout: BUSY_TIMEOUT_MS });
  try {
    // Durability: WAL + synchronous=NORMAL. A commit is appended to the WAL with write(2) before
    // the statement returns, i.e. it sits in the OS page cache: it survives the process dying
    // (kill -9, crash, OOM) because the kernel still writes it out. Only an OS crash or power
    // loss can drop the last few commits (never corrupting the database); FULL would fsync every
    // commit to cover that too, at a large cost per offline message. (':memory:' ignores WAL.)
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    migrate(db);
  } catch (err) {
    db.close();
    throw err;
  }

  // Statements are prepared once, here; `.pluck()` ones return the first column.
  const s = {
    accountInsert: db.prepare(
      'INSERT INTO accounts (jid, username, host, scram, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (jid) DO NOTHING',
    ),
    accountGet: db.prepare('SELECT jid, username, host, scram, created_at FROM accounts WHERE jid = ?'),
    accountSetScram: db.prepare('UPDATE accounts SET scram = ? WHERE jid = ?'),
    accountDelete: db.prepare('DELETE FROM accounts WHERE jid = ?'),
    accountList: db.prepare('SELECT jid FROM accounts WHERE host = ? ORDER BY jid').pluck(),
    accountCount: db.prepare('SELECT count(*) FROM accounts WHERE host = ?').pluck(),
    // Everything keyed by a user, for accounts.remove().
    userDeletes: [
      'DELETE FROM roster_items WHERE user_jid = ?',
      'DELETE FROM roster_versions WHERE user_jid = ?',
      'DELETE FROM roster_pending WHERE user_jid = ?',
      'DELETE FROM offline WHERE user_jid = ?',
      'DELETE FROM keyval WHERE user_jid = ?',
      'DELETE FROM blocks WHERE user_jid = ?',
      ...PUBSUB_USER_DELETES,
      ...ALERT_USER_DELETES,
      ...POLL_USER_DELETES,
      ...TOKEN_USER_DELETES,
      ...SSO_USER_DELETES,
      'DELETE FROM archive WHERE user_jid = ?',
      'DELETE FROM archive_users WHERE user_jid = ?',
      'DELETE FROM archive_prefs WHERE user_jid = ?',
    ].map((sql) => db.prepare(sql)),

    rosterItems: db.prepare(
      'SELECT contact, name, subscription, ask, approved, groups FROM roster_items WHERE user_jid = ? ORDER BY contact',
    ),
    rosterItem: db.prepare(
      'SELECT contact, name, subscription, ask, approved, groups FROM roster_items WHERE user_jid = ? AND contact = ?',
    ),
    rosterUpsert: db.prepare(
      `INSERT INTO roster_items (user_jid, contact, name, subscription, ask, approved, groups)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (user_jid, contact) DO UPDATE SET name = excluded.name, subscription = excluded.subscription,
         ask = excluded.ask, approved = excluded.approved, groups = excluded.groups`,
    ),
    rosterDelete: db.prepare('DELETE FROM roster_items WHERE user_jid = ? AND contact = ?'),
    rosterCount: db.prepare('SELECT count(*) FROM roster_items WHERE user_jid = ?').pluck(),
    versionGet: db.prepare('SELECT version FROM roster_versions WHERE user_jid = ?').pluck(),
    versionBump: db
      .prepare(
        `INSERT INTO roster_versions (user_jid, version) VALUES (?, 1)
         ON CONFLICT (user_jid) DO UPDATE SET version = version + 1 RETURNING version`,
      )
      .pluck(),
    pendingUpsert: db.prepare(
      `INSERT INTO roster_pending (user_jid, contact, stanza) VALUES (?, ?, ?)
       ON CONFLICT (user_jid, contact) DO UPDATE SET stanza = excluded.stanza`,
    ),
    pendingDelete: db.prepare('DELETE FROM roster_pending WHERE user_jid = ? AND contact = ?'),
    pendingList: db.prepare('SELECT contact, stanza FROM roster_pending WHERE user_jid = ? ORDER BY contact'),

    offlineCount: db.prepare('SELECT count(*) FROM offline WHERE user_jid = ?').pluck(),
    offlineTotal: db.prepare('SELECT count(*) FROM offline').pluck(),
    offlineInsert: db.prepare('INSERT INTO offline (user_jid, stanza, stamp) VALUES (?, ?, ?)'),
    // LIMIT -1 means no limit in SQLite.
    offlineList: db.prepare('SELECT id, stanza, stamp FROM offline WHERE user_jid = ? ORDER BY id LIMIT ?'),
    // One statement for any number of ids: they travel as a JSON array.
    offlineDelete: db.prepare('DELETE FROM offline WHERE user_jid = ? AND id IN (SELECT value FROM json_each(?))'),

    kvGet: db.prepare('SELECT value FROM keyval WHERE user_jid = ? AND store = ? AND key = ?').pluck(),
    kvSet: db.prepare(
      `INSERT INTO keyval (user_jid, store, key, value) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_jid, store, key) DO UPDATE SET value = excluded.value`,
    ),
    kvDelete: db.prepare('DELETE FROM keyval WHERE user_jid = ? AND store = ? AND key = ?'),
    kvCount: db.prepare('SELECT count(*) FROM keyval WHERE user_jid = ? AND store = ?').pluck(),

    blockList: db.prepare('SELECT jid FROM blocks WHERE user_jid = ? ORDER BY jid').pluck(),
    blockAdd: db.prepare('INSERT INTO blocks (user_jid, jid) VALUES (?, ?) ON CONFLICT DO NOTHING'),
    blockRemove: db.prepare('DELETE FROM blocks WHERE user_jid = ? AND jid IN (SELECT value FROM json_each(?))'),
    blockClear: db.prepare('DELETE FROM blocks WHERE user_jid = ?'),

    ping: db.prepare('SELECT 1').pluck(),
  };

  const removeFromChannels = sqlitePubsubUserCleanup(db);
  const removeAccount = db.transaction((jid: string): boolean => {
    for (const st of s.userDeletes) st.run(jid);
    // Not a DELETE: the account's subscriptions and affiliations live inside other services' node records.
    removeFromChannels(jid);
    return s.accountDelete.run(jid).changes > 0;
  });

  const setRosterItem = db.transaction((user: string, item: RosterItem): string => {
    const old = s.rosterItem.get(user, item.jid) as RosterRow | undefined;
    // Re-setting an identical item is not a change: the version stays put.
    if (old && sameItem(rowToItem(old), item)) return String(s.versionGet.get(user) ?? 0);
    s.rosterUpsert.run(
      user,
      item.jid,
      item.name ?? null,
      item.subscription,
      item.ask ? 1 : 0,
      item.approved ? 1 : 0,
      JSON.stringify(item.groups),
    );
    return String(s.versionBump.get(user));
  });

  const removeRosterItem = db.transaction((user: string, contact: string): string | null => {
    if (s.rosterDelete.run(user, contact).changes === 0) return null;
    return String(s.versionBump.get(user));
  });

  // A snapshot: version and items read in one (read) transaction.
  const getRoster = db.transaction((user: string) => ({
    version: String(s.versionGet.get(user) ?? 0),
    items: (s.rosterItems.all(user) as RosterRow[]).map(rowToItem),
  }));

  // Quota check and insert in one IMMEDIATE transaction, so that other processes on the same file
  // cannot slip a message in between.
  const pushOffline = db.transaction((user: string, stanza: string, stamp: number, quota: number): number | null => {
    const n = s.offlineCount.get(user) as number;
    if (!(n < quota)) return null;
    return Number(s.offlineInsert.run(user, stanza, stamp).lastInsertRowid);
  });

  const addBlocks = db.transaction((user: string, jids: string[]) => {
    for (const jid of jids) s.blockAdd.run(user, jid);
  });

  const accounts: AccountStore = {
    async create(r: AccountRecord) {
      return s.accountInsert.run(r.jid, r.username, r.host, JSON.stringify(r.scram), r.createdAt).changes === 1;
    },
    async get(jid) {
      const row = s.accountGet.get(jid) as AccountRow | undefined;
      if (!row) return null;
      return {
        jid: row.jid,
        username: row.username,
        host: row.host,
        scram: JSON.parse(row.scram) as AccountRecord['scram'],
        createdAt: row.created_at,
      };
    },
    async setScram(jid, scram) {
      return s.accountSetScram.run(JSON.stringify(scram), jid).changes === 1;
    },
    async remove(jid) {
      return removeAccount.immediate(jid);
    },
    async list(host) {
      return s.accountList.all(host) as string[];
    },
    async count(host) {
      return s.accountCount.get(host) as number;
    },
    async missingAmong(jids) {
      const found = new Set<string>();
      for (let i = 0; i < jids.length; i += 500) {
        const batch = jids.slice(i, i + 500);
        for (const j of db.prepare(`SELECT jid FROM accounts WHERE jid IN (${batch.map(() => '?').join(',')})`).pluck().all(...batch) as string[]) found.add(j);
      }
      return jids.filter((j) => !found.has(j));
    },
  };

  const roster: RosterStore = {
    async get(user) {
      return getRoster(user);
    },
    async getItem(user, contact) {
      const row = s.rosterItem.get(user, contact) as RosterRow | undefined;
      return row ? rowToItem(row) : null;
    },
    async setItem(user, item) {
      return setRosterItem.immediate(user, item);
    },
    async removeItem(user, contact) {
      return removeRosterItem.immediate(user, contact);
    },
    async count(user) {
      return s.rosterCount.get(user) as number;
    },
    async addPendingIn(user, contact, stanza) {
      s.pendingUpsert.run(user, contact, stanza);
    },
    async removePendingIn(user, contact) {
      s.pendingDelete.run(user, contact);
    },
    async listPendingIn(user) {
      return s.pendingList.all(user) as { contact: string; stanza: string }[];
    },
  };

  const offline: OfflineStore = {
    async push(user, stanza, stamp, quota) {
      return pushOffline.immediate(user, stanza, stamp, quota);
    },
    async list(user, limit) {
      const lim = limit === undefined || !Number.isFinite(limit) ? -1 : Math.max(0, Math.floor(limit));
      return s.offlineList.all(user, lim) as OfflineMessage[];
    },
    async remove(user, ids) {
      if (ids.length > 0) s.offlineDelete.run(user, JSON.stringify(ids));
    },
    async count(user) {
      return s.offlineCount.get(user) as number;
    },
    async total() {
      return s.offlineTotal.get() as number;
    },
  };

  const keyval: KeyValStore = {
    async get(user, store, key) {
      return (s.kvGet.get(user, store, key) as string | undefined) ?? null;
    },
    async set(user, store, key, value) {
      s.kvSet.run(user, store, key, value);
    },
    async delete(user, store, key) {
      s.kvDelete.run(user, store, key);
    },
    async count(user, store) {
      return s.kvCount.get(user, store) as number;
    },
  };

  const blocks: BlockStore = {
    async list(user) {
      return s.blockList.all(user) as string[];
    },
    async add(user, jids) {
      if (jids.length > 0) addBlocks(user, jids);
    },
    async remove(user, jids) {
      if (jids.length > 0) s.blockRemove.run(user, JSON.stringify(jids));
    },
    async clear(user) {
      s.blockClear.run(user);
    },
  };

  return {
    kind: 'sqlite',
    accounts,
    roster,
    offline,
    keyval,
    blocks,
    archive: sqliteArchive(db),
    pubsub: sqlitePubsub(db),
    uploads: sqliteUploads(db),
    alerts: sqliteAlerts(db),
    polls: sqlitePolls(db),
    tokens: sqliteTokens(db),
    ssoCache: sqliteSsoCache(db),
    webSessions: sqliteWebSessions(db),
    ssoIdentities: sqliteSsoIdentities(db),
    muc: sqliteMuc(db),
    async ping() {
      s.ping.get();
    },
    async close() {
      if (db.open) db.close();
    },
  };
}
