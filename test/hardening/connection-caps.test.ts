// HARDENING.md "Connections and rates": per-address caps on pre-auth and total connections; the
// excess is refused at once while existing connections keep working; connect storms are absorbed.
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

  /** Connects; resolves true when the server accepted (answers a stream header), false when it refused (closed at once, silently). */
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

  async function expectRefused(): Promise<void> {
    const c = await RawClient.connect(port).catch(() => null);
    if (!c) return;
    extra.push(c);
    await c.closed(3000);
    expect(c.text).toBe(''); // dropped before any stream was set up
  }

  it(`the ${PRE_AUTH + 1}th unauthenticated connection is refused; existing ones keep working; closing frees slots`, async () => {
    const open: RawClient[] = [];
    for (let i = 0; i < PRE_AUTH; i++) {
      const c = await RawClient.connect(port);
      extra.push(c);
      open.push(c);
    }
    await waitUntil(() => srv.server.connectionCount === 2 + PRE_AUTH, 3000, 'pre-auth connections registered');
    await expectRefused();
    await expectRefused();
    // The existing pre-auth connections are unaffected.
    for (const c of open) {
      await c.openStream();
      expect(c.isClosed).toBe(false);
    }
    // Close two: two new connections are accepted, the next one refused again.
    open[0]?.destroy();
    open[1]?.destroy();
    await waitUntil(() => srv.server.connectionCount === 2 + PRE_AUTH - 2, 3000, 'closed connections released');
    expect((await tryConnect()).accepted).toBe(true);
    expect((await tryConnect()).accepted).toBe(true);
    await expectRefused();
  });

  it('authenticated connections leave the pre-auth count but stay in the total', async () => {
    // 2 canaries + 8 logged-in sessions = TOTAL; no pre-auth connection is open.
    const sessions: RawClient[] = [];
    for (let i = 0; i < TOTAL - 2; i++) {
      const c = await RawClient.login(port, 'mallory', 'secret-password', { resource: `r${i}` });
      extra.push(c);
      sessions.push(c);
    }
    await waitUntil(() => srv.server.connectionCount === TOTAL, 3000, 'all sessions registered');
    await expectRefused();
    // Every existing session still works.
    for (const c of sessions) await c.ping();
    // One logs out: a new connection is accepted again.
    (sessions.pop() as RawClient).end();
    await waitUntil(() => srv.server.connectionCount === TOTAL - 1, 3000, 'logout released');
    expect((await tryConnect()).accepted).toBe(true);
  });

  it('a connect storm: at most the pre-auth cap is accepted, the rest refused, the server keeps serving', async () => {
    const results = await Promise.all(Array.from({ length: 60 }, () => tryConnect()));
    const accepted = results.filter((r) => r.accepted).length;
    expect(accepted).toBeGreaterThanOrEqual(1);
    expect(accepted).toBeLessThanOrEqual(PRE_AUTH);
    expect(results.length - accepted).toBeGreaterThanOrEqual(60 - PRE_AUTH);
    for (const r of results) if (!r.accepted && r.client) await r.client.closed(3000);
    expect(srv.server.connectionCount).toBeLessThanOrEqual(2 + PRE_AUTH);
  });
});
