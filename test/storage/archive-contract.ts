// The XEP-0313 archive store contract (ArchiveStore), run by sqlite.test.ts and postgres.test.ts
// against every backend: filters, RSM paging both ways over a few thousand entries, unknown UIDs,
// full-text search, the per-user cap, retention purge, prefs and account removal.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ArchiveEntry, ArchiveQuery, Storage } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
const uniq = (local = 'a') => `${local}${++seq}-${run}@example.com`;
let idSeq = 0;

function entry(extra: Partial<ArchiveEntry> = {}): ArchiveEntry {
  const n = ++idSeq;
  return {
    id: `id-${run}-${n}`,
    withBare: 'bob@example.net',
    withFull: 'bob@example.net/phone',
    direction: 'in',
    stamp: 1_700_000_000_000 + n,
    stanza: `<message type="chat"><body>message ${n}</body></message>`,
    body: `message ${n}`,
    ...extra,
  };
}

export function archiveContract(name: string, open: () => Promise<Storage>): void {
  describe(`archive store contract: ${name}`, () => {
    let s: Storage;
    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close();
    });

    const q = (extra: Partial<ArchiveQuery> = {}): ArchiveQuery => ({ max: 100, ...extra });
    const ids = (page: { items: ArchiveEntry[] } | null) => page?.items.map((i) => i.id);

    it('stores entries and returns them oldest first with every field', async () => {
      const user = uniq();
      const a = entry({ direction: 'out', withFull: 'bob@example.net', body: null });
      const b = entry();
      await s.archive.append(user, a);
      await s.archive.append(user, b);
      const page = await s.archive.query(user, q());
      expect(page).toEqual({ items: [a, b], count: 2, index: 0, complete: true });
      expect(await s.archive.count(user)).toBe(2);
      expect(await s.archive.bounds(user)).toEqual({ first: { id: a.id, stamp: a.stamp }, last: { id: b.id, stamp: b.stamp } });
      expect(await s.archive.bounds(uniq())).toBeNull();
      expect(await s.archive.query(uniq(), q())).toEqual({ items: [], count: 0, index: 0, complete: true });
    });

    it('filters by bare or full JID and by inclusive time bounds', async () => {
      const user = uniq();
      const e1 = entry({ withBare: 'c@x.org', withFull: 'c@x.org/one', stamp: 1000 });
      const e2 = entry({ withBare: 'c@x.org', withFull: 'c@x.org/two', stamp: 2000 });
      const e3 = entry({ withBare: 'd@x.org', withFull: 'd@x.org', stamp: 3000 });
      for (const e of [e1, e2, e3]) await s.archive.append(user, e);
      expect(ids(await s.archive.query(user, q({ with: 'c@x.org' })))).toEqual([e1.id, e2.id]);
      expect(ids(await s.archive.query(user, q({ with: 'c@x.org/two' })))).toEqual([e2.id]);
      expect(ids(await s.archive.query(user, q({ with: 'd@x.org' })))).toEqual([e3.id]);
      expect(ids(await s.archive.query(user, q({ with: 'nobody@x.org' })))).toEqual([]);
      expect(ids(await s.archive.query(user, q({ start: 2000 })))).toEqual([e2.id, e3.id]);
      expect(ids(await s.archive.query(user, q({ end: 2000 })))).toEqual([e1.id, e2.id]);
      expect(ids(await s.archive.query(user, q({ start: 1500, end: 2500 })))).toEqual([e2.id]);
      expect(ids(await s.archive.query(user, q({ start: 3000, end: 1000 })))).toEqual([]);
    });

    it('full-text: every word, any case, whole words; punctuation-only text is a substring match', async () => {
      const user = uniq();
      const e1 = entry({ body: 'Hello, big World!' });
      const e2 = entry({ body: 'hello there' });
      const e3 = entry({ body: null });
      const e4 = entry({ body: 'price: 100% off ;-)' });
      for (const e of [e1, e2, e3, e4]) await s.archive.append(user, e);
      expect(ids(await s.archive.query(user, q({ text: 'hello world' })))).toEqual([e1.id]);
      expect(ids(await s.archive.query(user, q({ text: 'HELLO' })))).toEqual([e1.id, e2.id]);
      expect(ids(await s.archive.query(user, q({ text: 'hel' })))).toEqual([]);
      expect(ids(await s.archive.query(user, q({ text: ';-)' })))).toEqual([e4.id]);
      expect(ids(await s.archive.query(user, q({ text: '%' })))).toEqual([e4.id]);
      // Another user's matching text is not found.
      expect(ids(await s.archive.query(uniq(), q({ text: 'hello' })))).toEqual([]);
    });

    it('pages forward with after and backward with before, with index and complete', async () => {
      const user = uniq();
      const all: ArchiveEntry[] = [];
      for (let i = 0; i < 7; i++) {
        const e = entry();
        all.push(e);
        await s.archive.append(user, e);
      }
      const id = (i: number) => all[i]!.id;
      const p1 = await s.archive.query(user, q({ max: 3 }));
      expect(p1).toMatchObject({ count: 7, index: 0, complete: false });
      expect(ids(p1)).toEqual([id(0), id(1), id(2)]);
      const p2 = await s.archive.query(user, q({ max: 3, after: id(2) }));
      expect(p2).toMatchObject({ index: 3, complete: false });
      expect(ids(p2)).toEqual([id(3), id(4), id(5)]);
      const p3 = await s.archive.query(user, q({ max: 3, after: id(5) }));
      expect(p3).toMatchObject({ index: 6, complete: true });
      expect(ids(p3)).toEqual([id(6)]);
      // <before/> empty: the last page, still oldest first.
      const l1 = await s.archive.query(user, q({ max: 3, before: '' }));
      expect(l1).toMatchObject({ count: 7, index: 4, complete: false });
      expect(ids(l1)).toEqual([id(4), id(5), id(6)]);
      const l2 = await s.archive.query(user, q({ max: 3, before: id(4) }));
      expect(l2).toMatchObject({ index: 1, complete: false });
      expect(ids(l2)).toEqual([id(1), id(2), id(3)]);
      const l3 = await s.archive.query(user, q({ max: 3, before: id(1) }));
      expect(l3).toMatchObject({ index: 0, complete: true });
      expect(ids(l3)).toEqual([id(0)]);
      // Exactly a full last page is complete.
      expect(await s.archive.query(user, q({ max: 7, before: '' }))).toMatchObject({ complete: true, index: 0 });
      // max 0: the count only.
      expect(await s.archive.query(user, q({ max: 0 }))).toEqual({ items: [], count: 7, index: 7, complete: false });
      // after and before together: the range between them.
      expect(ids(await s.archive.query(user, q({ after: id(1), before: id(4) })))).toEqual([id(2), id(3)]);
    });

    it('before-id/after-id bound the set, ids selects, and unknown UIDs resolve null', async () => {
      const user = uniq();
      const other = uniq();
      const all: ArchiveEntry[] = [];
      for (let i = 0; i < 5; i++) {
        const e = entry();
        all.push(e);
        await s.archive.append(user, e);
      }
      const foreign = entry();
      await s.archive.append(other, foreign);
      const id = (i: number) => all[i]!.id;
      const r = await s.archive.query(user, q({ afterId: id(0), beforeId: id(4) }));
      expect(r).toMatchObject({ count: 3, index: 0, complete: true });
      expect(ids(r)).toEqual([id(1), id(2), id(3)]);
      expect(ids(await s.archive.query(user, q({ ids: [id(3), id(1)] })))).toEqual([id(1), id(3)]);
      for (const bad of [{ after: 'nope' }, { before: 'nope' }, { afterId: 'nope' }, { beforeId: 'nope' }, { ids: [id(1), 'nope'] }]) {
        expect(await s.archive.query(user, q(bad))).toBeNull();
      }
      // Another user's UID is unknown in this archive.
      expect(await s.archive.query(user, q({ after: foreign.id }))).toBeNull();
    });

    it('the cap deletes the oldest entries beyond it', async () => {
      const user = uniq();
      const all: ArchiveEntry[] = [];
      for (let i = 0; i < 6; i++) {
        const e = entry();
        all.push(e);
        await s.archive.append(user, e, 3);
      }
      expect(await s.archive.count(user)).toBe(3);
      expect(ids(await s.archive.query(user, q()))).toEqual(all.slice(3).map((e) => e.id));
      // A cap of 0 means none.
      const free = uniq();
      for (let i = 0; i < 5; i++) await s.archive.append(free, entry(), 0);
      expect(await s.archive.count(free)).toBe(5);
    });

    it('purge deletes every user’s entries older than the cutoff, and the cap still counts right after it', async () => {
      const u1 = uniq();
      const u2 = uniq();
      const old1 = entry({ stamp: 1000 });
      const new1 = entry({ stamp: 9_000_000_000_000 });
      const old2 = entry({ stamp: 2000 });
      await s.archive.append(u1, old1, 2);
      await s.archive.append(u1, new1, 2);
      await s.archive.append(u2, old2);
      expect(await s.archive.purge(5000)).toBeGreaterThanOrEqual(2);
      expect(ids(await s.archive.query(u1, q()))).toEqual([new1.id]);
      expect(ids(await s.archive.query(u2, q()))).toEqual([]);
      // u1 holds one entry now: one more fits under a cap of 2 without deleting.
      const next = entry({ stamp: 9_000_000_000_001 });
      await s.archive.append(u1, next, 2);
      expect(ids(await s.archive.query(u1, q()))).toEqual([new1.id, next.id]);
    });

    it('purge limited to domains leaves the archives of other domains (conference rooms) alone', async () => {
      const user = `u${++seq}-${run}@users.example`;
      const room = `r${++seq}-${run}@conference.users.example`;
      // A LIKE wildcard in a domain matches only itself.
      const odd = `o${++seq}-${run}@usersXexample`;
      const [u, r, o] = [entry({ stamp: 1000 }), entry({ stamp: 1000 }), entry({ stamp: 1000 })];
      await s.archive.append(user, u, 5);
      await s.archive.append(room, r);
      await s.archive.append(odd, o);
      expect(await s.archive.purge(5000, [])).toBe(0);
      expect(await s.archive.purge(5000, ['users.example'])).toBe(1);
      expect(ids(await s.archive.query(user, q()))).toEqual([]);
      expect(ids(await s.archive.query(room, q()))).toEqual([r.id]);
      expect(ids(await s.archive.query(odd, q()))).toEqual([o.id]);
      expect(await s.archive.purge(5000, ['users_example'])).toBe(0);
      expect(ids(await s.archive.query(odd, q()))).toEqual([o.id]);
      // The user's count followed the purge: five more fit under a cap of 5.
      for (let i = 0; i < 5; i++) await s.archive.append(user, entry({ stamp: 9_000_000_000_000 + i }), 5);
      expect(await s.archive.count(user)).toBe(5);
      expect((await s.archive.query(user, q()))?.items).toHaveLength(5);
    });

    it('purgeOwner deletes one archive’s old entries only, and its cap still counts right after it', async () => {
      const room = uniq('room');
      const other = uniq();
      const old = entry({ stamp: 1000 });
      const keep = entry({ stamp: 9_000_000_000_000 });
      const otherOld = entry({ stamp: 1000 });
      await s.archive.append(room, old, 2);
      await s.archive.append(room, keep, 2);
      await s.archive.append(other, otherOld);
      expect(await s.archive.purgeOwner(room, 5000)).toBe(1);
      expect(ids(await s.archive.query(room, q()))).toEqual([keep.id]);
      // Another owner's entries, older than the cutoff too, stay.
      expect(ids(await s.archive.query(other, q()))).toEqual([otherOld.id]);
      expect(await s.archive.purgeOwner(room, 5000)).toBe(0);
      // One entry left: one more fits under a cap of 2 without deleting.
      const next = entry({ stamp: 9_000_000_000_001 });
      await s.archive.append(room, next, 2);
      expect(ids(await s.archive.query(room, q()))).toEqual([keep.id, next.id]);
    });

    it('clear empties one archive only', async () => {
      const u1 = uniq();
      const u2 = uniq();
      await s.archive.append(u1, entry());
      await s.archive.append(u2, entry());
      await s.archive.clear(u1);
      expect(await s.archive.count(u1)).toBe(0);
      expect(await s.archive.count(u2)).toBe(1);
    });

    it('stores preferences per user', async () => {
      const user = uniq();
      expect(await s.archive.getPrefs(user)).toBeNull();
      await s.archive.setPrefs(user, { default: 'roster', always: ['a@x.org'], never: ['b@x.org', 'c@x.org/r'] });
      expect(await s.archive.getPrefs(user)).toEqual({ default: 'roster', always: ['a@x.org'], never: ['b@x.org', 'c@x.org/r'] });
      await s.archive.setPrefs(user, { default: 'never', always: [], never: [] });
      expect(await s.archive.getPrefs(user)).toEqual({ default: 'never', always: [], never: [] });
      expect(await s.archive.getPrefs(uniq())).toBeNull();
    });

    it('removing the account deletes its archive and prefs', async () => {
      const user = uniq();
      const [username, host] = user.split('@') as [string, string];
      await s.accounts.create({ jid: user, username, host, scram: {}, createdAt: 1 });
      await s.archive.append(user, entry());
      await s.archive.setPrefs(user, { default: 'never', always: [], never: [] });
      expect(await s.accounts.remove(user)).toBe(true);
      expect(await s.archive.count(user)).toBe(0);
      expect(await s.archive.getPrefs(user)).toBeNull();
      // A new account with the same JID starts with an empty archive and a working cap count.
      await s.archive.append(user, entry(), 1);
      expect(await s.archive.count(user)).toBe(1);
    });

    it('walks 3,000 entries page by page in both directions with nothing missing or duplicated', async () => {
      const user = uniq();
      const N = 3000;
      const expected: string[] = [];
      for (let i = 0; i < N; i++) {
        const e = entry({ withBare: i % 3 ? 'bob@example.net' : 'carol@example.net' });
        expected.push(e.id);
        // One after the other: append order is the archive order.
        await s.archive.append(user, e);
      }
      const forward: string[] = [];
      let after: string | undefined;
      for (let pages = 0; ; pages++) {
        expect(pages).toBeLessThan(100);
        const p = await s.archive.query(user, q({ max: 97, ...(after ? { after } : {}) }));
        expect(p).not.toBeNull();
        expect(p!.count).toBe(N);
        expect(p!.index).toBe(forward.length);
        forward.push(...ids(p)!);
        if (p!.complete) break;
        after = p!.items[p!.items.length - 1]!.id;
      }
      expect(forward).toEqual(expected);

      const backward: string[] = [];
      let before = '';
      for (let pages = 0; ; pages++) {
        expect(pages).toBeLessThan(100);
        const p = await s.archive.query(user, q({ max: 250, before }));
        expect(p!.index).toBe(N - backward.length - p!.items.length);
        backward.unshift(...ids(p)!);
        if (p!.complete) break;
        before = p!.items[0]!.id;
      }
      expect(backward).toEqual(expected);
      expect(new Set(backward).size).toBe(N);

      // Filtered paging (with) visits exactly the matching third.
      const carol = expected.filter((_, i) => i % 3 === 0);
      const got: string[] = [];
      let a: string | undefined;
      for (;;) {
        const p = await s.archive.query(user, q({ max: 250, with: 'carol@example.net', ...(a ? { after: a } : {}) }));
        expect(p!.count).toBe(carol.length);
        got.push(...ids(p)!);
        if (p!.complete) break;
        a = p!.items[p!.items.length - 1]!.id;
      }
      expect(got).toEqual(carol);
    }, 60_000);
  });
}
