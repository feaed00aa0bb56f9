// XEP-0352 client state indication over real client connections: the post-auth stream feature
// (§4.1), <inactive/> holding back a contact's presence and chat states while a message with a body
// or a XEP-0184 receipt goes out at once with what was held before it (order kept), only the newest
// presence per sender kept, <active/> flushing before the next stanza is answered (§5.1), the bound
// on held stanzas, and an unknown element in the CSI namespace.
//
// "Not received" cannot be shown with a ping round trip from the client: its pong is important and
// would flush what is held. Instead the server's own XEP-0199 idle ping (limits.idlePingSeconds: 1)
// serves as the barrier: the CSI filter lets it out without flushing (it is only a liveness check),
// so whatever the server wrote before it has arrived when it arrives (@xmpp/client answers it).
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { RawClient } from '../helpers/raw.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS = 'urn:xmpp:csi:0';
const NS_ROSTER = 'jabber:iq:roster';
const NS_CHATSTATES = 'http://jabber.org/protocol/chatstates';
const MAX_HELD = 4;

const ping = () => xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
const bare = (c: TestClient) => c.jid.split('/')[0] as string;
const statusIs = (from: string, status: string) => (el: Element) => el.name === 'presence' && el.attrs.from === from && el.getChildText('status') === status;
const bodyIs = (body: string) => (el: Element) => el.name === 'message' && el.getChildText('body') === body;

async function flush(c: TestClient): Promise<void> {
  await c.iq(ping());
}

/** Waits for the server's next idle ping on this stream (written after everything sent before). */
async function serverPing(c: TestClient): Promise<void> {
  const from = c.received.length;
  await c.waitFor((el) => c.received.indexOf(el) >= from && el.name === 'iq' && el.attrs.type === 'get' && el.attrs.from === 'localhost' && !!el.getChild('ping', 'urn:xmpp:ping'), 10_000);
}

/** Index in `c.received` of the first stanza matching `pred` (-1 if none). */
const indexOf = (c: TestClient, pred: (el: Element) => boolean) => c.received.findIndex(pred);

