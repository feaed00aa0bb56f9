// Single sign-on stores on PostgreSQL (issue 9, migration 9): same shapes as sso-sqlite.ts. The
// cache's `take` is one DELETE ... RETURNING, so two nodes cannot both consume an entry.
import type pg from 'pg';
import {
  SSO_IDENTITY_COLUMNS, WEB_SESSION_COLUMNS, type SsoIdentityRow, type WebSessionRow, rowToIdentity, rowToWebSession, webSessionValues,
} from './sso-sqlite.js';
import type { SsoCache, SsoIdentityStore, WebSessionStore } from './types.js';

export const SSO_USER_DELETE_CTES = `ws AS (DELETE FROM web_sessions WHERE user_jid = $1), si AS (DELETE FROM sso_identities WHERE user_jid = $1),`;

export function postgresSsoCache(pool: pg.Pool, now: () => number = Date.now): SsoCache {
  return {
    async add(key, value, ttlMs) {
      const t = now();
      const res = await pool.query(
        `INSERT INTO sso_cache (key, value, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at WHERE sso_cache.expires_at <= $4`,
        [key, value, t + ttlMs, t],
      );
      return (res.rowCount ?? 0) > 0;
    },
    async get(key) {
      const { rows } = await pool.query<{ value: string }>('SELECT value FROM sso_cache WHERE key = $1 AND expires_at > $2', [key, now()]);
      return rows[0]?.value ?? null;
    },
    async take(key) {
      const { rows } = await pool.query<{ value: string; expires_at: string }>('DELETE FROM sso_cache WHERE key = $1 RETURNING value, expires_at', [key]);
      const r = rows[0];
      return r && Number(r.expires_at) > now() ? r.value : null;
    },
    async delete(key) {
      await pool.query('DELETE FROM sso_cache WHERE key = $1', [key]);
    },
    async purge(at) {
      const res = await pool.query('DELETE FROM sso_cache WHERE expires_at <= $1', [at]);
      return res.rowCount ?? 0;
    },
  };
}

export function postgresWebSessions(pool: pg.Pool): WebSessionStore {
  return {
    async insert(rec, hash) {
      await pool.query(`INSERT INTO web_sessions (hash, ${WEB_SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`, [hash, ...webSessionValues(rec)]);
    },
    async byHash(hash) {
      const { rows } = await pool.query<WebSessionRow>(`SELECT ${WEB_SESSION_COLUMNS} FROM web_sessions WHERE hash = $1`, [hash]);
      return rows[0] ? rowToWebSession(rows[0]) : null;
    },
    async touch(hash, at) {
      const res = await pool.query('UPDATE web_sessions SET last_seen_at = $1 WHERE hash = $2', [at, hash]);
      return (res.rowCount ?? 0) > 0;
    },
    async addToken(hash, tokenId) {
      // One statement: the list grows atomically even when two requests add at once.
      await pool.query(`UPDATE web_sessions SET tokens = ((tokens::jsonb) || jsonb_build_array($1::text))::text WHERE hash = $2`, [tokenId, hash]);
    },
    async remove(hash) {
      const { rows } = await pool.query<WebSessionRow>(`DELETE FROM web_sessions WHERE hash = $1 RETURNING ${WEB_SESSION_COLUMNS}`, [hash]);
      return rows[0] ? rowToWebSession(rows[0]) : null;
    },
    async removeBySubject(provider, subject, sessionIndex) {
      const { rows } =
        sessionIndex === undefined
          ? await pool.query<WebSessionRow>(`DELETE FROM web_sessions WHERE provider = $1 AND subject = $2 RETURNING ${WEB_SESSION_COLUMNS}`, [provider, subject])
          : await pool.query<WebSessionRow>(`DELETE FROM web_sessions WHERE provider = $1 AND subject = $2 AND session_index = $3 RETURNING ${WEB_SESSION_COLUMNS}`, [
              provider,
              subject,
              sessionIndex,
            ]);
      return rows.map(rowToWebSession);
    },
    async list(user) {
      const { rows } = await pool.query<WebSessionRow>(`SELECT ${WEB_SESSION_COLUMNS} FROM web_sessions WHERE user_jid = $1 ORDER BY created_at DESC, id COLLATE "C"`, [user]);
      return rows.map(rowToWebSession);
    },
    async removeByUser(user) {
      const { rows } = await pool.query<WebSessionRow>(`DELETE FROM web_sessions WHERE user_jid = $1 RETURNING ${WEB_SESSION_COLUMNS}`, [user]);
      return rows.map(rowToWebSession);
    },
    async purge(now, idleBefore) {
      const { rows } = await pool.query<WebSessionRow>(`DELETE FROM web_sessions WHERE expires_at <= $1 OR last_seen_at < $2 RETURNING ${WEB_SESSION_COLUMNS}`, [now, idleBefore]);
      return rows.map(rowToWebSession);
    },
  };
}

export function postgresSsoIdentities(pool: pg.Pool): SsoIdentityStore {
  return {
    async get(host, issuer, subject) {
      const { rows } = await pool.query<SsoIdentityRow>(`SELECT ${SSO_IDENTITY_COLUMNS} FROM sso_identities WHERE host = $1 AND issuer = $2 AND subject = $3`, [host, issuer, subject]);
      return rows[0] ? rowToIdentity(rows[0]) : null;
    },
    async byUser(user) {
      const { rows } = await pool.query<SsoIdentityRow>(`SELECT ${SSO_IDENTITY_COLUMNS} FROM sso_identities WHERE user_jid = $1 ORDER BY created_at, issuer COLLATE "C"`, [user]);
      return rows.map(rowToIdentity);
    },
    async bind(r) {
      try {
        const res = await pool.query(
          `INSERT INTO sso_identities (${SSO_IDENTITY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (host, issuer, subject) DO UPDATE SET provider = excluded.provider, display_name = excluded.display_name,
             groups = excluded.groups, last_login_at = excluded.last_login_at
           WHERE sso_identities.user_jid = excluded.user_jid`,
          [r.host, r.issuer, r.subject, r.user, r.provider, r.displayName, JSON.stringify(r.groups), r.createdAt, r.lastLoginAt],
        );
        return (res.rowCount ?? 0) > 0;
      } catch (err) {
        if ((err as { code?: string }).code === '23505') return false; // unique_violation: bound to another subject
        throw err;
      }
    },
    async withGroups() {
      const { rows } = await pool.query<SsoIdentityRow>(`SELECT ${SSO_IDENTITY_COLUMNS} FROM sso_identities WHERE groups <> '[]'`);
      return rows.map(rowToIdentity);
    },
    async remove(host, issuer, subject) {
      const res = await pool.query('DELETE FROM sso_identities WHERE host = $1 AND issuer = $2 AND subject = $3', [host, issuer, subject]);
      return (res.rowCount ?? 0) > 0;
    },
  };
}
