// AlertStore on PostgreSQL (issue 7 alerts; see src/storage/types.ts, migration 6). Same shape as
// alerts-sqlite.ts; bigint columns arrive as strings and are converted by the row mappers.
import type pg from 'pg';
import { ALERT_COLUMNS, rowToAlert, rowToRecipient } from './alerts-sqlite.js';
import type { AlertStore } from './types.js';

type AlertRow = Parameters<typeof rowToAlert>[0];
type RecipientRow = Parameters<typeof rowToRecipient>[0];

export const ALERT_USER_DELETE_CTES = `al AS (DELETE FROM alert_recipients WHERE user_jid = $1),`;

export function postgresAlerts(pool: pg.Pool, tx: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>): AlertStore {
  return {
    create(a, recipients) {
      return tx(async (c) => {
        await c.query(`INSERT INTO alerts (${ALERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
          a.id,
          a.host,
          a.sender,
          a.subject,
          a.body,
          a.url,
          a.priority,
          a.receipts,
          a.createdAt,
        ]);
        // unnest WITH ORDINALITY keeps the recipients' order in seq.
        await c.query(
          `INSERT INTO alert_recipients (alert_id, user_jid, state)
           SELECT $1, u, 'pending' FROM unnest($2::text[]) WITH ORDINALITY AS t(u, n) ORDER BY n ON CONFLICT DO NOTHING`,
          [a.id, recipients],
        );
      });
    },
    async get(id) {
      const { rows } = await pool.query<AlertRow>(`SELECT ${ALERT_COLUMNS} FROM alerts WHERE id = $1`, [id]);
      return rows[0] ? rowToAlert(rows[0]) : null;
    },
    async listBySender(sender, limit) {
      const { rows } = await pool.query<AlertRow>(`SELECT ${ALERT_COLUMNS} FROM alerts WHERE sender = $1 ORDER BY created_at DESC, id LIMIT $2`, [sender, limit]);
      return rows.map(rowToAlert);
    },
    async pendingFor(user, limit) {
      const cols = ALERT_COLUMNS.split(', ').map((c) => `a.${c}`).join(', ');
      const { rows } = await pool.query<AlertRow>(
        `SELECT ${cols} FROM alert_recipients r JOIN alerts a ON a.id = r.alert_id
         WHERE r.user_jid = $1 AND r.state = 'pending' ORDER BY r.seq LIMIT $2`,
        [user, limit],
      );
      return rows.map(rowToAlert);
    },
    async pendingSince(seq, limit) {
      const { rows } = await pool.query<{ seq: string; alert_id: string; user_jid: string }>(
        "SELECT seq, alert_id, user_jid FROM alert_recipients WHERE seq > $1 AND state = 'pending' ORDER BY seq LIMIT $2",
        [seq, limit],
      );
      return rows.map((r) => ({ seq: Number(r.seq), alertId: r.alert_id, user: r.user_jid }));
    },
    async maxSeq() {
      const { rows } = await pool.query<{ n: string }>('SELECT COALESCE(max(seq), 0) AS n FROM alert_recipients');
      return Number(rows[0]?.n ?? 0);
    },
    async markDelivered(alertId, user, at) {
      const res = await pool.query(
        "UPDATE alert_recipients SET state = 'delivered', delivered_at = $1 WHERE alert_id = $2 AND user_jid = $3 AND state = 'pending'",
        [at, alertId, user],
      );
      return (res.rowCount ?? 0) > 0;
    },
    async markReceived(alertId, user, at) {
      const res = await pool.query(
        "UPDATE alert_recipients SET state = 'received', received_at = $1, delivered_at = COALESCE(delivered_at, $1) WHERE alert_id = $2 AND user_jid = $3 AND state <> 'received'",
        [at, alertId, user],
      );
      return (res.rowCount ?? 0) > 0;
    },
    async recipients(alertId) {
      const { rows } = await pool.query<RecipientRow>(
        'SELECT alert_id, user_jid, state, delivered_at, received_at FROM alert_recipients WHERE alert_id = $1 ORDER BY user_jid COLLATE "C"',
        [alertId],
      );
      return rows.map(rowToRecipient);
    },
    purge(cutoff) {
      return tx(async (c) => {
        await c.query('DELETE FROM alert_recipients WHERE alert_id IN (SELECT id FROM alerts WHERE created_at < $1)', [cutoff]);
        const res = await c.query('DELETE FROM alerts WHERE created_at < $1', [cutoff]);
        return res.rowCount ?? 0;
      });
    },
  };
}
