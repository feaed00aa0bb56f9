// AlertStore on SQLite (issue 7 alerts; see src/storage/types.ts, migration 6). An alert is one row
// in `alerts`; each recipient is a row in `alert_recipients` whose AUTOINCREMENT `seq` lets a
// running server find rows that another process (`parley alert send`) added since its last look.
import type Database from 'better-sqlite3';
import type { AlertPriority, AlertRecipient, AlertRecord, AlertState, AlertStore } from './types.js';

/** accounts.remove(): the account's recipient rows go with it (the alerts themselves stay for their senders' reports). */
export const ALERT_USER_DELETES = ['DELETE FROM alert_recipients WHERE user_jid = ?'];

interface AlertRow {
  id: string;
  host: string;
  sender: string;
  subject: string;
  body: string;
  url: string | null;
  priority: string;
  receipts: number | boolean;
  created_at: number | string;
}

interface RecipientRow {
  alert_id: string;
  user_jid: string;
  state: string;
  delivered_at: number | string | null;
  received_at: number | string | null;
}

export const ALERT_COLUMNS = 'id, host, sender, subject, body, url, priority, receipts, created_at';

export const rowToAlert = (r: AlertRow): AlertRecord => ({
  id: r.id,
  host: r.host,
  sender: r.sender,
  subject: r.subject,
  body: r.body,
  url: r.url,
  priority: r.priority as AlertPriority,
  receipts: r.receipts === true || r.receipts === 1,
  createdAt: Number(r.created_at),
});

export const rowToRecipient = (r: RecipientRow): AlertRecipient => ({
  alertId: r.alert_id,
  user: r.user_jid,
  state: r.state as AlertState,
  deliveredAt: r.delivered_at === null ? null : Number(r.delivered_at),
  receivedAt: r.received_at === null ? null : Number(r.received_at),
});

export function sqliteAlerts(db: Database.Database): AlertStore {
  const s = {
    insert: db.prepare(`INSERT INTO alerts (${ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    insertRecipient: db.prepare("INSERT INTO alert_recipients (alert_id, user_jid, state) VALUES (?, ?, 'pending') ON CONFLICT DO NOTHING"),
    get: db.prepare(`SELECT ${ALERT_COLUMNS} FROM alerts WHERE id = ?`),
    bySender: db.prepare(`SELECT ${ALERT_COLUMNS} FROM alerts WHERE sender = ? ORDER BY created_at DESC, id LIMIT ?`),
    pendingFor: db.prepare(
      `SELECT ${ALERT_COLUMNS.split(', ').map((c) => `a.${c}`).join(', ')} FROM alert_recipients r JOIN alerts a ON a.id = r.alert_id
       WHERE r.user_jid = ? AND r.state = 'pending' ORDER BY r.seq LIMIT ?`,
    ),
    pendingSince: db.prepare("SELECT seq, alert_id, user_jid FROM alert_recipients WHERE seq > ? AND state = 'pending' ORDER BY seq LIMIT ?"),
    maxSeq: db.prepare('SELECT COALESCE(max(seq), 0) FROM alert_recipients').pluck(),
    delivered: db.prepare("UPDATE alert_recipients SET state = 'delivered', delivered_at = ? WHERE alert_id = ? AND user_jid = ? AND state = 'pending'"),
    received: db.prepare(
      "UPDATE alert_recipients SET state = 'received', received_at = ?, delivered_at = COALESCE(delivered_at, ?) WHERE alert_id = ? AND user_jid = ? AND state <> 'received'",
    ),
    recipients: db.prepare('SELECT alert_id, user_jid, state, delivered_at, received_at FROM alert_recipients WHERE alert_id = ? ORDER BY user_jid'),
    purgeRecipients: db.prepare('DELETE FROM alert_recipients WHERE alert_id IN (SELECT id FROM alerts WHERE created_at < ?)'),
    purgeAlerts: db.prepare('DELETE FROM alerts WHERE created_at < ?'),
  };

  const create = db.transaction((a: AlertRecord, recipients: string[]) => {
    s.insert.run(a.id, a.host, a.sender, a.subject, a.body, a.url, a.priority, a.receipts ? 1 : 0, a.createdAt);
    for (const u of recipients) s.insertRecipient.run(a.id, u);
  });
  const purge = db.transaction((cutoff: number): number => {
    s.purgeRecipients.run(cutoff);
    return s.purgeAlerts.run(cutoff).changes;
  });

  return {
    async create(alert, recipients) {
      create.immediate(alert, recipients);
    },
    async get(id) {
      const r = s.get.get(id) as AlertRow | undefined;
      return r ? rowToAlert(r) : null;
    },
    async listBySender(sender, limit) {
      return (s.bySender.all(sender, limit) as AlertRow[]).map(rowToAlert);
    },
    async pendingFor(user, limit) {
      return (s.pendingFor.all(user, limit) as AlertRow[]).map(rowToAlert);
    },
    async pendingSince(seq, limit) {
      const rows = s.pendingSince.all(seq, limit) as { seq: number; alert_id: string; user_jid: string }[];
      return rows.map((r) => ({ seq: Number(r.seq), alertId: r.alert_id, user: r.user_jid }));
    },
    async maxSeq() {
      return Number(s.maxSeq.get());
    },
    async markDelivered(alertId, user, at) {
      return s.delivered.run(at, alertId, user).changes > 0;
    },
    async markReceived(alertId, user, at) {
      return s.received.run(at, at, alertId, user).changes > 0;
    },
    async recipients(alertId) {
      return (s.recipients.all(alertId) as RecipientRow[]).map(rowToRecipient);
    },
    async purge(cutoff) {
      return purge.immediate(cutoff);
    },
  };
}
