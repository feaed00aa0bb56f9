// PubsubStore on SQLite (XEP-0060 nodes and items; see src/storage/types.ts). Same conventions as
// sqlite.ts: statements prepared once, read-then-write paths in IMMEDIATE transactions.
import type Database from 'better-sqlite3';
import { channelMention, storedChannelWithout } from './pubsub-channels.js';
import type { PubsubItem, PubsubNode, PubsubStore } from './types.js';

interface NodeRow {
  service: string;
  node: string;
  owner: string;
  config: string;
  created_at: number;
}

interface ItemRow {
  item_id: string;
  publisher: string;
  payload: string;
  created_at: number;
  updated_at: number;
}

const rowToNode = (r: NodeRow): PubsubNode => ({
  service: r.service,
  node: r.node,
  owner: r.owner,
  config: JSON.parse(r.config) as PubsubNode['config'],
  createdAt: r.created_at,
});

const rowToItem = (r: ItemRow): PubsubItem => ({
  id: r.item_id,
  publisher: r.publisher,
  payload: r.payload,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** Statements removing a whole service (run inside accounts.remove()'s transaction). */
export const PUBSUB_USER_DELETES = [
  'DELETE FROM pubsub_items WHERE service = ?',
  'DELETE FROM pubsub_nodes WHERE service = ?',
];

/**
 * For accounts.remove(), called inside its transaction: takes the account's subscriptions and
 * affiliations out of the channel records of every service (read-modify-write; see
 * pubsub-channels.ts). Its own PEP service is deleted by PUBSUB_USER_DELETES.
 */
export function sqlitePubsubUserCleanup(db: Database.Database): (bare: string) => void {
  // instr: a literal substring test (LIKE would need its wildcards escaped).
  const candidates = db.prepare('SELECT service, node, owner, config FROM pubsub_nodes WHERE service <> ? AND (instr(config, ?) > 0 OR owner = ?)');
  const update = db.prepare('UPDATE pubsub_nodes SET config = ? WHERE service = ? AND node = ?');
  return (bare) => {
    for (const r of candidates.all(bare, channelMention(bare), bare) as Omit<NodeRow, 'created_at'>[]) {
      const next = storedChannelWithout(r, bare);
      if (next) update.run(next, r.service, r.node);
    }
  };
}

export function sqlitePubsub(db: Database.Database): PubsubStore {
  const s = {
    nodeGet: db.prepare('SELECT service, node, owner, config, created_at FROM pubsub_nodes WHERE service = ? AND node = ?'),
    nodeList: db.prepare('SELECT service, node, owner, config, created_at FROM pubsub_nodes WHERE service = ? ORDER BY node'),
    nodeCount: db.prepare('SELECT count(*) FROM pubsub_nodes WHERE service = ?').pluck(),
    nodeInsert: db.prepare(
      `INSERT INTO pubsub_nodes (service, node, owner, config, created_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (service, node) DO NOTHING`,
    ),
    nodeConfig: db.prepare('UPDATE pubsub_nodes SET config = ? WHERE service = ? AND node = ?'),
    nodeDelete: db.prepare('DELETE FROM pubsub_nodes WHERE service = ? AND node = ?'),
    itemsDeleteAll: db.prepare('DELETE FROM pubsub_items WHERE service = ? AND node = ?'),
    itemGetCreated: db.prepare('SELECT created_at FROM pubsub_items WHERE service = ? AND node = ? AND item_id = ?').pluck(),
    itemDelete: db.prepare('DELETE FROM pubsub_items WHERE service = ? AND node = ? AND item_id = ?'),
    itemInsert: db.prepare(
      `INSERT INTO pubsub_items (service, node, item_id, publisher, payload, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    // Everything older than the newest `max` (LIMIT -1 OFFSET n: all rows after the first n).
    itemsBeyond: db
      .prepare('SELECT item_id FROM pubsub_items WHERE service = ? AND node = ? ORDER BY seq DESC LIMIT -1 OFFSET ?')
      .pluck(),
    itemsNewest: db.prepare(
      `SELECT * FROM (SELECT seq, item_id, publisher, payload, created_at, updated_at FROM pubsub_items
         WHERE service = ? AND node = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq`,
    ),
    itemsByIds: db.prepare(
      `SELECT item_id, publisher, payload, created_at, updated_at FROM pubsub_items
       WHERE service = ? AND node = ? AND item_id IN (SELECT value FROM json_each(?)) ORDER BY seq`,
    ),
    itemCount: db.prepare('SELECT count(*) FROM pubsub_items WHERE service = ? AND node = ?').pluck(),
    serviceItems: db.prepare('DELETE FROM pubsub_items WHERE service = ?'),
    serviceNodes: db.prepare('DELETE FROM pubsub_nodes WHERE service = ?'),
  };

  const deleteNode = db.transaction((service: string, node: string): boolean => {
    s.itemsDeleteAll.run(service, node);
    return s.nodeDelete.run(service, node).changes > 0;
  });

  const publish = db.transaction((service: string, node: string, item: PubsubItem, maxItems: number): string[] => {
    // A re-published id keeps its creation time but moves to the end of the order.
    const created = s.itemGetCreated.get(service, node, item.id) as number | undefined;
    s.itemDelete.run(service, node, item.id);
    s.itemInsert.run(service, node, item.id, item.publisher, item.payload, created ?? item.createdAt, item.updatedAt);
    const trimmed = s.itemsBeyond.all(service, node, Math.max(0, maxItems)) as string[];
    for (const id of trimmed) s.itemDelete.run(service, node, id);
    return trimmed;
  });

  const deleteService = db.transaction((service: string) => {
    s.serviceItems.run(service);
    s.serviceNodes.run(service);
  });

  return {
    async getNode(service, node) {
      const r = s.nodeGet.get(service, node) as NodeRow | undefined;
      return r ? rowToNode(r) : null;
    },
    async listNodes(service) {
      return (s.nodeList.all(service) as NodeRow[]).map(rowToNode);
    },
    async countNodes(service) {
      return s.nodeCount.get(service) as number;
    },
    async createNode(n) {
      return s.nodeInsert.run(n.service, n.node, n.owner, JSON.stringify(n.config), n.createdAt).changes === 1;
    },
    async setConfig(service, node, config) {
      return s.nodeConfig.run(JSON.stringify(config), service, node).changes === 1;
    },
    async deleteNode(service, node) {
      return deleteNode.immediate(service, node);
    },
    async publish(service, node, item, maxItems) {
      return publish.immediate(service, node, item, maxItems);
    },
    async getItems(service, node, opts = {}) {
      if (opts.ids) {
        if (opts.ids.length === 0) return [];
        return (s.itemsByIds.all(service, node, JSON.stringify(opts.ids)) as ItemRow[]).map(rowToItem);
      }
      const lim = opts.max === undefined || !Number.isFinite(opts.max) ? -1 : Math.max(0, Math.floor(opts.max));
      return (s.itemsNewest.all(service, node, lim) as ItemRow[]).map(rowToItem);
    },
    async countItems(service, node) {
      return s.itemCount.get(service, node) as number;
    },
    async retract(service, node, id) {
      return s.itemDelete.run(service, node, id).changes > 0;
    },
    async purge(service, node) {
      s.itemsDeleteAll.run(service, node);
    },
    async deleteService(service) {
      deleteService.immediate(service);
    },
  };
}
