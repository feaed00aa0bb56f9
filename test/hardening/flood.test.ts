// HARDENING.md "Connections and rates": an authenticated flood of bytes or stanzas meets a token
// bucket; the socket is paused (backpressure), not the process: other sessions stay responsive.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawClient, assertServing, pingIq } from '../helpers/raw.js';

const STANZAS_PER_SECOND = 100;
const BURST_STANZAS = 20;
const BYTES_PER_SECOND = 16_384;
const BURST_BYTES = 16_384;

/** Counts matches of `re` in c.text every 10 ms; returns [ms since start, count] samples until `until` matches are seen. */
async function sampleCount(c: RawClient, re: RegExp, until: number, timeoutMs: number): Promise<[number, number][]> {
  const t0 = performance.now();
  const samples: [number, number][] = [];
  const g = new RegExp(re.source, 'g');
  for (;;) {
    const n = c.text.match(g)?.length ?? 0;
    const t = performance.now() - t0;
    samples.push([t, n]);
    if (n >= until || t > timeoutMs || c.isClosed) return samples;
    await new Promise((r) => setTimeout(r, 10));
  }
}

function countAt(samples: [number, number][], ms: number): number {
  let n = 0;
  for (const [t, c] of samples) if (t <= ms) n = c;
  return n;
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

  it('a stanza flood is processed at the bucket rate while others are answered promptly', async () => {
    const c = await RawClient.login(port, 'mallory', 'secret-password');
    await new Promise((r) => setTimeout(r, 300)); // let the login's bytes drain from the bucket
    const N = 200;
    let flood = '';
    for (let i = 0; i < N; i++) flood += pingIq(`f${i}`);
    const since = c.mark();
    const sampling = sampleCount(c, /<iq\b[^>]*\bid=["']f\d+["'][^>]*type=["']result["']|<iq\b[^>]*type=["']result["'][^>]*\bid=["']f\d+["']/, N, 15_000);
    await c.send(flood);
    // While the flood is being throttled, another session's ping is answered quickly.
    const rtts: number[] = [];
    for (let i = 0; i < 5; i++) {
      rtts.push(await alice.ping(2000));
      await new Promise((r) => setTimeout(r, 50));
    }
    const samples = await sampling;
    const total = samples[samples.length - 1]?.[1] ?? 0;
    const elapsed = samples[samples.length - 1]?.[0] ?? 0;
    expect(c.textSince(since)).not.toContain('<stream:error');
    expect(total).toBe(N); // throttled, not dropped
    // Without a bucket all 200 are answered within a few ms. With it, the first 150 ms see at most
    // the burst plus the rate for that time (plus generous slack), and the whole flood takes at
    // least a good part of (N - burst) / rate seconds.
    const early = countAt(samples, 150);
    expect(early).toBeLessThan(BURST_STANZAS + STANZAS_PER_SECOND * 0.15 + 60);
    expect(elapsed).toBeGreaterThan(((N - BURST_STANZAS) / STANZAS_PER_SECOND) * 1000 * 0.5);
    expect(Math.max(...rtts)).toBeLessThan(1000);
    c.destroy();
  });

  it('a byte flood is paused at the bucket rate while others are answered promptly', async () => {
    const c = await RawClient.login(port, 'mallory', 'secret-password');
    await new Promise((r) => setTimeout(r, 300));
    // 4 KiB messages to the sender's own account (silently dropped: no available resource), each
    // followed by a ping whose answer shows how far the server has read.
    const N = 12;
    let flood = '';
    for (let i = 0; i < N; i++) flood += `<message to='mallory@localhost' type='headline'><body>${'x'.repeat(4000)}</body></message>${pingIq(`b${i}`)}`;
    const sampling = sampleCount(c, /<iq\b[^>]*\bid=["']b\d+["'][^>]*type=["']result["']|<iq\b[^>]*type=["']result["'][^>]*\bid=["']b\d+["']/, N, 15_000);
    await c.send(flood);
    const rtts: number[] = [];
    for (let i = 0; i < 5; i++) {
      rtts.push(await alice.ping(2000));
      await new Promise((r) => setTimeout(r, 50));
    }
    const samples = await sampling;
    const total = samples[samples.length - 1]?.[1] ?? 0;
    const elapsed = samples[samples.length - 1]?.[0] ?? 0;
    expect(total).toBe(N);
    expect(c.streamError()).toBeUndefined();
    // ~49 KB against a 16 KiB burst at 16 KiB/s: about two seconds of pauses.
    expect(countAt(samples, 150)).toBeLessThan(N);
    expect(elapsed).toBeGreaterThan(((flood.length - BURST_BYTES) / BYTES_PER_SECOND) * 1000 * 0.5);
    expect(Math.max(...rtts)).toBeLessThan(1000);
    c.destroy();
  });
});