describe('client state indication (XEP-0352)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return u;
  }

  async function online(username: string, resource: string, status = 'here'): Promise<TestClient> {
    const c = await connect({ port, username, resource });
    clients.push(c);
    await c.send(xml('presence', {}, xml('status', {}, status)));
    await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    return c;
  }

  /** Mutual presence subscription through pre-approvals (RFC 6121 §3.4). */
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
        if (q?.getChildren('item').find((i) => i.attrs.jid === bare(other))?.attrs.subscription === 'both') break;
        if (Date.now() > deadline) throw new Error('no mutual subscription');
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Romeo (who will go inactive) and Juliet, subscribed to each other, Romeo seeing Juliet online. */
  async function pair(): Promise<{ romeo: TestClient; juliet: TestClient; julietUser: string }> {
    const romeo = await online(await newUser('romeo'), 'phone');
    const julietUser = await newUser('juliet');
    const juliet = await online(julietUser, 'balcony');
    await befriend(romeo, juliet);
    // Presence exchanged by the subscription has arrived: send a fresh one and wait for it.
    await juliet.send(xml('presence', {}, xml('status', {}, 'ready')));
    await romeo.waitFor(statusIs(juliet.jid, 'ready'));
    return { romeo, juliet, julietUser };
  }

  async function inactive(c: TestClient): Promise<void> {
    await c.send(xml('inactive', { xmlns: NS }));
    await flush(c); // in order: the state changed before the pong
  }

  beforeAll(async () => {
    srv = await startTestServer({ modules: { csi: { maxHeld: MAX_HELD } }, limits: { idlePingSeconds: 1, pingTimeoutSeconds: 30 } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('§4.1: <csi/> is offered in the stream features after authentication, not before', async () => {
    const u = await newUser('raw');
    const raw = await RawClient.login(port, u, 'secret-password', { resource: 'r' });
    try {
      const at = raw.text.lastIndexOf('<success');
      expect(at).toBeGreaterThan(0);
      expect(raw.text.slice(at)).toMatch(/<csi xmlns=["']urn:xmpp:csi:0["']\/>/);
      expect(raw.text.slice(0, at)).not.toContain(NS);
    } finally {
      raw.destroy();
    }
  });

  it('while inactive, presence is held; a message with a body flushes it (newest per sender only), then arrives', async () => {
    const { romeo, juliet } = await pair();
    await inactive(romeo);
    await juliet.send(xml('presence', {}, xml('status', {}, 'away-1')));
    await juliet.send(xml('presence', {}, xml('status', {}, 'away-2')));
    await flush(juliet); // both broadcasts were handed to Romeo's session
    await serverPing(romeo);
    expect(romeo.received.filter(statusIs(juliet.jid, 'away-1'))).toHaveLength(0);
    expect(romeo.received.filter(statusIs(juliet.jid, 'away-2'))).toHaveLength(0);

    await juliet.send(xml('message', { to: bare(romeo), type: 'chat' }, xml('body', {}, 'wake')));
    await romeo.waitFor(bodyIs('wake'));
    const held = indexOf(romeo, statusIs(juliet.jid, 'away-2'));
    expect(held).toBeGreaterThanOrEqual(0);
    expect(held).toBeLessThan(indexOf(romeo, bodyIs('wake')));
    // Still inactive: later presence is held again, and the superseded one never came.
    await juliet.send(xml('presence', {}, xml('status', {}, 'away-3')));
    await flush(juliet);
    await serverPing(romeo);
    expect(romeo.received.filter(statusIs(juliet.jid, 'away-3'))).toHaveLength(0);
    expect(romeo.received.filter(statusIs(juliet.jid, 'away-1'))).toHaveLength(0);
  });

  it('§5.1: <active/> flushes held presence before the next stanza is answered; then presence flows live', async () => {
    const { romeo, juliet } = await pair();
    await inactive(romeo);
    await juliet.send(xml('presence', {}, xml('status', {}, 'held-until-active')));
    await flush(juliet);
    await serverPing(romeo);
    expect(romeo.received.filter(statusIs(juliet.jid, 'held-until-active'))).toHaveLength(0);

    await romeo.send(xml('active', { xmlns: NS }));
    await flush(romeo);
    // Arrived before the pong (the iq promise resolved only after it).
    expect(romeo.received.filter(statusIs(juliet.jid, 'held-until-active'))).toHaveLength(1);

    await juliet.send(xml('presence', {}, xml('status', {}, 'live')));
    await romeo.waitFor(statusIs(juliet.jid, 'live'));
  });

  it('chat-state-only messages are held (newest kept); a XEP-0184 receipt is important and keeps the order', async () => {
    const { romeo, juliet } = await pair();
    await inactive(romeo);
    const state = (name: string) => xml('message', { to: romeo.jid, type: 'chat', id: `cs-${name}` }, xml(name, { xmlns: NS_CHATSTATES }));
    await juliet.send(state('composing'));
    await juliet.send(xml('presence', {}, xml('status', {}, 'between')));
    await juliet.send(state('paused'));
    await flush(juliet);
    await serverPing(romeo);
    const isState = (name: string) => (el: Element) => el.name === 'message' && el.attrs.id === `cs-${name}`;
    expect(romeo.received.filter(isState('composing'))).toHaveLength(0);
    expect(romeo.received.filter(isState('paused'))).toHaveLength(0);

    await juliet.send(xml('message', { to: romeo.jid, id: 'receipt-1' }, xml('received', { xmlns: 'urn:xmpp:receipts', id: 'orig-1' })));
    await romeo.waitFor((el) => el.attrs.id === 'receipt-1');
    const iPresence = indexOf(romeo, statusIs(juliet.jid, 'between'));
    const iPaused = indexOf(romeo, isState('paused'));
    const iReceipt = indexOf(romeo, (el) => el.attrs.id === 'receipt-1');
    expect(iPresence).toBeGreaterThanOrEqual(0);
    // Newest chat state last (it superseded "composing"), then the receipt.
    expect(iPresence).toBeLessThan(iPaused);
    expect(iPaused).toBeLessThan(iReceipt);
    expect(romeo.received.filter(isState('composing'))).toHaveLength(0);
  });

  it(`the held set is bounded (maxHeld ${MAX_HELD}): the next distinct sender flushes everything`, async () => {
    const { romeo, juliet, julietUser } = await pair();
    await inactive(romeo);
    await juliet.send(xml('presence', {}, xml('status', {}, 'bound-0')));
    await flush(juliet);
    // Each new resource of Juliet is a new sender: keys 1..MAX_HELD-1 fill the set, the next overflows it.
    const extra: TestClient[] = [];
    for (let i = 1; i < MAX_HELD; i++) extra.push(await online(julietUser, `r${i}`, `bound-${i}`));
    await serverPing(romeo);
    for (let i = 0; i < MAX_HELD; i++) expect(romeo.received.filter((el) => el.name === 'presence' && el.getChildText('status') === `bound-${i}`)).toHaveLength(0);
    const last = await online(julietUser, 'overflow', `bound-${MAX_HELD}`);
    await romeo.waitFor(statusIs(last.jid, `bound-${MAX_HELD}`));
    const order = Array.from({ length: MAX_HELD + 1 }, (_, i) => indexOf(romeo, (el) => el.name === 'presence' && el.getChildText('status') === `bound-${i}`));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((x, y) => x - y)).toEqual(order);
    // The set starts over: the next update is held again.
    await juliet.send(xml('presence', {}, xml('status', {}, 'after-overflow')));
    await flush(juliet);
    await serverPing(romeo);
    expect(romeo.received.filter(statusIs(juliet.jid, 'after-overflow'))).toHaveLength(0);
  });

  it('a session closed while inactive drops what it held; the server keeps serving', async () => {
    const { romeo, juliet } = await pair();
    await inactive(romeo);
    await juliet.send(xml('presence', {}, xml('status', {}, 'never-seen')));
    await flush(juliet);
    await romeo.stop();
    await juliet.send(xml('presence', {}, xml('status', {}, 'after-close')));
    await flush(juliet);
    expect(romeo.received.filter(statusIs(juliet.jid, 'never-seen'))).toHaveLength(0);
  });

  it('an unknown element in the CSI namespace is a stream error (unsupported-stanza-type)', async () => {
    const u = await newUser('raw');
    const raw = await RawClient.login(port, u, 'secret-password', { resource: 'r' });
    try {
      await raw.send(`<bogus xmlns='${NS}'/>`);
      expect(await raw.expectStreamErrorAndClose()).toBe('unsupported-stanza-type');
    } finally {
      raw.destroy();
    }
  });
});
