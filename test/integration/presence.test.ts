// Presence and subscriptions over real client connections (RFC 6121 §3, §4 and Appendix A):
// the subscription handshake with its roster pushes, pre-approval, pending requests across logins,
// cancellation in both directions, broadcast, probes, directed presence and unavailable presence
// when a session ends, gracefully or not.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { afterSessionClosed, startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import type { Subscription } from '../../src/storage/types.js';

const NS_ROSTER = 'jabber:iq:roster';

function isPushFor(jid: string, pred: (item: Element) => boolean = () => true) {
  return (el: Element) => {
    if (el.name !== 'iq' || el.attrs.type !== 'set') return false;
    const item = el.getChild('query', NS_ROSTER)?.getChild('item');
    return item?.attrs.jid === jid && pred(item);
  };
}

function isPresence(from: string, type?: string) {
  return (el: Element) => el.name === 'presence' && el.attrs.from === from && el.attrs.type === type;
}

/** Presence of any type from an account (bare JID or any of its resources). */
function presenceFromAccount(bare: string) {
  return (el: Element) => el.name === 'presence' && (el.attrs.from === bare || el.attrs.from?.startsWith(`${bare}/`));
}

function itemOf(push: Element): Element {
  return push.getChild('query', NS_ROSTER)?.getChild('item') as Element;
}

async function rosterItem(c: TestClient, jid: string): Promise<Element | undefined> {
  const res = await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: NS_ROSTER })));
  return res.getChild('query', NS_ROSTER)?.getChildren('item').find((i) => i.attrs.jid === jid);
}

function indexOf(c: TestClient, el: Element): number {
  return c.received.indexOf(el);
}

