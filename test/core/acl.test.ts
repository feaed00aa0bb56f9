// The access-control defaults used when no access files exist.
import { describe, expect, it } from 'vitest';
import { DefaultAccessControl } from '../../src/core/acl.js';
import { Jid } from '../../src/xmpp/jid.js';

describe('DefaultAccessControl', () => {
  const acl = new DefaultAccessControl((d) => d === 'example.com');
  const local = Jid.parse('alice@example.com/phone');
  const remote = Jid.parse('mallory@evil.example/x');

  it('lets local accounts create rooms and channels and run polls, nothing else', () => {
    expect(acl.allows('room.create', local)).toBe(true);
    expect(acl.allows('channel.create', local)).toBe(true);
    expect(acl.allows('poll.create', local)).toBe(true);
    expect(acl.allows('alert.send', local)).toBe(false);
    expect(acl.allows('admin', local)).toBe(false);
  });

  it('grants nothing to remote users or to the server itself', () => {
    for (const r of ['room.create', 'channel.create', 'poll.create', 'alert.send', 'admin'] as const) {
      expect(acl.allows(r, remote)).toBe(false);
      expect(acl.allows(r, Jid.parse('example.com'))).toBe(false);
    }
  });

  it('leaves venues to their own configuration', () => {
    expect(acl.venue()).toBeNull();
  });
});
