// Service discovery (XEP-0030) and entity capabilities (XEP-0115) over real connections: the
// server's identity and features, the caps hash in stream features recomputed independently from
// the disco#info result, account disco for the account itself, contacts and strangers.
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { RawXmppClient } from '../helpers/scram-client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';
const CAPS = 'http://jabber.org/protocol/caps';

function info(to?: string, node?: string): Element {
  return xml('iq', { type: 'get', to }, xml('query', { xmlns: DISCO_INFO, node }));
}

function items(to?: string, node?: string): Element {
  return xml('iq', { type: 'get', to }, xml('query', { xmlns: DISCO_ITEMS, node }));
}

function features(res: Element): string[] {
  return (res.getChild('query', DISCO_INFO)?.getChildren('feature') ?? []).map((f) => f.attrs.var as string);
}

function identities(res: Element): Element[] {
  return res.getChild('query', DISCO_INFO)?.getChildren('identity') ?? [];
}

const octet = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/** XEP-0115 §5.1 verification string over a disco#info <query/>, written from the spec. */
function capsVer(query: Element): string {
  const ids = query
    .getChildren('identity')
    .map((i) => ({ c: i.attrs.category ?? '', t: i.attrs.type ?? '', l: i.attrs['xml:lang'] ?? '', n: i.attrs.name ?? '' }))
    .sort((x, y) => octet(x.c, y.c) || octet(x.t, y.t) || octet(x.l, y.l));
  let s = '';
  for (const i of ids) s += `${i.c}/${i.t}/${i.l}/${i.n}<`;
  const feats = query.getChildren('feature').map((f) => f.attrs.var as string).sort(octet);
  for (const f of feats) s += `${f}<`;
  // Extended information (XEP-0128 forms), sorted by FORM_TYPE.
  const forms = query
    .getChildren('x', 'jabber:x:data')
    .map((x) => {
      const fields = x.getChildren('field');
      const formType = fields.find((f) => f.attrs.var === 'FORM_TYPE')?.getChildText('value') ?? '';
      let fs = `${formType}<`;
      for (const f of fields.filter((f) => f.attrs.var !== 'FORM_TYPE').sort((a, b) => octet(a.attrs.var ?? '', b.attrs.var ?? ''))) {
        fs += `${f.attrs.var}<`;
        for (const v of f.getChildren('value').map((v) => v.getText()).sort(octet)) fs += `${v}<`;
      }
      return { formType, fs };
    })
    .sort((a, b) => octet(a.formType, b.formType));
  for (const f of forms) s += f.fs;
  return createHash('sha1').update(s, 'utf8').digest('base64');
}

/** Sends an iq that must fail; resolves the error condition. */
async function iqError(c: TestClient, el: Element): Promise<string> {
  try {
    const r = await c.iq(el);
    throw new Error(`expected an error, got ${r}`);
  } catch (e) {
    const cond = (e as { condition?: string }).condition;
    if (!cond) throw e;
    return cond;
  }
}

