// The storage contract suite: one set of behavioural tests that every backend must pass. Each test
// makes its own users (and hosts) with a unique suffix, so runs can share one database and need no
// cleanup between tests.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccountRecord, RosterItem, Storage } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
/** A fresh, never-used-before bare JID. */
const uniq = (local = 'u', host = 'example.com') => `${local}${++seq}-${run}@${host}`;
const uniqHost = () => `h${++seq}-${run}.example`;

function account(jid: string, extra: Partial<AccountRecord> = {}): AccountRecord {
  const [username, host] = jid.split('@') as [string, string];
  return {
    jid,
    username,
    host,
    scram: {
      'SHA-256': { salt: 'c2FsdA==', iterations: 4096, storedKey: 'c3RvcmVk', serverKey: 'c2VydmVy' },
    },
    createdAt: 1_700_000_000_123,
    ...extra,
  };
}

function item(jid: string, extra: Partial<RosterItem> = {}): RosterItem {
  return { jid, subscription: 'none', ask: false, approved: false, groups: [], ...extra };
}

export function storageContract(name: string, open: () => Promise<Storage>, cleanup?: () => Promise<void>): void {
  describe(`storage contract: ${name}`, () => {
    let s: Storage;

    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close();
      await cleanup?.();
    });

    it('ping resolves', async () => {
      await expect(s.ping()).resolves.toBeUndefined();
    });

    describe('accounts', () => {
      it('creates, refuses duplicates, and reads back every field', async () => {
        const jid = uniq('alice');
        const rec = account(jid, {
          scram: {
            'SHA-1': { salt: 'YQ==', iterations: 10000, storedKey: 'Yg==', serverKey: 'Yw==' },
            'SHA-256': { salt: 'ZA==', iterations: 4096, storedKey: 'ZQ==', serverKey: 'Zg==' },
          },
        });
        expect(await s.accounts.create(rec)).toBe(true);
        expect(await s.accounts.create(account(jid, { createdAt: 1 }))).toBe(false);
        expect(await s.accounts.get(jid)).toEqual(rec); // the duplicate changed nothing
      });

      it('get resolves null for an unknown account', async () => {
        expect(await s.accounts.get(uniq('nobody'))).toBeNull();
      });

      it('keeps a millisecond timestamp beyond 32 bits exactly', async () => {
        const jid = uniq();
        await s.accounts.create(account(jid, { createdAt: 4_102_444_800_999 }));
        expect((await s.accounts.get(jid))?.createdAt).toBe(4_102_444_800_999);
      });

      it('setScram replaces the secrets, and is false for an unknown account', async () => {
        const jid = uniq();
        await s.accounts.create(account(jid));
        const scram = { 'SHA-1': { salt: 'bmV3', iterations: 5000, storedKey: 'QQ==', serverKey: 'Qg==' } };
        expect(await s.accounts.setScram(jid, scram)).toBe(true);
        expect((await s.accounts.get(jid))?.scram).toEqual(scram);
        expect(await s.accounts.setScram(uniq('ghost'), scram)).toBe(false);
      });

      it('list is sorted and per host; count is per host', async () => {
        const host = uniqHost();
        const other = uniqHost();
        const jids = ['carol', 'alice', 'bob', 'dave'].map((l) => `${l}@${host}`);
        for (const j of jids) expect(await s.accounts.create(account(j))).toBe(true);
        await s.accounts.create(account(`erin@${other}`));
        expect(await s.accounts.list(host)).toEqual([...jids].sort());
        expect(await s.accounts.count(host)).toBe(4);
        expect(await s.accounts.list(other)).toEqual([`erin@${other}`]);
        expect(await s.accounts.count(other)).toBe(1);
        expect(await s.accounts.list(uniqHost())).toEqual([]);
        expect(await s.accounts.count(uniqHost())).toBe(0);
      });

      it('missingAmong names the JIDs without an account, in the order given, for any number of them', async () => {
        const [a, b] = [uniq('ma'), uniq('mb')];
        await s.accounts.create(account(a));
        await s.accounts.create(account(b));
        const ghosts = Array.from({ length: 1100 }, (_, i) => `ghost${i}-${run}@example.com`);
        expect(await s.accounts.missingAmong([a, ghosts[0] as string, b])).toEqual([ghosts[0]]);
        expect(await s.accounts.missingAmong([...ghosts, a, b])).toEqual(ghosts);
        expect(await s.accounts.missingAmong([])).toEqual([]);
        await s.accounts.remove(a);
        expect(await s.accounts.missingAmong([a, b])).toEqual([a]);
      });

      it('remove deletes the account and cascades to all of its data, nobody else’s', async () => {
        const jid = uniq('victim');
        const bystander = uniq('bystander');
        for (const u of [jid, bystander]) {
          await s.accounts.create(account(u));
          await s.roster.setItem(u, item(uniq('friend'), { subscription: 'both' }));
          await s.roster.addPendingIn(u, uniq('asker'), '<presence type="subscribe"/>');
          await s.offline.push(u, '<message/>', 1, 100);
          await s.keyval.set(u, 'vcard', '', '<vCard/>');
          await s.blocks.add(u, [uniq('spammer')]);
        }
        const versionBefore = (await s.roster.get(bystander)).version;

        expect(await s.accounts.remove(jid)).toBe(true);
        expect(await s.accounts.get(jid)).toBeNull();
        expect(await s.roster.get(jid)).toEqual({ version: '0', items: [] });
        expect(await s.roster.listPendingIn(jid)).toEqual([]);
        expect(await s.offline.count(jid)).toBe(0);
        expect(await s.keyval.get(jid, 'vcard', '')).toBeNull();
        expect(await s.blocks.list(jid)).toEqual([]);

        expect(await s.accounts.get(bystander)).not.toBeNull();
        expect((await s.roster.get(bystander)).version).toBe(versionBefore);
        expect(await s.roster.count(bystander)).toBe(1);
        expect(await s.roster.listPendingIn(bystander)).toHaveLength(1);
        expect(await s.offline.count(bystander)).toBe(1);
        expect(await s.keyval.get(bystander, 'vcard', '')).toBe('<vCard/>');
        expect(await s.blocks.list(bystander)).toHaveLength(1);

        expect(await s.accounts.remove(jid)).toBe(false);
        // The same JID can register again, from scratch.
        expect(await s.accounts.create(account(jid))).toBe(true);
      });

      it('remove of an unknown account resolves false', async () => {
        expect(await s.accounts.remove(uniq('ghost'))).toBe(false);
      });
    });

    describe('roster', () => {
      it('an empty roster has version "0" and no items', async () => {
        const u = uniq();
        expect(await s.roster.get(u)).toEqual({ version: '0', items: [] });
        expect(await s.roster.getItem(u, uniq())).toBeNull();
        expect(await s.roster.count(u)).toBe(0);
      });

      it('setItem inserts and replaces; getItem and get read it back', async () => {
        const u = uniq();
        const c = uniq('contact');
        const v1 = await s.roster.setItem(u, item(c, { name: 'Bob', groups: ['Friends'] }));
        expect(await s.roster.getItem(u, c)).toEqual(item(c, { name: 'Bob', groups: ['Friends'] }));

        const replaced = item(c, { subscription: 'to', ask: true, approved: true, groups: ['Work', 'Friends'] });
        const v2 = await s.roster.setItem(u, replaced);
        expect(await s.roster.getItem(u, c)).toEqual(replaced); // name gone: replaced, not merged
        expect(await s.roster.get(u)).toEqual({ version: v2, items: [replaced] });
        expect(Number(v2)).toBeGreaterThan(Number(v1));
      });

      it('round-trips every subscription state and the flags', async () => {
        const u = uniq();
        const subs = ['none', 'to', 'from', 'both'] as const;
        const items = subs.map((sub, i) =>
          item(`${sub}-${run}@example.org`, { subscription: sub, ask: i % 2 === 0, approved: i >= 2 }),
        );
        for (const x of items) await s.roster.setItem(u, x);
        const got = await s.roster.get(u);
        expect(got.items).toEqual([...items].sort((a, b) => (a.jid < b.jid ? -1 : 1)));
        expect(await s.roster.count(u)).toBe(4);
      });

      it('round-trips unicode names and groups, empty names and no groups', async () => {
        const u = uniq();
        const a = item(uniq('a'), { name: 'Zoë 🦊 Ünïcødé 名前', groups: ['Família', '友達', 'emoji 🎉', ''] });
        const b = item(uniq('b'), { name: '', groups: [] });
        const c = item(uniq('c')); // no name at all
        await s.roster.setItem(u, a);
        await s.roster.setItem(u, b);
        await s.roster.setItem(u, c);
        expect(await s.roster.getItem(u, a.jid)).toEqual(a);
        expect(await s.roster.getItem(u, b.jid)).toEqual(b);
        const gotC = await s.roster.getItem(u, c.jid);
        expect(gotC).toEqual(c);
        expect(gotC).not.toHaveProperty('name');
      });

      it('items come back sorted by contact JID', async () => {
        const u = uniq();
        const contacts = ['zed', 'amy', 'mia', 'bob'].map((l) => `${l}-${run}@example.net`);
        for (const c of contacts) await s.roster.setItem(u, item(c));
        expect((await s.roster.get(u)).items.map((i) => i.jid)).toEqual([...contacts].sort());
      });

      it('the version strictly increases with every change and is stable otherwise', async () => {
        const u = uniq();
        const c1 = uniq('c');
        const c2 = uniq('c');
        const versions: number[] = [];
        const change = async (p: Promise<string | null>) => {
          const v = await p;
          expect(v).not.toBeNull();
          expect((await s.roster.get(u)).version).toBe(v); // get reports what the change returned
          versions.push(Number(v));
        };
        await change(s.roster.setItem(u, item(c1)));
        await change(s.roster.setItem(u, item(c2)));
        await change(s.roster.setItem(u, item(c1, { subscription: 'both' })));
        await change(s.roster.removeItem(u, c2));
        await change(s.roster.setItem(u, item(c2, { name: 'back' })));
        await change(s.roster.removeItem(u, c1));
        await change(s.roster.removeItem(u, c2));
        for (let i = 1; i < versions.length; i++) expect(versions[i]).toBeGreaterThan(versions[i - 1]!);

        // Emptying the roster does not reset the counter: a client holding an old version must not
        // be told it is current.
        const last = String(versions.at(-1));
        expect(await s.roster.get(u)).toEqual({ version: last, items: [] });

        // No change, no bump: reads, pending-in traffic, removing a missing item, identical re-sets.
        expect((await s.roster.get(u)).version).toBe(last);
        await s.roster.addPendingIn(u, c1, '<presence/>');
        await s.roster.removePendingIn(u, c1);
        expect(await s.roster.removeItem(u, c1)).toBeNull();
        expect((await s.roster.get(u)).version).toBe(last);

        const v = await s.roster.setItem(u, item(c1, { name: 'Same', groups: ['G'] }));
        expect(Number(v)).toBeGreaterThan(Number(last));
        expect(await s.roster.setItem(u, item(c1, { name: 'Same', groups: ['G'] }))).toBe(v);
        expect((await s.roster.get(u)).version).toBe(v);
        // …but a change in group order is a change.
        expect(Number(await s.roster.setItem(u, item(c1, { name: 'Same', groups: ['G', 'H'] })))).toBeGreaterThan(
          Number(v),
        );
      });

      it('concurrent changes each get a distinct version', async () => {
        const u = uniq();
        const versions = await Promise.all(
          Array.from({ length: 10 }, (_, i) => s.roster.setItem(u, item(`c${i}-${run}@example.com`))),
        );
        expect(new Set(versions).size).toBe(10);
        expect((await s.roster.get(u)).version).toBe(String(Math.max(...versions.map(Number))));
        expect(await s.roster.count(u)).toBe(10);
      });

      it('removeItem removes only that item, and resolves null when there was none', async () => {
        const u = uniq();
        const [a, b] = [uniq('a'), uniq('b')];
        await s.roster.setItem(u, item(a));
        await s.roster.setItem(u, item(b));
        expect(await s.roster.removeItem(u, a)).not.toBeNull();
        expect(await s.roster.getItem(u, a)).toBeNull();
        expect(await s.roster.getItem(u, b)).not.toBeNull();
        expect(await s.roster.count(u)).toBe(1);
        expect(await s.roster.removeItem(u, a)).toBeNull();
        expect(await s.roster.removeItem(uniq(), a)).toBeNull();
      });

      it('pending-in requests: add, replace, list sorted, remove', async () => {
        const u = uniq();
        const [x, y] = [`y-${run}@example.com`, `x-${run}@example.com`];
        expect(await s.roster.listPendingIn(u)).toEqual([]);
        await s.roster.addPendingIn(u, x, '<presence from="x" type="subscribe"/>');
        await s.roster.addPendingIn(u, y, '<presence from="y" type="subscribe"><status>hi ✓</status></presence>');
        await s.roster.addPendingIn(u, x, '<presence from="x" type="subscribe"><status>again</status></presence>');
        expect(await s.roster.listPendingIn(u)).toEqual([
          { contact: y, stanza: '<presence from="y" type="subscribe"><status>hi ✓</status></presence>' },
          { contact: x, stanza: '<presence from="x" type="subscribe"><status>again</status></presence>' },
        ]);
        await s.roster.removePendingIn(u, y);
        await s.roster.removePendingIn(u, uniq()); // unknown: no-op
        expect(await s.roster.listPendingIn(u)).toEqual([
          { contact: x, stanza: '<presence from="x" type="subscribe"><status>again</status></presence>' },
        ]);
        // Pending requests are not roster items.
        expect(await s.roster.count(u)).toBe(0);
      });
    });

    describe('offline', () => {
      it('push returns increasing ids; list returns messages in push order', async () => {
        const u = uniq();
        const ids: number[] = [];
        for (let i = 0; i < 5; i++) {
          const id = await s.offline.push(u, `<message id="m${i}">é ${i}</message>`, 1_700_000_000_000 + i, 100);
          expect(id).toEqual(expect.any(Number));
          ids.push(id!);
        }
        for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeGreaterThan(ids[i - 1]!);
        const msgs = await s.offline.list(u);
        expect(msgs).toEqual(
          ids.map((id, i) => ({ id, stanza: `<message id="m${i}">é ${i}</message>`, stamp: 1_700_000_000_000 + i })),
        );
        expect(await s.offline.count(u)).toBe(5);
      });

      it('list honours the limit, oldest first', async () => {
        const u = uniq();
        const ids = [];
        for (let i = 0; i < 4; i++) ids.push(await s.offline.push(u, `<m${i}/>`, i, 10));
        expect((await s.offline.list(u, 2)).map((m) => m.id)).toEqual(ids.slice(0, 2));
        expect(await s.offline.list(u, 0)).toEqual([]);
        expect(await s.offline.list(u, 100)).toHaveLength(4);
        expect(await s.offline.list(u, Number.POSITIVE_INFINITY)).toHaveLength(4);
        expect(await s.offline.list(uniq())).toEqual([]);
      });

      it('a push beyond the quota resolves null and stores nothing', async () => {
        const u = uniq();
        for (let i = 0; i < 3; i++) expect(await s.offline.push(u, `<m${i}/>`, i, 3)).not.toBeNull();
        expect(await s.offline.push(u, '<over/>', 9, 3)).toBeNull();
        expect(await s.offline.count(u)).toBe(3);
        expect((await s.offline.list(u)).map((m) => m.stanza)).toEqual(['<m0/>', '<m1/>', '<m2/>']);
        expect(await s.offline.push(uniq(), '<m/>', 0, 0)).toBeNull(); // quota 0: nothing, ever
        // Room again after a removal.
        const [first] = await s.offline.list(u, 1);
        await s.offline.remove(u, [first!.id]);
        expect(await s.offline.push(u, '<m3/>', 3, 3)).not.toBeNull();
        expect(await s.offline.count(u)).toBe(3);
      });

      it('the quota holds under concurrent pushes (20 parallel, quota 10 -> exactly 10)', async () => {
        // Several users at once, twice over, to widen the window a check-then-insert race would need.
        for (let round = 0; round < 2; round++) {
          const users = [uniq(), uniq(), uniq()];
          const results = await Promise.all(
            users.map((u) => Promise.all(Array.from({ length: 20 }, (_, i) => s.offline.push(u, `<m${i}/>`, i, 10)))),
          );
          for (const [k, u] of users.entries()) {
            const stored = results[k]!.filter((r): r is number => r !== null);
            expect(stored).toHaveLength(10);
            expect(new Set(stored).size).toBe(10);
            expect(await s.offline.count(u)).toBe(10);
            expect((await s.offline.list(u)).map((m) => m.id)).toEqual([...stored].sort((a, b) => a - b));
          }
        }
      });

      it('the quota is per user', async () => {
        const [a, b] = [uniq(), uniq()];
        for (let i = 0; i < 2; i++) await s.offline.push(a, '<m/>', i, 2);
        expect(await s.offline.push(a, '<m/>', 3, 2)).toBeNull();
        expect(await s.offline.push(b, '<m/>', 3, 2)).not.toBeNull();
      });

      it('remove deletes exactly the given ids of that user', async () => {
        const [u, other] = [uniq(), uniq()];
        const ids: number[] = [];
        for (let i = 0; i < 5; i++) ids.push((await s.offline.push(u, `<m${i}/>`, i, 10))!);
        const otherId = (await s.offline.push(other, '<o/>', 0, 10))!;
        await s.offline.remove(u, [ids[1]!, ids[3]!, otherId, 987_654_321]); // foreign and unknown ids: ignored
        expect((await s.offline.list(u)).map((m) => m.id)).toEqual([ids[0], ids[2], ids[4]]);
        expect(await s.offline.count(u)).toBe(3);
        expect(await s.offline.count(other)).toBe(1);
        await s.offline.remove(u, []);
        expect(await s.offline.count(u)).toBe(3);
        await s.offline.remove(u, [ids[0]!, ids[2]!, ids[4]!]);
        expect(await s.offline.count(u)).toBe(0);
      });

      it('ids are never reused after deletion', async () => {
        const u = uniq();
        const id1 = (await s.offline.push(u, '<a/>', 0, 10))!;
        await s.offline.remove(u, [id1]);
        const id2 = (await s.offline.push(u, '<b/>', 0, 10))!;
        expect(id2).toBeGreaterThan(id1);
      });

      it('total counts every account, and follows pushes, refusals over quota and removals', async () => {
        // Tests in this file run one after another on this storage: the delta is ours alone.
        const before = await s.offline.total();
        expect(Number.isInteger(before)).toBe(true);
        const [a, b] = [uniq(), uniq()];
        const ids: number[] = [];
        for (let i = 0; i < 3; i++) ids.push((await s.offline.push(a, `<a${i}/>`, i, 3))!);
        expect(await s.offline.push(a, '<over/>', 9, 3)).toBeNull(); // refused: not counted
        await s.offline.push(b, '<b/>', 0, 3);
        expect(await s.offline.total()).toBe(before + 4);
        await s.offline.remove(a, ids.slice(0, 2));
        expect(await s.offline.total()).toBe(before + 2);
        await s.offline.remove(b, [987_654_321]); // unknown id: nothing
        expect(await s.offline.total()).toBe(before + 2);
      });

      it('keeps large stanzas intact', async () => {
        const u = uniq();
        const big = `<message><body>${'x✓'.repeat(100_000)}</body></message>`;
        await s.offline.push(u, big, 0, 10);
        expect((await s.offline.list(u))[0]?.stanza).toBe(big);
      });
    });

    describe('keyval', () => {
      it('get/set/overwrite/delete', async () => {
        const u = uniq();
        expect(await s.keyval.get(u, 'private', 'storage:bookmarks')).toBeNull();
        await s.keyval.set(u, 'private', 'storage:bookmarks', '<storage xmlns="storage:bookmarks"/>');
        expect(await s.keyval.get(u, 'private', 'storage:bookmarks')).toBe('<storage xmlns="storage:bookmarks"/>');
        await s.keyval.set(u, 'private', 'storage:bookmarks', '<storage>ünïcode 🎉</storage>');
        expect(await s.keyval.get(u, 'private', 'storage:bookmarks')).toBe('<storage>ünïcode 🎉</storage>');
        await s.keyval.delete(u, 'private', 'storage:bookmarks');
        expect(await s.keyval.get(u, 'private', 'storage:bookmarks')).toBeNull();
        await s.keyval.delete(u, 'private', 'storage:bookmarks'); // again: no-op
      });

      it('stores, keys and users are separate namespaces; empty key and value are fine', async () => {
        const [u, v] = [uniq(), uniq()];
        await s.keyval.set(u, 'vcard', '', '<vCard/>');
        await s.keyval.set(u, 'last', '', '');
        await s.keyval.set(v, 'vcard', '', '<vCard>other</vCard>');
        expect(await s.keyval.get(u, 'vcard', '')).toBe('<vCard/>');
        expect(await s.keyval.get(u, 'last', '')).toBe('');
        expect(await s.keyval.get(v, 'vcard', '')).toBe('<vCard>other</vCard>');
        expect(await s.keyval.get(v, 'last', '')).toBeNull();
      });

      it('count is per user and per store', async () => {
        const [u, v] = [uniq(), uniq()];
        for (let i = 0; i < 3; i++) await s.keyval.set(u, 'private', `ns${i}`, 'x');
        await s.keyval.set(u, 'private', 'ns0', 'overwritten'); // not a new key
        await s.keyval.set(u, 'vcard', '', 'x');
        await s.keyval.set(v, 'private', 'ns0', 'x');
        expect(await s.keyval.count(u, 'private')).toBe(3);
        expect(await s.keyval.count(u, 'vcard')).toBe(1);
        expect(await s.keyval.count(u, 'nothing')).toBe(0);
        expect(await s.keyval.count(v, 'private')).toBe(1);
        await s.keyval.delete(u, 'private', 'ns1');
        expect(await s.keyval.count(u, 'private')).toBe(2);
      });
    });

    describe('blocks', () => {
      it('add is idempotent, list is sorted, remove takes a subset, clear empties', async () => {
        const u = uniq();
        const [a, b, c, d] = ['d', 'b', 'a', 'c'].map((l) => `${l}-${run}@spam.example`) as [
          string,
          string,
          string,
          string,
        ];
        expect(await s.blocks.list(u)).toEqual([]);
        await s.blocks.add(u, [a, b]);
        await s.blocks.add(u, [b, c, c]); // already there / duplicated in one call: no error
        await s.blocks.add(u, []);
        expect(await s.blocks.list(u)).toEqual([a, b, c].sort());
        await s.blocks.add(u, ['spam.example']); // domain-only JIDs are fine
        await s.blocks.remove(u, [b, d]); // d was never blocked
        await s.blocks.remove(u, []);
        expect(await s.blocks.list(u)).toEqual([a, c, 'spam.example'].sort());
        await s.blocks.clear(u);
        expect(await s.blocks.list(u)).toEqual([]);
        await s.blocks.clear(u); // again: no-op
      });

      it('lists are per user', async () => {
        const [u, v] = [uniq(), uniq()];
        const spammer = uniq('spammer');
        await s.blocks.add(u, [spammer]);
        await s.blocks.add(v, [spammer]);
        await s.blocks.clear(u);
        expect(await s.blocks.list(u)).toEqual([]);
        expect(await s.blocks.list(v)).toEqual([spammer]);
      });
    });

    describe('isolation between users', () => {
      it("one user's writes are invisible to another", async () => {
        const [u, v] = [uniq(), uniq()];
        const c = uniq('shared-contact');
        await s.roster.setItem(u, item(c, { subscription: 'both', name: 'for u' }));
        await s.roster.addPendingIn(u, c, '<presence/>');
        await s.offline.push(u, '<m/>', 0, 10);
        await s.keyval.set(u, 'vcard', '', 'u');
        await s.blocks.add(u, [c]);

        expect(await s.roster.get(v)).toEqual({ version: '0', items: [] });
        expect(await s.roster.getItem(v, c)).toBeNull();
        expect(await s.roster.count(v)).toBe(0);
        expect(await s.roster.listPendingIn(v)).toEqual([]);
        expect(await s.offline.list(v)).toEqual([]);
        expect(await s.offline.count(v)).toBe(0);
        expect(await s.keyval.get(v, 'vcard', '')).toBeNull();
        expect(await s.blocks.list(v)).toEqual([]);

        // v's roster counter is independent of u's.
        expect(await s.roster.setItem(v, item(c, { name: 'for v' }))).toBe('1');
        expect((await s.roster.getItem(u, c))?.name).toBe('for u');
        expect(await s.roster.removeItem(v, c)).toBe('2');
        expect(await s.roster.getItem(u, c)).not.toBeNull();
      });

      it('JIDs are compared exactly (the store does no normalization)', async () => {
        const u = uniq('case');
        await s.keyval.set(u, 'vcard', '', 'lower');
        expect(await s.keyval.get(u.toUpperCase(), 'vcard', '')).toBeNull();
      });
    });
  });
}
