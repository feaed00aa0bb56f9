// PollStore contract (issue 7 polls), run against every backend from sqlite.test.ts and
// postgres.test.ts: creation with recipients, answers (replaced, refused when closed or not asked),
// tallies, closing once, deadlines, listings, purge, and account removal taking the answers along.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PollRecord, Storage } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
const user = () => `pl${++seq}-${run}@example.com`;

function poll(creator: string, createdAt: number, extra: Partial<PollRecord> = {}): PollRecord {
  return {
    id: `poll-${run}-${++seq}`,
    host: 'example.com',
    creator,
    question: 'Where shall we hold the offsite?',
    choices: ['Lisbon', 'Oslo', 'Zürich — “in winter”'],
    multiple: false,
    results: 'participants',
    audience: ['group:staff', 'room:lounge@conference.example.com'],
    createdAt,
    closesAt: null,
    closedAt: null,
    ...extra,
  };
}

export function pollsContract(name: string, open: () => Promise<Storage>): void {
  describe(`poll store contract: ${name}`, () => {
    let s: Storage;
    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close();
    });

    it('creates a poll with its recipients and reads it back', async () => {
      const [a, b] = [user(), user()];
      const p = poll(user(), 1_000, { multiple: true, results: 'closed', closesAt: 9_000 });
      await s.polls.create(p, [a, b, a]);
      expect(await s.polls.get(p.id)).toEqual(p);
      expect(await s.polls.get('no-such-poll')).toBeNull();
      expect(await s.polls.recipients(p.id)).toEqual([a, b].sort());
      expect(await s.polls.isRecipient(p.id, a)).toBe(true);
      expect(await s.polls.isRecipient(p.id, user())).toBe(false);
      expect(await s.polls.tally(p.id)).toEqual({ counts: [0, 0, 0], answered: 0, recipients: 2 });
    });

    it('records, replaces and tallies answers; refuses strangers, unknown polls and late answers', async () => {
      const [a, b, c] = [user(), user(), user()];
      const p = poll(user(), 2_000, { multiple: true });
      await s.polls.create(p, [a, b, c]);
      expect(await s.polls.answer(p.id, a, [1], 2_100)).toBe('ok');
      expect(await s.polls.answer(p.id, b, [3, 1, 3], 2_200)).toBe('ok');
      expect(await s.polls.answerOf(p.id, b)).toEqual([1, 3]);
      expect(await s.polls.answerOf(p.id, c)).toBeNull();
      expect(await s.polls.tally(p.id)).toEqual({ counts: [2, 0, 1], answered: 2, recipients: 3 });
      expect(await s.polls.answer(p.id, a, [2], 2_300)).toBe('ok'); // changed mind
      expect(await s.polls.tally(p.id)).toEqual({ counts: [1, 1, 1], answered: 2, recipients: 3 });
      expect(await s.polls.answer(p.id, user(), [1], 2_400)).toBe('not-recipient');
      expect(await s.polls.answer('no-such-poll', a, [1], 2_400)).toBe('no-such-poll');
      expect(await s.polls.close(p.id, 3_000)).toBe(true);
      expect(await s.polls.close(p.id, 3_001)).toBe(false); // only once
      expect((await s.polls.get(p.id))?.closedAt).toBe(3_000);
      expect(await s.polls.answer(p.id, c, [2], 3_100)).toBe('closed');
      expect(await s.polls.tally(p.id)).toEqual({ counts: [1, 1, 1], answered: 2, recipients: 3 });
    });

    it('finds open polls past their deadline, earliest first, and the next deadline', async () => {
      const base = 10_000_000_000 + seq * 1_000; // apart from other tests' deadlines
      const late = poll(user(), 1, { closesAt: base + 500 });
      const early = poll(user(), 1, { closesAt: base + 100 });
      const closed = poll(user(), 1, { closesAt: base + 50 });
      for (const p of [late, early, closed]) await s.polls.create(p, [user()]);
      await s.polls.close(closed.id, base);
      const due = (await s.polls.due(base + 1_000, 100)).map((p) => p.id);
      expect(due.filter((id) => [late.id, early.id, closed.id].includes(id))).toEqual([early.id, late.id]);
      expect((await s.polls.due(base + 200, 100)).map((p) => p.id)).toContain(early.id);
      expect((await s.polls.due(base + 200, 100)).map((p) => p.id)).not.toContain(late.id);
      const next = await s.polls.nextDeadline();
      expect(next).not.toBeNull();
      expect(next!).toBeLessThanOrEqual(base + 100);
      await s.polls.close(early.id, base + 100);
      await s.polls.close(late.id, base + 500);
      expect((await s.polls.due(base + 1_000, 100)).map((p) => p.id)).not.toContain(late.id);
    });

    it('lists by creator and by recipient, newest first', async () => {
      const [creator, r] = [user(), user()];
      const p1 = poll(creator, 5_000);
      const p2 = poll(creator, 6_000);
      await s.polls.create(p1, [r]);
      await s.polls.create(p2, [r, user()]);
      expect((await s.polls.listByCreator(creator, 10)).map((p) => p.id)).toEqual([p2.id, p1.id]);
      expect(await s.polls.listByCreator(creator, 1)).toHaveLength(1);
      expect((await s.polls.listForRecipient(r, 10)).map((p) => p.id)).toEqual([p2.id, p1.id]);
      expect(await s.polls.listForRecipient(user(), 10)).toEqual([]);
    });

    it('purges polls closed before the cutoff with their recipients, keeping open ones', async () => {
      const r = user();
      const old = poll(user(), 1_000);
      const open = poll(user(), 1_000);
      await s.polls.create(old, [r]);
      await s.polls.create(open, [r]);
      await s.polls.close(old.id, 1_500);
      expect(await s.polls.purge(2_000)).toBeGreaterThanOrEqual(1);
      expect(await s.polls.get(old.id)).toBeNull();
      expect(await s.polls.recipients(old.id)).toEqual([]);
      expect(await s.polls.get(open.id)).not.toBeNull();
    });

    it('drops a removed account from the polls it was asked, answers included', async () => {
      const gone = `polluser-${run}@example.com`;
      const stays = user();
      const secret = { salt: 'c2FsdA==', iterations: 4096, storedKey: 'c3RvcmVk', serverKey: 'c2VydmVy' };
      await s.accounts.create({ jid: gone, username: gone.split('@')[0]!, host: 'example.com', scram: { 'SHA-256': secret }, createdAt: 1 });
      const p = poll(user(), 7_000);
      await s.polls.create(p, [gone, stays]);
      await s.polls.answer(p.id, gone, [2], 7_100);
      await s.polls.answer(p.id, stays, [1], 7_100);
      expect(await s.accounts.remove(gone)).toBe(true);
      expect(await s.polls.recipients(p.id)).toEqual([stays]);
      expect(await s.polls.tally(p.id)).toEqual({ counts: [1, 0, 0], answered: 1, recipients: 1 });
    });
  });
}
