// XEP-0313 archive store on SQLite (better-sqlite3): entries in `archive`, withtext through the FTS5
// external-content index `archive_fts` (kept by triggers), per-user entry counts in `archive_users`
// so that the cap costs no count(*) per message, preferences in `archive_prefs` (migration 2).
import type Database from 'better-sqlite3';
import { likeEscape, runArchiveQuery, type ArchiveSqlExec } from './archive-sql.js';
import type { ArchiveDefault, ArchivePrefs, ArchiveStore } from './types.js';

interface PrefsRow {
  default_mode: ArchiveDefault;
  always_jids: string;
  never_jids: string;
}

export function sqliteArchive(db: Database.Database): ArchiveStore {
  const s = {
    insert: db.prepare(
      `INSERT INTO archive (user_jid, id, with_bare, with_full, direction, stamp, stanza, body)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    countUp: db
      .prepare(
        `INSERT INTO archive_users (user_jid, n) VALUES (?, 1)
         ON CONFLICT (user_jid) DO UPDATE SET n = n + 1 RETURNING n`,
      )
      .pluck(),
    trimOldest: db.prepare(
      'DELETE FROM archive WHERE seq IN (SELECT seq FROM archive WHERE user_jid = ? ORDER BY seq LIMIT ?)',
    ),
    countDown: db.prepare('UPDATE archive_users SET n = max(0, n - ?) WHERE user_jid = ?'),
    count: db.prepare('SELECT count(*) FROM archive WHERE user_jid = ?').pluck(),
    first: db.prepare('SELECT id, stamp FROM archive WHERE user_jid = ? ORDER BY seq ASC LIMIT 1'),
    last: db.prepare('SELECT id, stamp FROM archive WHERE user_jid = ? ORDER BY seq DESC LIMIT 1'),
    purgeOwner: db.prepare('DELETE FROM archive WHERE user_jid = ? AND stamp < ?'),
    clear: db.prepare('DELETE FROM archive WHERE user_jid = ?'),
    clearCount: db.prepare('DELETE FROM archive_users WHERE user_jid = ?'),
    prefsGet: db.prepare('SELECT default_mode, always_jids, never_jids FROM archive_prefs WHERE user_jid = ?'),
    prefsSet: db.prepare(
      `INSERT INTO archive_prefs (user_jid, default_mode, always_jids, never_jids) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_jid) DO UPDATE SET default_mode = excluded.default_mode,
         always_jids = excluded.always_jids, never_jids = excluded.never_jids`,
    ),
  };

  // Statements built per query shape; the shapes are few (a handful of optional filters).
  const cache = new Map<string, Database.Statement>();
  const prepared = (sql: string): Database.Statement => {
    let st = cache.get(sql);
    if (!st) {
      st = db.prepare(sql);
      if (cache.size > 200) cache.clear();
      cache.set(sql, st);
    }
    return st;
  };
  const exec: ArchiveSqlExec = {
    async all<R>(sql: string, params: unknown[]) {
      return prepared(sql).all(...params) as R[];
    },
    fullText(words) {
      // Each word as an FTS5 string (the words hold only letters, digits and marks): implicit AND.
      return {
        sql: 'seq IN (SELECT rowid FROM archive_fts WHERE archive_fts MATCH ?)',
        params: [words.map((w) => `"${w}"`).join(' ')],
      };
    },
  };

  const append = db.transaction((user: string, e: Parameters<ArchiveStore['append']>[1], cap: number) => {
    s.insert.run(user, e.id, e.withBare, e.withFull, e.direction, e.stamp, e.stanza, e.body);
    const n = s.countUp.get(user) as number;
    if (cap > 0 && n > cap) {
      const gone = s.trimOldest.run(user, n - cap).changes;
      s.countDown.run(gone, user);
    }
  });
  // Built per call (purges are rare): the domain list varies.
  const purge = db.transaction((cutoff: number, domains?: readonly string[]): number => {
    if (domains && domains.length === 0) return 0;
    const scope = domains ? ` AND (${domains.map(() => "user_jid LIKE ? ESCAPE '\\'").join(' OR ')})` : '';
    const params = [cutoff, ...(domains ?? []).map((d) => `%@${likeEscape(d)}`)];
    db.prepare(
      `UPDATE archive_users SET n = max(0, n - d.c)
       FROM (SELECT user_jid, count(*) AS c FROM archive WHERE stamp < ?${scope} GROUP BY user_jid) AS d
       WHERE archive_users.user_jid = d.user_jid`,
    ).run(...params);
    return db.prepare(`DELETE FROM archive WHERE stamp < ?${scope}`).run(...params).changes;
  });
  const purgeOwner = db.transaction((user: string, cutoff: number): number => {
    const gone = s.purgeOwner.run(user, cutoff).changes;
    if (gone > 0) s.countDown.run(gone, user);
    return gone;
  });
  const clear = db.transaction((user: string) => {
    s.clear.run(user);
    s.clearCount.run(user);
  });
  // A consistent snapshot of both ends.
  const bounds = db.transaction((user: string) => {
    const first = s.first.get(user) as { id: string; stamp: number } | undefined;
    const last = s.last.get(user) as { id: string; stamp: number } | undefined;
    return first && last ? { first, last } : null;
  });

  // Group commit: the appends of one event-loop turn (busy rooms, many conversations) share one
  // transaction; each caller still resolves only after its row is committed. If the batch fails,
  // its appends are retried one by one so that only the failing one is rejected.
  type Pending = { user: string; entry: Parameters<ArchiveStore['append']>[1]; cap: number; resolve: () => void; reject: (e: unknown) => void };
  let pending: Pending[] = [];
  const appendBatch = db.transaction((batch: Pending[]) => {
    for (const p of batch) append(p.user, p.entry, p.cap);
  });
  const flush = () => {
    const batch = pending;
    pending = [];
    try {
      appendBatch.immediate(batch);
      for (const p of batch) p.resolve();
    } catch {
      for (const p of batch) {
        try {
          append.immediate(p.user, p.entry, p.cap);
          p.resolve();
        } catch (err) {
          p.reject(err);
        }
      }
    }
  };

  return {
    append(user, entry, cap = 0) {
      return new Promise<void>((resolve, reject) => {
        if (pending.push({ user, entry, cap, resolve, reject }) === 1) setImmediate(flush);
      });
    },
    async query(user, q) {
      // better-sqlite3 runs each statement synchronously, but the query awaits between them: a
      // message archived in between can shift `count` by one, which RSM tolerates.
      return runArchiveQuery(exec, user, q);
    },
    async bounds(user) {
      return bounds(user);
    },
    async count(user) {
      return s.count.get(user) as number;
    },
    async purge(cutoff, domains) {
      return purge.immediate(cutoff, domains);
    },
    async purgeOwner(user, cutoff) {
      return purgeOwner.immediate(user, cutoff);
    },
    async clear(user) {
      clear.immediate(user);
    },
    async getPrefs(user) {
      const r = s.prefsGet.get(user) as PrefsRow | undefined;
      if (!r) return null;
      return { default: r.default_mode, always: JSON.parse(r.always_jids) as string[], never: JSON.parse(r.never_jids) as string[] };
    },
    async setPrefs(user, p: ArchivePrefs) {
      s.prefsSet.run(user, p.default, JSON.stringify(p.always), JSON.stringify(p.never));
    },
  };
}
