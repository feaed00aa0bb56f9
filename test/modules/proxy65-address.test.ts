// Issue 16 §4: the SOCKS5 proxy counts waiting connections per IPv4 address and per IPv6 /64,
// since one IPv6 subscriber holds a whole /64 (billions of addresses).
import { describe, expect, it } from 'vitest';
import { networkKey as addressKey } from '../../src/core/addresses.js';

describe('proxy65 addressKey', () => {
  it('keeps IPv4 addresses, IPv4-mapped ones included', () => {
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
  });

  it('puts every address of an IPv6 /64 under one key, whatever its spelling', () => {
    const k = addressKey('2001:db8:1:2::1');
    expect(k).toBe('2001:db8:1:2::/64');
    for (const a of ['2001:db8:1:2:ffff:ffff:ffff:ffff', '2001:0db8:0001:0002:0:0:0:9', '2001:DB8:1:2::abcd']) expect(addressKey(a)).toBe(k);
    expect(addressKey('2001:db8:1:3::1')).not.toBe(k);
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('2001:db8::')).toBe('2001:db8:0:0::/64');
  });
});
