import { describe, expect, it } from 'vitest';
import { Jid, JidError } from '../../src/xmpp/jid.js';

describe('Jid (RFC 7622)', () => {
  it('splits and normalizes the three parts', () => {
    const j = Jid.parse('Juliet@Example.COM/Balcony Room');
    expect(j.local).toBe('juliet');
    expect(j.domain).toBe('example.com');
    expect(j.resource).toBe('Balcony Room'); // resources keep their case
    expect(j.bare).toBe('juliet@example.com');
    expect(j.full).toBe('juliet@example.com/Balcony Room');
    expect(Jid.parse('example.com').local).toBe('');
    expect(Jid.parse('example.com.').domain).toBe('example.com');
    expect(Jid.parse('a@b/c/d').resource).toBe('c/d'); // the first slash separates the resource
  });

  it('applies NFKC and case folding to localparts and IDNA to domains', () => {
    expect(Jid.parse('ＪＵＬＩＥＴ@example.com').local).toBe('juliet'); // fullwidth forms
    expect(Jid.parse('user@BÜCHER.example').domain).toBe('bücher.example');
    expect(Jid.parse('user@xn--bcher-kva.example').domain).toBe('bücher.example');
    expect(Jid.parse('user@[::1]').domain).toBe('[::1]');
  });

  it('refuses malformed JIDs', () => {
    for (const bad of ['', '@example.com', 'user@', 'user@example.com/', 'a"b@example.com', "a'b@x", 'a:b@x', 'a<b@x', 'a b@x', 'u@exa mple.com', `${'a'.repeat(1024)}@x`, 'u@x/\u0001', '\u0000@x']) {
      expect(() => Jid.parse(bad), bad).toThrow(JidError);
      expect(Jid.tryParse(bad)).toBeNull();
    }
  });

  it('returns the same answer from its cache, and equal JIDs compare equal', () => {
    const a = Jid.parse('Romeo@Example.net/orchard');
    const b = Jid.parse('Romeo@Example.net/orchard');
    expect(b).toBe(a);
    expect(Jid.parse('romeo@example.net/orchard').equals(a)).toBe(true);
    expect(a.toBare().full).toBe('romeo@example.net');
    expect(a.withResource('other').full).toBe('romeo@example.net/other');
    expect(() => Jid.parse('bad@')).toThrow(JidError);
    expect(() => Jid.parse('bad@')).toThrow(JidError); // errors are not cached as successes
  });
});
