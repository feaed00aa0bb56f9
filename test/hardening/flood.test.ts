// HARDENING.md "Connections and rates": an authenticated flood of bytes or stanzas meets a token
// bucket; the socket is paused (backpressure), not the process: other sessions stay responsive.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, assertServing, pingIq } from '../helpers/raw.js';

const STANZAS_PER_SECOND = 100;
const BURST_STANZAS = 20;
const BYTES_PER_SECOND = 16_384;
const BURST_BYTES = 16_384;

/** How many complete matches of `re` are in c.text now. */
function count(c: RawClient, re: RegExp): number {
  return c.text.match(new RegExp(re.source, 'g'))?.length ?? 0;
}

describe('hardening: authenticated flood control', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    srv = await startTestServer({
      limits: { stanzasPerSecond: STANZAS_PER_SECOND, burstStanzas: BURST_STANZAS, bytesPerSecond: BYTES_PER_SECOND, burstBytes: BURST_BYTES },
    });
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
    await assertServing(alice, bob);
  });

  // Order and outcome only: how fast the bucket lets the flood through is measured by
  // bench/flood.ts, and the bucket's arithmetic is tested with an injected clock in
  // test/core/bucket.test.ts.
  it('a stanza flood is throttled, not dropped, and another session is answered while it is worked off', async () => {
    const c = await RawClient.login(port, 'mallory', 'secret-password');
    const N = 200;
    let flood = '';
    for (let i = 0; i < N; i++) flood += pingIq(`f${i}`);
    const answer = /<iq\b[^>]*\bid=["']f\d+["'][^>]*type=["']result["']|<iq\b[^>]*type=["']result["'][^>]*\bid=["']f\d+["']/;
    const since = c.mark();
    await c.send(flood);
    await c.waitFor(answer, 5000, since); // the server has started on the flood
    // Without a bucket the server answers all 200 in one go, before it reads Alice's ping; with
    // one (burst 20, 100/s), the rest waits for tokens while Alice is answered.
    for (let i = 0; i < 3; i++) {
      await alice.ping();
      expect(count(c, answer)).toBeLessThan(N);
    }
    await c.waitFor(new RegExp(`<iq\\b[^>]*\\bid=["']f${N - 1}["']`), 15_000, since);
    expect(count(c, answer)).toBe(N); // throttled, not dropped
    expect(c.textSince(since)).not.toContain('<stream:error');
    c.destroy();
  });

  it('a byte flood is paused, not cut, and another session is answered while it is worked off', async () => {
    const c = await RawClient.login(port, 'mallory', 'secret-password');
    // 4 KiB messages to the sender's own account (silently dropped: no available resource), each
    // followed by a ping whose answer shows how far the server has read.
    const N = 12;
    let flood = '';
    for (let i = 0; i < N; i++) flood += `<message to='mallory@localhost' type='headline'><body>${'x'.repeat(4000)}</body></message>${pingIq(`b${i}`)}`;
    const answer = /<iq\b[^>]*\bid=["']b\d+["'][^>]*type=["']result["']|<iq\b[^>]*type=["']result["'][^>]*\bid=["']b\d+["']/;
    const since = c.mark();
    await c.send(flood);
    await c.waitFor(answer, 5000, since);
    // ~49 KB against a 16 KiB burst at 16 KiB/s: the socket is paused for about two seconds in
    // all, and Alice is answered meanwhile.
    for (let i = 0; i < 3; i++) {
      await alice.ping();
      expect(count(c, answer)).toBeLessThan(N);
    }
    await c.waitFor(new RegExp(`<iq\\b[^>]*\\bid=["']b${N - 1}["']`), 15_000, since);
    expect(count(c, answer)).toBe(N);
    expect(c.streamError()).toBeUndefined();
    c.destroy();
  });
});
