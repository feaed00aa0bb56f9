// Failed-login throttling: bans per (account, address) pair and per address at a bot's rate,
// never per account; per-account delays; trusted networks; bounded memory.
import { describe, expect, it } from 'vitest';
import { LoginThrottle } from '../../src/auth/backoff.js';
import { addressInList, compileAddressList } from '../../src/core/addresses.js';

function clock(start = 1_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

const MIN = 60_000;
const J = 'juliet@example.com';

describe('LoginThrottle', () => {
  it('bans an address after 100 wrong credentials within 10 minutes (a bot), not after an office’s typos', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now });
    // An office: 99 typos spread over 99 accounts in ten minutes is still not a ban.
    for (let i = 0; i < 99; i++) t.fail('198.51.100.1', `user${i}@example.com`);
    expect(t.check('198.51.100.1')).toEqual({ allowed: true, retryAfterMs: 0 });
    t.fail('198.51.100.1', 'user99@example.com');
    expect(t.check('198.51.100.1')).toEqual({ allowed: false, retryAfterMs: 10 * MIN, scope: 'address' });
    expect(t.check('198.51.100.2').allowed).toBe(true); // other addresses unaffected
    c.t += 10 * MIN - 1;
    expect(t.check('198.51.100.1')).toMatchObject({ allowed: false, retryAfterMs: 1 });
    c.t += 1;
    expect(t.check('198.51.100.1')).toEqual({ allowed: true, retryAfterMs: 0 });
    // Clean slate after the ban: one more failure does not re-ban.
    t.fail('198.51.100.1');
    expect(t.check('198.51.100.1').allowed).toBe(true);
  });

  it('failures outside the window do not accumulate', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, perAddress: { maxFailures: 10, windowMs: 5 * MIN } });
    for (let i = 0; i < 9; i++) t.fail('a');
    c.t += 5 * MIN;
    t.fail('a');
    expect(t.check('a').allowed).toBe(true);
  });

  it('bans an (account, address) pair, never the account: the owner logs in from elsewhere', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now });
    for (let i = 0; i < 10; i++) t.fail('203.0.113.7', J);
    expect(t.check('203.0.113.7', J)).toEqual({ allowed: false, retryAfterMs: 15 * MIN, scope: 'pair' });
    // Case variants of the name reach the same pair.
    expect(t.check('203.0.113.7', 'Juliet@Example.com').allowed).toBe(false);
    // The same address for another account, and the same account from another address: allowed.
    expect(t.check('203.0.113.7', 'romeo@example.com').allowed).toBe(true);
    expect(t.check('203.0.113.7').allowed).toBe(true);
    expect(t.check('192.0.2.9', J).allowed).toBe(true);
    // Failures for one account from many addresses ban none of them (each pair stays under 10).
    for (let i = 0; i < 50; i++) t.fail(`192.0.2.${i}`, 'romeo@example.com');
    expect(t.check('192.0.2.200', 'romeo@example.com').allowed).toBe(true);
    c.t += 15 * MIN;
    expect(t.check('203.0.113.7', J).allowed).toBe(true);
  });

  it('a successful login clears its pair’s count, not the address’s', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, perAddress: { maxFailures: 12 }, perPair: { maxFailures: 3 } });
    t.fail('a', J);
    t.fail('a', J);
    t.succeed('a', J);
    t.fail('a', J); // pair: 1 (cleared), address: 3
    t.fail('a', J); // pair: 2
    expect(t.check('a', J).allowed).toBe(true);
    for (let i = 0; i < 8; i++) t.fail('a', `u${i}`); // address: 12
    expect(t.check('a')).toMatchObject({ allowed: false, scope: 'address' });
  });

  it('trusted networks have their own, larger address limit; pairs are banned there too', () => {
    const c = clock();
    const office = compileAddressList(['10.0.0.0/8', '2001:db8::/32']);
    const t = new LoginThrottle({ now: c.now, isTrusted: (a) => addressInList(office, a), perAddress: { maxFailures: 5 }, trustedPerAddress: { maxFailures: 50 } });
    for (let i = 0; i < 20; i++) t.fail('10.1.2.3', `user${i}@example.com`);
    for (let i = 0; i < 20; i++) t.fail('::ffff:10.9.9.9', `user${i}@example.com`);
    expect(t.check('10.1.2.3').allowed).toBe(true);
    expect(t.check('::ffff:10.9.9.9').allowed).toBe(true);
    for (let i = 0; i < 5; i++) t.fail('198.51.100.1', `user${i}@example.com`);
    expect(t.check('198.51.100.1').allowed).toBe(false);
    for (let i = 0; i < 10; i++) t.fail('2001:db8::1', J);
    expect(t.check('2001:db8::1', J)).toMatchObject({ allowed: false, scope: 'pair' });
  });

  it('does not extend a ban on further failures', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, perPair: { maxFailures: 1, banMs: 1000 } });
    t.fail('a', 'u');
    c.t += 900;
    t.fail('a', 'u');
    expect(t.check('a', 'u').retryAfterMs).toBe(100);
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
    t.fail('a', 'u'); // address, pair, account
    t.fail('b');
    expect(t.size).toBe(4);
    c.t += 15 * MIN;
    expect(t.prune()).toBe(4);
    expect(t.size).toBe(0);
  });

  it('the account’s failures from every address delay every verdict for it (success too), growing, capped', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, addressDelay: { freeFailures: 1000 } });
    const delays: number[] = [];
    for (let i = 0; i < 9; i++) {
      delays.push(t.delayFor(`203.0.113.${i}`, J, true)); // the session asks before recording the failure
      t.fail(`203.0.113.${i}`, J);
    }
    expect(delays).toEqual([0, 0, 0, 250, 500, 1000, 2000, 4000, 5000]);
    // The owner, from a fresh address with the right password: slowed, not refused.
    expect(t.delayFor('192.0.2.1', J, false)).toBe(5000);
    expect(t.check('192.0.2.1', J).allowed).toBe(true);
    // Other accounts are not slowed.
    expect(t.delayFor('192.0.2.1', 'romeo@example.com', false)).toBe(0);
    c.t += 15 * MIN;
    expect(t.delayFor('192.0.2.1', J, false)).toBe(0);
  });

  it('an untrusted address’s failures slow down its failure answers only, never a success', () => {
    const c = clock();
    const t = new LoginThrottle({ now: c.now, isTrusted: (a) => a === 'office' });
    for (let i = 0; i < 12; i++) {
      t.fail('bot', `u${i}`);
      t.fail('office', `u${i}`);
    }
    expect(t.delayFor('bot', 'fresh', true)).toBe(1000); // 13th failure from the address: 250, 500, 1000
    expect(t.delayFor('bot', 'fresh', false)).toBe(0);
    expect(t.delayFor('office', 'fresh', true)).toBe(0);
  });
});

describe('address lists (limits.trustedNetworks)', () => {
  it('matches addresses and CIDR ranges of both families, IPv4-mapped IPv6 included', () => {
    const list = compileAddressList(['192.0.2.0/24', '198.51.100.7', '2001:db8:1::/48']);
    const s = { has: (a: string) => addressInList(list, a) };
    expect(s.has('192.0.2.200')).toBe(true);
    expect(s.has('::ffff:192.0.2.1')).toBe(true);
    expect(s.has('198.51.100.7')).toBe(true);
    expect(s.has('198.51.100.8')).toBe(false);
    expect(s.has('2001:db8:1:ffff::1')).toBe(true);
    expect(s.has('2001:db8:2::1')).toBe(false);
    expect(s.has('not an address')).toBe(false);
    expect(addressInList(compileAddressList([]), '192.0.2.1')).toBe(false);
  });
});
