// MucStore contract (XEP-0045 persistent rooms), run against every backend from sqlite.test.ts and
// postgres.test.ts: save/read/replace a room, list, affiliations set/replaced/removed, and
// deleting a room takes its affiliations with it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MucRoomRecord, Storage } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
const uniqRoom = () => `room${++seq}-${run}@conference.example.com`;

function room(jid: string, extra: Partial<MucRoomRecord> = {}): MucRoomRecord {
  return { jid, config: '{"name":"Room"}', subject: '', subjectBy: '', secret: 'c2VjcmV0', creator: 'alice@example.com', createdAt: 1_700_000_000_000, ...extra };
}

export function mucContract(name: string, open: () => Promise<Storage>): void {
  describe(`muc store contract: ${name}`, () => {
    let s: Storage;
    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close();
    });

    it('saves a room, reads it back and replaces it', async () => {
      const jid = uniqRoom();
      expect(await s.muc.getRoom(jid)).toBeNull();
      await s.muc.saveRoom(room(jid));
      expect(await s.muc.getRoom(jid)).toEqual(room(jid));
      const changed = room(jid, { config: '{"name":"Other"}', subject: 'Ünïcode subject', subjectBy: 'al' });
      await s.muc.saveRoom(changed);
      expect(await s.muc.getRoom(jid)).toEqual(changed);
      expect((await s.muc.listRooms()).filter((r) => r.jid === jid)).toEqual([changed]);
    });

    it('keeps affiliations, replaces and removes them', async () => {
      const jid = uniqRoom();
      await s.muc.saveRoom(room(jid));
      await s.muc.setAffiliation(jid, 'alice@example.com', 'owner');
      await s.muc.setAffiliation(jid, 'bob@example.com', 'member', 'bobby', null);
      await s.muc.setAffiliation(jid, 'eve@example.com', 'outcast', null, 'spam');
      expect(await s.muc.affiliations(jid)).toEqual([
        { room: jid, jid: 'alice@example.com', affiliation: 'owner', nick: null, reason: null },
        { room: jid, jid: 'bob@example.com', affiliation: 'member', nick: 'bobby', reason: null },
        { room: jid, jid: 'eve@example.com', affiliation: 'outcast', nick: null, reason: 'spam' },
      ]);
      await s.muc.setAffiliation(jid, 'bob@example.com', 'admin');
      await s.muc.setAffiliation(jid, 'eve@example.com', 'none');
      expect((await s.muc.affiliations(jid)).map((a) => [a.jid, a.affiliation])).toEqual([
        ['alice@example.com', 'owner'],
        ['bob@example.com', 'admin'],
      ]);
      // Saving the room again keeps its affiliations.
      await s.muc.saveRoom(room(jid, { subject: 'x' }));
      expect(await s.muc.affiliations(jid)).toHaveLength(2);
    });

    it('deleting a room removes its affiliations; other rooms are untouched', async () => {
      const a = uniqRoom();
      const b = uniqRoom();
      await s.muc.saveRoom(room(a));
      await s.muc.saveRoom(room(b));
      await s.muc.setAffiliation(a, 'alice@example.com', 'owner');
      await s.muc.setAffiliation(b, 'alice@example.com', 'owner');
      expect(await s.muc.deleteRoom(a)).toBe(true);
      expect(await s.muc.deleteRoom(a)).toBe(false);
      expect(await s.muc.getRoom(a)).toBeNull();
      expect(await s.muc.affiliations(a)).toEqual([]);
      expect(await s.muc.affiliations(b)).toHaveLength(1);
      // A room re-created under the same JID starts without the old affiliations.
      await s.muc.saveRoom(room(a));
      expect(await s.muc.affiliations(a)).toEqual([]);
    });
  });
}
