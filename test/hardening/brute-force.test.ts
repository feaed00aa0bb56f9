// HARDENING.md "Authentication": password brute force meets per-account and per-address
// temporary bans (with growing response delays); other sessions are unaffected; bans expire.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, assertServing, sleep } from '../helpers/raw.js';

const BAN_SECONDS = 2;

/** One SASL PLAIN attempt on a fresh secure stream; returns the SASL outcome ('success' or the failure condition). */
async function attempt(port: number, user: string, password: string): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    await c.openStream();
    await c.startTls();
    await c.openStream();
    const ok = await c.authPlain(user, password, '', 10_000);
    return ok ? 'success' : (RawClient.saslCondition(c.lastFailure) ?? 'unknown');
  } finally {
    c.destroy();
  }
}

describe('hardening: brute force, per account', () => {
  let srv: TestServer;
  let port: number;
  let carol: RawClient;
  let dave: RawClient;

  beforeAll(async () => {
    srv = await startTestServer({ auth: { maxFailuresPerAccount: 2, maxFailuresPerAddress: 100, banSeconds: BAN_SECONDS } });
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'carol', 'dave']) await srv.addUser(u);
    carol = await RawClient.login(port, 'carol', 'secret-password', { resource: 'canary', presence: true });
    dave = await RawClient.login(port, 'dave', 'secret-password', { resource: 'canary', presence: true });
  });
  afterAll(async () => {
    carol?.destroy();
    dave?.destroy();
    await srv?.close();
  });

  it('after 2 failures the account is banned even for the right password; other accounts are not; the ban expires', async () => {
    expect(await attempt(port, 'alice', 'wrong-1')).toBe('not-authorized');
    expect(await attempt(port, 'alice', 'wrong-2')).toBe('not-authorized');
    const bannedAt = Date.now();
    // The right password no longer helps while the ban lasts.
    expect(await attempt(port, 'alice', 'secret-password')).toBe('temporary-auth-failure');
    // Case variants of the name reach the same account and the same ban.
    expect(await attempt(port, 'ALICE', 'secret-password')).toBe('temporary-auth-failure');
    // The ban is per account: another account logs in from the same address.
    expect(await attempt(port, 'bob', 'secret-password')).toBe('success');
    // Sessions that were already logged in keep working.
    await assertServing(carol, dave);
    // After the ban the right password works again.
    await sleep(Math.max(0, bannedAt + BAN_SECONDS * 1000 + 200 - Date.now()));
    const alice = await RawClient.login(port, 'alice', 'secret-password');
    await alice.ping();
    alice.destroy();
    await assertServing(dave, carol);
  });
});

describe('hardening: brute force, per address', () => {
  let srv: TestServer;
  let port: number;
  let carol: RawClient;
  let dave: RawClient;

  beforeAll(async () => {
    srv = await startTestServer({ auth: { maxFailuresPerAccount: 100, maxFailuresPerAddress: 3, banSeconds: BAN_SECONDS } });
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'carol', 'dave']) await srv.addUser(u);
    carol = await RawClient.login(port, 'carol', 'secret-password', { resource: 'canary', presence: true });
    dave = await RawClient.login(port, 'dave', 'secret-password', { resource: 'canary', presence: true });
  });
  afterAll(async () => {
    carol?.destroy();
    dave?.destroy();
    await srv?.close();
  });

  it('after 3 failures from one address (spread over accounts) every attempt from it is refused until the ban expires', async () => {
    // Guessing across accounts, including one that does not exist.
    expect(await attempt(port, 'alice', 'guess-1')).toBe('not-authorized');
    expect(await attempt(port, 'nobody', 'guess-2')).toBe('not-authorized');
    const t0 = Date.now();
    expect(await attempt(port, 'bob', 'guess-3')).toBe('not-authorized');
    // The third failure was answered only after a delay (the throttle slows guessing down).
    expect(Date.now() - t0).toBeGreaterThanOrEqual(200);
    const bannedAt = Date.now();
    // Now even a correct password for an untouched account is refused from this address.
    expect(await attempt(port, 'dave', 'secret-password')).toBe('temporary-auth-failure');
    expect(await attempt(port, 'alice', 'secret-password')).toBe('temporary-auth-failure');
    // Existing sessions are unaffected.
    await assertServing(carol, dave);
    await sleep(Math.max(0, bannedAt + BAN_SECONDS * 1000 + 200 - Date.now()));
    expect(await attempt(port, 'alice', 'secret-password')).toBe('success');
    await assertServing(dave, carol);
  });

  it('one stream may not keep guessing: the 5th failure on a stream ends it', async () => {
    const c = await RawClient.connect(port);
    await c.openStream();
    await c.startTls();
    await c.openStream();
    // Invalid base64 (refused before any password check) still counts against the stream.
    for (let i = 0; i < 5 && !c.isClosed; i++) await c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    expect(c.text).not.toContain('<success');
  });
});
