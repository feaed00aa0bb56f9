// UploadStore contract (XEP-0363 upload metadata), run against every backend from sqlite.test.ts
// and postgres.test.ts: reserve within and over the quota, pending slots counting until their
// deadline, completion (once, and never after the deadline), usage, removal and expiry listing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Storage, UploadRecord } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
const uniqUser = () => `up${++seq}-${run}@example.com`;
const uniqSlot = () => `slot-${run}-${++seq}`;

function rec(owner: string, size: number, now: number, extra: Partial<UploadRecord> = {}): UploadRecord {
  return { slot: uniqSlot(), owner, name: 'photo.jpg', size, contentType: 'image/jpeg', createdAt: now, expiresAt: now + 300_000, uploadedAt: null, ...extra };
}

export function uploadContract(name: string, open: () => Promise<Storage>): void {
  describe(`upload store contract: ${name}`, () => {
    let s: Storage;
    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close();
    });

    it('reserves a slot and reads it back', async () => {
      const owner = uniqUser();
      const r = rec(owner, 1234, 1_000_000, { name: 'très cool.jpg' });
      expect(await s.uploads.reserve(r, 0)).toBe(true);
      expect(await s.uploads.get(r.slot)).toEqual(r);
      expect(await s.uploads.get('no-such-slot')).toBeNull();
    });

    it('refuses a slot that would exceed the quota; 0 means no quota', async () => {
      const owner = uniqUser();
      const now = 2_000_000;
      expect(await s.uploads.reserve(rec(owner, 600, now), 1000)).toBe(true);
      expect(await s.uploads.reserve(rec(owner, 400, now), 1000)).toBe(true); // exactly at the quota
      const over = rec(owner, 1, now);
      expect(await s.uploads.reserve(over, 1000)).toBe(false);
      expect(await s.uploads.get(over.slot)).toBeNull();
      expect(await s.uploads.usage(owner, now)).toEqual({ files: 2, bytes: 1000 });
      // Another owner has its own quota.
      expect(await s.uploads.reserve(rec(uniqUser(), 1000, now), 1000)).toBe(true);
      expect(await s.uploads.reserve(rec(owner, 5000, now), 0)).toBe(true);
    });

    it('refuses a slot beyond maxFiles live uploads', async () => {
      const owner = uniqUser();
      const now = 2_500_000;
      expect(await s.uploads.reserve(rec(owner, 0, now), 0, 2)).toBe(true);
      expect(await s.uploads.reserve(rec(owner, 0, now), 0, 2)).toBe(true);
      expect(await s.uploads.reserve(rec(owner, 0, now), 0, 2)).toBe(false);
      expect(await s.uploads.reserve(rec(owner, 0, now), 0, 0)).toBe(true);
      // Once the pending ones lapsed, there is room again.
      expect(await s.uploads.reserve(rec(owner, 0, now + 300_000), 0, 2)).toBe(true);
    });

    it('concurrent reservations do not exceed the quota together', async () => {
      const owner = uniqUser();
      const results = await Promise.all(Array.from({ length: 10 }, () => s.uploads.reserve(rec(owner, 100, 3_000_000), 450)));
      expect(results.filter(Boolean)).toHaveLength(4);
      expect((await s.uploads.usage(owner, 3_000_000)).bytes).toBe(400);
    });

    it('a pending slot stops counting once its deadline passed; an uploaded file keeps counting', async () => {
      const owner = uniqUser();
      const now = 4_000_000;
      const pending = rec(owner, 700, now, { expiresAt: now + 1000 });
      const done = rec(owner, 200, now, { expiresAt: now + 1000 });
      await s.uploads.reserve(pending, 0);
      await s.uploads.reserve(done, 0);
      expect(await s.uploads.complete(done.slot, now + 10, null)).toBe(true);
      expect(await s.uploads.usage(owner, now + 500)).toEqual({ files: 2, bytes: 900 });
      expect(await s.uploads.usage(owner, now + 1000)).toEqual({ files: 1, bytes: 200 });
      // The expired pending slot no longer blocks a new reservation.
      expect(await s.uploads.reserve(rec(owner, 800, now + 2000), 1000)).toBe(true);
    });

    it('completes a pending slot once, with its new expiry, and never after the deadline', async () => {
      const owner = uniqUser();
      const now = 5_000_000;
      const r = rec(owner, 10, now, { expiresAt: now + 1000 });
      await s.uploads.reserve(r, 0);
      expect(await s.uploads.complete(r.slot, now + 999, now + 86_400_000)).toBe(true);
      expect(await s.uploads.get(r.slot)).toEqual({ ...r, uploadedAt: now + 999, expiresAt: now + 86_400_000 });
      expect(await s.uploads.complete(r.slot, now + 999, null)).toBe(false); // second PUT
      const late = rec(owner, 10, now, { expiresAt: now + 1000 });
      await s.uploads.reserve(late, 0);
      expect(await s.uploads.complete(late.slot, now + 1000, null)).toBe(false);
      expect((await s.uploads.get(late.slot))?.uploadedAt).toBeNull();
      expect(await s.uploads.complete('no-such-slot', now, null)).toBe(false);
    });

    it('keeps sizes beyond 2^31 (bigint columns)', async () => {
      const r = rec(uniqUser(), 5 * 2 ** 30, 6_000_000);
      await s.uploads.reserve(r, 0);
      expect((await s.uploads.get(r.slot))?.size).toBe(5 * 2 ** 30);
      expect((await s.uploads.usage(r.owner, 6_000_000)).bytes).toBe(5 * 2 ** 30);
    });

    it('lists expired uploads earliest first, with a limit, and removes them', async () => {
      const owner = uniqUser();
      // Far in the future so that rows of other tests (and other runs on a shared database) sort first
      // and are excluded by the lower bound below.
      const base = 9e14 + seq * 1e6;
      const a = rec(owner, 1, base, { expiresAt: base + 30 });
      const b = rec(owner, 1, base, { expiresAt: base + 10 });
      const c = rec(owner, 1, base, { expiresAt: base + 20 });
      const kept = rec(owner, 1, base, { expiresAt: base + 500 });
      for (const r of [a, b, c, kept]) await s.uploads.reserve(r, 0);
      await s.uploads.complete(kept.slot, base + 1, null); // kept forever
      const mine = (list: UploadRecord[]) => list.filter((r) => r.owner === owner).map((r) => r.slot);
      expect(mine(await s.uploads.expired(base + 100, 10_000))).toEqual([b.slot, c.slot, a.slot]);
      expect(mine(await s.uploads.expired(base + 1e6, 10_000))).toEqual([b.slot, c.slot, a.slot]);
      const limited = await s.uploads.expired(base + 100, 1);
      expect(limited).toHaveLength(1);
      expect(await s.uploads.remove(b.slot)).toBe(true);
      expect(await s.uploads.remove(b.slot)).toBe(false);
      expect(mine(await s.uploads.expired(base + 100, 10_000))).toEqual([c.slot, a.slot]);
      expect(await s.uploads.usage(owner, base + 100)).toEqual({ files: 1, bytes: 1 });
    });
  });
}
