// PubsubStore on PostgreSQL (XEP-0060 nodes and items; see src/storage/types.ts). Publishing
// (replace + trim) runs in one transaction under a per-node advisory lock so that concurrent
// publishers on several Parley nodes cannot leave more than max_items behind.
import type pg from 'pg';
import { channelMention, storedChannelWithout } from './pubsub-channels.js';
import type { PubsubItem, PubsubNode, PubsubStore } from './types.js';

// Two-int advisory lock class, distinct from postgres.ts's ('Parl', 'Parm').
const LOCK_CLASS_PUBSUB = 0x50617270; // 'Parp'

/** A CTE fragment for accounts.remove(): the account's PEP service goes with it ($1 = bare JID). */
export const PUBSUB_USER_DELETE_CTES = `pi AS (DELETE FROM pubsub_items WHERE service = $1),
              pn AS (DELETE FROM pubsub_nodes WHERE service = $1),`;

/**
 * For accounts.remove(), on its transaction's client: takes the account's subscriptions and
 * affiliations out of the channel records of every service (read-modify-write under row locks, so
 * that two removals cannot undo each other; see pubsub-channels.ts). Its own PEP service goes with
 * PUBSUB_USER_DELETE_CTES.
 */
export async function postgresPubsubUserCleanup(c: pg.PoolClient, bare: string): Promise<void> {
  // strpos: a literal substring test (LIKE would need its wildcards escaped).
  const { rows } = await c.query<{ service: string; node: string; owner: string; config: string }>(
    `SELECT service, node, owner, config FROM pubsub_nodes
     WHERE service <> $1 AND (strpos(config, $2) > 0 OR owner = $1) FOR UPDATE`,
    [bare, channelMention(bare)],
  );
  for (const r of rows) {
    const next = storedChannelWithout(r, bare);
    if (next) await c.query('UPDATE pubsub_nodes SET config = $3 WHERE service = $1 AND node = $2', [r.service, r.node, next]);
  }
}

interface NodeRow {
  service: string;
  node: string;
  owner: string;
  config: string;
  created_at: string;
}

interface ItemRow {
  item_id: string;
  publisher: string;
  payload: string;
  created_at: string;
  updated_at: string;
}

const rowToNode = (r: NodeRow): PubsubNode => ({
  service: r.service,
  node: r.node,
  owner: r.owner,
  config: JSON.parse(r.config) as PubsubNode['config'],
  createdAt: Number(r.created_at),
});

const rowToItem = (r: ItemRow): PubsubItem => ({
  id: r.item_id,
  publisher: r.publisher,
  payload: r.payload,
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

type Tx = <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>;

export function postgresPubsub(pool: pg.Pool, tx: Tx): PubsubStore {
  const q = <R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]) =>
    pool.query<R>(text, values);
  const NODE_COLS = 'service, node, owner, config, created_at';
  const ITEM_COLS = 'item_id, publisher, payload, created_at, updated_at';

  return {
    async getNode(service, node) {
      const { rows } = await q<NodeRow>(`SELECT ${NODE_COLS} FROM pubsub_nodes WHERE service = $1 AND node = $2`, [service, node]);
      return rows[0] ? rowToNode(rows[0]) : null;
    },
    async listNodes(service) {
      // COLLATE "C": byte order, the same as SQLite's.
      const { rows } = await q<NodeRow>(`SELECT ${NODE_COLS} FROM pubsub_nodes WHERE service = $1 ORDER BY node COLLATE "C"`, [service]);
      return rows.map(rowToNode);
    },
    async countNodes(service) {
      const { rows } = await q<{ n: string }>('SELECT count(*) AS n FROM pubsub_nodes WHERE service = $1', [service]);
      return Number(rows[0]!.n);
    },
    async createNode(n) {
      const res = await q(
        `INSERT INTO pubsub_nodes (service, node, owner, config, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (service, node) DO NOTHING`,
        [n.service, n.node, n.owner, JSON.stringify(n.config), n.createdAt],
      );
      return res.rowCount === 1;
    },
    async setConfig(service, node, config) {
      const res = await q('UPDATE pubsub_nodes SET config = $3 WHERE service = $1 AND node = $2', [service, node, JSON.stringify(config)]);
      return res.rowCount === 1;
    },
    async deleteNode(service, node) {
      // One statement: the items and the node go together.
      const res = await q(
        `WITH i AS (DELETE FROM pubsub_items WHERE service = $1 AND node = $2)
         DELETE FROM pubsub_nodes WHERE service = $1 AND node = $2`,
        [service, node],
      );
      return res.rowCount === 1;
    },
    async publish(service, node, item: PubsubItem, maxItems) {
      return tx(async (c) => {
        await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_CLASS_PUBSUB, `${service}\n${node}`]);
        // A re-published id keeps its creation time but moves to the end of the order (new seq).
        const old = await c.query<{ created_at: string }>(
          'DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND item_id = $3 RETURNING created_at',
          [service, node, item.id],
        );
        const created = old.rows[0] ? Number(old.rows[0].created_at) : item.createdAt;
        await c.query(
          `INSERT INTO pubsub_items (service, node, item_id, publisher, payload, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)`,
          [service, node, item.id, item.publisher, item.payload, created, item.updatedAt],
        );
        const trimmed = await c.query<{ item_id: string }>(
          `DELETE FROM pubsub_items WHERE seq IN (
             SELECT seq FROM pubsub_items WHERE service = $1 AND node = $2 ORDER BY seq DESC OFFSET $3)
           RETURNING item_id`,
          [service, node, Math.max(0, maxItems)],
        );
        return trimmed.rows.map((r) => r.item_id);
      });
    },
    async getItems(service, node, opts = {}) {
      if (opts.ids) {
        if (opts.ids.length === 0) return [];
        const { rows } = await q<ItemRow>(
          `SELECT ${ITEM_COLS} FROM pubsub_items WHERE service = $1 AND node = $2 AND item_id = ANY($3::text[]) ORDER BY seq`,
          [service, node, opts.ids],
        );
        return rows.map(rowToItem);
      }
      // LIMIT NULL means no limit.
      const lim = opts.max === undefined || !Number.isFinite(opts.max) ? null : Math.max(0, Math.floor(opts.max));
      const { rows } = await q<ItemRow>(
        `SELECT ${ITEM_COLS} FROM (SELECT seq, ${ITEM_COLS} FROM pubsub_items WHERE service = $1 AND node = $2
           ORDER BY seq DESC LIMIT $3) AS newest ORDER BY seq`,
        [service, node, lim],
      );
      return rows.map(rowToItem);
    },
    async countItems(service, node) {
      const { rows } = await q<{ n: string }>('SELECT count(*) AS n FROM pubsub_items WHERE service = $1 AND node = $2', [service, node]);
      return Number(rows[0]!.n);
    },
    async retract(service, node, id) {
      const res = await q('DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND item_id = $3', [service, node, id]);
      return res.rowCount === 1;
    },
    async purge(service, node) {
      await q('DELETE FROM pubsub_items WHERE service = $1 AND node = $2', [service, node]);
    },
    async deleteService(service) {
      await q(
        `WITH i AS (DELETE FROM pubsub_items WHERE service = $1)
         DELETE FROM pubsub_nodes WHERE service = $1`,
        [service],
      );
    },
  };
}
