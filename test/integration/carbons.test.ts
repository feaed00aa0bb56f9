// XEP-0280 message carbons over real client connections: discovery (§3), enable/disable and their
// errors (§4, §5, §10.1), received copies (§7) and sent copies (§8) — to other users, remote domains
// and the account's own resources —, the §6.1 eligibility rules, <private/> and the XEP-0334
// <no-copy/> hint (§9), blocking (XEP-0191) vetoing copies, and forged carbons (§11); with XEP-0313,
// a sent copy carries the stanza-id of the sender's archive entry, the recipient only its own.
//
// "Nothing arrived" is shown with a ping round trip to the server after the copy would have been
// written: the server writes on one ordered stream per client, so a copy written before the pong
// would have arrived before it.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { iqError, connect, type TestClient, xml } from '../helpers/client.js';
import { mamQuery } from '../helpers/mam.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS = 'urn:xmpp:carbons:2';
const NS_FORWARD = 'urn:xmpp:forward:0';
const NS_HINTS = 'urn:xmpp:hints';
const NS_BLOCKING = 'urn:xmpp:blocking';
const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const NS_SID = 'urn:xmpp:sid:0';

const enable = (to?: string) => xml('iq', { type: 'set', to }, xml('enable', { xmlns: NS }));
const disable = (to?: string) => xml('iq', { type: 'set', to }, xml('disable', { xmlns: NS }));
const ping = (to = 'localhost') => xml('iq', { type: 'get', to }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
const chat = (to: string, body: string, type = 'chat', ...extra: Element[]) => xml('message', { to, type, id: `id-${body}` }, xml('body', {}, body), ...extra);
const bare = (c: TestClient) => c.jid.split('/')[0] as string;

/** A server round trip: everything the server wrote to this client before has arrived. */
async function flush(c: TestClient): Promise<void> {
  await c.iq(ping());
}

/** The forwarded message inside a carbon of `kind`, if `el` is one. */
function forwarded(el: Element, kind: 'sent' | 'received'): Element | undefined {
  if (el.name !== 'message') return undefined;
  return el.getChild(kind, NS)?.getChild('forwarded', NS_FORWARD)?.getChild('message');
}

const carbonWith = (kind: 'sent' | 'received', body: string) => (el: Element) => forwarded(el, kind)?.getChildText('body') === body;
/** Anything that shows `body`, as a message or as any kind of carbon. */
/** A message that carries `body` (a barrier iq's random token may contain the same letters). */
const mentions = (body: string) => (el: Element) => el.name === 'message' && el.toString().includes(body);

describe('message carbons (XEP-0280)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return u;
  }

  /** Logs in, sends initial presence, optionally enables carbons. */
  async function online(username: string, resource: string, carbons: boolean): Promise<TestClient> {
    const c = await connect({ port, username, resource });
    clients.push(c);
    await c.send(xml('presence'));
    await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    if (carbons) expect((await c.iq(enable())).attrs.type).toBe('result');
    return c;
  }

  /** Romeo on three resources (two with carbons, `plain` without) and Juliet on one. */
  async function cast() {
    const r = await newUser('romeo');
    const a = await online(r, 'a', true);
    const b = await online(r, 'b', true);
    const plain = await online(r, 'plain', false);
    const juliet = await online(await newUser('juliet'), 'balcony', false);
    return { a, b, plain, juliet };
  }

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('§3: the server advertises urn:xmpp:carbons:2', async () => {
    const c = await online(await newUser('disco'), 'x', false);
    const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(res.getChild('query')?.getChildren('feature').map((f) => f.attrs.var)).toContain(NS);
  });

  it('§4/§5/§10.1: enable and disable to the account or the server, repeatedly, without error', async () => {
    const c = await online(await newUser('toggle'), 'x', false);
    for (const to of [undefined, 'localhost', `${bare(c)}`]) {
      expect((await c.iq(enable(to))).attrs.type).toBe('result');
      expect((await c.iq(enable(to))).attrs.type).toBe('result');
      expect((await c.iq(disable(to))).attrs.type).toBe('result');
      expect((await c.iq(disable(to))).attrs.type).toBe('result');
    }
  });

  it("§4.1/§5.1: enabling or disabling another user's carbons is not-allowed; a get is not a request", async () => {
    const { a, juliet } = await cast();
    for (const req of [enable(bare(juliet)), disable(bare(juliet))]) {
      const err = await iqError(a, req);
      expect(err).toEqual({ condition: 'not-allowed', type: 'cancel' });
    }
    const get = await iqError(a, xml('iq', { type: 'get' }, xml('enable', { xmlns: NS })));
    expect(get.condition).toBe('service-unavailable');
    // Juliet's carbons were not switched on by Romeo: a message to her gives her no copies.
    const j2 = await online(bare(juliet).split('@')[0] as string, 'second', false);
    await a.send(chat(juliet.jid, 'not for j2'));
    await juliet.waitFor((el) => el.getChildText('body') === 'not for j2');
    await flush(j2);
    expect(j2.received.filter(mentions('not for j2'))).toHaveLength(0);
  });

  it('§7: a message to one resource is copied as <received/> to the other carbons-enabled resources only', async () => {
    const { a, b, plain, juliet } = await cast();
    await juliet.send(chat(a.jid, 'r1'));
    const original = await a.waitFor((el) => el.name === 'message' && el.getChildText('body') === 'r1');
    expect(original.getChild('received', NS)).toBeUndefined();

    const carbon = await b.waitFor(carbonWith('received', 'r1'));
    expect(carbon.attrs.from).toBe(bare(b));
    expect(carbon.attrs.to).toBe(b.jid);
    expect(carbon.attrs.type).toBe('chat');
    const inner = forwarded(carbon, 'received') as Element;
    expect(inner.attrs.xmlns).toBe('jabber:client');
    expect(inner.attrs.from).toBe(juliet.jid);
    expect(inner.attrs.to).toBe(a.jid);
    expect(inner.attrs.id).toBe('id-r1');

    await flush(a);
    await flush(plain);
    expect(a.received.filter((el) => !!forwarded(el, 'received'))).toHaveLength(0); // the addressee gets no copy
    expect(plain.received.filter(mentions('r1'))).toHaveLength(0); // carbons not enabled
  });

  it('§7: a message to the bare JID reaching every resource produces no copies', async () => {
    const { a, b, juliet } = await cast();
    await juliet.send(chat(bare(a), 'to-bare'));
    for (const c of [a, b]) await c.waitFor((el) => el.getChildText('body') === 'to-bare');
    for (const c of [a, b]) await flush(c);
    for (const c of [a, b]) expect(c.received.filter((el) => !!forwarded(el, 'received'))).toHaveLength(0);
  });

  it('§8: a sent message is copied as <sent/> to the other enabled resources, not to the sender', async () => {
    const { a, b, plain, juliet } = await cast();
    await a.send(chat(bare(juliet), 's1'));
    await juliet.waitFor((el) => el.getChildText('body') === 's1');
    const carbon = await b.waitFor(carbonWith('sent', 's1'));
    expect(carbon.attrs.from).toBe(bare(b));
    expect(carbon.attrs.to).toBe(b.jid);
    const inner = forwarded(carbon, 'sent') as Element;
    expect(inner.attrs.from).toBe(a.jid);
    expect(inner.attrs.to).toBe(bare(juliet));
    expect(inner.attrs.xmlns).toBe('jabber:client');
    await flush(a);
    await flush(plain);
    expect(a.received.filter(mentions('s1'))).toHaveLength(0);
    expect(plain.received.filter(mentions('s1'))).toHaveLength(0);
  });

  it("XEP-0313 §3: a sent copy carries the sender's archive stanza-id; the recipient gets only its own", async () => {
    const { a, b, juliet } = await cast();
    await a.send(chat(bare(juliet), 'archived'));
    const got = await juliet.waitFor((el) => el.name === 'message' && el.getChildText('body') === 'archived');
    const inner = forwarded(await b.waitFor(carbonWith('sent', 'archived')), 'sent') as Element;

    // The copy's stanza-id is the UID of the message in Romeo's archive.
    const sid = inner.getChildren('stanza-id', NS_SID);
    expect(sid).toHaveLength(1);
    expect(sid[0]?.attrs.by).toBe(bare(a));
    const romeo = await mamQuery(b, { fields: { with: bare(juliet) } });
    expect(romeo.bodies).toEqual(['archived']);
    expect(sid[0]?.attrs.id).toBe(romeo.ids[0]);

    // Juliet cannot read Romeo's archive: she gets one stanza-id, by her own archive, with its UID.
    const theirs = got.getChildren('stanza-id', NS_SID);
    expect(theirs.map((s) => s.attrs.by)).toEqual([bare(juliet)]);
    expect(got.toString()).not.toContain(romeo.ids[0] as string);
    const julietArchive = await mamQuery(juliet, { fields: { with: bare(a) } });
    expect(julietArchive.ids).toEqual([theirs[0]?.attrs.id]);
  });

  it('§8: sent copies also cover the sending resource without carbons, remote domains and own resources', async () => {
    const { a, b, plain } = await cast();
    // The sender need not have carbons enabled (§8).
    await plain.send(chat('someone@remote.example', 'to-remote'));
    await plain.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'id-to-remote');
    for (const c of [a, b]) {
      const carbon = await c.waitFor(carbonWith('sent', 'to-remote'));
      expect(forwarded(carbon, 'sent')?.attrs.to).toBe('someone@remote.example');
    }
    // To one of the account's own resources: the others learn it once, as <sent/> (no <received/> duplicate).
    await a.send(chat(plain.jid, 'to-self'));
    await plain.waitFor((el) => el.getChildText('body') === 'to-self' && !el.getChild('sent', NS));
    const carbon = await b.waitFor(carbonWith('sent', 'to-self'));
    expect(forwarded(carbon, 'sent')?.attrs.to).toBe(plain.jid);
    await flush(b);
    expect(b.received.filter(carbonWith('received', 'to-self'))).toHaveLength(0);
    expect(b.received.filter(carbonWith('sent', 'to-self'))).toHaveLength(1);
  });

  it('§5: after disable a resource gets no more copies; enabling again restores them', async () => {
    const { a, b, juliet } = await cast();
    await b.iq(disable());
    await juliet.send(chat(a.jid, 'while-off-in'));
    await a.send(chat(juliet.jid, 'while-off-out'));
    await juliet.waitFor((el) => el.getChildText('body') === 'while-off-out');
    await a.waitFor((el) => el.getChildText('body') === 'while-off-in');
    await flush(b);
    expect(b.received.filter(mentions('while-off'))).toHaveLength(0);
    await b.iq(enable());
    await juliet.send(chat(a.jid, 'back-on'));
    await b.waitFor(carbonWith('received', 'back-on'));
  });

  it('§6.1: groupchat and body-less normal messages are not copied; normal with body and receipts are', async () => {
    const { a, b, juliet } = await cast();
    await juliet.send(xml('message', { to: a.jid, type: 'groupchat' }, xml('body', {}, 'gc-1')));
    await juliet.send(xml('message', { to: a.jid }, xml('x', { xmlns: 'urn:example:nothing' }, 'plain-nobody')));
    await juliet.send(xml('message', { to: a.jid }, xml('body', {}, 'normal-body')));
    await juliet.send(xml('message', { to: a.jid, id: 'rcpt-1' }, xml('received', { xmlns: 'urn:xmpp:receipts', id: 'x' })));
    await b.waitFor(carbonWith('received', 'normal-body'));
    await b.waitFor((el) => forwarded(el, 'received')?.attrs.id === 'rcpt-1');
    await flush(b);
    expect(b.received.filter(mentions('gc-1'))).toHaveLength(0);
    expect(b.received.filter(mentions('plain-nobody'))).toHaveLength(0);
    // A MUC private message from an occupant (full JID + muc#user) is replicated by the room, not by us.
    await juliet.send(chat(a.jid, 'muc-pm', 'chat', xml('x', { xmlns: 'http://jabber.org/protocol/muc#user' })));
    await a.waitFor((el) => el.getChildText('body') === 'muc-pm');
    await flush(b);
    expect(b.received.filter(mentions('muc-pm'))).toHaveLength(0);
  });

  it('§9: <private/> and the XEP-0334 <no-copy/> hint prevent copies in both directions', async () => {
    const { a, b, juliet } = await cast();
    const privateEl = () => xml('private', { xmlns: NS });
    const noCopy = () => xml('no-copy', { xmlns: NS_HINTS });
    await a.send(chat(juliet.jid, 'priv-out', 'chat', privateEl(), noCopy()));
    await a.send(chat(juliet.jid, 'nocopy-out', 'chat', noCopy()));
    await juliet.send(chat(a.jid, 'priv-in', 'chat', privateEl()));
    await juliet.send(chat(a.jid, 'nocopy-in', 'chat', noCopy()));
    await juliet.waitFor((el) => el.getChildText('body') === 'nocopy-out');
    await a.waitFor((el) => el.getChildText('body') === 'nocopy-in');
    // The control: an ordinary message still is copied, after all the above.
    await juliet.send(chat(a.jid, 'control'));
    await b.waitFor(carbonWith('received', 'control'));
    for (const body of ['priv-out', 'nocopy-out', 'priv-in', 'nocopy-in']) expect(b.received.filter(mentions(body))).toHaveLength(0);
  });

  it("XEP-0191: a blocked contact's messages and messages to a blocked contact produce no copies", async () => {
    const { a, b, juliet } = await cast();
    await a.iq(xml('iq', { type: 'set' }, xml('block', { xmlns: NS_BLOCKING }, xml('item', { jid: bare(juliet) }))));
    await juliet.send(chat(a.jid, 'blocked-in'));
    const bounce = await juliet.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'id-blocked-in');
    expect(bounce.getChild('error')?.getChild('service-unavailable', NS_STANZAS)).toBeDefined();
    await a.send(chat(juliet.jid, 'blocked-out'));
    const refused = await a.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'id-blocked-out');
    expect(refused.getChild('error')?.getChild('not-acceptable', NS_STANZAS)).toBeDefined();
    await flush(b);
    expect(b.received.filter(mentions('blocked-'))).toHaveLength(0);
    expect(juliet.received.filter((el) => el.getChildText('body') === 'blocked-out')).toHaveLength(0);
  });

  it('§11: a carbon forged by another user is stripped, never delivered or re-wrapped as genuine', async () => {
    const { a, b } = await cast();
    const tybalt = await online(await newUser('tybalt'), 'home', false);
    const fake = (kind: 'sent' | 'received', body: string) =>
      xml(
        'message',
        { to: a.jid, type: 'chat', id: `forged-${kind}` },
        xml(kind, { xmlns: NS }, xml('forwarded', { xmlns: NS_FORWARD }, xml('message', { xmlns: 'jabber:client', from: `${bare(a).replace(/^romeo/, 'juliet')}/balcony`, to: a.jid, type: 'chat' }, xml('body', {}, body)))),
      );
    await tybalt.send(fake('received', 'forged-r'));
    await tybalt.send(fake('sent', 'forged-s'));
    for (const kind of ['received', 'sent'] as const) {
      const got = await a.waitFor((el) => el.name === 'message' && el.attrs.id === `forged-${kind}`);
      expect(got.attrs.from).toBe(tybalt.jid);
      expect(got.getChild(kind, NS)).toBeUndefined();
      // B's genuine copy wraps Tybalt's message, which no longer carries a carbon inside.
      const copy = await b.waitFor((el) => forwarded(el, 'received')?.attrs.id === `forged-${kind}`);
      const inner = forwarded(copy, 'received') as Element;
      expect(inner.attrs.from).toBe(tybalt.jid);
      expect(inner.getChild('sent', NS) ?? inner.getChild('received', NS)).toBeUndefined();
    }
    await flush(a);
    await flush(b);
    for (const c of [a, b]) expect(c.received.filter(mentions('<body>forged-'))).toHaveLength(0);
  });

  it('§11: a local client cannot push a forged carbon to anyone, nor get it copied to its own resources', async () => {
    const { a, b, juliet } = await cast();
    await a.send(
      xml(
        'message',
        { to: juliet.jid, type: 'chat', id: 'own-forgery' },
        xml('body', {}, 'cover'),
        xml('received', { xmlns: NS }, xml('forwarded', { xmlns: NS_FORWARD }, xml('message', { xmlns: 'jabber:client', type: 'chat' }, xml('body', {}, 'inner-forgery')))),
      ),
    );
    const got = await juliet.waitFor((el) => el.attrs.id === 'own-forgery');
    expect(got.getChild('received', NS)).toBeUndefined();
    const copy = await b.waitFor(carbonWith('sent', 'cover'));
    expect(forwarded(copy, 'sent')?.getChild('received', NS)).toBeUndefined();
    await flush(b);
    for (const c of [juliet, b]) expect(c.received.filter(mentions('inner-forgery'))).toHaveLength(0);
  });
});