describe('service discovery (XEP-0030, XEP-0115)', () => {
  let srv: TestServer;
  let port: number;
  let alice: string;
  let bob: string;
  let carol: string;
  let a: TestClient;
  const clients: TestClient[] = [];

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return `${u}@localhost`;
  }

  beforeAll(async () => {
    srv = await startTestServer({ modules: { disco: { extraItems: [{ jid: 'rooms.localhost', name: 'Rooms' }] } } });
    port = srv.ports.c2s as number;
    alice = await newUser('alice');
    bob = await newUser('bob');
    carol = await newUser('carol');
    // Alice is subscribed to Bob's presence; Carol is a stranger to Bob.
    await srv.storage.roster.setItem(bob, { jid: alice, subscription: 'from', ask: false, approved: false, groups: [] });
    await srv.storage.roster.setItem(alice, { jid: bob, subscription: 'to', ask: false, approved: false, groups: [] });
    a = await connect({ port, username: alice.split('@')[0] as string, mechanism: 'PLAIN' });
    clients.push(a);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('disco#info of the server: server/im identity and the core features', async () => {
    const res = await a.iq(info('localhost'));
    expect(res.attrs.from).toBe('localhost');
    const ids = identities(res);
    expect(ids.some((i) => i.attrs.category === 'server' && i.attrs.type === 'im')).toBe(true);
    const f = features(res);
    for (const ns of [DISCO_INFO, DISCO_ITEMS, 'urn:xmpp:ping', 'jabber:iq:version', 'urn:xmpp:time', 'msgoffline', CAPS]) {
      expect(f).toContain(ns);
    }
    // Each feature once (XEP-0030 §3.1).
    expect(new Set(f).size).toBe(f.length);
  });

  it('the caps ver in stream features is the XEP-0115 hash of the disco#info result, and its node answers', async () => {
    const raw = await RawXmppClient.connect({ port });
    try {
      const r = await raw.plain(alice.split('@')[0] as string, 'secret-password');
      expect(r.ok).toBe(true);
      const feats = await raw.restart();
      const c = feats.getChild('c', CAPS) as Element;
      expect(c.attrs.hash).toBe('sha-1');
      await raw.bind();
      const res = await raw.iq(info('localhost'));
      const query = res.getChild('query', DISCO_INFO) as Element;
      expect(capsVer(query)).toBe(c.attrs.ver);

      // disco#info on node#ver returns the same identities/features and echoes the node.
      const nodeVer = `${c.attrs.node}#${c.attrs.ver}`;
      const byNode = await a.iq(info('localhost', nodeVer));
      const q2 = byNode.getChild('query', DISCO_INFO) as Element;
      expect(q2.attrs.node).toBe(nodeVer);
      expect(capsVer(q2)).toBe(c.attrs.ver);
      expect(features(byNode).sort()).toEqual(features(res).sort());
    } finally {
      raw.destroy();
    }
  });

  it('disco#info with an unknown node -> item-not-found (server and account)', async () => {
    expect(await iqError(a, info('localhost', 'urn:example:no-such-node'))).toBe('item-not-found');
    expect(await iqError(a, info(undefined, 'urn:example:no-such-node'))).toBe('item-not-found');
  });

  it('disco#items of the server lists the configured items', async () => {
    const res = await a.iq(items('localhost'));
    const list = res.getChild('query', DISCO_ITEMS)?.getChildren('item') ?? [];
    expect(list.map((i) => i.attrs)).toContainEqual({ jid: 'rooms.localhost', name: 'Rooms' });
  });

  it('disco#info of the own account: account/registered', async () => {
    const res = await a.iq(info(alice));
    expect(res.attrs.from).toBe(alice);
    const ids = identities(res);
    expect(ids.map((i) => `${i.attrs.category}/${i.attrs.type}`)).toContain('account/registered');
    expect(features(res)).toContain(DISCO_INFO);
    // Without 'to' the request is for the own account too (RFC 6120 §10.3).
    const noTo = await a.iq(info());
    expect(identities(noTo).map((i) => i.attrs.category)).toContain('account');
    const own = await a.iq(items(alice));
    expect(own.getChild('query', DISCO_ITEMS)).toBeDefined();
  });

  it("a contact's account answers someone subscribed to it; a stranger gets service-unavailable", async () => {
    const res = await a.iq(info(bob));
    expect(res.attrs.from).toBe(bob);
    expect(identities(res).map((i) => `${i.attrs.category}/${i.attrs.type}`)).toContain('account/registered');
    expect((await a.iq(items(bob))).getChild('query', DISCO_ITEMS)).toBeDefined();

    const c = await connect({ port, username: carol.split('@')[0] as string, mechanism: 'PLAIN' });
    clients.push(c);
    expect(await iqError(c, info(bob))).toBe('service-unavailable');
    expect(await iqError(c, items(bob))).toBe('service-unavailable');
    // Nor does a subscription in the other direction count: Bob is not subscribed from Alice.
    const b = await connect({ port, username: bob.split('@')[0] as string, mechanism: 'PLAIN' });
    clients.push(b);
    expect(await iqError(b, info(alice))).toBe('service-unavailable');
  });
});
