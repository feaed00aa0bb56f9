// UploadStore on SQLite (XEP-0363 upload metadata; see src/storage/types.ts, migration 4). The
// quota check and the insert run in one IMMEDIATE transaction, so concurrent slot requests (from
// this or another process sharing the file) cannot together exceed the quota.
import type Database from 'better-sqlite3';
import type { UploadRecord, UploadStore } from './types.js';

interface UploadRow {
  slot: string;
  owner: string;
  name: string;
  size: number;
  content_type: string;
  created_at: number;
  expires_at: number | null;
  uploaded_at: number | null;
}

const COLUMNS = 'slot, owner, name, size, content_type, created_at, expires_at, uploaded_at';

export const rowToUpload = (r: { [K in keyof UploadRow]: UploadRow[K] | string }): UploadRecord => ({
  slot: String(r.slot),
  owner: String(r.owner),
  name: String(r.name),
  size: Number(r.size),
  contentType: String(r.content_type),
  createdAt: Number(r.created_at),
  expiresAt: r.expires_at === null ? null : Number(r.expires_at),
  uploadedAt: r.uploaded_at === null ? null : Number(r.uploaded_at),
});

/** Live = uploaded, or pending with a deadline still ahead (the SQL shared with postgres, `?` = now). */
export const LIVE_CONDITION = '(uploaded_at IS NOT NULL OR expires_at > ?)';

export function sqliteUploads(db: Database.Database): UploadStore {
  const s = {
    usage: db.prepare(`SELECT count(*) AS files, COALESCE(sum(size), 0) AS bytes FROM uploads WHERE owner = ? AND ${LIVE_CONDITION}`),
    insert: db.prepare(`INSERT INTO uploads (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)`),
    get: db.prepare(`SELECT ${COLUMNS} FROM uploads WHERE slot = ?`),
    complete: db.prepare('UPDATE uploads SET uploaded_at = ?, expires_at = ? WHERE slot = ? AND uploaded_at IS NULL AND expires_at > ?'),
    remove: db.prepare('DELETE FROM uploads WHERE slot = ?'),
    expired: db.prepare(`SELECT ${COLUMNS} FROM uploads WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?`),
  };

  const usage = (owner: string, now: number) => {
    const r = s.usage.get(owner, now) as { files: number; bytes: number };
    return { files: Number(r.files), bytes: Number(r.bytes) };
  };

  const reserve = db.transaction((rec: UploadRecord, quotaBytes: number, maxFiles: number): boolean => {
    const used = usage(rec.owner, rec.createdAt);
    if (quotaBytes > 0 && used.bytes + rec.size > quotaBytes) return false;
    if (maxFiles > 0 && used.files + 1 > maxFiles) return false;
    s.insert.run(rec.slot, rec.owner, rec.name, rec.size, rec.contentType, rec.createdAt, rec.expiresAt);
    return true;
  });

  return {
    async reserve(rec, quotaBytes, maxFiles = 0) {
      return reserve.immediate(rec, quotaBytes, maxFiles);
    },
    async get(slot) {
      const r = s.get.get(slot) as UploadRow | undefined;
      return r ? rowToUpload(r) : null;
    },
    async complete(slot, at, expiresAt) {
      return s.complete.run(at, expiresAt, slot, at).changes > 0;
    },
    async usage(owner, now) {
      return usage(owner, now);
    },
    async remove(slot) {
      return s.remove.run(slot).changes > 0;
    },
    async expired(now, limit) {
      return (s.expired.all(now, limit) as UploadRow[]).map(rowToUpload);
    },
  };
}
