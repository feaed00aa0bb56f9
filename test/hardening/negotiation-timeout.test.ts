// HARDENING.md "Connections and rates": an idle (or slow) unauthenticated connection is closed
// after the negotiation deadline with <connection-timeout/>; bound sessions are not affected.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, assertServing, sleep } from '../helpers/raw.js';

const DEADLINE = 1500;

describe('hardening: negotiation deadline', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    srv = await startTestServer({ limits: { negotiationTimeoutMs: DEADLINE } });
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

  // Outcome only: when the deadline fires is measured by bench/limits.ts. A connection the
  // deadline did not close would make expectStreamErrorAndClose() time out.
  it('idle, half-negotiated and slow connections are all closed at the deadline', async () => {
    // 1. connects and sends nothing
    const idle = await RawClient.connect(port);
    // 2. sends the stream header, then nothing
    const header = await RawClient.connect(port);
    await header.openStream();
    // 3. completes STARTTLS, then nothing
    const tls = await RawClient.connect(port);
    await tls.openStream();
    await tls.startTls();
    await tls.openStream();
    // 4. authenticates but never binds a resource
    const unbound = await RawClient.connect(port);
    await unbound.openStream();
    await unbound.startTls();
    await unbound.openStream();
    expect(await unbound.authPlain('mallory', 'secret-password')).toBe(true);
    await unbound.openStream();
    // 5. slowloris: keeps sending whitespace, which must not extend the deadline
    const slow = await RawClient.connect(port);
    await slow.openStream();
    let dripping = true;
    const drip = (async () => {
      while (dripping && !slow.isClosed) {
        await slow.send(' ');
        await sleep(100);
      }
    })();

    const attackers = { idle, header, tls, unbound, slow };
    for (const [name, c] of Object.entries(attackers)) {
      const cond = await c.expectStreamErrorAndClose(DEADLINE + 4000).catch((e: Error) => `${name}: ${e.message}`);
      expect(cond, name).toBe('connection-timeout');
    }
    dripping = false;
    await drip;
    // The idle connection got a stream header before the error (RFC 6120 §4.9.1.3).
    expect(idle.text).toMatch(/^<\?xml[^>]*\?><stream:stream\b[^>]*>\s*<stream:error>/);
    expect(srv.server.connectionCount).toBe(2);
  });

  it('bound sessions outlive the deadline and keep working', async () => {
    // The barrier: a connection opened now is closed at its deadline; a deadline armed for Alice's
    // or Bob's connection (opened earlier, same length) would have fired before that one.
    const late = await RawClient.connect(port);
    expect(await late.expectStreamErrorAndClose(DEADLINE + 4000)).toBe('connection-timeout');
    expect(alice.isClosed).toBe(false);
    expect(bob.isClosed).toBe(false);
    await assertServing(alice, bob);
    await assertServing(bob, alice);
  });
});
