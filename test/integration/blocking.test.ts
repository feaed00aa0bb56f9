// XEP-0191 blocking command over real client connections: discovery (§3.1), blocklist (§3.2), block
// with pushes and presence (§3.3), inbound and outbound enforcement (§3.3), unblock and unblock-all
// (§3.4, §3.5), JID matching (§5), errors (bad-request, jid-malformed, the list cap) and offline
// storage never keeping a blocked sender's messages.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS = 'urn:xmpp:blocking';
const NS_ERR = 'urn:xmpp:blocking:errors';
const NS_ROSTER = 'jabber:iq:roster';
const LIMIT = 5;

const blocklistGet = () => xml('iq', { type: 'get' }, xml('blocklist', { xmlns: NS }));
const block = (...jids: string[]) => xml('iq', { type: 'set' }, xml('block', { xmlns: NS }, ...jids.map((jid) => xml('item', { jid }))));
const unblock = (...jids: string[]) => xml('iq', { type: 'set' }, xml('unblock', { xmlns: NS }, ...jids.map((jid) => xml('item', { jid }))));
const ping = (to: string) => xml('iq', { type: 'get', to }, xml('ping', { xmlns: 'urn:xmpp:ping' }));

interface IqFailure {
  condition: string;
  type: string;
  application?: Element;
}

async function iqError(c: TestClient, el: Element): Promise<IqFailure> {
  try {
    const r = await c.iq(el);
    throw new Error(`expected an error, got ${r}`);
  } catch (e) {
    const err = e as { condition?: string; type?: string; application?: Element };
    if (!err.condition) throw e;
    return { condition: err.condition, type: err.type ?? '', application: err.application };
  }
}

async function blocklist(c: TestClient): Promise<string[]> {
  const res = await c.iq(blocklistGet());
  return (res.getChild('blocklist', NS)?.getChildren('item') ?? []).map((i) => i.attrs.jid as string).sort();
}

/** A server round trip: every stanza the server wrote to this client before has arrived. */
async function flush(c: TestClient): Promise<void> {
  await c.iq(ping('localhost'));
}

const bare = (c: TestClient) => c.jid.split('/')[0] as string;
const isPush = (kind: 'block' | 'unblock') => (el: Element) => el.name === 'iq' && el.attrs.type === 'set' && !!el.getChild(kind, NS);
const pushedJids = (el: Element, kind: 'block' | 'unblock') => (el.getChild(kind, NS)?.getChildren('item') ?? []).map((i) => i.attrs.jid).sort();
const presenceFrom = (from: string, pred: (el: Element) => boolean = () => true) => (el: Element) =>
  el.name === 'presence' && (el.attrs.from === from || el.attrs.from?.startsWith(`${from}/`)) && pred(el);
const messageWith = (body: string) => (el: Element) => el.name === 'message' && el.getChildText('body') === body;

