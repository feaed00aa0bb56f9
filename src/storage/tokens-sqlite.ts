// TokenStore on SQLite (issue 9 XMPP tokens; see src/storage/types.ts, migration 8). The token
// itself is never stored: `hash` (hex SHA-256) is the primary key a login looks up.
import type Database from 'better-sqlite3';
import type { TokenRecord, TokenStore } from './types.js';

/** accounts.remove(): a removed account's tokens go with it. */
export const TOKEN_USER_DELETES = ['DELETE FROM xmpp_tokens WHERE user_jid = ?'];

export const TOKEN_COLUMNS = 'id, user_jid, audience, label, issuer, created_at, expires_at, revoked_at';

export interface TokenRow {
  id: string;
  user_jid: string;
  audience: string;
  label: string | null;
  issuer: string | null;
  created_at: number | string;
  expires_at: number | string;
  revoked_at: number | string | null;
}

export const rowToToken = (r: TokenRow): TokenRecord => ({
  id: r.id,
  user: r.user_jid,
  audience: r.audience,
  label: r.label,
  issuer: r.issuer,
  createdAt: Number(r.created_at),
  expiresAt: Number(r.expires_at),
  revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
});

export function sqliteTokens(db: Database.Database): TokenStore {
  const s = {
    insert: db.prepare(`INSERT INTO xmpp_tokens (hash, ${TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    byHash: db.prepare(`SELECT ${TOKEN_COLUMNS} FROM xmpp_tokens WHERE hash = ?`),
    revoke: db.prepare('UPDATE xmpp_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
    revokeAll: db.prepare('UPDATE xmpp_tokens SET revoked_at = ? WHERE user_jid = ? AND revoked_at IS NULL'),
    list: db.prepare(`SELECT ${TOKEN_COLUMNS} FROM xmpp_tokens WHERE user_jid = ? ORDER BY created_at DESC, id`),
    purge: db.prepare('DELETE FROM xmpp_tokens WHERE expires_at <= ?'),
  };
  return {
    async insert(t, hash) {
      s.insert.run(hash, t.id, t.user, t.audience, t.label, t.issuer, t.createdAt, t.expiresAt, t.revokedAt);
    },
    async byHash(hash) {
      const r = s.byHash.get(hash) as TokenRow | undefined;
      return r ? rowToToken(r) : null;
    },
    async revoke(id, at) {
      return s.revoke.run(at, id).changes > 0;
    },
    async revokeAll(user, at) {
      return s.revokeAll.run(at, user).changes;
    },
    async list(user) {
      return (s.list.all(user) as TokenRow[]).map(rowToToken);
    },
    async purge(now) {
      return s.purge.run(now).changes;
    },
    async revokedAmong(ids) {
      const out: string[] = [];
      for (let i = 0; i < ids.length; i += 500) {
        const batch = ids.slice(i, i + 500);
        const rows = db.prepare(`SELECT id FROM xmpp_tokens WHERE revoked_at IS NOT NULL AND id IN (${batch.map(() => '?').join(',')})`).all(...batch) as { id: string }[];
        for (const r of rows) out.push(r.id);
      }
      return out;
    },
  };
}