describe('presence and subscriptions (RFC 6121 §3, §4)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return `${u}@localhost`;
  }

  /** Logs in; by default requests the roster (interested) and sends initial presence (available). */
  async function login(bare: string, opts: { resource?: string; roster?: boolean; presence?: Element | false } = {}): Promise<TestClient> {
    const c = await connect({ port, username: bare.split('@')[0] as string, resource: opts.resource, mechanism: 'PLAIN' });
    clients.push(c);
    if (opts.roster !== false) await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: NS_ROSTER })));
    if (opts.presence !== false) {
      await c.send(opts.presence ?? xml('presence'));
      // Initial presence is reflected to the sender (RFC 6121 §4.2.2): wait for it so that the
      // session is known to be available before the test goes on.
      await c.waitFor(isPresence(c.jid));
    }
    return c;
  }

  /** Writes roster items directly (test setup for states that are not under test). */
  async function setSub(user: string, contact: string, subscription: Subscription, extra: { ask?: boolean; approved?: boolean } = {}) {
    await srv.storage.roster.setItem(user, { jid: contact, subscription, ask: extra.ask ?? false, approved: extra.approved ?? false, groups: [] });
  }

  async function mutual(a: string, b: string): Promise<void> {
    await setSub(a, b, 'both');
    await setSub(b, a, 'both');
  }

  beforeAll(async () => {
    // @xmpp/client enables XEP-0198 with resumption: a dropped connection hibernates for 1 s here
    // before the session ends (and unavailable presence goes out).
    srv = await startTestServer({ modules: { sm: { resumeSeconds: 1 } } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('the full handshake: subscribe, approve, roster pushes on both sides, then a mutual subscription', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    const b = await login(bob, { presence: xml('presence', {}, xml('status', {}, 'bob here')) });

    // Alice asks: her roster shows the pending request (None + Pending Out).
    await a.send(xml('presence', { to: bob, type: 'subscribe', id: 'sub1' }));
    const askPush = await a.waitFor(isPushFor(bob));
    expect(itemOf(askPush).attrs).toMatchObject({ subscription: 'none', ask: 'subscribe' });
    // Bob gets the request from Alice's bare JID (§3.1.2: stamped with the bare JID).
    const req = await b.waitFor(isPresence(alice, 'subscribe'));
    expect(req.attrs.to).toBe(bob);
    // Until approved, Bob's roster has no item for Alice (§3.1.3 security warning).
    expect(await rosterItem(b, alice)).toBeUndefined();

    // Bob approves.
    await b.send(xml('presence', { to: alice, type: 'subscribed' }));
    const fromPush = await b.waitFor(isPushFor(alice));
    expect(itemOf(fromPush).attrs.subscription).toBe('from');
    expect(itemOf(fromPush).attrs.ask).toBeUndefined();
    const approval = await a.waitFor(isPresence(bob, 'subscribed'));
    const toPush = await a.waitFor(isPushFor(bob, (i) => i.attrs.subscription === 'to'));
    expect(itemOf(toPush).attrs.ask).toBeUndefined();
    // §3.1.6: the approval is delivered before the roster push.
    expect(indexOf(a, approval)).toBeLessThan(indexOf(a, toPush));
    // §3.1.5: Bob's server then sends Bob's current presence to Alice.
    const bobPresence = await a.waitFor(isPresence(b.jid));
    expect(bobPresence.getChildText('status')).toBe('bob here');

    // Bob subscribes back: his item goes From + Pending Out, then Both.
    await b.send(xml('presence', { to: alice, type: 'subscribe' }));
    const bobAsk = await b.waitFor(isPushFor(alice, (i) => i.attrs.ask === 'subscribe'));
    expect(itemOf(bobAsk).attrs.subscription).toBe('from');
    await a.waitFor(isPresence(bob, 'subscribe'));
    await a.send(xml('presence', { to: bob, type: 'subscribed' }));
    expect(itemOf(await a.waitFor(isPushFor(bob, (i) => i.attrs.subscription === 'both'))).attrs.ask).toBeUndefined();
    const back = await b.waitFor(isPresence(alice, 'subscribed'));
    const bothPush = await b.waitFor(isPushFor(alice, (i) => i.attrs.subscription === 'both'));
    expect(indexOf(b, back)).toBeLessThan(indexOf(b, bothPush));
    await b.waitFor(isPresence(a.jid));

    expect((await rosterItem(a, bob))?.attrs.subscription).toBe('both');
    expect((await rosterItem(b, alice))?.attrs.subscription).toBe('both');

    // Presence now flows both ways, with show/status.
    await a.send(xml('presence', {}, xml('show', {}, 'away'), xml('status', {}, 'lunch')));
    const upd = await b.waitFor((el) => isPresence(a.jid)(el) && el.getChildText('show') === 'away');
    expect(upd.getChildText('status')).toBe('lunch');
    expect(upd.attrs.to).toBe(bob);
    await b.send(xml('presence', {}, xml('show', {}, 'dnd')));
    await a.waitFor((el) => isPresence(b.jid)(el) && el.getChildText('show') === 'dnd');
  });

  it('unavailable presence is broadcast when a session ends, cleanly or not', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    await mutual(alice, bob);
    const a = await login(alice);
    const b1 = await login(bob, { resource: 'crash' });
    const b2 = await login(bob, { resource: 'clean' });
    await a.waitFor(isPresence(b1.jid));
    await a.waitFor(isPresence(b2.jid));

    // TCP connection dropped without </stream:stream>.
    (b1.xmpp.socket as unknown as { socket: { destroy(): void } }).socket.destroy();
    const gone = await a.waitFor(isPresence(b1.jid, 'unavailable'));
    expect(gone.attrs.to).toBe(alice);
    // The account's other resource is told too (§4.5.2).
    await b2.waitFor(isPresence(b1.jid, 'unavailable'));

    // Graceful unavailable with a status, then a clean close.
    await b2.send(xml('presence', { type: 'unavailable' }, xml('status', {}, 'bye')));
    const bye = await a.waitFor(isPresence(b2.jid, 'unavailable'));
    expect(bye.getChildText('status')).toBe('bye');
    const b2Closed = afterSessionClosed(srv, b2.jid);
    await b2.stop();
    await b2Closed;
    await barrier(a);
    // Only one unavailable for the clean resource: it was already unavailable.
    expect(a.received.filter(isPresence(b2.jid, 'unavailable'))).toHaveLength(1);

    // And a clean stop of an available session.
    const b3 = await login(bob, { resource: 'third' });
    await a.waitFor(isPresence(b3.jid));
    await b3.stop();
    await a.waitFor(isPresence(b3.jid, 'unavailable'));
  });

  it('probes at login: the new session receives the presence of contacts it is subscribed to', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const carol = await newUser('carol'); // Alice is subscribed to Carol, who is offline
    await mutual(alice, bob);
    await setSub(alice, carol, 'to');
    await setSub(carol, alice, 'from');
    const b = await login(bob, { presence: xml('presence', {}, xml('show', {}, 'chat'), xml('status', {}, 'online first')) });
    const a = await login(alice);
    const p = await a.waitFor(isPresence(b.jid));
    expect(p.getChildText('status')).toBe('online first');
    expect(p.getChildText('show')).toBe('chat');
    // An offline contact answers the probe with unavailable from the bare JID (§4.3.2).
    const off = await a.waitFor(isPresence(carol, 'unavailable'));
    expect(off.attrs.to?.startsWith(alice)).toBe(true);
    // Carol logs in and out: the probe answer now carries the time of the last unavailable presence.
    const c = await login(carol);
    await a.waitFor(isPresence(c.jid));
    await c.send(xml('presence', { type: 'unavailable' }, xml('status', {}, 'gone fishing')));
    await a.waitFor(isPresence(c.jid, 'unavailable'));
    await c.stop();
    const a2 = await login(alice, { resource: 'second' });
    const last = await a2.waitFor(isPresence(carol, 'unavailable'));
    expect(last.getChild('delay', 'urn:xmpp:delay')?.attrs.stamp).toMatch(/^\d{4}-\d\d-\d\dT/);
    // Bob, in turn, saw Alice's resources.
    await b.waitFor(isPresence(a.jid));
    await b.waitFor(isPresence(a2.jid));
  });

  it('pre-approval (§3.4): approved before the request, then auto-approved without bothering the contact', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    const b = await login(bob);

    await b.send(xml('presence', { to: alice, type: 'subscribed' }));
    const pre = itemOf(await b.waitFor(isPushFor(alice)));
    expect(pre.attrs).toMatchObject({ subscription: 'none', approved: 'true' });
    expect(pre.attrs.ask).toBeUndefined();

    await a.send(xml('presence', { to: bob, type: 'subscribe' }));
    const approval = await a.waitFor(isPresence(bob, 'subscribed'));
    const toPush = await a.waitFor(isPushFor(bob, (i) => i.attrs.subscription === 'to'));
    expect(indexOf(a, approval)).toBeLessThan(indexOf(a, toPush));
    const fromPush = itemOf(await b.waitFor(isPushFor(alice, (i) => i.attrs.subscription === 'from')));
    expect(fromPush.attrs.approved).toBeUndefined();
    // Bob is current presence is sent on approval, and the request itself never reached Bob.
    await a.waitFor(isPresence(b.jid));
    await barrier(a, b);
    await barrier(b, a);
    expect(b.received.some(isPresence(alice, 'subscribe'))).toBe(false);
    // The pre-approval itself was not routed to Alice: she got exactly one 'subscribed'.
    expect(a.received.filter(isPresence(bob, 'subscribed'))).toHaveLength(1);
  });

  it('cancelling a pre-approval with unsubscribed is not routed, and the next request needs approval', async () => {
    const alice = await newUser('alice');
    const dave = await newUser('dave');
    const a = await login(alice);
    const d = await login(dave);
    await a.send(xml('presence', { to: dave, type: 'subscribed' }));
    expect(itemOf(await a.waitFor(isPushFor(dave))).attrs.approved).toBe('true');
    await a.send(xml('presence', { to: dave, type: 'unsubscribed' }));
    const cancelled = itemOf(await a.waitFor(isPushFor(dave)));
    expect(cancelled.attrs.approved).toBeUndefined();
    expect(cancelled.attrs.subscription).toBe('none');
    await d.send(xml('presence', { to: alice, type: 'subscribe' }));
    await a.waitFor(isPresence(dave, 'subscribe'));
    await barrier(a, d);
    // §3.2.2 #2: neither the pre-approval nor its cancellation was routed to Dave.
    expect(d.received.some((el) => el.name === 'presence' && el.attrs.from === alice)).toBe(false);
    expect((await rosterItem(d, alice))?.attrs).toMatchObject({ subscription: 'none', ask: 'subscribe' });
  });

  it('a request made while the contact is offline is delivered at each login until answered (§3.1.3)', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    await a.send(xml('presence', { to: bob, type: 'subscribe', id: 'offline-sub' }, xml('status', {}, 'it is me')));
    await a.waitFor(isPushFor(bob, (i) => i.attrs.ask === 'subscribe'));
    // Duplicates while pending are kept once (the first or the last one, §3.1.3 #4).
    await a.send(xml('presence', { to: bob, type: 'subscribe' }, xml('status', {}, 'me again')));

    const b1 = await login(bob);
    const req = await b1.waitFor(isPresence(alice, 'subscribe'));
    expect(['it is me', 'me again']).toContain(req.getChildText('status'));
    // Stored requests are sent while the server handles Bob's initial presence, before the pong.
    await barrier(b1);
    expect(b1.received.filter(isPresence(alice, 'subscribe'))).toHaveLength(1);
    await b1.stop();

    const b2 = await login(bob);
    await b2.waitFor(isPresence(alice, 'subscribe'));
    await b2.send(xml('presence', { to: alice, type: 'subscribed' }));
    await a.waitFor(isPresence(bob, 'subscribed'));
    await b2.stop();

    const b3 = await login(bob);
    await a.waitFor(isPresence(b3.jid));
    await barrier(b3);
    expect(b3.received.some(isPresence(alice, 'subscribe'))).toBe(false);
  });

  it('a repeated request while one is pending is not delivered again (Appendix A.3.1: None + Pending In -> S.N.)', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    const b = await login(bob);
    await a.send(xml('presence', { to: bob, type: 'subscribe' }));
    await b.waitFor(isPresence(alice, 'subscribe'));
    await a.send(xml('presence', { to: bob, type: 'subscribe' }));
    await barrier(a, b);
    expect(b.received.filter(isPresence(alice, 'subscribe'))).toHaveLength(1);
    // It is still pending: approving it works.
    await b.send(xml('presence', { to: alice, type: 'subscribed' }));
    await a.waitFor(isPushFor(bob, (i) => i.attrs.subscription === 'to'));
  });

  it('a request to a contact who connects without sending presence waits for initial presence', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const a = await login(alice);
    const b = await login(bob, { presence: false });
    await a.send(xml('presence', { to: bob, type: 'subscribe' }));
    await a.waitFor(isPushFor(bob));
    await barrier(a, b);
    expect(b.received.some(isPresence(alice, 'subscribe'))).toBe(false);
    await b.send(xml('presence'));
    await b.waitFor(isPresence(alice, 'subscribe'));
  });

  describe('cancellation (§3.2, §3.3, Appendix A)', () => {
    it('unsubscribe from Both: user goes From, contact goes To, contact is told first and sends unavailable', async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      await mutual(alice, bob);
      const a = await login(alice);
      const b = await login(bob);
      await a.waitFor(isPresence(b.jid));
      await b.waitFor(isPresence(a.jid));

      await a.send(xml('presence', { to: bob, type: 'unsubscribe' }));
      expect(itemOf(await a.waitFor(isPushFor(bob))).attrs.subscription).toBe('from');
      const note = await b.waitFor(isPresence(alice, 'unsubscribe'));
      const push = await b.waitFor(isPushFor(alice));
      expect(itemOf(push).attrs.subscription).toBe('to');
      expect(indexOf(b, note)).toBeLessThan(indexOf(b, push));
      // §3.3.3: Bob's server sends unavailable from each of Bob's resources to Alice.
      await a.waitFor(isPresence(b.jid, 'unavailable'));

      // Bob's presence no longer reaches Alice; Alice's still reaches Bob.
      await b.send(xml('presence', {}, xml('status', {}, 'secret')));
      await a.send(xml('presence', {}, xml('status', {}, 'public')));
      await b.waitFor((el) => isPresence(a.jid)(el) && el.getChildText('status') === 'public');
      await barrier(b, a);
      expect(a.received.some((el) => isPresence(b.jid)(el) && el.getChildText('status') === 'secret')).toBe(false);
    });

    it('unsubscribed from From: unavailable first, then unsubscribed; both items end at none', async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      await setSub(alice, bob, 'from'); // Bob is subscribed to Alice
      await setSub(bob, alice, 'to');
      const b = await login(bob);
      const a = await login(alice);
      await b.waitFor(isPresence(a.jid));

      await a.send(xml('presence', { to: bob, type: 'unsubscribed' }));
      expect(itemOf(await a.waitFor(isPushFor(bob))).attrs.subscription).toBe('none');
      const unavailable = await b.waitFor(isPresence(a.jid, 'unavailable'));
      const cancel = await b.waitFor(isPresence(alice, 'unsubscribed'));
      const push = await b.waitFor(isPushFor(alice));
      expect(itemOf(push).attrs.subscription).toBe('none');
      // §3.2.2: unavailable while still subscribed, i.e. before the unsubscribed; §3.2.3: the
      // cancellation before the roster push.
      expect(indexOf(b, unavailable)).toBeLessThan(indexOf(b, cancel));
      expect(indexOf(b, cancel)).toBeLessThan(indexOf(b, push));

      await a.send(xml('presence', {}, xml('status', {}, 'not for bob')));
      await barrier(a, b);
      expect(b.received.some((el) => isPresence(a.jid)(el) && el.getChildText('status') === 'not for bob')).toBe(false);
    });

    it('denying a request: the requester goes from None + Pending Out to None', async () => {
      const alice = await newUser('alice');
      const carol = await newUser('carol');
      const a = await login(alice);
      const c = await login(carol);
      await c.send(xml('presence', { to: alice, type: 'subscribe' }));
      await c.waitFor(isPushFor(alice, (i) => i.attrs.ask === 'subscribe'));
      await a.waitFor(isPresence(carol, 'subscribe'));
      await a.send(xml('presence', { to: carol, type: 'unsubscribed' }));
      await c.waitFor(isPresence(alice, 'unsubscribed'));
      const push = itemOf(await c.waitFor(isPushFor(alice, (i) => i.attrs.ask === undefined)));
      expect(push.attrs.subscription).toBe('none');
      // The denial leaves no roster item on Alice's side, and the request is no longer pending.
      expect(await rosterItem(a, carol)).toBeUndefined();
      const a2 = await login(alice, { resource: 'later' });
      await barrier(a2);
      expect(a2.received.some(isPresence(carol, 'subscribe'))).toBe(false);
    });

    it("'unsubscribed' with nothing to cancel is not routed (Appendix A.2.4: None -> S.N.)", async () => {
      const alice = await newUser('alice');
      const eve = await newUser('eve');
      const a = await login(alice);
      const e = await login(eve);
      await a.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: eve }))));
      await a.waitFor(isPushFor(eve));
      await a.send(xml('presence', { to: eve, type: 'unsubscribed' }));
      await barrier(a, e);
      expect(e.received.some(isPresence(alice, 'unsubscribed'))).toBe(false);
    });

    it('removing a Both contact from the roster cancels both directions', async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      await mutual(alice, bob);
      const a = await login(alice);
      const b = await login(bob);
      await b.waitFor(isPresence(a.jid));
      await a.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: bob, subscription: 'remove' }))));
      expect(itemOf(await a.waitFor(isPushFor(bob))).attrs.subscription).toBe('remove');
      await b.waitFor(isPresence(alice, 'unsubscribe'));
      const cancel = await b.waitFor(isPresence(alice, 'unsubscribed'));
      const unavailable = await b.waitFor(isPresence(a.jid, 'unavailable'));
      expect(indexOf(b, unavailable)).toBeLessThan(indexOf(b, cancel));
      expect(itemOf(await b.waitFor(isPushFor(alice, (i) => i.attrs.subscription === 'none'))).attrs.ask).toBeUndefined();
    });
  });

  it('directed presence to a non-contact: delivered, not included in later broadcasts, closed with unavailable', async () => {
    const alice = await newUser('alice');
    const carol = await newUser('carol');
    const bob = await newUser('bob');
    await mutual(alice, bob);
    const c = await login(carol, { resource: 'desk' });
    const b = await login(bob);
    const a = await login(alice);
    await b.waitFor(isPresence(a.jid));

    await a.send(xml('presence', { to: c.jid }, xml('status', {}, 'psst')));
    const direct = await c.waitFor(isPresence(a.jid));
    expect(direct.getChildText('status')).toBe('psst');
    expect(direct.attrs.to).toBe(c.jid);

    // §4.6.2 #2: a later broadcast goes to subscribers (Bob) but not to Carol.
    await a.send(xml('presence', {}, xml('show', {}, 'xa')));
    await b.waitFor((el) => isPresence(a.jid)(el) && el.getChildText('show') === 'xa');
    await barrier(a, c);
    expect(c.received.filter(isPresence(a.jid))).toHaveLength(1);

    // The session ends: Carol gets unavailable, as does Bob.
    (a.xmpp.socket as unknown as { socket: { destroy(): void } }).socket.destroy();
    await c.waitFor(isPresence(a.jid, 'unavailable'));
    await b.waitFor(isPresence(a.jid, 'unavailable'));
  });

  it('directed unavailable closes the directed presence: nothing more is sent at disconnect', async () => {
    const alice = await newUser('alice');
    const carol = await newUser('carol');
    const c = await login(carol);
    const a = await login(alice, { presence: false }); // connected, not available: §4.6.2 #3
    await a.send(xml('presence', { to: carol }));
    await c.waitFor(isPresence(a.jid));
    await a.send(xml('presence', { to: carol, type: 'unavailable' }));
    await c.waitFor(isPresence(a.jid, 'unavailable'));
    const aClosed = afterSessionClosed(srv, a.jid);
    await a.stop();
    await aClosed;
    await barrier(c);
    expect(c.received.filter(isPresence(a.jid, 'unavailable'))).toHaveLength(1);
  });

  it('presence does not leak to an entity without a subscription, even through probes', async () => {
    const alice = await newUser('alice');
    const mallory = await newUser('mallory');
    // Mallory has Alice in her roster without a subscription, and asks for presence by herself.
    await setSub(mallory, alice, 'none');
    const a = await login(alice, { presence: xml('presence', {}, xml('status', {}, 'private')) });
    const m = await login(mallory);
    await m.send(xml('presence', { to: alice, type: 'probe' }));
    await a.send(xml('presence', {}, xml('status', {}, 'still private')));
    await barrier(m); // the probe is answered while Mallory's session handles it
    await barrier(a, m); // Alice's broadcast
    expect(m.received.filter(presenceFromAccount(alice))).toEqual([]);
    // A subscription claimed only on Mallory's side ('to') does not help either: the probe at
    // login is answered with 'unsubscribed', not with presence (§4.3.2).
    await setSub(mallory, alice, 'to');
    const m2 = await login(mallory, { resource: 'again' });
    const answer = await m2.waitFor(presenceFromAccount(alice));
    expect(answer.attrs.type).toBe('unsubscribed');
    expect(answer.attrs.from).toBe(alice);
    await barrier(m2);
    expect(m2.received.filter(presenceFromAccount(alice)).every((p) => p.attrs.type === 'unsubscribed')).toBe(true);
  });

  it('a subscription request to an account that does not exist is answered with unsubscribed', async () => {
    const alice = await newUser('alice');
    const ghost = `${uniqueUser('ghost')}@localhost`;
    const a = await login(alice);
    await a.send(xml('presence', { to: ghost, type: 'subscribe' }));
    await a.waitFor(isPushFor(ghost, (i) => i.attrs.ask === 'subscribe'));
    await a.waitFor(isPresence(ghost, 'unsubscribed'));
    const push = itemOf(await a.waitFor(isPushFor(ghost, (i) => i.attrs.ask === undefined)));
    expect(push.attrs.subscription).toBe('none');
  });

  it("an account's resources see each other's presence, including their own", async () => {
    const alice = await newUser('alice');
    const one = await login(alice, { resource: 'one', presence: xml('presence', {}, xml('status', {}, 'first')) });
    const two = await login(alice, { resource: 'two', presence: xml('presence', {}, xml('status', {}, 'second')) });
    // The new resource learns the other one's presence (§4.2.2) and its own is reflected.
    const seen = await two.waitFor(isPresence(one.jid));
    expect(seen.getChildText('status')).toBe('first');
    expect((await one.waitFor(isPresence(two.jid))).getChildText('status')).toBe('second');
    await two.send(xml('presence', {}, xml('show', {}, 'away')));
    await one.waitFor((el) => isPresence(two.jid)(el) && el.getChildText('show') === 'away');
    await two.waitFor((el) => isPresence(two.jid)(el) && el.getChildText('show') === 'away');
  });
});
