// UploadStore on PostgreSQL (XEP-0363 upload metadata; see src/storage/types.ts, migration 4). The
// quota check and the insert run in one transaction under a per-owner advisory lock, so concurrent
// slot requests on several Parley nodes cannot together exceed the quota. bigint columns arrive
// as strings and are converted by rowToUpload.
import type pg from 'pg';
import { LIVE_CONDITION, rowToUpload } from './upload-sqlite.js';
import type { UploadStore } from './types.js';

// Two-int advisory lock class, distinct from the others ('Parl', 'Parm', 'Parp').
const LOCK_CLASS_UPLOAD = 0x50617275; // 'Paru'

const COLUMNS = 'slot, owner, name, size, content_type, created_at, expires_at, uploaded_at';
const LIVE = LIVE_CONDITION.replace('?', '$2');

type Row = Parameters<typeof rowToUpload>[0];

export function postgresUploads(pool: pg.Pool, tx: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>): UploadStore {
  const usage = async (c: pg.Pool | pg.PoolClient, owner: string, now: number) => {
    const { rows } = await c.query<{ files: string; bytes: string }>(
      `SELECT count(*) AS files, COALESCE(sum(size), 0) AS bytes FROM uploads WHERE owner = $1 AND ${LIVE}`,
      [owner, now],
    );
    return { files: Number(rows[0]?.files ?? 0), bytes: Number(rows[0]?.bytes ?? 0) };
  };

  return {
    reserve(rec, quotaBytes, maxFiles = 0) {
      return tx(async (c) => {
        await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_CLASS_UPLOAD, rec.owner]);
        const used = await usage(c, rec.owner, rec.createdAt);
        if (quotaBytes > 0 && used.bytes + rec.size > quotaBytes) return false;
        if (maxFiles > 0 && used.files + 1 > maxFiles) return false;
        await c.query(`INSERT INTO uploads (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)`, [
          rec.slot,
          rec.owner,
          rec.name,
          rec.size,
          rec.contentType,
          rec.createdAt,
          rec.expiresAt,
        ]);
        return true;
      });
    },
    async get(slot) {
      const { rows } = await pool.query<Row>(`SELECT ${COLUMNS} FROM uploads WHERE slot = $1`, [slot]);
      return rows[0] ? rowToUpload(rows[0]) : null;
    },
    async complete(slot, at, expiresAt) {
      const res = await pool.query(
        'UPDATE uploads SET uploaded_at = $1, expires_at = $2 WHERE slot = $3 AND uploaded_at IS NULL AND expires_at > $1',
        [at, expiresAt, slot],
      );
      return (res.rowCount ?? 0) > 0;
    },
    usage(owner, now) {
      return usage(pool, owner, now);
    },
    async remove(slot) {
      const res = await pool.query('DELETE FROM uploads WHERE slot = $1', [slot]);
      return (res.rowCount ?? 0) > 0;
    },
    async expired(now, limit) {
      const { rows } = await pool.query<Row>(
        `SELECT ${COLUMNS} FROM uploads WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2`,
        [now, limit],
      );
      return rows.map(rowToUpload);
    },
  };
}
