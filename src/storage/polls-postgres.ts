// PollStore on PostgreSQL (issue 7 polls; see src/storage/types.ts, migration 7). Same shape as
// polls-sqlite.ts; bigint columns arrive as strings and are converted by the row mapper.
import type pg from 'pg';
import { decodeAnswer, encodeAnswer, POLL_COLUMNS, pollParams, rowToPoll, tallyAnswers, type PollRow } from './polls-sqlite.js';
import type { PollStore } from './types.js';

export const POLL_USER_DELETE_CTES = `pl AS (DELETE FROM poll_recipients WHERE user_jid = $1),`;

export function postgresPolls(pool: pg.Pool, tx: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>): PollStore {
  const one = async (id: string) => {
    const { rows } = await pool.query<PollRow>(`SELECT ${POLL_COLUMNS} FROM polls WHERE id = $1`, [id]);
    return rows[0] ? rowToPoll(rows[0]) : null;
  };
  const isRecipient = async (id: string, user: string) =>
    ((await pool.query('SELECT 1 FROM poll_recipients WHERE poll_id = $1 AND user_jid = $2', [id, user])).rowCount ?? 0) > 0;
  return {
    create(p, recipients) {
      return tx(async (c) => {
        await c.query(`INSERT INTO polls (${POLL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, pollParams(p));
        await c.query('INSERT INTO poll_recipients (poll_id, user_jid) SELECT $1, u FROM unnest($2::text[]) AS t(u) ON CONFLICT DO NOTHING', [p.id, recipients]);
      });
    },
    get: one,
    isRecipient,
    async recipients(id) {
      const { rows } = await pool.query<{ user_jid: string }>('SELECT user_jid FROM poll_recipients WHERE poll_id = $1 ORDER BY user_jid COLLATE "C"', [id]);
      return rows.map((r) => r.user_jid);
    },
    async answer(id, user, choices, at) {
      const res = await pool.query(
        `UPDATE poll_recipients SET answer = $1, answered_at = $2 WHERE poll_id = $3 AND user_jid = $4
         AND EXISTS (SELECT 1 FROM polls WHERE id = $3 AND closed_at IS NULL)`,
        [encodeAnswer(choices), at, id, user],
      );
      if ((res.rowCount ?? 0) > 0) return 'ok';
      if (!(await one(id))) return 'no-such-poll';
      if (!(await isRecipient(id, user))) return 'not-recipient';
      return 'closed';
    },
    async answerOf(id, user) {
      const { rows } = await pool.query<{ answer: string | null }>('SELECT answer FROM poll_recipients WHERE poll_id = $1 AND user_jid = $2', [id, user]);
      const a = rows[0]?.answer;
      return a ? decodeAnswer(a) : null;
    },
    async tally(id) {
      const p = await one(id);
      const { rows } = await pool.query<{ answer: string | null }>('SELECT answer FROM poll_recipients WHERE poll_id = $1', [id]);
      return tallyAnswers(p?.choices.length ?? 0, rows.map((r) => r.answer));
    },
    async close(id, at) {
      const res = await pool.query('UPDATE polls SET closed_at = $1 WHERE id = $2 AND closed_at IS NULL', [at, id]);
      return (res.rowCount ?? 0) > 0;
    },
    async due(now, limit) {
      const { rows } = await pool.query<PollRow>(
        `SELECT ${POLL_COLUMNS} FROM polls WHERE closed_at IS NULL AND closes_at IS NOT NULL AND closes_at <= $1 ORDER BY closes_at, id LIMIT $2`,
        [now, limit],
      );
      return rows.map(rowToPoll);
    },
    async nextDeadline() {
      const { rows } = await pool.query<{ n: string | null }>('SELECT min(closes_at) AS n FROM polls WHERE closed_at IS NULL AND closes_at IS NOT NULL');
      const n = rows[0]?.n;
      return n === null || n === undefined ? null : Number(n);
    },
    async listByCreator(creator, limit) {
      const { rows } = await pool.query<PollRow>(`SELECT ${POLL_COLUMNS} FROM polls WHERE creator = $1 ORDER BY created_at DESC, id LIMIT $2`, [creator, limit]);
      return rows.map(rowToPoll);
    },
    async listForRecipient(user, limit) {
      const cols = POLL_COLUMNS.split(', ').map((c) => `p.${c}`).join(', ');
      const { rows } = await pool.query<PollRow>(
        `SELECT ${cols} FROM poll_recipients r JOIN polls p ON p.id = r.poll_id WHERE r.user_jid = $1 ORDER BY p.created_at DESC, p.id LIMIT $2`,
        [user, limit],
      );
      return rows.map(rowToPoll);
    },
    purge(cutoff) {
      return tx(async (c) => {
        await c.query('DELETE FROM poll_recipients WHERE poll_id IN (SELECT id FROM polls WHERE closed_at < $1)', [cutoff]);
        const res = await c.query('DELETE FROM polls WHERE closed_at < $1', [cutoff]);
        return res.rowCount ?? 0;
      });
    },
  };
}
