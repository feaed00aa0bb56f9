// MucStore on SQLite (XEP-0045 persistent rooms and affiliations; see src/storage/types.ts,
// migration 5). Foreign keys are not enforced by SQLite here, so deleteRoom removes the
// affiliations itself, in the same transaction as the room.
import type Database from 'better-sqlite3';
import type { MucAffiliationKind, MucAffiliationRecord, MucRoomRecord, MucStore } from './types.js';

export interface MucRoomRow {
  jid: string;
  config: string;
  subject: string;
  subject_by: string;
  secret: string;
  creator: string;
  created_at: number | string;
}

export interface MucAffiliationRow {
  room: string;
  jid: string;
  affiliation: string;
  nick: string | null;
  reason: string | null;
}

export const MUC_ROOM_COLUMNS = 'jid, config, subject, subject_by, secret, creator, created_at';

export const rowToMucRoom = (r: MucRoomRow): MucRoomRecord => ({
  jid: r.jid,
  config: r.config,
  subject: r.subject,
  subjectBy: r.subject_by,
  secret: r.secret,
  creator: r.creator,
  createdAt: Number(r.created_at),
});

export const rowToMucAffiliation = (r: MucAffiliationRow): MucAffiliationRecord => ({
  room: r.room,
  jid: r.jid,
  affiliation: r.affiliation as MucAffiliationKind,
  nick: r.nick,
  reason: r.reason,
});

export function sqliteMuc(db: Database.Database): MucStore {
  const s = {
    save: db.prepare(
      `INSERT INTO muc_rooms (${MUC_ROOM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (jid) DO UPDATE SET config = excluded.config, subject = excluded.subject,
         subject_by = excluded.subject_by, secret = excluded.secret, creator = excluded.creator`,
    ),
    get: db.prepare(`SELECT ${MUC_ROOM_COLUMNS} FROM muc_rooms WHERE jid = ?`),
    list: db.prepare(`SELECT ${MUC_ROOM_COLUMNS} FROM muc_rooms ORDER BY jid`),
    del: db.prepare('DELETE FROM muc_rooms WHERE jid = ?'),
    delAffs: db.prepare('DELETE FROM muc_affiliations WHERE room = ?'),
    setAff: db.prepare(
      `INSERT INTO muc_affiliations (room, jid, affiliation, nick, reason) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation, nick = excluded.nick, reason = excluded.reason`,
    ),
    delAff: db.prepare('DELETE FROM muc_affiliations WHERE room = ? AND jid = ?'),
    affs: db.prepare('SELECT room, jid, affiliation, nick, reason FROM muc_affiliations WHERE room = ? ORDER BY jid'),
  };
  const deleteRoom = db.transaction((jid: string): boolean => {
    s.delAffs.run(jid);
    return s.del.run(jid).changes > 0;
  });

  return {
    async saveRoom(r) {
      s.save.run(r.jid, r.config, r.subject, r.subjectBy, r.secret, r.creator, r.createdAt);
    },
    async getRoom(jid) {
      const r = s.get.get(jid) as MucRoomRow | undefined;
      return r ? rowToMucRoom(r) : null;
    },
    async listRooms() {
      return (s.list.all() as MucRoomRow[]).map(rowToMucRoom);
    },
    async deleteRoom(jid) {
      return deleteRoom.immediate(jid);
    },
    async setAffiliation(room, jid, affiliation, nick = null, reason = null) {
      if (affiliation === 'none') s.delAff.run(room, jid);
      else s.setAff.run(room, jid, affiliation, nick, reason);
    },
    async affiliations(room) {
      return (s.affs.all(room) as MucAffiliationRow[]).map(rowToMucAffiliation);
    },
  };
}
