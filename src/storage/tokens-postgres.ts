// TokenStore on PostgreSQL (issue 9 XMPP tokens; see src/storage/types.ts, migration 8). Same shape
// as tokens-sqlite.ts; bigint columns arrive as strings and are converted by the row mapper.
import type pg from 'pg';
import { TOKEN_COLUMNS, type TokenRow, rowToToken } from './tokens-sqlite.js';
import type { TokenStore } from './types.js';

export const TOKEN_USER_DELETE_CTES = `tk AS (DELETE FROM xmpp_tokens WHERE user_jid = $1),`;

export function postgresTokens(pool: pg.Pool): TokenStore {
  return {
    async insert(t, hash) {
      await pool.query(`INSERT INTO xmpp_tokens (hash, ${TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
        hash,
        t.id,
        t.user,
        t.audience,
        t.label,
        t.issuer,
        t.createdAt,
        t.expiresAt,
        t.revokedAt,
      ]);
    },
    async byHash(hash) {
      const { rows } = await pool.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM xmpp_tokens WHERE hash = $1`, [hash]);
      return rows[0] ? rowToToken(rows[0]) : null;
    },
    async revoke(id, at) {
      const res = await pool.query('UPDATE xmpp_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [at, id]);
      return (res.rowCount ?? 0) > 0;
    },
    async revokeAll(user, at) {
      const res = await pool.query('UPDATE xmpp_tokens SET revoked_at = $1 WHERE user_jid = $2 AND revoked_at IS NULL', [at, user]);
      return res.rowCount ?? 0;
    },
    async list(user) {
      const { rows } = await pool.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM xmpp_tokens WHERE user_jid = $1 ORDER BY created_at DESC, id COLLATE "C"`, [user]);
      return rows.map(rowToToken);
    },
    async purge(now) {
      const res = await pool.query('DELETE FROM xmpp_tokens WHERE expires_at <= $1', [now]);
      return res.rowCount ?? 0;
    },
    async revokedAmong(ids) {
      if (!ids.length) return [];
      const { rows } = await pool.query<{ id: string }>('SELECT id FROM xmpp_tokens WHERE revoked_at IS NOT NULL AND id = ANY($1::text[])', [ids]);
      return rows.map((r) => r.id);
    },
  };
}