describe('blocking command (XEP-0191)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function login(username: string, resource?: string): Promise<TestClient> {
    const c = await connect({ port, username, resource });
    clients.push(c);
    return c;
  }

  async function newUser(prefix = 'bl'): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return u;
  }

  /** Mutual presence subscription (subscription='both') through pre-approvals (RFC 6121 §3.4). */
  async function befriend(a: TestClient, b: TestClient): Promise<void> {
    await a.send(xml('presence', { to: bare(b), type: 'subscribed' }));
    await flush(a);
    await b.send(xml('presence', { to: bare(a), type: 'subscribed' }));
    await flush(b);
    await b.send(xml('presence', { to: bare(a), type: 'subscribe' }));
    await a.send(xml('presence', { to: bare(b), type: 'subscribe' }));
    for (const [c, other] of [
      [a, b],
      [b, a],
    ] as const) {
      const deadline = Date.now() + 5000;
      for (;;) {
        const q = (await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: NS_ROSTER })))).getChild('query', NS_ROSTER);
        const item = q?.getChildren('item').find((i) => i.attrs.jid === bare(other));
        if (item?.attrs.subscription === 'both') break;
        if (Date.now() > deadline) throw new Error(`no mutual subscription between ${bare(a)} and ${bare(b)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Logs in and sends initial presence (with a status), waiting for its own echo. */
  async function online(username: string, status = 'here', resource?: string): Promise<TestClient> {
    const c = await login(username, resource);
    await c.send(xml('presence', {}, xml('status', {}, status)));
    await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid && el.attrs.type === undefined);
    return c;
  }

  beforeAll(async () => {
    srv = await startTestServer({ limits: { blocklistSize: LIMIT } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('§3.1: the server and the account advertise urn:xmpp:blocking', async () => {
    const c = await login(await newUser());
    for (const to of ['localhost', bare(c)]) {
      const res = await c.iq(xml('iq', { type: 'get', to }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
      expect(res.getChild('query')?.getChildren('feature').map((f) => f.attrs.var)).toContain(NS);
    }
  });

  it('§3.2: an empty block list is an empty <blocklist/>', async () => {
    const c = await login(await newUser());
    const res = await c.iq(blocklistGet());
    expect(res.attrs.type).toBe('result');
    expect(res.getChild('blocklist', NS)?.getChildElements()).toHaveLength(0);
  });

  it('§3.3: block several JIDs (normalized); pushes reach exactly the resources that retrieved the list', async () => {
    const u = await newUser();
    const r1 = await login(u, 'one');
    const r2 = await login(u, 'two');
    const r3 = await login(u, 'three'); // never asks for the block list
    await blocklist(r1);
    await blocklist(r2);
    const res = await r1.iq(block('Romeo@Montague.NET', 'iago@shakespeare.lit/Evil', 'capulet.com'));
    expect(res.attrs.type).toBe('result');
    const expected = ['capulet.com', 'iago@shakespeare.lit/Evil', 'romeo@montague.net'];
    for (const c of [r1, r2]) {
      const push = await c.waitFor(isPush('block'));
      expect(push.attrs.to).toBe(c.jid);
      expect(pushedJids(push, 'block')).toEqual(expected);
    }
    await flush(r3);
    expect(r3.received.filter(isPush('block'))).toHaveLength(0);
    expect(await blocklist(r3)).toEqual(expected);
  });

  it('§3.3: an empty <block/> is bad-request, a malformed JID is jid-malformed, nothing is stored', async () => {
    const c = await login(await newUser());
    expect((await iqError(c, block())).condition).toBe('bad-request');
    expect((await iqError(c, block('ok@example.com', '@example.com'))).condition).toBe('jid-malformed');
    expect((await iqError(c, unblock('a@b/'))).condition).toBe('jid-malformed');
    expect(await blocklist(c)).toEqual([]);
  });

  it(`the block list holds at most limits.blocklistSize (${LIMIT}) entries: resource-constraint beyond`, async () => {
    const c = await login(await newUser());
    await c.iq(block(...Array.from({ length: LIMIT }, (_, i) => `spam${i}@example.com`)));
    const err = await iqError(c, block('one-too-many@example.com'));
    expect(err.condition).toBe('resource-constraint');
    expect(await blocklist(c)).toHaveLength(LIMIT);
    // Re-blocking an entry already there is not growth.
    await c.iq(block('spam0@example.com'));
    expect(await blocklist(c)).toHaveLength(LIMIT);
  });

  it('§3.4/§3.5: unblock items and unblock all, with pushes', async () => {
    const c = await login(await newUser());
    await blocklist(c);
    await c.iq(block('a@example.com', 'b@example.com', 'c@example.com'));
    await c.waitFor(isPush('block'));
    await c.iq(unblock('b@example.com'));
    const push = await c.waitFor(isPush('unblock'));
    expect(pushedJids(push, 'unblock')).toEqual(['b@example.com']);
    expect(await blocklist(c)).toEqual(['a@example.com', 'c@example.com']);
    await c.iq(unblock());
    const all = await c.waitFor(isPush('unblock'));
    expect(all.getChild('unblock', NS)?.getChildElements()).toHaveLength(0);
    expect(await blocklist(c)).toEqual([]);
  });

  it('§3.3 inbound: messages bounce with service-unavailable, iq get is service-unavailable, presence vanishes', async () => {
    const alice = await online(await newUser('al'));
    const bob = await online(await newUser('bo'));
    // Before the block, everything gets through.
    expect((await bob.iq(ping(bare(alice)))).attrs.type).toBe('result');

    await alice.iq(block(bare(bob)));
    await bob.send(xml('message', { to: bare(alice), type: 'chat', id: 'm-blocked' }, xml('body', {}, 'while blocked')));
    const bounce = await bob.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.id === 'm-blocked');
    expect(bounce.getChild('error')?.getChild('service-unavailable', 'urn:ietf:params:xml:ns:xmpp-stanzas')).toBeDefined();
    expect((await iqError(bob, ping(bare(alice)))).condition).toBe('service-unavailable');
    expect((await iqError(bob, ping(alice.jid))).condition).toBe('service-unavailable');
    await bob.send(xml('presence', { to: alice.jid }, xml('status', {}, 'directed while blocked')));
    await bob.send(xml('presence', { to: bare(alice), type: 'subscribe' }));
    await flush(bob); // all of the above handled while the block was in force

    await alice.iq(unblock(bare(bob)));
    await bob.send(xml('message', { to: bare(alice), type: 'chat' }, xml('body', {}, 'after unblock')));
    await alice.waitFor(messageWith('after unblock'));
    // Bob's stanzas are handled in order: nothing sent while blocked reached Alice.
    expect(alice.received.filter(messageWith('while blocked'))).toHaveLength(0);
    expect(alice.received.filter(presenceFrom(bare(bob)))).toHaveLength(0);
  });

  it('§3.3 outbound: the user gets not-acceptable + <blocked/>, the contact gets nothing', async () => {
    const alice = await online(await newUser('al'));
    const bob = await online(await newUser('bo'));
    await alice.iq(block(bare(bob)));

    await alice.send(xml('message', { to: bare(bob), type: 'chat', id: 'out-1' }, xml('body', {}, 'to a blocked contact')));
    const err = await alice.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.id === 'out-1');
    expect(err.attrs.from).toBe(bare(bob));
    const e = err.getChild('error') as Element;
    expect(e.attrs.type).toBe('cancel');
    expect(e.getChild('not-acceptable', 'urn:ietf:params:xml:ns:xmpp-stanzas')).toBeDefined();
    expect(e.getChild('blocked', NS_ERR)).toBeDefined();

    const iqErr = await iqError(alice, ping(bob.jid));
    expect(iqErr.condition).toBe('not-acceptable');
    expect(iqErr.application?.name).toBe('blocked');
    expect(iqErr.application?.attrs.xmlns).toBe(NS_ERR);

    await alice.send(xml('presence', { to: bob.jid, id: 'dp-1' }));
    const pErr = await alice.waitFor((el) => el.name === 'presence' && el.attrs.type === 'error' && el.attrs.id === 'dp-1');
    expect(pErr.getChild('error')?.getChild('blocked', NS_ERR)).toBeDefined();

    await alice.iq(unblock(bare(bob)));
    await alice.send(xml('message', { to: bare(bob), type: 'chat' }, xml('body', {}, 'unblocked now')));
    await bob.waitFor(messageWith('unblocked now'));
    expect(bob.received.filter(messageWith('to a blocked contact'))).toHaveLength(0);
    expect(bob.received.filter((el) => el.name === 'iq' && el.attrs.from === alice.jid)).toHaveLength(0);
  });

  it('§5 matching: a domain entry blocks its users but never the user’s own resources or server', async () => {
    const u = await newUser('al');
    const a1 = await online(u, 'a1', 'desk');
    const a2 = await online(u, 'a2', 'phone');
    const bob = await online(await newUser('bo'));
    await a1.iq(block('localhost'));
    expect((await iqError(bob, ping(bare(a1)))).condition).toBe('service-unavailable');
    // Own resources still talk, and the server still answers.
    await a2.send(xml('message', { to: a1.jid, type: 'chat' }, xml('body', {}, 'self talk')));
    await a1.waitFor(messageWith('self talk'));
    expect((await a1.iq(ping('localhost'))).attrs.type).toBe('result');
    const out = await iqError(a1, ping(bare(bob)));
    expect(out.condition).toBe('not-acceptable');
  });

  it('§5 matching: a full-JID entry blocks only that resource', async () => {
    const alice = await online(await newUser('al'));
    const b = await newUser('bo');
    const evil = await online(b, 'evil', 'evil');
    const good = await online(b, 'good', 'good');
    await alice.iq(block(`${b}@localhost/evil`));
    expect((await iqError(evil, ping(bare(alice)))).condition).toBe('service-unavailable');
    expect((await good.iq(ping(bare(alice)))).attrs.type).toBe('result');
    await good.send(xml('message', { to: bare(alice), type: 'chat' }, xml('body', {}, 'from good')));
    await alice.waitFor(messageWith('from good'));
  });

  it('offline storage never keeps a blocked sender’s messages', async () => {
    const a = await newUser('al');
    const alice = await login(a);
    const bob = await online(await newUser('bo'));
    const carol = await online(await newUser('ca'));
    await alice.iq(block(bare(bob)));
    await alice.stop();
    await bob.send(xml('message', { to: `${a}@localhost`, type: 'chat', id: 'off-1' }, xml('body', {}, 'offline but blocked')));
    const bounce = await bob.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.id === 'off-1');
    expect(bounce.getChild('error')?.getChild('service-unavailable', 'urn:ietf:params:xml:ns:xmpp-stanzas')).toBeDefined();
    await carol.send(xml('message', { to: `${a}@localhost`, type: 'chat' }, xml('body', {}, 'offline and welcome')));
    await flush(carol);
    const again = await online(a);
    await again.waitFor(messageWith('offline and welcome'));
    await flush(again);
    expect(again.received.filter(messageWith('offline but blocked'))).toHaveLength(0);
  });

  it('§3.3/§3.4 presence: unavailable on block, broadcasts skip the blocked contact, current presence on unblock', async () => {
    const alice = await online(await newUser('al'), 'start');
    const bob = await online(await newUser('bo'), 'bob here');
    const carol = await online(await newUser('ca'), 'carol here');
    const dave = await online(await newUser('da'), 'dave here'); // no subscription at all
    await befriend(alice, bob);
    await befriend(alice, carol);
    // Directed presence to a non-contact (RFC 6121 §4.6) also counts as "receiving presence".
    await alice.send(xml('presence', { to: dave.jid }, xml('status', {}, 'directed to dave')));
    await dave.waitFor(presenceFrom(alice.jid, (el) => el.getChildText('status') === 'directed to dave'));
    const eve = await online(await newUser('ev'), 'eve here'); // neither subscribed nor directed

    await alice.iq(block(bare(bob), bare(dave), bare(eve)));
    const gone = await bob.waitFor(presenceFrom(alice.jid, (el) => el.attrs.type === 'unavailable'));
    expect(gone.attrs.from).toBe(alice.jid);
    await dave.waitFor(presenceFrom(alice.jid, (el) => el.attrs.type === 'unavailable'));
    await flush(eve);
    expect(eve.received.filter(presenceFrom(bare(alice)))).toHaveLength(0);

    // A presence change reaches Carol but not Bob.
    await alice.send(xml('presence', {}, xml('status', {}, 'while bob is blocked')));
    await carol.waitFor(presenceFrom(alice.jid, (el) => el.getChildText('status') === 'while bob is blocked'));
    await flush(bob);
    expect(bob.received.filter(presenceFrom(alice.jid, (el) => el.getChildText('status') === 'while bob is blocked'))).toHaveLength(0);

    // Unblock: Bob (subscribed) gets the current presence; Alice learns Bob's again (probe).
    const before = alice.received.length;
    await alice.iq(unblock(bare(bob)));
    const cur = await bob.waitFor(presenceFrom(alice.jid, (el) => el.attrs.type === undefined && el.getChildText('status') === 'while bob is blocked'));
    expect(cur.attrs.to).toBe(bare(bob));
    await alice.waitFor((el) => alice.received.indexOf(el) >= before && presenceFrom(bare(bob), (p) => p.attrs.type === undefined)(el));
    // Dave is still blocked and not subscribed: nothing for him.
    await flush(dave);
    expect(dave.received.filter(presenceFrom(alice.jid, (el) => el.getChildText('status') === 'while bob is blocked'))).toHaveLength(0);
  });
});
