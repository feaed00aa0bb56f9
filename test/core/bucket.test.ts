// The flood-control token bucket (src/core/bucket.ts) on an injected clock: the delays the
// hardening flood tests used to time on the wall clock are checked here as arithmetic, whatever
// the machine's speed (bench/flood.ts measures the real thing).
import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../src/core/bucket.js';

function clocked(rate: number, burst: number): { bucket: TokenBucket; advance(ms: number): void } {
  let now = 1_000_000;
  const bucket = new TokenBucket(rate, burst, () => now);
  return { bucket, advance: (ms) => (now += ms) };
}

describe('TokenBucket', () => {
  it('lets the burst through at once, then asks for the deficit at the rate', () => {
    const { bucket } = clocked(100, 20);
    for (let i = 0; i < 20; i++) expect(bucket.take(1)).toBe(0);
    expect(bucket.take(1)).toBe(10); // one token short at 100/s: 10 ms
    expect(bucket.take(1)).toBe(20); // the deficit accumulates
  });

  it('refills at the rate while time passes, never above the burst', () => {
    const { bucket, advance } = clocked(100, 20);
    for (let i = 0; i < 25; i++) bucket.take(1); // 5 short
    advance(50); // 5 tokens back: level
    expect(bucket.take(1)).toBe(10);
    advance(60_000); // a long pause refills to the burst only
    for (let i = 0; i < 20; i++) expect(bucket.take(1)).toBe(0);
    expect(bucket.take(1)).toBeGreaterThan(0);
  });

  it('a flood of N over the burst takes (N - burst) / rate seconds of waiting (the stanza flood test)', () => {
    const { bucket, advance } = clocked(100, 20);
    let waited = 0;
    for (let i = 0; i < 200; i++) {
      const wait = bucket.take(1);
      // The session sleeps for the deficit before the next stanza.
      advance(wait);
      waited += wait;
    }
    expect(waited).toBe(1800);
  });

  it('counts bytes the same way (the byte flood test: 16 KiB burst at 16 KiB/s)', () => {
    const { bucket, advance } = clocked(16_384, 16_384);
    expect(bucket.take(16_384)).toBe(0);
    expect(bucket.take(16_384)).toBe(1000);
    advance(1000);
    expect(bucket.take(8192)).toBe(500);
  });
});
