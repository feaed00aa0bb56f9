// HARDENING.md "Connections and rates", issue 15 §2: per-address caps on unauthenticated and total
// connections. A full unauthenticated quota closes the address's least advanced (then oldest)
// unauthenticated connection to admit the newcomer, so a stalled client cannot keep others out;
// over the total the newcomer gets a stream error with a reason, never a silent close; logged-in
// sessions never count against the unauthenticated quota; connect storms are absorbed.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, assertServing, waitUntil } from '../helpers/raw.js';

const PRE_AUTH = 5;
const TOTAL = 10;

describe('hardening: per-address connection caps', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;
  const extra: RawClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ limits: { preAuthPerAddress: PRE_AUTH, connectionsPerAddress: TOTAL } });
    port = srv.ports.c2s as number;
    for (const u of ['alice', 'bob', 'mallory']) await srv.addUser(u);
    alice = await RawClient.login(port, 'alice', 'secret-password', { resource: 'canary', presence: true });
    bob = await RawClient.login(port, 'bob', 'secret-password', { resource: 'canary', presence: true });
  });
  afterAll(async () => {
    alice?.destroy();
    bob?.destroy();
    await srv?.close();
  });
  afterEach(async () => {
    for (const c of extra.splice(0)) c.destroy();
    await waitUntil(() => srv.server.connectionCount === 2, 5000, 'attack connections gone');
    await assertServing(alice, bob);
  });

  /** Connects and opens a stream; accepted when the server answers with its features. */
  async function tryConnect(): Promise<{ accepted: boolean; client: RawClient | null }> {
    let c: RawClient;
    try {
      c = await RawClient.connect(port);
    } catch {
      return { accepted: false, client: null }; // reset before the connect completed
    }
    extra.push(c);
    const since = c.mark();
    await c.send("<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    try {
      await c.waitFor(/<\/stream:features>/, 3000, since);
      return { accepted: true, client: c };
    } catch {
      return { accepted: false, client: c };
    }
  }

  /** A connection refused over the total: the server sends a stream error with a text and closes. */
  async function expectRefusedWithReason(): Promise<void> {
    const c = await RawClient.connect(port);
    extra.push(c);
    expect(await c.expectStreamErrorAndClose(3000)).toBe('policy-violation');
    expect(c.text).toMatch(/too many connections from your address/);
  }

  it(`a full unauthenticated quota closes the least advanced, then oldest, one to admit the newcomer`, async () => {
    // The oldest connection has progressed (stream, TLS): it must survive.
    const advanced = await RawClient.connect(port);
    extra.push(advanced);
    await advanced.openStream();
    await advanced.startTls();
    // The rest stall without a byte (a slowloris).
    const stalled: RawClient[] = [];
    for (let i = 0; i < PRE_AUTH - 1; i++) {
      const c = await RawClient.connect(port);
      extra.push(c);
      stalled.push(c);
    }
    await waitUntil(() => srv.server.connectionCount === 2 + PRE_AUTH, 3000, 'pre-auth connections registered');
    // A newcomer is admitted; the oldest stalled one is closed with a reason.
    const first = await tryConnect();
    expect(first.accepted).toBe(true);
    expect(await stalled[0]!.expectStreamErrorAndClose(3000)).toBe('policy-violation');
    expect(stalled[0]!.text).toMatch(/too many unauthenticated connections from your address/);
    // Another newcomer: the next oldest stalled one goes, not the first newcomer (it has a stream open).
    expect((await tryConnect()).accepted).toBe(true);
    expect(await stalled[1]!.expectStreamErrorAndClose(3000)).toBe('policy-violation');
    expect(first.client!.isClosed).toBe(false);
    // The advanced connection was never the victim: it logs in.
    await advanced.openStream();
    expect(await advanced.authPlain('mallory', 'secret-password')).toBe(true);
    expect(srv.server.connectionCount).toBe(2 + PRE_AUTH);
  });

  it('logged-in sessions leave the unauthenticated count but stay in the total, where newcomers get a stream error', async () => {
    // 2 canaries + 8 logged-in sessions = TOTAL; no unauthenticated connection is open.
    const sessions: RawClient[] = [];
    for (let i = 0; i < TOTAL - 2; i++) {
      const c = await RawClient.login(port, 'mallory', 'secret-password', { resource: `r${i}` });
      extra.push(c);
      sessions.push(c);
    }
    await waitUntil(() => srv.server.connectionCount === TOTAL, 3000, 'all sessions registered');
    await expectRefusedWithReason();
    // Every existing session still works.
    for (const c of sessions) await c.ping();
    // One logs out: a new connection is accepted again.
    (sessions.pop() as RawClient).end();
    await waitUntil(() => srv.server.connectionCount === TOTAL - 1, 3000, 'logout released');
    expect((await tryConnect()).accepted).toBe(true);
  });

  it('a connect storm: at most the unauthenticated quota stays open, a user logs in right after, the server keeps serving', async () => {
    const results = await Promise.all(Array.from({ length: 60 }, () => tryConnect()));
    expect(results.filter((r) => r.accepted).length).toBeGreaterThanOrEqual(PRE_AUTH);
    await waitUntil(() => srv.server.connectionCount <= 2 + PRE_AUTH, 3000, 'excess connections closed');
    const user = await RawClient.login(port, 'mallory', 'secret-password', { resource: 'after-storm' });
    extra.push(user);
    await user.ping();
  });
});
