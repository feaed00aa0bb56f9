// PubsubStore contract (XEP-0060 nodes and items), run against every backend from
// sqlite.test.ts and postgres.test.ts: node lifecycle, item order and re-publish, max_items
// trimming, retrieval by ids / newest N, retract, purge, per-service isolation and account removal
// (the account's PEP service, and its subscriptions and affiliations in news channel records, read
// and written with the news module's own record format).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Affiliation, type Channel, defaultChannelConfig, fromStoredChannel, type Subscription, toStoredChannel } from '../../src/modules/pubsub/channel.js';
import type { PubsubItem, Storage } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
const uniq = (local = 'ps') => `${local}${++seq}-${run}@example.com`;

function item(id: string, at: number, payload = `<p xmlns="urn:test">${id}</p>`): PubsubItem {
  return { id, publisher: 'pub@example.com/r', payload, createdAt: at, updatedAt: at };
}

export function pubsubContract(name: string, open: () => Promise<Storage>): void {
  describe(`pubsub store contract: ${name}`, () => {
    let s: Storage;
    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close();
    });

    it('creates a node once, reads it back, lists and counts, reconfigures and deletes', async () => {
      const svc = uniq();
      const node = { service: svc, node: 'urn:xmpp:avatar:data', owner: svc, config: { 'pubsub#access_model': 'open', 'pubsub#x': ['a', 'b'] }, createdAt: 1234 };
      expect(await s.pubsub.createNode(node)).toBe(true);
      expect(await s.pubsub.createNode({ ...node, config: {} })).toBe(false);
      expect(await s.pubsub.getNode(svc, node.node)).toEqual(node);
      expect(await s.pubsub.getNode(svc, 'nope')).toBeNull();
      await s.pubsub.createNode({ ...node, node: 'a-first' });
      expect((await s.pubsub.listNodes(svc)).map((n) => n.node)).toEqual(['a-first', 'urn:xmpp:avatar:data']);
      expect(await s.pubsub.countNodes(svc)).toBe(2);
      expect(await s.pubsub.setConfig(svc, node.node, { 'pubsub#access_model': 'presence' })).toBe(true);
      expect((await s.pubsub.getNode(svc, node.node))?.config).toEqual({ 'pubsub#access_model': 'presence' });
      expect(await s.pubsub.setConfig(svc, 'nope', {})).toBe(false);
      await s.pubsub.publish(svc, node.node, item('i1', 1), 10);
      expect(await s.pubsub.deleteNode(svc, node.node)).toBe(true);
      expect(await s.pubsub.deleteNode(svc, node.node)).toBe(false);
      expect(await s.pubsub.getNode(svc, node.node)).toBeNull();
      expect(await s.pubsub.countItems(svc, node.node)).toBe(0);
      expect(await s.pubsub.countNodes(svc)).toBe(1);
    });

    it('keeps items in publish order; a re-published id becomes the newest and keeps createdAt', async () => {
      const svc = uniq();
      await s.pubsub.createNode({ service: svc, node: 'n', owner: svc, config: {}, createdAt: 1 });
      for (const [i, id] of ['a', 'b', 'c'].entries()) expect(await s.pubsub.publish(svc, 'n', item(id, 100 + i), 10)).toEqual([]);
      await s.pubsub.publish(svc, 'n', { ...item('a', 500, '<p xmlns="urn:test">new</p>'), publisher: 'other@example.com' }, 10);
      const all = await s.pubsub.getItems(svc, 'n');
      expect(all.map((i) => i.id)).toEqual(['b', 'c', 'a']);
      expect(all[2]).toEqual({ id: 'a', publisher: 'other@example.com', payload: '<p xmlns="urn:test">new</p>', createdAt: 100, updatedAt: 500 });
      expect((await s.pubsub.getItems(svc, 'n', { max: 2 })).map((i) => i.id)).toEqual(['c', 'a']);
      expect((await s.pubsub.getItems(svc, 'n', { max: 0 })).map((i) => i.id)).toEqual([]);
      expect((await s.pubsub.getItems(svc, 'n', { ids: ['a', 'b', 'zz'] })).map((i) => i.id)).toEqual(['b', 'a']);
      expect(await s.pubsub.getItems(svc, 'n', { ids: [] })).toEqual([]);
      expect(await s.pubsub.countItems(svc, 'n')).toBe(3);
    });

    it('trims the oldest items beyond maxItems and reports them', async () => {
      const svc = uniq();
      await s.pubsub.createNode({ service: svc, node: 'n', owner: svc, config: {}, createdAt: 1 });
      for (let i = 0; i < 3; i++) await s.pubsub.publish(svc, 'n', item(`i${i}`, i), 3);
      expect(await s.pubsub.publish(svc, 'n', item('i3', 3), 3)).toEqual(['i0']);
      expect(await s.pubsub.publish(svc, 'n', item('i4', 4), 1)).toEqual(expect.arrayContaining(['i1', 'i2', 'i3']));
      expect((await s.pubsub.getItems(svc, 'n')).map((i) => i.id)).toEqual(['i4']);
    });

    it('retracts one item, purges a node, and keeps services and nodes apart', async () => {
      const a = uniq();
      const b = uniq();
      for (const svc of [a, b]) {
        await s.pubsub.createNode({ service: svc, node: 'n', owner: svc, config: {}, createdAt: 1 });
        await s.pubsub.createNode({ service: svc, node: 'm', owner: svc, config: {}, createdAt: 1 });
        await s.pubsub.publish(svc, 'n', item('x', 1), 10);
        await s.pubsub.publish(svc, 'n', item('y', 2), 10);
        await s.pubsub.publish(svc, 'm', item('x', 3), 10);
      }
      expect(await s.pubsub.retract(a, 'n', 'x')).toBe(true);
      expect(await s.pubsub.retract(a, 'n', 'x')).toBe(false);
      expect((await s.pubsub.getItems(a, 'n')).map((i) => i.id)).toEqual(['y']);
      expect((await s.pubsub.getItems(a, 'm')).map((i) => i.id)).toEqual(['x']);
      expect((await s.pubsub.getItems(b, 'n')).map((i) => i.id)).toEqual(['x', 'y']);
      await s.pubsub.purge(a, 'm');
      expect(await s.pubsub.countItems(a, 'm')).toBe(0);
      expect(await s.pubsub.getNode(a, 'm')).not.toBeNull();
      await s.pubsub.deleteService(a);
      expect(await s.pubsub.countNodes(a)).toBe(0);
      expect(await s.pubsub.countItems(a, 'n')).toBe(0);
      expect(await s.pubsub.countNodes(b)).toBe(2);
    });

    it('account removal deletes the account PEP service', async () => {
      const jid = uniq('gone');
      const [username, host] = jid.split('@') as [string, string];
      await s.accounts.create({ jid, username, host, scram: {}, createdAt: 1 });
      await s.pubsub.createNode({ service: jid, node: 'n', owner: jid, config: {}, createdAt: 1 });
      await s.pubsub.publish(jid, 'n', item('x', 1), 10);
      const other = uniq();
      await s.pubsub.createNode({ service: other, node: 'n', owner: other, config: {}, createdAt: 1 });
      expect(await s.accounts.remove(jid)).toBe(true);
      expect(await s.pubsub.getNode(jid, 'n')).toBeNull();
      expect(await s.pubsub.countItems(jid, 'n')).toBe(0);
      expect(await s.pubsub.getNode(other, 'n')).not.toBeNull();
    });

    it("account removal removes the user's pubsub subscriptions/affiliations from channel records of every service", async () => {
      const svc = `news.${uniq('svc').split('@')[0]}.example`;
      const otherSvc = `news2.${uniq('svc').split('@')[0]}.example`;
      // A backslash is allowed in a localpart (RFC 7622) and is escaped twice in the stored record.
      const accounts = [uniq('gone'), `back\\slash-${uniq('gone')}`];
      const owner = uniq('owner');
      const member = uniq('member');
      for (const jid of [...accounts, owner, member]) {
        const [username, host] = jid.split('@') as [string, string];
        await s.accounts.create({ jid, username, host, scram: {}, createdAt: 1 });
      }
      const sub = (jid: string, state: Subscription['state'] = 'subscribed'): Subscription => ({ jid, subid: `s-${++seq}`, state, deliver: true, includeBody: false });
      const channel = (name: string, affs: Record<string, Affiliation>, subs: Subscription[]): Channel => ({
        name,
        createdAt: 5,
        config: defaultChannelConfig(10),
        affiliations: new Map(Object.entries(affs)),
        subscriptions: subs,
      });
      const read = async (service: string, name: string) => {
        const n = await s.pubsub.getNode(service, name);
        if (!n) throw new Error(`${service} ${name} is gone`);
        return fromStoredChannel(n, 100, 10);
      };

      for (const gone of accounts) {
        // Another user's JID that starts with the removed one's (a longer domain) is not the removed user's.
        const lookalike = `${gone}.example/res`;
        const tag = `${++seq}`;
        const shared = channel(`shared-${tag}`, { [owner]: 'owner', [gone]: 'publisher', [member]: 'member' }, [
          sub(gone),
          sub(`${gone}/phone`, 'pending'),
          sub(member),
          sub(lookalike),
        ]);
        const outcast = channel(`outcast-${tag}`, { [owner]: 'owner', [gone]: 'outcast' }, []);
        const own = channel(`own-${tag}`, { [gone]: 'owner' }, [sub(member)]);
        const elsewhere = channel(`elsewhere-${tag}`, { [owner]: 'owner' }, [sub(`${gone}/laptop`)]);
        const unrelated = channel(`unrelated-${tag}`, { [owner]: 'owner' }, [sub(member)]);
        for (const [service, ch, creator] of [
          [svc, shared, owner],
          [svc, outcast, owner],
          [svc, own, gone],
          [otherSvc, elsewhere, owner],
          [svc, unrelated, owner],
        ] as const) {
          expect(await s.pubsub.createNode({ service, node: ch.name, owner: creator, config: toStoredChannel(ch), createdAt: 5 })).toBe(true);
        }
        await s.pubsub.publish(svc, shared.name, { ...item('by-gone', 7), publisher: gone }, 10);
        // A record without the affiliations key makes its creator the owner: removing the creator leaves it ownerless.
        const { 'parley#affiliations': _affs, ...legacy } = toStoredChannel(channel(`legacy-${tag}`, {}, [sub(gone), sub(member)]));
        await s.pubsub.createNode({ service: svc, node: `legacy-${tag}`, owner: gone, config: legacy, createdAt: 5 });
        expect((await read(svc, `legacy-${tag}`)).affiliations).toEqual(new Map([[gone, 'owner']]));
        // Not a channel record (a PEP node of someone else that happens to name the account): untouched.
        const pep = { service: member, node: `pep-${tag}`, owner: member, config: { 'pubsub#title': gone }, createdAt: 5 };
        await s.pubsub.createNode(pep);
        const unrelatedBefore = await s.pubsub.getNode(svc, unrelated.name);

        expect(await s.accounts.remove(gone)).toBe(true);

        const afterShared = await read(svc, shared.name);
        expect(afterShared.affiliations).toEqual(new Map([[owner, 'owner'], [member, 'member']]));
        expect(afterShared.subscriptions).toEqual([shared.subscriptions[2], shared.subscriptions[3]]);
        expect(afterShared.config).toEqual(shared.config);
        expect((await s.pubsub.getItems(svc, shared.name)).map((i) => i.id)).toEqual(['by-gone']); // items stay
        expect((await read(svc, outcast.name)).affiliations).toEqual(new Map([[owner, 'owner']]));
        // The removed user's channel stays, ownerless, with its subscribers.
        const afterOwn = await read(svc, own.name);
        expect(afterOwn.affiliations.size).toBe(0);
        expect(afterOwn.subscriptions).toEqual(own.subscriptions);
        expect((await read(otherSvc, elsewhere.name)).subscriptions).toEqual([]);
        const afterLegacy = await read(svc, `legacy-${tag}`);
        expect(afterLegacy.affiliations.size).toBe(0);
        expect(afterLegacy.subscriptions.map((x) => x.jid)).toEqual([member]);
        expect(await s.pubsub.getNode(svc, unrelated.name)).toEqual(unrelatedBefore);
        expect(await s.pubsub.getNode(member, pep.node)).toEqual(pep);
      }
    });
  });
}
