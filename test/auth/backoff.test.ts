// Failed-login throttling.
import { describe, expect, it } from 'vitest';
import { LoginThrottle } from '../../src/auth/backoff.js';

function clock(start = 1_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

const MIN = 60_000;

describe('LoginThrottle', () => {
  it('bans an address after maxFailures within the window, and unbans after banMs', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now });
    for (let i = 0; i < 9; i++) t.fail('198.51.100.1');
    expect(t.check('198.51.100.1')).toEqual({ allowed: true, retryAfterMs: 0 });
    t.fail('198.51.100.1');
    expect(t.check('198.51.100.1')).toEqual({ allowed: false, retryAfterMs: 5 * MIN });
    expect(t.check('198.51.100.2').allowed).toBe(true); // other addresses unaffected
    c.t += 5 * MIN - 1;
    expect(t.check('198.51.100.1')).toEqual({ allowed: false, retryAfterMs: 1 });
    c.t += 1;
    expect(t.check('198.51.100.1')).toEqual({ allowed: true, retryAfterMs: 0 });
    // Clean slate after the ban: one more failure does not re-ban.
    t.fail('198.51.100.1');
    expect(t.check('198.51.100.1').allowed).toBe(true);
  });

  it('failures outside the window do not accumulate', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now });
    for (let i = 0; i < 9; i++) t.fail('a');
    c.t += 5 * MIN;
    t.fail('a');
    expect(t.check('a').allowed).toBe(true);
  });

  it('bans an account after its own maxFailures, across addresses', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now });
    for (let i = 0; i < 5; i++) t.fail(`203.0.113.${i}`, 'juliet@example.com');
    expect(t.check('192.0.2.9', 'juliet@example.com')).toEqual({ allowed: false, retryAfterMs: 5 * MIN });
    expect(t.check('192.0.2.9')).toEqual({ allowed: true, retryAfterMs: 0 });
    expect(t.check('192.0.2.9', 'romeo@example.com').allowed).toBe(true);
    // Case variants of the name share the counter.
    expect(t.check('192.0.2.9', 'Juliet@Example.com').allowed).toBe(false);
    c.t += 5 * MIN;
    expect(t.check('192.0.2.9', 'juliet@example.com').allowed).toBe(true);
  });

  it('honours custom limits and reports the longer of two bans', () => {
    const c = clock();
    const t = new LoginThrottle({
      now: c.now,
      perAddress: { maxFailures: 2, banMs: 1000 },
      perAccount: { maxFailures: 3, windowMs: 10_000, banMs: 9000 },
    });
    t.fail('a', 'u');
    t.fail('a', 'u');
    expect(t.check('a', 'u')).toEqual({ allowed: false, retryAfterMs: 1000 });
    c.t += 1000;
    t.fail('a', 'u');
    expect(t.check('a', 'u')).toEqual({ allowed: false, retryAfterMs: 9000 });
  });

  it('success clears the account counter but not the address counter', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, perAddress: { maxFailures: 6 } });
    for (let i = 0; i < 4; i++) t.fail('a', 'juliet@example.com');
    t.succeed('a', 'juliet@example.com');
    t.fail('a', 'juliet@example.com'); // account: 1, address: 5
    expect(t.check('a', 'juliet@example.com').allowed).toBe(true);
    t.fail('b', 'juliet@example.com'); // account: 2
    expect(t.check('b', 'juliet@example.com').allowed).toBe(true);
    t.fail('a'); // address: 6 -> banned
    expect(t.check('a').allowed).toBe(false);
  });

  it('does not extend a ban on further failures', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, perAccount: { maxFailures: 1, banMs: 1000 } });
    t.fail('a', 'u');
    c.t += 900;
    t.fail('b', 'u');
    expect(t.check('c', 'u').retryAfterMs).toBe(100);
  });

  it('caps the number of tracked keys, evicting the oldest', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, maxKeys: 100, perAddress: { maxFailures: 1 } });
    t.fail('first');
    expect(t.check('first').allowed).toBe(false);
    for (let i = 0; i < 150; i++) t.fail(`addr-${i}`);
    expect(t.size).toBe(100);
    expect(t.check('first').allowed).toBe(true); // evicted
    expect(t.check('addr-149').allowed).toBe(false); // newest kept
  });

  it('prune() drops expired entries', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now });
    t.fail('a', 'u');
    t.fail('b');
    expect(t.size).toBe(3);
    c.t += 5 * MIN;
    expect(t.prune()).toBe(3);
    expect(t.size).toBe(0);
  });

  it('delayFor grows: 0 for two failures, then 250 ms doubling, capped at 4 s', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, perAddress: { maxFailures: 100 }, perAccount: { maxFailures: 100 } });
    const delays: number[] = [];
    for (let i = 0; i < 9; i++) {
      delays.push(t.delayFor('a', 'u')); // the session asks before recording the failure
      t.fail('a', 'u');
    }
    expect(delays).toEqual([0, 0, 250, 500, 1000, 2000, 4000, 4000, 4000]);
    // The account count drives the delay even from a fresh address.
    expect(t.delayFor('fresh', 'u')).toBe(4000);
    expect(t.delayFor('fresh')).toBe(0);
    c.t += 5 * MIN;
    expect(t.delayFor('a', 'u')).toBe(0);
  });
});
