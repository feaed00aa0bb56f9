// XEP-0313 archive queries shared by the SQLite and PostgreSQL archive stores: filters (with, start,
// end, withtext, before-id/after-id/ids) and XEP-0059 RSM paging in both directions over the
// monotonic `seq` key. SQL is written with `?` placeholders; the PostgreSQL executor numbers them.
import type { ArchiveEntry, ArchivePage, ArchiveQuery } from './types.js';

export interface ArchiveRow {
  seq: number | string;
  id: string;
  with_bare: string;
  with_full: string;
  direction: 'in' | 'out';
  stamp: number | string;
  stanza: string;
  body: string | null;
}

export interface ArchiveSqlExec {
  all<R>(sql: string, params: unknown[]): Promise<R[]>;
  /** Condition matching rows whose body contains every word of `words` (full-text index). */
  fullText(words: string[], text: string): { sql: string; params: unknown[] };
}

export const ROW_COLUMNS = 'seq, id, with_bare, with_full, direction, stamp, stanza, body';

export function rowToEntry(r: ArchiveRow): ArchiveEntry {
  return {
    id: r.id,
    withBare: r.with_bare,
    withFull: r.with_full,
    direction: r.direction,
    stamp: Number(r.stamp),
    stanza: r.stanza,
    body: r.body,
  };
}

/** The words a full-text index would see; empty when the text has none (then a substring match). */
export function searchWords(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}\p{M}]+/gu) ?? [];
}

/** Escapes a LIKE pattern's wildcards (used with ESCAPE '\'). */
export function likeEscape(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

export async function runArchiveQuery(exec: ArchiveSqlExec, user: string, q: ArchiveQuery): Promise<ArchivePage | null> {
  // 1. Every UID the query names must exist in this user's archive (XEP-0313 §4.1.3, §4.3).
  const named = new Set<string>();
  for (const id of [q.afterId, q.beforeId, q.after, q.before, ...(q.ids ?? [])]) if (id) named.add(id);
  const seqOf = new Map<string, number>();
  if (named.size) {
    const list = [...named];
    const rows = await exec.all<{ id: string; seq: number | string }>(
      `SELECT id, seq FROM archive WHERE user_jid = ? AND id IN (${list.map(() => '?').join(', ')})`,
      [user, ...list],
    );
    for (const r of rows) seqOf.set(r.id, Number(r.seq));
    if (seqOf.size !== named.size) return null;
  }
  const seq = (id: string) => seqOf.get(id) as number;

  // 2. The filters that define the result set (RSM after/before only page through it).
  const where: string[] = ['user_jid = ?'];
  const params: unknown[] = [user];
  if (q.with !== undefined) {
    where.push(q.with.includes('/') ? 'with_full = ?' : 'with_bare = ?');
    params.push(q.with);
  }
  if (q.start !== undefined) {
    where.push('stamp >= ?');
    params.push(q.start);
  }
  if (q.end !== undefined) {
    where.push('stamp <= ?');
    params.push(q.end);
  }
  if (q.text !== undefined && q.text.trim() !== '') {
    const words = searchWords(q.text);
    if (words.length) {
      const ft = exec.fullText(words, q.text);
      where.push(ft.sql);
      params.push(...ft.params);
    } else {
      where.push("lower(body) LIKE ? ESCAPE '\\'");
      params.push(`%${likeEscape(q.text.toLowerCase())}%`);
    }
  }
  if (q.afterId) {
    where.push('seq > ?');
    params.push(seq(q.afterId));
  }
  if (q.beforeId) {
    where.push('seq < ?');
    params.push(seq(q.beforeId));
  }
  if (q.ids) {
    if (q.ids.length === 0) where.push('1 = 0');
    else {
      where.push(`seq IN (${q.ids.map(() => '?').join(', ')})`);
      params.push(...q.ids.map(seq));
    }
  }
  const base = where.join(' AND ');

  const [countRow] = await exec.all<{ n: number | string }>(`SELECT count(*) AS n FROM archive WHERE ${base}`, params);
  const count = Number(countRow?.n ?? 0);

  // 3. The page. Backward when only <before/> is given (empty = the last page); forward otherwise.
  const backward = q.before !== undefined && q.after === undefined;
  const pageWhere = [base];
  const pageParams = [...params];
  if (q.after) {
    pageWhere.push('seq > ?');
    pageParams.push(seq(q.after));
  }
  if (q.before) {
    pageWhere.push('seq < ?');
    pageParams.push(seq(q.before));
  }
  const max = Math.max(0, Math.floor(q.max));
  // One row more than asked tells whether the page is the last one in this direction.
  const rows = await exec.all<ArchiveRow>(
    `SELECT ${ROW_COLUMNS} FROM archive WHERE ${pageWhere.join(' AND ')} ORDER BY seq ${backward ? 'DESC' : 'ASC'} LIMIT ?`,
    [...pageParams, max + 1],
  );
  const complete = rows.length <= max;
  const page = rows.slice(0, max);
  if (backward) page.reverse();

  // 4. RSM first@index: how many matching entries come before the page.
  let index = backward ? 0 : count;
  const first = page[0];
  if (first) {
    if (!backward && !q.after) index = 0;
    else if (backward && !q.before) index = count - page.length;
    else {
      const [r] = await exec.all<{ n: number | string }>(`SELECT count(*) AS n FROM archive WHERE ${base} AND seq < ?`, [
        ...params,
        Number(first.seq),
      ]);
      index = Number(r?.n ?? 0);
    }
  }
  return { items: page.map(rowToEntry), count, index, complete };
}
