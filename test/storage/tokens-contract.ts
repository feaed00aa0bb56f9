// TokenStore contract (issue 9 XMPP tokens), through TokenService, run against every backend from
// sqlite.test.ts and postgres.test.ts: issue/verify, only the hash stored (read from the table
// itself), expiry, revocation (one, all), audience binding, listing without secrets, purge, and
// account removal taking the tokens along.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenService, tokenHash } from '../../src/auth/tokens.js';
import type { Storage } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
const user = () => `tk${++seq}-${run}@example.com`;

/** `dump`: every row of xmpp_tokens, read with the backend's own client, as JSON text. */
export function tokensContract(name: string, open: () => Promise<Storage>, dump: () => Promise<string>): void {
  describe(`token store contract: ${name}`, () => {
    let s: Storage;
    let clock = 1_000_000;
    let tokens: TokenService;
    beforeAll(async () => {
      s = await open();
      tokens = new TokenService(s.tokens, { lifetimeSeconds: 300, maxLifetimeSeconds: 3600 }, () => clock);
    });
    afterAll(async () => {
      await s?.close();
    });

    it('issues a token that verifies for its user and audience until it expires', async () => {
      const u = user();
      const t = await tokens.issue(u, 'example.com', { label: 'web' });
      expect(t.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(t.expiresAt).toBe(clock + 300_000);
      expect(await tokens.verify(t.token, 'example.com')).toBe(u);
      // Reusable within its lifetime (reconnects).
      expect(await tokens.verify(t.token, 'example.com')).toBe(u);
      expect(await tokens.verify(t.token, 'other.example')).toBeNull();
      expect(await tokens.verify(`${t.token.slice(0, -1)}${t.token.endsWith('A') ? 'B' : 'A'}`, 'example.com')).toBeNull();
      clock += 299_999;
      expect(await tokens.verify(t.token, 'example.com')).toBe(u);
      clock += 1;
      expect(await tokens.verify(t.token, 'example.com')).toBeNull();
    });

    it('honours a requested lifetime and refuses one over the maximum', async () => {
      const t = await tokens.issue(user(), 'example.com', { lifetimeSeconds: 3600 });
      expect(t.expiresAt).toBe(clock + 3_600_000);
      await expect(tokens.issue(user(), 'example.com', { lifetimeSeconds: 3601 })).rejects.toThrow(/lifetime/);
      await expect(tokens.issue('not a jid', 'example.com')).rejects.toThrow(/invalid user JID/);
    });

    it('stores only the SHA-256 of the token', async () => {
      const t = await tokens.issue(user(), 'example.com');
      const rows = await dump();
      expect(rows).toContain(tokenHash(t.token));
      expect(rows).toContain(t.id);
      expect(rows).not.toContain(t.token);
    });

    it('revokes one token, then all of a user\'s', async () => {
      const u = user();
      const [a, b, c] = [await tokens.issue(u, 'example.com'), await tokens.issue(u, 'example.com'), await tokens.issue(u, 'example.com')];
      const other = await tokens.issue(user(), 'example.com');
      expect(await tokens.revoke(a.id)).toBe(true);
      expect(await tokens.revoke(a.id)).toBe(false); // once
      expect(await tokens.revoke('tok-no-such')).toBe(false);
      expect(await tokens.verify(a.token, 'example.com')).toBeNull();
      expect(await tokens.verify(b.token, 'example.com')).toBe(u);
      expect(await tokens.revokeAll(u)).toBe(2);
      expect(await tokens.verify(b.token, 'example.com')).toBeNull();
      expect(await tokens.verify(c.token, 'example.com')).toBeNull();
      expect(await tokens.verify(other.token, 'example.com')).not.toBeNull();
    });

    it('tells which of a set of token ids are revoked', async () => {
      const u = user();
      const [a, b, c] = [await tokens.issue(u, 'example.com'), await tokens.issue(u, 'example.com'), await tokens.issue(u, 'example.com')];
      expect(await tokens.revokedAmong([a.id, b.id, c.id, 'tok-unknown'])).toEqual([]);
      await tokens.revoke(b.id);
      expect(await tokens.revokedAmong([a.id, b.id, c.id, 'tok-unknown'])).toEqual([b.id]);
      expect(await tokens.revokedAmong([])).toEqual([]);
      // Many ids at once (the server asks for every token-authenticated session).
      const many = Array.from({ length: 1200 }, (_, i) => `tok-none-${i}`);
      expect(await tokens.revokedAmong([...many, b.id])).toEqual([b.id]);
    });

    it('lists a user\'s tokens newest first, without secrets', async () => {
      const u = user();
      const old = await tokens.issue(u, 'example.com', { label: 'first', issuer: 'cli' });
      clock += 1000;
      const fresh = await tokens.issue(u, 'example.com');
      await tokens.revoke(old.id);
      const list = await tokens.list(u);
      expect(list.map((t) => t.id)).toEqual([fresh.id, old.id]);
      expect(list[1]).toEqual({ id: old.id, user: u, audience: 'example.com', label: 'first', issuer: 'cli', createdAt: clock - 1000, expiresAt: old.expiresAt, revokedAt: clock });
      expect(JSON.stringify(list)).not.toContain(fresh.token);
      expect(JSON.stringify(list)).not.toContain(tokenHash(fresh.token));
      expect(await tokens.list(user())).toEqual([]);
    });

    it('purges expired tokens only', async () => {
      const u = user();
      const short = await tokens.issue(u, 'example.com', { lifetimeSeconds: 10 });
      const long = await tokens.issue(u, 'example.com', { lifetimeSeconds: 1000 });
      expect(await tokens.purge(clock + 10_000)).toBeGreaterThanOrEqual(1);
      expect((await tokens.list(u)).map((t) => t.id)).toEqual([long.id]);
      expect(short.id).not.toBe(long.id);
    });

    it('account removal deletes the user\'s tokens', async () => {
      const u = user();
      await s.accounts.create({ jid: u, username: u.split('@')[0] as string, host: 'example.com', scram: {}, createdAt: 0 });
      const t = await tokens.issue(u, 'example.com');
      const keep = await tokens.issue(user(), 'example.com');
      expect(await s.accounts.remove(u)).toBe(true);
      expect(await tokens.list(u)).toEqual([]);
      expect(await tokens.verify(t.token, 'example.com')).toBeNull();
      expect(await tokens.verify(keep.token, 'example.com')).not.toBeNull();
    });
  });
}
