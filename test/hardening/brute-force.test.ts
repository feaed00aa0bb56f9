// HARDENING.md "Authentication", issue 15 §2: password guessing meets bans per (account, address)
// pair and per address (at a bot's rate), never per account, so nobody can lock a colleague out;
// a banned client gets <temporary-auth-failure/> with a text; only wrong credentials count (a
// failed channel-binding negotiation does not); trusted networks have their own quota; a guessing
// bot is slowed down while the office's other users keep logging in. Other sessions are unaffected.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, assertServing, sleep } from '../helpers/raw.js';
import { RawXmppClient } from '../helpers/scram-client.js';

const BAN_SECONDS = 2;
const PASSWORD = 'secret-password';

interface Outcome {
  result: string; // 'success' or the SASL failure condition
  text: string;
}

/** One SASL PLAIN attempt on a fresh secure stream from `from` (a loopback address). */
async function attempt(port: number, user: string, password: string, from = '127.0.0.1'): Promise<Outcome> {
  const c = await RawClient.connect(port, { localAddress: from });
  try {
    await c.openStream();
    await c.startTls();
    await c.openStream();
    const ok = await c.authPlain(user, password, '', 15_000);
    if (ok) return { result: 'success', text: '' };
    return { result: RawClient.saslCondition(c.lastFailure) ?? 'unknown', text: /<text[^>]*>([^<]*)<\/text>/.exec(c.lastFailure)?.[1] ?? '' };
  } finally {
    c.destroy();
  }
}

describe('hardening: brute force, per (account, address) pair', () => {
  let srv: TestServer;
  let port: number;
  let carol: RawClient;
  let dave: RawClient;

  beforeAll(async () => {
    srv = await startTestServer({ auth: { maxFailuresPerPair: 2, maxFailuresPerAddress: 100, banSeconds: BAN_SECONDS } });
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'carol', 'dave']) await srv.addUser(u);
    carol = await RawClient.login(port, 'carol', PASSWORD, { resource: 'canary', presence: true });
    dave = await RawClient.login(port, 'dave', PASSWORD, { resource: 'canary', presence: true });
  });
  afterAll(async () => {
    carol?.destroy();
    dave?.destroy();
    await srv?.close();
  });

  it('two wrong passwords ban that pair only: the owner logs in from another address, others from this one; the ban expires', async () => {
    expect((await attempt(port, 'alice', 'wrong-1', '127.0.0.2')).result).toBe('not-authorized');
    expect((await attempt(port, 'alice', 'wrong-2', '127.0.0.2')).result).toBe('not-authorized');
    const bannedAt = Date.now();
    // From that address the right password no longer helps while the ban lasts, and says why.
    const refused = await attempt(port, 'alice', PASSWORD, '127.0.0.2');
    expect(refused.result).toBe('temporary-auth-failure');
    expect(refused.text).toMatch(/too many failed logins for this account from your address; try again in \d+ minute/);
    // Case variants of the name reach the same account and the same pair.
    expect((await attempt(port, 'ALICE', PASSWORD, '127.0.0.2')).result).toBe('temporary-auth-failure');
    // The stranger did not lock alice out: from her own address she logs in.
    expect((await attempt(port, 'alice', PASSWORD, '127.0.0.3')).result).toBe('success');
    // Other accounts log in from the banned pair's address.
    expect((await attempt(port, 'bob', PASSWORD, '127.0.0.2')).result).toBe('success');
    await assertServing(carol, dave);
    // After the ban the right password works from there again.
    await sleep(Math.max(0, bannedAt + BAN_SECONDS * 1000 + 200 - Date.now()));
    expect((await attempt(port, 'alice', PASSWORD, '127.0.0.2')).result).toBe('success');
    await assertServing(dave, carol);
  });

  it('a successful login clears its pair’s count', async () => {
    expect((await attempt(port, 'bob', 'typo', '127.0.0.4')).result).toBe('not-authorized');
    expect((await attempt(port, 'bob', PASSWORD, '127.0.0.4')).result).toBe('success');
    // One more typo would have banned the pair (limit 2) had the success not cleared it.
    expect((await attempt(port, 'bob', 'typo', '127.0.0.4')).result).toBe('not-authorized');
    expect((await attempt(port, 'bob', PASSWORD, '127.0.0.4')).result).toBe('success');
  });
});

