// Offline messages (XEP-0160, XEP-0203) between real clients: storage while the account has no
// available non-negative resource, delivery with a delay stamp on the next initial presence,
// what is not stored, the per-user quota and storage failures reported to the sender.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { errorCondition } from '../helpers/scram-client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const QUOTA = 3;

function chat(to: string, body: string, type = 'chat'): Element {
  return xml('message', { to, type, id: `m-${body}` }, xml('body', {}, body));
}

function isMessage(el: Element): boolean {
  return el.name === 'message' && el.attrs.type !== 'error';
}

describe('offline messages (XEP-0160)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return `${u}@localhost`;
  }

  async function login(bare: string, opts: { resource?: string; priority?: number | null } = {}): Promise<TestClient> {
    const c = await connect({ port, username: bare.split('@')[0] as string, resource: opts.resource, mechanism: 'PLAIN' });
    clients.push(c);
    const priority = opts.priority === undefined ? 0 : opts.priority;
    if (priority !== null) {
      await c.send(xml('presence', {}, xml('priority', {}, String(priority))));
      await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    }
    return c;
  }

  beforeAll(async () => {
    srv = await startTestServer({ limits: { offlineQuota: QUOTA } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('stores messages for an offline account and delivers them, in order and delay-stamped, at initial presence', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice, { resource: 'desk' });
    const before = Date.now();
    await a.send(chat(bob, 'first'));
    await a.send(chat(bob, 'second', 'normal'));
    await a.send(chat(bob, 'third'));
    await barrier(a);
    expect(a.received.some((el) => el.attrs.type === 'error')).toBe(false);
    expect(await srv.storage.offline.count(bob)).toBe(3);

    // Connected but not yet available: nothing yet.
    const b = await login(bob, { resource: 'phone', priority: null });
    await barrier(b); // resource binding (and whatever it triggers) is handled before the ping
    expect(b.received.filter(isMessage)).toEqual([]);
    await b.send(xml('presence'));
    const msgs: Element[] = [];
    for (let i = 0; i < 3; i++) msgs.push(await b.waitFor(isMessage));
    expect(msgs.map((m) => m.getChildText('body'))).toEqual(['first', 'second', 'third']);
    for (const m of msgs) {
      expect(m.attrs.from).toBe(`${alice}/desk`);
      expect(m.attrs.to?.startsWith(bob)).toBe(true);
      const delay = m.getChild('delay', 'urn:xmpp:delay');
      expect(delay?.attrs.from).toBe('localhost');
      const stamp = Date.parse(delay?.attrs.stamp as string);
      expect(delay?.attrs.stamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
      expect(stamp).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
      expect(stamp).toBeLessThanOrEqual(Date.now());
    }
    expect(msgs[1]?.attrs.type).toBe('normal');

    // Delivered means removed: the next session gets nothing.
    await barrier(b); // the removal is part of handling Bob's initial presence
    expect(await srv.storage.offline.count(bob)).toBe(0);
    const b2 = await login(bob, { resource: 'tablet' });
    await barrier(b2);
    expect(b2.received.filter(isMessage)).toEqual([]);
  });

  it('a negative-priority initial presence does not receive them; the next non-negative one does', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    await a.send(chat(bob, 'patience'));
    await barrier(a);
    const neg = await login(bob, { resource: 'neg', priority: -1 });
    await barrier(neg);
    expect(neg.received.filter(isMessage)).toEqual([]);
    // While only a negative resource is available, new messages are stored as well (RFC 6121 §8.5.2.1.1).
    await a.send(chat(bob, 'still patient'));
    await barrier(a);
    expect(await srv.storage.offline.count(bob)).toBe(2);
    const pos = await login(bob, { resource: 'pos', priority: 1 });
    expect((await pos.waitFor(isMessage)).getChildText('body')).toBe('patience');
    expect((await pos.waitFor(isMessage)).getChildText('body')).toBe('still patient');
    await barrier(pos, neg); // after the delivery at Pos's initial presence, through to Neg
    expect(neg.received.filter(isMessage)).toEqual([]);
  });

  it('stores only what is worth storing: no chat states, headlines, groupchat or no-store hints', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    await a.send(xml('message', { to: bob, type: 'chat', id: 'cs' }, xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
    await a.send(chat(bob, 'breaking news', 'headline'));
    await a.send(chat(bob, 'room', 'groupchat'));
    await a.send(xml('message', { to: bob, type: 'chat', id: 'ns' }, xml('body', {}, 'ephemeral'), xml('no-store', { xmlns: 'urn:xmpp:hints' })));
    await a.send(xml('message', { to: bob, type: 'chat', id: 'st' }, xml('store', { xmlns: 'urn:xmpp:hints' }), xml('x', { xmlns: 'urn:example:payload' })));
    await barrier(a);
    // Groupchat to an account is an error (RFC 6121 §8.5.2.2.1); the others are dropped silently.
    const errs = a.received.filter((el) => el.attrs.type === 'error');
    expect(errs.map((e) => e.attrs.id)).toEqual(['m-room']);
    expect(errorCondition(errs[0] as Element)).toBe('service-unavailable');
    expect(await srv.storage.offline.count(bob)).toBe(1);
    const b = await login(bob);
    const m = await b.waitFor(isMessage);
    expect(m.attrs.id).toBe('st');
    await barrier(b);
    expect(b.received.filter(isMessage)).toHaveLength(1);
  });

  it(`over the quota (${QUOTA}) the sender gets resource-constraint and nothing more is stored`, async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    for (let i = 1; i <= QUOTA; i++) await a.send(chat(bob, `q${i}`));
    await a.send(chat(bob, 'overflow'));
    const err = await a.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'm-overflow');
    expect(errorCondition(err)).toBe('resource-constraint');
    expect(err.getChild('error')?.attrs.type).toBe('wait');
    expect(err.attrs.from).toBe(bob);
    expect(a.received.filter((el) => el.attrs.type === 'error')).toHaveLength(1);
    expect(await srv.storage.offline.count(bob)).toBe(QUOTA);
    const b = await login(bob);
    const bodies: string[] = [];
    for (let i = 0; i < QUOTA; i++) bodies.push((await b.waitFor(isMessage)).getChildText('body') as string);
    expect(bodies).toEqual(['q1', 'q2', 'q3']);
  });

  it('a storage write failure reaches the sender as an error, not silence', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    const offline = srv.storage.offline;
    const original = offline.push;
    offline.push = () => Promise.reject(new Error('disk on fire'));
    try {
      await a.send(chat(bob, 'lost?'));
      const err = await a.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'm-lost?');
      expect(errorCondition(err)).toBe('internal-server-error');
      expect(err.getChild('error')?.attrs.type).toBe('wait');
      // The internal error text is not echoed to the client.
      expect(err.toString()).not.toContain('disk on fire');
    } finally {
      offline.push = original;
    }
    await a.send(chat(bob, 'works again'));
    await barrier(a);
    expect(await srv.storage.offline.count(bob)).toBe(1);
  });
});
