// Single sign-on stores on SQLite (issue 9, migration 9; interfaces in src/storage/types.ts): the
// shared cache, browser sessions and identity bindings. The cache's `take` is one DELETE ...
// RETURNING, so two processes cannot both consume a flow state or an InResponseTo.
import type Database from 'better-sqlite3';
import type { SsoCache, SsoIdentityRecord, SsoIdentityStore, WebSessionRecord, WebSessionStore } from './types.js';

/** accounts.remove(): a removed account's browser sessions and IdP bindings go with it. */
export const SSO_USER_DELETES = ['DELETE FROM web_sessions WHERE user_jid = ?', 'DELETE FROM sso_identities WHERE user_jid = ?'];

export const WEB_SESSION_COLUMNS = 'id, user_jid, host, provider, subject, csrf, logout, session_index, tokens, created_at, last_seen_at, expires_at';
export const SSO_IDENTITY_COLUMNS = 'host, issuer, subject, user_jid, provider, display_name, groups, created_at, last_login_at';

export interface WebSessionRow {
  id: string;
  user_jid: string;
  host: string;
  provider: string;
  subject: string;
  csrf: string;
  logout: string | null;
  session_index: string | null;
  tokens: string;
  created_at: number | string;
  last_seen_at: number | string;
  expires_at: number | string;
}

export interface SsoIdentityRow {
  host: string;
  issuer: string;
  subject: string;
  user_jid: string;
  provider: string;
  display_name: string | null;
  groups: string;
  created_at: number | string;
  last_login_at: number | string;
}

export const rowToWebSession = (r: WebSessionRow): WebSessionRecord => ({
  id: r.id,
  user: r.user_jid,
  host: r.host,
  provider: r.provider,
  subject: r.subject,
  csrf: r.csrf,
  logout: r.logout === null ? null : (JSON.parse(r.logout) as Record<string, string>),
  sessionIndex: r.session_index,
  tokens: JSON.parse(r.tokens) as string[],
  createdAt: Number(r.created_at),
  lastSeenAt: Number(r.last_seen_at),
  expiresAt: Number(r.expires_at),
});

export const webSessionValues = (s: WebSessionRecord): unknown[] => [
  s.id, s.user, s.host, s.provider, s.subject, s.csrf, s.logout ? JSON.stringify(s.logout) : null, s.sessionIndex, JSON.stringify(s.tokens), s.createdAt, s.lastSeenAt, s.expiresAt,
];

export const rowToIdentity = (r: SsoIdentityRow): SsoIdentityRecord => ({
  host: r.host,
  issuer: r.issuer,
  subject: r.subject,
  user: r.user_jid,
  provider: r.provider,
  displayName: r.display_name,
  groups: JSON.parse(r.groups) as string[],
  createdAt: Number(r.created_at),
  lastLoginAt: Number(r.last_login_at),
});

export function sqliteSsoCache(db: Database.Database, now: () => number = Date.now): SsoCache {
  const s = {
    add: db.prepare('INSERT INTO sso_cache (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at WHERE sso_cache.expires_at <= ?'),
    get: db.prepare('SELECT value FROM sso_cache WHERE key = ? AND expires_at > ?'),
    take: db.prepare('DELETE FROM sso_cache WHERE key = ? RETURNING value, expires_at'),
    del: db.prepare('DELETE FROM sso_cache WHERE key = ?'),
    purge: db.prepare('DELETE FROM sso_cache WHERE expires_at <= ?'),
  };
  return {
    async add(key, value, ttlMs) {
      const t = now();
      return s.add.run(key, value, t + ttlMs, t).changes > 0;
    },
    async get(key) {
      const r = s.get.get(key, now()) as { value: string } | undefined;
      return r?.value ?? null;
    },
    async take(key) {
      const r = s.take.get(key) as { value: string; expires_at: number } | undefined;
      return r && r.expires_at > now() ? r.value : null;
    },
    async delete(key) {
      s.del.run(key);
    },
    async purge(at) {
      return s.purge.run(at).changes;
    },
  };
}