describe('hardening: brute force, per address', () => {
  let srv: TestServer;
  let port: number;
  let carol: RawClient;
  let dave: RawClient;

  beforeAll(async () => {
    srv = await startTestServer({
      auth: { maxFailuresPerPair: 100, maxFailuresPerAddress: 3, trustedMaxFailuresPerAddress: 100, banSeconds: BAN_SECONDS },
      limits: { trustedNetworks: ['127.0.0.9/32'] },
    });
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'carol', 'dave']) await srv.addUser(u);
    carol = await RawClient.login(port, 'carol', PASSWORD, { resource: 'canary', presence: true });
    dave = await RawClient.login(port, 'dave', PASSWORD, { resource: 'canary', presence: true });
  });
  afterAll(async () => {
    carol?.destroy();
    dave?.destroy();
    await srv?.close();
  });

  it('after 3 failures from one address (spread over accounts) every attempt from it is refused with a reason until the ban expires', async () => {
    // Guessing across accounts, including one that does not exist.
    expect((await attempt(port, 'alice', 'guess-1', '127.0.0.2')).result).toBe('not-authorized');
    expect((await attempt(port, 'nobody', 'guess-2', '127.0.0.2')).result).toBe('not-authorized');
    expect((await attempt(port, 'bob', 'guess-3', '127.0.0.2')).result).toBe('not-authorized');
    const bannedAt = Date.now();
    // Now even a correct password for an untouched account is refused from this address, with a text.
    const refused = await attempt(port, 'dave', PASSWORD, '127.0.0.2');
    expect(refused.result).toBe('temporary-auth-failure');
    expect(refused.text).toMatch(/too many failed logins from your address; try again in \d+ minute/);
    // Other addresses are not affected.
    expect((await attempt(port, 'alice', PASSWORD, '127.0.0.3')).result).toBe('success');
    await assertServing(carol, dave);
    await sleep(Math.max(0, bannedAt + BAN_SECONDS * 1000 + 200 - Date.now()));
    expect((await attempt(port, 'alice', PASSWORD, '127.0.0.2')).result).toBe('success');
    await assertServing(dave, carol);
  });

  it('an address in limits.trustedNetworks has its own, larger quota (an office’s typos do not ban it)', async () => {
    for (let i = 0; i < 6; i++) expect((await attempt(port, i % 2 ? 'alice' : 'bob', `typo-${i}`, '127.0.0.9')).result).toBe('not-authorized');
    expect((await attempt(port, 'alice', PASSWORD, '127.0.0.9')).result).toBe('success');
  });

  it('one stream may not keep guessing: the 5th failure on a stream ends it', async () => {
    const c = await RawClient.connect(port, { localAddress: '127.0.0.5' });
    await c.openStream();
    await c.startTls();
    await c.openStream();
    // Invalid base64 (refused before any password check) still counts against the stream.
    for (let i = 0; i < 5 && !c.isClosed; i++) await c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    expect(c.text).not.toContain('<success');
  });
});

