// PollStore on SQLite (issue 7 polls; see src/storage/types.ts, migration 7). A poll is a row in
// `polls`; each recipient is a row in `poll_recipients` holding its current answer as
// comma-separated choice numbers. Answers and closing are conditional updates, so an answer that
// races a close is either counted before the close or refused as late, never half-recorded.
import type Database from 'better-sqlite3';
import type { PollAnswerOutcome, PollRecord, PollResults, PollStore, PollTally } from './types.js';

/** accounts.remove(): the account's recipient rows go with it (its answers leave the tallies). */
export const POLL_USER_DELETES = ['DELETE FROM poll_recipients WHERE user_jid = ?'];

export interface PollRow {
  id: string;
  host: string;
  creator: string;
  question: string;
  choices: string;
  multiple: number | boolean;
  results: string;
  audience: string;
  created_at: number | string;
  closes_at: number | string | null;
  closed_at: number | string | null;
}

export const POLL_COLUMNS = 'id, host, creator, question, choices, multiple, results, audience, created_at, closes_at, closed_at';

const num = (v: number | string | null): number | null => (v === null ? null : Number(v));

export const rowToPoll = (r: PollRow): PollRecord => ({
  id: r.id,
  host: r.host,
  creator: r.creator,
  question: r.question,
  choices: JSON.parse(r.choices) as string[],
  multiple: r.multiple === true || r.multiple === 1,
  results: r.results as PollResults,
  audience: JSON.parse(r.audience) as string[],
  createdAt: Number(r.created_at),
  closesAt: num(r.closes_at),
  closedAt: num(r.closed_at),
});

export const pollParams = (p: PollRecord) => [
  p.id,
  p.host,
  p.creator,
  p.question,
  JSON.stringify(p.choices),
  p.multiple,
  p.results,
  JSON.stringify(p.audience),
  p.createdAt,
  p.closesAt,
  p.closedAt,
];

export const encodeAnswer = (choices: number[]): string => [...new Set(choices)].sort((a, b) => a - b).join(',');
export const decodeAnswer = (s: string): number[] => s.split(',').map(Number);

/** Counts the answers of one poll (each a comma-separated list of 1-based choice numbers). */
export function tallyAnswers(choiceCount: number, answers: (string | null)[]): PollTally {
  const counts = new Array<number>(choiceCount).fill(0);
  let answered = 0;
  for (const a of answers) {
    if (a === null) continue;
    answered++;
    for (const n of decodeAnswer(a)) if (n >= 1 && n <= choiceCount) counts[n - 1]!++;
  }
  return { counts, answered, recipients: answers.length };
}

export function sqlitePolls(db: Database.Database): PollStore {
  const s = {
    insert: db.prepare(`INSERT INTO polls (${POLL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    insertRecipient: db.prepare('INSERT INTO poll_recipients (poll_id, user_jid) VALUES (?, ?) ON CONFLICT DO NOTHING'),
    get: db.prepare(`SELECT ${POLL_COLUMNS} FROM polls WHERE id = ?`),
    isRecipient: db.prepare('SELECT 1 FROM poll_recipients WHERE poll_id = ? AND user_jid = ?').pluck(),
    recipients: db.prepare('SELECT user_jid FROM poll_recipients WHERE poll_id = ? ORDER BY user_jid').pluck(),
    answer: db.prepare(
      `UPDATE poll_recipients SET answer = ?, answered_at = ? WHERE poll_id = ? AND user_jid = ?
       AND EXISTS (SELECT 1 FROM polls WHERE id = ? AND closed_at IS NULL)`,
    ),
    answerOf: db.prepare('SELECT answer FROM poll_recipients WHERE poll_id = ? AND user_jid = ?').pluck(),
    answers: db.prepare('SELECT answer FROM poll_recipients WHERE poll_id = ?').pluck(),
    close: db.prepare('UPDATE polls SET closed_at = ? WHERE id = ? AND closed_at IS NULL'),
    due: db.prepare(`SELECT ${POLL_COLUMNS} FROM polls WHERE closed_at IS NULL AND closes_at IS NOT NULL AND closes_at <= ? ORDER BY closes_at, id LIMIT ?`),
    next: db.prepare('SELECT min(closes_at) FROM polls WHERE closed_at IS NULL AND closes_at IS NOT NULL').pluck(),
    byCreator: db.prepare(`SELECT ${POLL_COLUMNS} FROM polls WHERE creator = ? ORDER BY created_at DESC, id LIMIT ?`),
    forRecipient: db.prepare(
      `SELECT ${POLL_COLUMNS.split(', ').map((c) => `p.${c}`).join(', ')} FROM poll_recipients r JOIN polls p ON p.id = r.poll_id
       WHERE r.user_jid = ? ORDER BY p.created_at DESC, p.id LIMIT ?`,
    ),
    purgeRecipients: db.prepare('DELETE FROM poll_recipients WHERE poll_id IN (SELECT id FROM polls WHERE closed_at < ?)'),
    purgePolls: db.prepare('DELETE FROM polls WHERE closed_at < ?'),
  };

  const create = db.transaction((p: PollRecord, recipients: string[]) => {
    s.insert.run(...pollParams(p).map((v) => (typeof v === 'boolean' ? (v ? 1 : 0) : v)));
    for (const u of recipients) s.insertRecipient.run(p.id, u);
  });
  const purge = db.transaction((cutoff: number): number => {
    s.purgeRecipients.run(cutoff);
    return s.purgePolls.run(cutoff).changes;
  });

  return {
    async create(poll, recipients) {
      create.immediate(poll, recipients);
    },
    async get(id) {
      const r = s.get.get(id) as PollRow | undefined;
      return r ? rowToPoll(r) : null;
    },
    async isRecipient(id, user) {
      return s.isRecipient.get(id, user) !== undefined;
    },
    async recipients(id) {
      return s.recipients.all(id) as string[];
    },
    async answer(id, user, choices, at): Promise<PollAnswerOutcome> {
      if (s.answer.run(encodeAnswer(choices), at, id, user, id).changes > 0) return 'ok';
      const p = s.get.get(id) as PollRow | undefined;
      if (!p) return 'no-such-poll';
      if (s.isRecipient.get(id, user) === undefined) return 'not-recipient';
      return 'closed';
    },
    async answerOf(id, user) {
      const a = s.answerOf.get(id, user) as string | null | undefined;
      return a ? decodeAnswer(a) : null;
    },
    async tally(id) {
      const p = s.get.get(id) as PollRow | undefined;
      const n = p ? (JSON.parse(p.choices) as string[]).length : 0;
      return tallyAnswers(n, s.answers.all(id) as (string | null)[]);
    },
    async close(id, at) {
      return s.close.run(at, id).changes > 0;
    },
    async due(now, limit) {
      return (s.due.all(now, limit) as PollRow[]).map(rowToPoll);
    },
    async nextDeadline() {
      return num(s.next.get() as number | null);
    },
    async listByCreator(creator, limit) {
      return (s.byCreator.all(creator, limit) as PollRow[]).map(rowToPoll);
    },
    async listForRecipient(user, limit) {
      return (s.forRecipient.all(user, limit) as PollRow[]).map(rowToPoll);
    },
    async purge(cutoff) {
      return purge.immediate(cutoff);
    },
  };
}
