// PubsubStore contract (XEP-0060 nodes and items), run against every backend from
// sqlite.test.ts and postgres.test.ts: node lifecycle, item order and re-publish, max_items
// trimming, retrieval by ids / newest N, retract, purge, per-service isolation and account removal.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  });
}
