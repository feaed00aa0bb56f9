// XEP-0106 JID escaping (src/xmpp/jid.ts), used to turn directory values into localparts.
import { describe, expect, it } from 'vitest';
import { escapeLocalpart, Jid, unescapeLocalpart } from '../../src/xmpp/jid.js';

describe('XEP-0106 escaping', () => {
  it.each([
    ['alice@example.com', 'alice\\40example.com'],
    ['Jo Smith', 'Jo\\20Smith'],
    ["d'artagnan", 'd\\27artagnan'],
    ['a/b:c<d>e&f"g', 'a\\2fb\\3ac\\3cd\\3ee\\26f\\22g'],
    ['c:\\5cnet', 'c\\3a\\5c5cnet'], // a backslash that would read as an escape is escaped itself
    ['a\\b', 'a\\b'], // one that would not is kept
    ['plain', 'plain'],
  ])('%s <-> %s', (value, local) => {
    expect(escapeLocalpart(value)).toBe(local);
    expect(unescapeLocalpart(local)).toBe(value);
    expect(() => Jid.of(local, 'example.com')).not.toThrow(); // a valid localpart (RFC 7622)
  });
});