describe('hardening: only wrong credentials count', () => {
  let srv: TestServer;
  let port: number;

  beforeAll(async () => {
    // The smallest limits: a single counted failure bans both the pair and the address.
    srv = await startTestServer({ auth: { maxFailuresPerPair: 1, maxFailuresPerAddress: 1, banSeconds: 600 } });
    port = srv.ports.c2s as number;
    await srv.addUser('erin');
  });
  afterAll(async () => {
    await srv?.close();
  });

  it('failed -PLUS negotiations, a stripped-PLUS downgrade and malformed messages do not ban; then a wrong password does', async () => {
    const raws: RawXmppClient[] = [];
    try {
      const raw = async () => {
        const c = await RawXmppClient.connect({ port });
        raws.push(c);
        return c;
      };
      // Channel-binding data that does not match (a TLS-intercepting proxy, a client bug).
      const c1 = await raw();
      const mismatch = await c1.scram({ mechanism: 'SCRAM-SHA-256-PLUS', username: 'erin', password: PASSWORD, cbType: 'tls-unique', cbDataOverride: Buffer.alloc(12, 1) });
      expect(mismatch).toMatchObject({ ok: false, condition: 'not-authorized', text: 'channel-bindings-dont-match' });
      // A binding type the server does not know.
      c1.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>${Buffer.from('p=tls-future,,n=erin,r=abcdefgh').toString('base64')}</auth>`);
      const unknown = await c1.next((el) => el.name === 'failure');
      expect(unknown.getChild('not-authorized')).toBeDefined();
      expect(unknown.getChildText('text')).toBe('unsupported-channel-binding-type');
      // "y" while -PLUS is offered (RFC 5802 §6 downgrade detection).
      const c2 = await raw();
      const downgrade = await c2.scram({ mechanism: 'SCRAM-SHA-256', username: 'erin', password: PASSWORD, gs2Flag: 'y' });
      expect(downgrade).toMatchObject({ ok: false, condition: 'not-authorized', text: 'server-does-support-channel-binding' });
      // ... and the same client then logs in with the right password on the same stream: nothing was counted.
      expect(await c2.scram({ mechanism: 'SCRAM-SHA-256-PLUS', username: 'erin', password: PASSWORD, cbType: 'tls-unique' })).toMatchObject({ ok: true });
      // Now one wrong password: counted, so the pair and the address are banned (limits of 1).
      const c3 = await raw();
      expect(await c3.scram({ mechanism: 'SCRAM-SHA-256-PLUS', username: 'erin', password: 'wrong', cbType: 'tls-exporter' })).toMatchObject({ ok: false, condition: 'not-authorized' });
      const c4 = await raw();
      expect(await c4.scram({ mechanism: 'SCRAM-SHA-256-PLUS', username: 'erin', password: PASSWORD, cbType: 'tls-exporter' })).toMatchObject({ ok: false, condition: 'temporary-auth-failure' });
    } finally {
      for (const c of raws) c.destroy();
    }
  });
});

describe('hardening: a guessing bot is slowed while the office keeps logging in', () => {
  let srv: TestServer;
  let port: number;
  const USERS = 20;

  beforeAll(async () => {
    // Default throttle limits.
    srv = await startTestServer();
    port = srv.ports.c2s as number;
    for (let i = 0; i < USERS; i++) await srv.addUser(`staff${i}`);
  });
  afterAll(async () => {
    await srv?.close();
  });

  it('the bot’s answers come after a growing delay; staff from another address (and the bot’s victim) log in meanwhile', async () => {
    const BOT = '127.0.0.66';
    const OFFICE = '127.0.0.77';
    // The bot: 20 wrong guesses at once over many accounts (the first 10 are answered at once).
    const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => attempt(port, `staff${i % USERS}`, `guess-${i}`, BOT)));
    expect(burst.every((o) => o.result === 'not-authorized')).toBe(true);
    // Its next guess is held back (4 s after 20 failures) ...
    const events: string[] = [];
    const guess = attempt(port, 'staff0', 'guess-next', BOT).then((o) => {
      events.push(`bot:${o.result}`);
    });
    // ... while every staff member logs in from the office, the bot's victim included.
    const logins = await Promise.all(Array.from({ length: USERS }, (_, i) => attempt(port, `staff${i}`, PASSWORD, OFFICE)));
    events.push('office:done');
    expect(logins.map((o) => o.result)).toEqual(Array(USERS).fill('success'));
    await guess;
    // The bot's answer came last: the office's twenty logins, started after the bot's guess, were not slowed.
    expect(events).toEqual(['office:done', 'bot:not-authorized']);
  });
});