export function sqliteWebSessions(db: Database.Database): WebSessionStore {
  const s = {
    insert: db.prepare(`INSERT INTO web_sessions (hash, ${WEB_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    byHash: db.prepare(`SELECT ${WEB_SESSION_COLUMNS} FROM web_sessions WHERE hash = ?`),
    touch: db.prepare('UPDATE web_sessions SET last_seen_at = ? WHERE hash = ?'),
    tokens: db.prepare('SELECT tokens FROM web_sessions WHERE hash = ?'),
    setTokens: db.prepare('UPDATE web_sessions SET tokens = ? WHERE hash = ?'),
    remove: db.prepare(`DELETE FROM web_sessions WHERE hash = ? RETURNING ${WEB_SESSION_COLUMNS}`),
    bySubject: db.prepare(`DELETE FROM web_sessions WHERE provider = ? AND subject = ? RETURNING ${WEB_SESSION_COLUMNS}`),
    bySubjectIndex: db.prepare(`DELETE FROM web_sessions WHERE provider = ? AND subject = ? AND session_index = ? RETURNING ${WEB_SESSION_COLUMNS}`),
    list: db.prepare(`SELECT ${WEB_SESSION_COLUMNS} FROM web_sessions WHERE user_jid = ? ORDER BY created_at DESC, id`),
    byUser: db.prepare(`DELETE FROM web_sessions WHERE user_jid = ? RETURNING ${WEB_SESSION_COLUMNS}`),
    purge: db.prepare(`DELETE FROM web_sessions WHERE expires_at <= ? OR last_seen_at < ? RETURNING ${WEB_SESSION_COLUMNS}`),
  };
  const addToken = db.transaction((hash: string, id: string) => {
    const r = s.tokens.get(hash) as { tokens: string } | undefined;
    if (!r) return;
    const list = JSON.parse(r.tokens) as string[];
    list.push(id);
    s.setTokens.run(JSON.stringify(list), hash);
  });
  return {
    async insert(rec, hash) {
      s.insert.run(hash, ...webSessionValues(rec));
    },
    async byHash(hash) {
      const r = s.byHash.get(hash) as WebSessionRow | undefined;
      return r ? rowToWebSession(r) : null;
    },
    async touch(hash, at) {
      return s.touch.run(at, hash).changes > 0;
    },
    async addToken(hash, tokenId) {
      addToken(hash, tokenId);
    },
    async remove(hash) {
      const r = s.remove.get(hash) as WebSessionRow | undefined;
      return r ? rowToWebSession(r) : null;
    },
    async removeBySubject(provider, subject, sessionIndex) {
      const rows = (sessionIndex === undefined ? s.bySubject.all(provider, subject) : s.bySubjectIndex.all(provider, subject, sessionIndex)) as WebSessionRow[];
      return rows.map(rowToWebSession);
    },
    async list(user) {
      return (s.list.all(user) as WebSessionRow[]).map(rowToWebSession);
    },
    async removeByUser(user) {
      return (s.byUser.all(user) as WebSessionRow[]).map(rowToWebSession);
    },
    async purge(now, idleBefore) {
      return (s.purge.all(now, idleBefore) as WebSessionRow[]).map(rowToWebSession);
    },
  };
}

export function sqliteSsoIdentities(db: Database.Database): SsoIdentityStore {
  const s = {
    get: db.prepare(`SELECT ${SSO_IDENTITY_COLUMNS} FROM sso_identities WHERE host = ? AND issuer = ? AND subject = ?`),
    byUser: db.prepare(`SELECT ${SSO_IDENTITY_COLUMNS} FROM sso_identities WHERE user_jid = ? ORDER BY created_at, issuer`),
    upsert: db.prepare(
      `INSERT INTO sso_identities (${SSO_IDENTITY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (host, issuer, subject) DO UPDATE SET provider = excluded.provider, display_name = excluded.display_name,
         groups = excluded.groups, last_login_at = excluded.last_login_at
       WHERE sso_identities.user_jid = excluded.user_jid`,
    ),
    withGroups: db.prepare(`SELECT ${SSO_IDENTITY_COLUMNS} FROM sso_identities WHERE groups <> '[]'`),
    remove: db.prepare('DELETE FROM sso_identities WHERE host = ? AND issuer = ? AND subject = ?'),
  };
  return {
    async get(host, issuer, subject) {
      const r = s.get.get(host, issuer, subject) as SsoIdentityRow | undefined;
      return r ? rowToIdentity(r) : null;
    },
    async byUser(user) {
      return (s.byUser.all(user) as SsoIdentityRow[]).map(rowToIdentity);
    },
    async bind(r) {
      try {
        return s.upsert.run(r.host, r.issuer, r.subject, r.user, r.provider, r.displayName, JSON.stringify(r.groups), r.createdAt, r.lastLoginAt).changes > 0;
      } catch (err) {
        // UNIQUE (user_jid, issuer): the account is bound to another subject of this issuer.
        if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') return false;
        throw err;
      }
    },
    async withGroups() {
      return (s.withGroups.all() as SsoIdentityRow[]).map(rowToIdentity);
    },
    async remove(host, issuer, subject) {
      return s.remove.run(host, issuer, subject).changes > 0;
    },
  };
}
