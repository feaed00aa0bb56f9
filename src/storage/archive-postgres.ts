// XEP-0313 archive store on PostgreSQL: entries in `archive`, withtext through
// to_tsvector('simple')/plainto_tsquery backed by a GIN expression index, per-user entry counts in
// `archive_users` (its row lock orders concurrent appends of one user), preferences in
// `archive_prefs` (migration 2). bigint columns arrive as strings and are converted with Number().
import type pg from 'pg';
import { likeEscape, runArchiveQuery, type ArchiveSqlExec } from './archive-sql.js';
import type { ArchiveDefault, ArchiveStore } from './types.js';

/** Numbers the `?` placeholders of the shared SQL ($1, $2, ...); none of it holds a literal '?'. */
function numbered(sql: string): string {
  let i = 0;
  return sql.replace(/\?/g, () => `$${++i}`);
}

export function postgresArchive(pool: pg.Pool): ArchiveStore {
  const exec: ArchiveSqlExec = {
    async all<R>(sql: string, params: unknown[]) {
      const res = await pool.query(numbered(sql), params);
      return res.rows as R[];
    },
    fullText(_words, text) {
      // The same expression as the index archive_body_fts, so the index is used.
      return { sql: "to_tsvector('simple', COALESCE(body, '')) @@ plainto_tsquery('simple', ?)", params: [text] };
    },
  };

  return {
    async append(user, e, cap = 0) {
      // One statement: the entry and its count commit together (a data-modifying CTE always runs).
      const { rows } = await pool.query<{ n: string }>(
        `WITH ins AS (
           INSERT INTO archive (user_jid, id, with_bare, with_full, direction, stamp, stanza, body)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         )
         INSERT INTO archive_users (user_jid, n) VALUES ($1, 1)
         ON CONFLICT (user_jid) DO UPDATE SET n = archive_users.n + 1
         RETURNING n`,
        [user, e.id, e.withBare, e.withFull, e.direction, e.stamp, e.stanza, e.body],
      );
      const n = Number(rows[0]?.n ?? 0);
      if (cap > 0 && n > cap) {
        // Two concurrent trims may pick the same rows; each subtracts only what it really deleted.
        await pool.query(
          `WITH del AS (
             DELETE FROM archive WHERE seq IN (SELECT seq FROM archive WHERE user_jid = $1 ORDER BY seq LIMIT $2)
             RETURNING 1
           )
           UPDATE archive_users SET n = GREATEST(0, n - (SELECT count(*) FROM del)) WHERE user_jid = $1`,
          [user, n - cap],
        );
      }
    },
    async query(user, q) {
      return runArchiveQuery(exec, user, q);
    },
    async bounds(user) {
      // One statement, one snapshot.
      const { rows } = await pool.query<{ fid: string | null; fstamp: string | null; lid: string | null; lstamp: string | null }>(
        `SELECT f.id AS fid, f.stamp AS fstamp, l.id AS lid, l.stamp AS lstamp
         FROM (SELECT id, stamp FROM archive WHERE user_jid = $1 ORDER BY seq ASC LIMIT 1) f,
              (SELECT id, stamp FROM archive WHERE user_jid = $1 ORDER BY seq DESC LIMIT 1) l`,
        [user],
      );
      const r = rows[0];
      if (!r || r.fid === null || r.lid === null) return null;
      return { first: { id: r.fid, stamp: Number(r.fstamp) }, last: { id: r.lid, stamp: Number(r.lstamp) } };
    },
    async count(user) {
      const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM archive WHERE user_jid = $1', [user]);
      return Number(rows[0]?.n ?? 0);
    },
    async purge(cutoff, domains) {
      if (domains && domains.length === 0) return 0;
      const scope = domains ? ` AND (${domains.map((_, i) => `user_jid LIKE $${i + 2} ESCAPE '\\'`).join(' OR ')})` : '';
      // One statement: the counts drop by exactly the rows this statement deleted.
      const { rows } = await pool.query<{ n: string }>(
        `WITH del AS (DELETE FROM archive WHERE stamp < $1${scope} RETURNING user_jid),
              per AS (SELECT user_jid, count(*) AS c FROM del GROUP BY user_jid),
              upd AS (UPDATE archive_users u SET n = GREATEST(0, u.n - per.c) FROM per WHERE u.user_jid = per.user_jid)
         SELECT COALESCE(sum(c), 0)::text AS n FROM per`,
        [cutoff, ...(domains ?? []).map((d) => `%@${likeEscape(d)}`)],
      );
      return Number(rows[0]?.n ?? 0);
    },
    async purgeOwner(user, cutoff) {
      // One statement, like purge: the count drops by exactly what was deleted.
      const { rows } = await pool.query<{ n: string }>(
        `WITH del AS (DELETE FROM archive WHERE user_jid = $1 AND stamp < $2 RETURNING 1),
              upd AS (UPDATE archive_users SET n = GREATEST(0, n - (SELECT count(*) FROM del)) WHERE user_jid = $1)
         SELECT count(*)::text AS n FROM del`,
        [user, cutoff],
      );
      return Number(rows[0]?.n ?? 0);
    },
    async clear(user) {
      await pool.query(
        `WITH a AS (DELETE FROM archive WHERE user_jid = $1)
         DELETE FROM archive_users WHERE user_jid = $1`,
        [user],
      );
    },
    async getPrefs(user) {
      const { rows } = await pool.query<{ default_mode: ArchiveDefault; always_jids: string; never_jids: string }>(
        'SELECT default_mode, always_jids, never_jids FROM archive_prefs WHERE user_jid = $1',
        [user],
      );
      const r = rows[0];
      if (!r) return null;
      return { default: r.default_mode, always: JSON.parse(r.always_jids) as string[], never: JSON.parse(r.never_jids) as string[] };
    },
    async setPrefs(user, p) {
      await pool.query(
        `INSERT INTO archive_prefs (user_jid, default_mode, always_jids, never_jids) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_jid) DO UPDATE SET default_mode = EXCLUDED.default_mode,
           always_jids = EXCLUDED.always_jids, never_jids = EXCLUDED.never_jids`,
        [user, p.default, JSON.stringify(p.always), JSON.stringify(p.never)],
      );
    },
  };
}
