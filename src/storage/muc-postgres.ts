// MucStore on PostgreSQL (XEP-0045 persistent rooms and affiliations; see src/storage/types.ts,
// migration 5). Affiliations go with their room through ON DELETE CASCADE.
import type pg from 'pg';
import { MUC_ROOM_COLUMNS, rowToMucAffiliation, rowToMucRoom, type MucAffiliationRow, type MucRoomRow } from './muc-sqlite.js';
import type { MucStore } from './types.js';

export function postgresMuc(pool: pg.Pool): MucStore {
  return {
    async saveRoom(r) {
      await pool.query(
        `INSERT INTO muc_rooms (${MUC_ROOM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (jid) DO UPDATE SET config = excluded.config, subject = excluded.subject,
           subject_by = excluded.subject_by, secret = excluded.secret, creator = excluded.creator`,
        [r.jid, r.config, r.subject, r.subjectBy, r.secret, r.creator, r.createdAt],
      );
    },
    async getRoom(jid) {
      const { rows } = await pool.query<MucRoomRow>(`SELECT ${MUC_ROOM_COLUMNS} FROM muc_rooms WHERE jid = $1`, [jid]);
      return rows[0] ? rowToMucRoom(rows[0]) : null;
    },
    async listRooms() {
      const { rows } = await pool.query<MucRoomRow>(`SELECT ${MUC_ROOM_COLUMNS} FROM muc_rooms ORDER BY jid`);
      return rows.map(rowToMucRoom);
    },
    async deleteRoom(jid) {
      const res = await pool.query('DELETE FROM muc_rooms WHERE jid = $1', [jid]);
      return (res.rowCount ?? 0) > 0;
    },
    async setAffiliation(room, jid, affiliation, nick = null, reason = null) {
      if (affiliation === 'none') {
        await pool.query('DELETE FROM muc_affiliations WHERE room = $1 AND jid = $2', [room, jid]);
        return;
      }
      await pool.query(
        `INSERT INTO muc_affiliations (room, jid, affiliation, nick, reason) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation, nick = excluded.nick, reason = excluded.reason`,
        [room, jid, affiliation, nick, reason],
      );
    },
    async affiliations(room) {
      const { rows } = await pool.query<MucAffiliationRow>('SELECT room, jid, affiliation, nick, reason FROM muc_affiliations WHERE room = $1 ORDER BY jid', [room]);
      return rows.map(rowToMucAffiliation);
    },
  };
}
