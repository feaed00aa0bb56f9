// AlertStore contract (issue 7 alerts), run against every backend from sqlite.test.ts and
// postgres.test.ts: creation with its recipient rows, the pending list per user, the delivery poll
// by row counter, pending -> delivered -> received (each once), listing by sender, purge.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AlertRecord, Storage } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
const user = () => `al${++seq}-${run}@example.com`;

function alert(sender: string, createdAt: number, extra: Partial<AlertRecord> = {}): AlertRecord {
  return { id: `alert-${run}-${++seq}`, host: 'example.com', sender, subject: 'Fire drill', body: 'At 3 pm — everyone out', url: null, priority: 'high', receipts: true, createdAt, ...extra };
}

export function alertsContract(name: string, open: () => Promise<Storage>): void {
  describe(`alert store contract: ${name}`, () => {
    let s: Storage;
    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close();
    });

    it('creates an alert with a pending row per recipient and reads it back', async () => {
      const [a, b] = [user(), user()];
      const rec = alert('boss@example.com', 1_000, { url: 'https://intranet.example/drill', priority: 'low' });
      await s.alerts.create(rec, [a, b]);
      expect(await s.alerts.get(rec.id)).toEqual(rec);
      expect(await s.alerts.get('no-such-alert')).toBeNull();
      const rows = await s.alerts.recipients(rec.id);
      expect(rows.map((r) => r.user).sort()).toEqual([a, b].sort());
      for (const r of rows) expect(r).toMatchObject({ alertId: rec.id, state: 'pending', deliveredAt: null, receivedAt: null });
    });

    it('lists pending alerts per user oldest first, and forgets them once delivered', async () => {
      const u = user();
      const first = alert('boss@example.com', 2_000);
      const second = alert('boss@example.com', 3_000);
      await s.alerts.create(first, [u]);
      await s.alerts.create(second, [u]);
      expect((await s.alerts.pendingFor(u, 10)).map((r) => r.id)).toEqual([first.id, second.id]);
      expect(await s.alerts.pendingFor(u, 1)).toHaveLength(1);
      expect(await s.alerts.markDelivered(first.id, u, 4_000)).toBe(true);
      expect(await s.alerts.markDelivered(first.id, u, 4_001)).toBe(false); // only once
      expect((await s.alerts.pendingFor(u, 10)).map((r) => r.id)).toEqual([second.id]);
      const row = (await s.alerts.recipients(first.id))[0];
      expect(row).toMatchObject({ state: 'delivered', deliveredAt: 4_000 });
    });

    it('records a receipt once, also for a row not yet marked delivered, and never for a stranger', async () => {
      const u = user();
      const rec = alert('boss@example.com', 5_000);
      await s.alerts.create(rec, [u]);
      expect(await s.alerts.markReceived(rec.id, u, 6_000)).toBe(true);
      expect(await s.alerts.markReceived(rec.id, u, 6_001)).toBe(false);
      expect(await s.alerts.markReceived(rec.id, user(), 6_000)).toBe(false);
      expect(await s.alerts.markDelivered(rec.id, u, 7_000)).toBe(false); // already past pending
      expect((await s.alerts.recipients(rec.id))[0]).toMatchObject({ state: 'received', receivedAt: 6_000 });
    });

    it('feeds the delivery poll by row counter', async () => {
      const before = await s.alerts.maxSeq();
      const [a, b] = [user(), user()];
      const rec = alert('cli', 8_000);
      await s.alerts.create(rec, [a, b]);
      const rows = await s.alerts.pendingSince(before, 100);
      const mine = rows.filter((r) => r.alertId === rec.id);
      expect(mine.map((r) => r.user).sort()).toEqual([a, b].sort());
      for (const r of mine) expect(r.seq).toBeGreaterThan(before);
      expect(await s.alerts.maxSeq()).toBeGreaterThanOrEqual(Math.max(...mine.map((r) => r.seq)));
      expect(await s.alerts.pendingSince(await s.alerts.maxSeq(), 100)).toEqual([]);
      // Delivered rows are no longer pending.
      await s.alerts.markDelivered(rec.id, a, 9_000);
      expect((await s.alerts.pendingSince(before, 100)).filter((r) => r.alertId === rec.id).map((r) => r.user)).toEqual([b]);
    });

    it('lists a sender’s alerts newest first and purges old alerts with their rows', async () => {
      const sender = user();
      const old = alert(sender, 10_000);
      const recent = alert(sender, 20_000);
      await s.alerts.create(old, [user()]);
      await s.alerts.create(recent, [user()]);
      expect((await s.alerts.listBySender(sender, 10)).map((r) => r.id)).toEqual([recent.id, old.id]);
      expect(await s.alerts.purge(15_000)).toBeGreaterThanOrEqual(1);
      expect(await s.alerts.get(old.id)).toBeNull();
      expect(await s.alerts.recipients(old.id)).toEqual([]);
      expect(await s.alerts.get(recent.id)).not.toBeNull();
    });
  });
}
