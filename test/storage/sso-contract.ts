// SSO stores contract (issue 9), run against every backend from sqlite.test.ts and postgres.test.ts:
// the shared cache (add refuses a live key, take is single use, expiry), browser sessions (by hash,
// touch, token ids, removal one by one or by IdP subject and session index, purge) and identity
// bindings (one subject per account and issuer; groups; account removal takes both along).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Storage, WebSessionRecord } from '../../src/storage/types.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);
const next = (p: string) => `${p}${++seq}-${run}`;

export function ssoContract(name: string, open: () => Promise<Storage>): void {
  describe(`sso store contract: ${name}`, () => {
    let s: Storage;
    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close();
    });

    it('cache: add refuses a live key, take consumes once, expired entries are absent', async () => {
      const k = next('oidc:');
      expect(await s.ssoCache.add(k, 'v1', 60_000)).toBe(true);
      expect(await s.ssoCache.add(k, 'v2', 60_000)).toBe(false);
      expect(await s.ssoCache.get(k)).toBe('v1');
      const both = await Promise.all([s.ssoCache.take(k), s.ssoCache.take(k)]);
      expect(both.filter((v) => v === 'v1')).toHaveLength(1);
      expect(both.filter((v) => v === null)).toHaveLength(1);
      expect(await s.ssoCache.get(k)).toBeNull();

      const old = next('saml-seen:');
      expect(await s.ssoCache.add(old, 'x', -1)).toBe(true); // already expired
      expect(await s.ssoCache.get(old)).toBeNull();
      expect(await s.ssoCache.take(old)).toBeNull();
      expect(await s.ssoCache.add(old, 'y', 60_000)).toBe(true); // an expired entry does not block
      expect(await s.ssoCache.get(old)).toBe('y');
      await s.ssoCache.delete(old);
      expect(await s.ssoCache.get(old)).toBeNull();
      const gone = next('gone:');
      await s.ssoCache.add(gone, 'z', -1);
      expect(await s.ssoCache.purge(Date.now())).toBeGreaterThanOrEqual(1);
    });

    const session = (user: string, o: Partial<WebSessionRecord> = {}): WebSessionRecord => ({
      id: next('ws-'),
      user,
      host: 'example.com',
      provider: 'corp',
      subject: `sub-${user}`,
      csrf: next('csrf'),
      logout: { idToken: 'a.b.c' },
      sessionIndex: null,
      tokens: [],
      createdAt: 1000,
      lastSeenAt: 1000,
      expiresAt: 10_000,
      ...o,
    });

    it('web sessions: insert, look up by hash, touch, collect token ids, remove once', async () => {
      const u = `${next('u')}@example.com`;
      const rec = session(u);
      const hash = next('h');
      await s.webSessions.insert(rec, hash);
      expect(await s.webSessions.byHash(hash)).toEqual(rec);
      expect(await s.webSessions.byHash(next('nope'))).toBeNull();
      expect(await s.webSessions.touch(hash, 2000)).toBe(true);
      await Promise.all([s.webSessions.addToken(hash, 'tok-1'), s.webSessions.addToken(hash, 'tok-2')]);
      const got = await s.webSessions.byHash(hash);
      expect(got?.lastSeenAt).toBe(2000);
      expect([...(got?.tokens ?? [])].sort()).toEqual(['tok-1', 'tok-2']);
      expect((await s.webSessions.list(u)).map((x) => x.id)).toEqual([rec.id]);
      expect((await s.webSessions.remove(hash))?.id).toBe(rec.id);
      expect(await s.webSessions.remove(hash)).toBeNull();
      expect(await s.webSessions.touch(hash, 3000)).toBe(false);
    });

    it('web sessions: removal by IdP subject (and SAML session index) and purge by expiry or idleness', async () => {
      const u = `${next('u')}@example.com`;
      const [h1, h2, h3] = [next('h'), next('h'), next('h')];
      await s.webSessions.insert(session(u, { sessionIndex: 'idx-1' }), h1);
      await s.webSessions.insert(session(u, { sessionIndex: 'idx-2' }), h2);
      await s.webSessions.insert(session(u, { provider: 'other' }), h3);
      const one = await s.webSessions.removeBySubject('corp', `sub-${u}`, 'idx-1');
      expect(one.map((r) => r.sessionIndex)).toEqual(['idx-1']);
      expect(await s.webSessions.byHash(h2)).not.toBeNull();
      const rest = await s.webSessions.removeBySubject('corp', `sub-${u}`);
      expect(rest.map((r) => r.sessionIndex)).toEqual(['idx-2']);
      expect(await s.webSessions.byHash(h3)).not.toBeNull(); // another provider's session stays
      expect((await s.webSessions.removeByUser(u)).map((r) => r.provider)).toEqual(['other']);
      expect(await s.webSessions.byHash(h3)).toBeNull();

      const [e, i, live] = [next('h'), next('h'), next('h')];
      await s.webSessions.insert(session(u, { expiresAt: 5_000 }), e);
      await s.webSessions.insert(session(u, { lastSeenAt: 1_000, expiresAt: 1e12 }), i);
      await s.webSessions.insert(session(u, { lastSeenAt: 9_000, expiresAt: 1e12 }), live);
      const purged = await s.webSessions.purge(6_000, 2_000);
      expect(purged.filter((r) => r.user === u)).toHaveLength(2);
      expect(await s.webSessions.byHash(e)).toBeNull();
      expect(await s.webSessions.byHash(i)).toBeNull();
      expect(await s.webSessions.byHash(live)).not.toBeNull();
    });

    it('identities: bound once per account and issuer, updated on later sign-ins, removed with the account', async () => {
      const local = next('u');
      const u = `${local}@example.com`;
      const rec = { host: 'example.com', issuer: 'https://idp.example', subject: next('sub'), user: u, provider: 'corp', displayName: 'Alice', groups: ['staff'], createdAt: 1, lastLoginAt: 1 };
      expect(await s.ssoIdentities.bind(rec)).toBe(true);
      expect(await s.ssoIdentities.get('example.com', rec.issuer, rec.subject)).toEqual(rec);
      // A later sign-in updates name, groups and time, not the account.
      expect(await s.ssoIdentities.bind({ ...rec, displayName: 'Alice B', groups: [], lastLoginAt: 5 })).toBe(true);
      expect(await s.ssoIdentities.get('example.com', rec.issuer, rec.subject)).toMatchObject({ displayName: 'Alice B', groups: [], lastLoginAt: 5, createdAt: 1 });
      // The same identity cannot be rebound to another account...
      expect(await s.ssoIdentities.bind({ ...rec, user: `${next('v')}@example.com` })).toBe(false);
      expect((await s.ssoIdentities.get('example.com', rec.issuer, rec.subject))?.user).toBe(u);
      // ...and the account cannot take a second subject of the same issuer; another issuer may bind it.
      expect(await s.ssoIdentities.bind({ ...rec, subject: next('sub') })).toBe(false);
      expect(await s.ssoIdentities.bind({ ...rec, issuer: 'https://saml.example', subject: 'x', groups: ['ops'] })).toBe(true);
      expect((await s.ssoIdentities.byUser(u)).map((r) => r.issuer).sort()).toEqual(['https://idp.example', 'https://saml.example']);
      expect((await s.ssoIdentities.withGroups()).some((r) => r.user === u && r.groups[0] === 'ops')).toBe(true);

      await s.accounts.create({ jid: u, username: local, host: 'example.com', scram: {}, createdAt: 1 });
      await s.webSessions.insert(session(u), next('h'));
      expect(await s.accounts.remove(u)).toBe(true);
      expect(await s.ssoIdentities.byUser(u)).toEqual([]);
      expect(await s.webSessions.list(u)).toEqual([]);
      expect(await s.ssoIdentities.remove('example.com', rec.issuer, rec.subject)).toBe(false);
    });
  });
}
