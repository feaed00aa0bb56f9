// XEP-0163 PEP over real client connections: publish and retrieval, +notify filtering through
// XEP-0115 caps (the server resolves the hash with disco#info), last item on a contact's initial
// presence, retract notifications, access models (presence / open / whitelist) with their XEP-0060
// §6.5.9 errors, publish-options preconditions (§7.1.5), owner-only operations, account disco, and
// the per-account caps (payload size, node count).
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const OWNER = 'http://jabber.org/protocol/pubsub#owner';
const EVENT = 'http://jabber.org/protocol/pubsub#event';
const ERRORS = 'http://jabber.org/protocol/pubsub#errors';
const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';
const NICK = 'http://jabber.org/protocol/nick';
const DEVICELIST = 'eu.siacs.conversations.axolotl.devicelist';
const MAX_PAYLOAD = 2048;
const MAX_NODES = 6;

function options(fields: Record<string, string>): Element {
  return xml(
    'publish-options',
    {},
    xml(
      'x',
      { xmlns: 'jabber:x:data', type: 'submit' },
      xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, `${PUBSUB}#publish-options`)),
      ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, xml('value', {}, v))),
    ),
  );
}

function publishIq(to: string | undefined, node: string, id: string | undefined, payload: Element, opts?: Record<string, string>): Element {
  return xml('iq', { type: 'set', to }, xml('pubsub', { xmlns: PUBSUB }, xml('publish', { node }, xml('item', { id }, payload)), ...(opts ? [options(opts)] : [])));
}

const nick = (text: string) => xml('nick', { xmlns: NICK }, text);
const itemsIq = (to: string, node: string, attrs: Record<string, string> = {}, ...children: Element[]) =>
  xml('iq', { type: 'get', to }, xml('pubsub', { xmlns: PUBSUB }, xml('items', { node, ...attrs }, ...children)));

async function iqError(c: TestClient, el: Element): Promise<{ condition: string; type: string; app?: string; text?: string }> {
  try {
    const r = await c.iq(el);
    throw new Error(`expected an error, got ${r}`);
  } catch (e) {
    const err = e as { condition?: string; type?: string; application?: Element; text?: string };
    if (!err.condition) throw e;
    return { condition: err.condition, type: err.type ?? '', app: err.application?.attrs.xmlns === ERRORS ? err.application.name : undefined, text: err.text };
  }
}

/** XEP-0115 §5.1 for a client with one identity and these features. */
function capsVer(features: string[]): string {
  const s = `client/pc//Parley test<${[...features].sort().map((f) => `${f}<`).join('')}`;
  return createHash('sha1').update(s, 'utf8').digest('base64');
}

const itemsOf = (msg: Element) => msg.getChild('event', EVENT)?.getChild('items');
const isEvent = (node: string) => (el: Element) => el.name === 'message' && itemsOf(el)?.attrs.node === node;

describe('PEP (XEP-0163)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ modules: { pep: { maxPayloadBytes: MAX_PAYLOAD, maxNodes: MAX_NODES } } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  async function newUser(prefix: string): Promise<string> {
    return srv.addUser(uniqueUser(prefix));
  }

  /** Logs in, answers disco#info for its caps node, and sends initial presence with caps announcing `notify`. */
  async function login(bare: string, notify: string[] = []): Promise<TestClient> {
    const c = await connect({ port, username: bare.split('@')[0] as string });
    clients.push(c);
    const features = [DISCO_INFO, ...notify.map((n) => `${n}+notify`)];
    const ver = capsVer(features);
    const callee = (c.xmpp as unknown as { iqCallee: { get(ns: string, name: string, fn: () => Element): void } }).iqCallee;
    callee.get(DISCO_INFO, 'query', () =>
      xml('query', { xmlns: DISCO_INFO, node: `https://parley.test#${ver}` }, xml('identity', { category: 'client', type: 'pc', name: 'Parley test' }), ...features.map((f) => xml('feature', { var: f }))),
    );
    await c.send(xml('presence', {}, xml('c', { xmlns: 'http://jabber.org/protocol/caps', hash: 'sha-1', node: 'https://parley.test', ver })));
    await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    return c;
  }

  async function mutual(a: string, b: string): Promise<void> {
    await srv.storage.roster.setItem(a, { jid: b, subscription: 'both', ask: false, approved: false, groups: [] });
    await srv.storage.roster.setItem(b, { jid: a, subscription: 'both', ask: false, approved: false, groups: [] });
  }

  it('publishes with an item id and retrieves it (all, by id, max_items)', async () => {
    const alice = await newUser('pa');
    const a = await login(alice);
    const res = await a.iq(publishIq(undefined, NICK, 'current', nick('Alice')));
    expect(res.getChild('pubsub', PUBSUB)?.getChild('publish')?.getChild('item')?.attrs.id).toBe('current');
    const generated = await a.iq(publishIq(undefined, 'urn:test:multi', undefined, xml('n', { xmlns: 'urn:test' }, '1'), { 'pubsub#max_items': '10' }));
    const genId = generated.getChild('pubsub', PUBSUB)?.getChild('publish')?.getChild('item')?.attrs.id;
    expect(genId).toMatch(/^[0-9a-f]{24}$/);
    await a.iq(publishIq(undefined, 'urn:test:multi', 'second', xml('n', { xmlns: 'urn:test' }, '2')));
    await a.iq(publishIq(undefined, 'urn:test:multi', 'third', xml('n', { xmlns: 'urn:test' }, '3')));

    const got = await a.iq(itemsIq(alice, NICK));
    const items = got.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
    expect(items.map((i) => i.attrs.id)).toEqual(['current']);
    expect(items[0]?.getChildText('nick', NICK)).toBe('Alice');

    const all = await a.iq(itemsIq(alice, 'urn:test:multi'));
    expect(all.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id)).toEqual([genId, 'second', 'third']);
    const newest = await a.iq(itemsIq(alice, 'urn:test:multi', { max_items: '2' }));
    expect(newest.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id)).toEqual(['second', 'third']);
    const byId = await a.iq(itemsIq(alice, 'urn:test:multi', {}, xml('item', { id: 'second' })));
    const one = byId.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
    expect(one.map((i) => i.getChildText('n', 'urn:test'))).toEqual(['2']);

    expect(await iqError(a, itemsIq(alice, 'urn:test:none'))).toMatchObject({ condition: 'item-not-found' });
    expect(await iqError(a, itemsIq(alice, 'urn:test:multi', {}, xml('item', { id: 'nope' })))).toMatchObject({ condition: 'item-not-found' });
    // The default PEP node keeps one item (max_items 1): re-publishing replaces it.
    await a.iq(publishIq(undefined, NICK, 'other', nick('Alice 2')));
    const after = await a.iq(itemsIq(alice, NICK));
    expect(after.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id)).toEqual(['other']);
  });

  it('last item on initial presence, then notifications only to contacts with +notify in their caps', async () => {
    const alice = await newUser('pa');
    const bob = await newUser('pb');
    const carol = await newUser('pc');
    await mutual(alice, bob);
    await mutual(alice, carol);
    const a = await login(alice);
    await a.iq(publishIq(undefined, NICK, 'n1', nick('Before')));

    const b = await login(bob, [NICK]);
    const c = await login(carol, ['urn:something:else']);
    // XEP-0163 §4.3.3: the last item goes to a contact whose presence shows interest.
    const last = await b.waitFor(isEvent(NICK));
    expect(last.attrs.from).toBe(alice);
    expect(last.attrs.type).toBe('headline');
    expect(itemsOf(last)?.getChild('item')?.getChildText('nick', NICK)).toBe('Before');
    expect(last.getChild('delay', 'urn:xmpp:delay')?.attrs.from).toBe(alice);

    await a.iq(publishIq(undefined, NICK, 'n2', nick('After')));
    const ev = await b.waitFor(isEvent(NICK));
    expect(ev.attrs.to).toBe(b.jid);
    expect(itemsOf(ev)?.getChild('item')?.attrs.id).toBe('n2');
    expect(itemsOf(ev)?.getChild('item')?.getChildText('nick', NICK)).toBe('After');
    await barrier(a, c); // notifications go out while the publish is handled, before this iq
    expect(c.received.filter(isEvent(NICK))).toHaveLength(0);
  });

  it('the owner’s own resources with +notify get notifications too', async () => {
    const alice = await newUser('pa');
    const a1 = await login(alice, [NICK]);
    const a2 = await connect({ port, username: alice.split('@')[0] as string, resource: 'second' });
    clients.push(a2);
    // Wait until a1's caps are resolved: its own publish echo proves it.
    await a2.iq(publishIq(undefined, NICK, 'x', nick('Self')));
    const ev = await a1.waitFor(isEvent(NICK));
    expect(itemsOf(ev)?.getChild('item')?.attrs.id).toBe('x');
  });

  it('retract notifies interested contacts; only the owner may retract or publish', async () => {
    const alice = await newUser('pa');
    const bob = await newUser('pb');
    await mutual(alice, bob);
    const a = await login(alice);
    await a.iq(publishIq(undefined, 'urn:test:r', 'keep', xml('v', { xmlns: 'urn:test:r' }), { 'pubsub#max_items': '5' }));
    const b = await login(bob, ['urn:test:r']);
    await b.waitFor(isEvent('urn:test:r')); // last item: bob's interest is known
    await a.iq(publishIq(undefined, 'urn:test:r', 'gone', xml('v', { xmlns: 'urn:test:r' })));
    await b.waitFor((el) => isEvent('urn:test:r')(el) && itemsOf(el)?.getChild('item')?.attrs.id === 'gone');
    expect(await iqError(b, xml('iq', { type: 'set', to: alice }, xml('pubsub', { xmlns: PUBSUB }, xml('retract', { node: 'urn:test:r' }, xml('item', { id: 'gone' })))))).toMatchObject({ condition: 'forbidden' });
    expect(await iqError(b, publishIq(alice, 'urn:test:r', 'evil', xml('v', { xmlns: 'urn:test:r' })))).toMatchObject({ condition: 'forbidden' });

    await a.iq(xml('iq', { type: 'set' }, xml('pubsub', { xmlns: PUBSUB }, xml('retract', { node: 'urn:test:r', notify: 'true' }, xml('item', { id: 'gone' })))));
    const ev = await b.waitFor((el) => isEvent('urn:test:r')(el) && !!itemsOf(el)?.getChild('retract'));
    expect(itemsOf(ev)?.getChild('retract')?.attrs.id).toBe('gone');
    expect(await iqError(a, xml('iq', { type: 'set' }, xml('pubsub', { xmlns: PUBSUB }, xml('retract', { node: 'urn:test:r' }, xml('item', { id: 'gone' })))))).toMatchObject({ condition: 'item-not-found' });
    const left = await a.iq(itemsIq(alice, 'urn:test:r'));
    expect(left.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id)).toEqual(['keep']);
  });

  it('access models: presence refuses a stranger, open admits one (OMEMO device list), whitelist admits only the owner', async () => {
    const alice = await newUser('pa');
    const bob = await newUser('pb');
    const eve = await newUser('pe');
    await mutual(alice, bob);
    const a = await login(alice);
    const b = await login(bob);
    const e = await login(eve);
    await a.iq(publishIq(undefined, NICK, 'n', nick('Alice')));
    const devices = xml('list', { xmlns: 'eu.siacs.conversations.axolotl' }, xml('device', { id: '12345' }));
    await a.iq(publishIq(undefined, DEVICELIST, 'current', devices, { 'pubsub#access_model': 'open' }));
    await a.iq(publishIq(undefined, 'urn:test:secret', 'current', xml('s', { xmlns: 'urn:test' }), { 'pubsub#access_model': 'whitelist' }));

    expect(await iqError(e, itemsIq(alice, NICK))).toMatchObject({ condition: 'not-authorized', type: 'auth', app: 'presence-subscription-required' });
    const ok = await b.iq(itemsIq(alice, NICK));
    expect(ok.getChild('pubsub', PUBSUB)?.getChild('items')?.getChild('item')?.getChildText('nick', NICK)).toBe('Alice');

    const list = await e.iq(itemsIq(alice, DEVICELIST));
    expect(list.getChild('pubsub', PUBSUB)?.getChild('items')?.getChild('item')?.getChild('list')?.getChild('device')?.attrs.id).toBe('12345');

    expect(await iqError(b, itemsIq(alice, 'urn:test:secret'))).toMatchObject({ condition: 'not-allowed', app: 'closed-node' });
    expect(await iqError(e, itemsIq(alice, 'urn:test:secret'))).toMatchObject({ condition: 'not-allowed', app: 'closed-node' });
    const mine = await a.iq(itemsIq(alice, 'urn:test:secret'));
    expect(mine.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item')).toHaveLength(1);
  });

  it('publish-options: a mismatch or an unknown field is precondition-not-met; a match publishes', async () => {
    const alice = await newUser('pa');
    const a = await login(alice);
    await a.iq(publishIq(undefined, 'urn:test:po', '1', xml('x', { xmlns: 'urn:test' }), { 'pubsub#access_model': 'open', 'pubsub#persist_items': 'true' }));
    expect(await iqError(a, publishIq(undefined, 'urn:test:po', '2', xml('x', { xmlns: 'urn:test' }), { 'pubsub#access_model': 'whitelist' }))).toMatchObject({
      condition: 'conflict',
      type: 'cancel',
      app: 'precondition-not-met',
    });
    expect(await iqError(a, publishIq(undefined, 'urn:test:po', '2', xml('x', { xmlns: 'urn:test' }), { 'pubsub#no_such_option': '1' }))).toMatchObject({
      condition: 'conflict',
      app: 'precondition-not-met',
    });
    expect(await iqError(a, publishIq(undefined, 'urn:test:po-new', '1', xml('x', { xmlns: 'urn:test' }), { 'pubsub#no_such_option': '1' }))).toMatchObject({
      app: 'precondition-not-met',
    });
    await a.iq(publishIq(undefined, 'urn:test:po', '2', xml('x', { xmlns: 'urn:test' }), { 'pubsub#access_model': 'open' }));
  });

  it('configure (get form, set) and delete node as owner, with delete notifications; others are refused', async () => {
    const alice = await newUser('pa');
    const bob = await newUser('pb');
    await mutual(alice, bob);
    const a = await login(alice);
    await a.iq(publishIq(undefined, 'urn:test:cfg', '1', xml('x', { xmlns: 'urn:test:cfg' })));
    const form = await a.iq(xml('iq', { type: 'get' }, xml('pubsub', { xmlns: OWNER }, xml('configure', { node: 'urn:test:cfg' }))));
    const fields = form.getChild('pubsub', OWNER)?.getChild('configure')?.getChild('x', 'jabber:x:data')?.getChildren('field') ?? [];
    expect(fields.find((f) => f.attrs.var === 'pubsub#access_model')?.getChildText('value')).toBe('presence');
    const submit = (v: Record<string, string>) =>
      xml('iq', { type: 'set' }, xml('pubsub', { xmlns: OWNER }, xml('configure', { node: 'urn:test:cfg' }, options(v).getChild('x') as Element)));
    // The configure form's FORM_TYPE differs from publish-options': rebuild it.
    const cfg = (v: Record<string, string>) => {
      const el = submit(v);
      const ft = el.getChild('pubsub', OWNER)?.getChild('configure')?.getChild('x')?.getChild('field')?.getChild('value');
      if (ft) ft.children = [`${PUBSUB}#node_config`];
      return el;
    };
    await a.iq(cfg({ 'pubsub#access_model': 'open' }));
    const again = await a.iq(xml('iq', { type: 'get' }, xml('pubsub', { xmlns: OWNER }, xml('configure', { node: 'urn:test:cfg' }))));
    expect(again.getChild('pubsub', OWNER)?.getChild('configure')?.getChild('x')?.getChildren('field').find((f) => f.attrs.var === 'pubsub#access_model')?.getChildText('value')).toBe('open');
    expect(await iqError(a, cfg({ 'pubsub#access_model': 'roster-of-doom' }))).toMatchObject({ condition: 'not-acceptable' });
    expect(await iqError(a, cfg({ 'pubsub#max_items': '100000' }))).toMatchObject({ condition: 'not-acceptable' });

    const b = await login(bob, ['urn:test:cfg']);
    await b.waitFor(isEvent('urn:test:cfg'));
    expect(await iqError(b, xml('iq', { type: 'set', to: alice }, xml('pubsub', { xmlns: OWNER }, xml('delete', { node: 'urn:test:cfg' }))))).toMatchObject({ condition: 'forbidden' });
    await a.iq(xml('iq', { type: 'set' }, xml('pubsub', { xmlns: OWNER }, xml('delete', { node: 'urn:test:cfg' }))));
    const del = await b.waitFor((el) => el.getChild('event', EVENT)?.getChild('delete')?.attrs.node === 'urn:test:cfg');
    expect(del.attrs.from).toBe(alice);
    expect(await iqError(a, itemsIq(alice, 'urn:test:cfg'))).toMatchObject({ condition: 'item-not-found' });
  });

  it('account disco: pubsub/pep identity and features; disco#items lists the nodes the requester may see', async () => {
    const alice = await newUser('pa');
    const bob = await newUser('pb');
    const eve = await newUser('pe');
    await mutual(alice, bob);
    const a = await login(alice);
    const b = await login(bob);
    const e = await login(eve);
    await a.iq(publishIq(undefined, NICK, 'n', nick('A')));
    await a.iq(publishIq(undefined, 'urn:test:hidden', 'n', xml('h', { xmlns: 'urn:test' }), { 'pubsub#access_model': 'whitelist' }));
    const info = await a.iq(xml('iq', { type: 'get', to: alice }, xml('query', { xmlns: DISCO_INFO })));
    const q = info.getChild('query', DISCO_INFO);
    expect(q?.getChildren('identity').map((i) => `${i.attrs.category}/${i.attrs.type}`)).toEqual(expect.arrayContaining(['account/registered', 'pubsub/pep']));
    const vars = q?.getChildren('feature').map((f) => f.attrs.var) ?? [];
    for (const f of ['publish', 'publish-options', 'auto-create', 'auto-subscribe', 'last-published', 'access-open', 'access-presence', 'access-whitelist']) {
      expect(vars).toContain(`${PUBSUB}#${f}`);
    }
    expect(vars).toContain(PUBSUB);

    const mine = await a.iq(xml('iq', { type: 'get', to: alice }, xml('query', { xmlns: DISCO_ITEMS })));
    expect(mine.getChild('query', DISCO_ITEMS)?.getChildren('item').map((i) => i.attrs.node).sort()).toEqual([NICK, 'urn:test:hidden']);
    const bobs = await b.iq(xml('iq', { type: 'get', to: alice }, xml('query', { xmlns: DISCO_ITEMS })));
    expect(bobs.getChild('query', DISCO_ITEMS)?.getChildren('item').map((i) => i.attrs.node)).toEqual([NICK]);
    expect(await iqError(e, xml('iq', { type: 'get', to: alice }, xml('query', { xmlns: DISCO_ITEMS })))).toMatchObject({ condition: 'service-unavailable' });
  });

  it('limits: a payload over the cap is not-acceptable/payload-too-big; nodes per account are capped', async () => {
    const alice = await newUser('pa');
    const a = await login(alice);
    const err = await iqError(a, publishIq(undefined, 'urn:xmpp:avatar:data', 'big', xml('data', { xmlns: 'urn:xmpp:avatar:data' }, 'A'.repeat(MAX_PAYLOAD + 1))));
    expect(err).toMatchObject({ condition: 'not-acceptable', app: 'payload-too-big' });
    expect(err.text).toMatch(new RegExp(`at most ${MAX_PAYLOAD}`));
    for (let i = 0; i < MAX_NODES; i++) await a.iq(publishIq(undefined, `urn:test:n${i}`, '1', xml('x', { xmlns: 'urn:test' })));
    expect(await iqError(a, publishIq(undefined, 'urn:test:one-too-many', '1', xml('x', { xmlns: 'urn:test' })))).toMatchObject({ condition: 'resource-constraint' });
    // Still serving: an existing node accepts a publish.
    await a.iq(publishIq(undefined, 'urn:test:n0', '2', xml('x', { xmlns: 'urn:test' })));
    // Malformed publishes.
    expect(await iqError(a, xml('iq', { type: 'set' }, xml('pubsub', { xmlns: PUBSUB }, xml('publish', { node: 'urn:test:n0' }))))).toMatchObject({ condition: 'bad-request', app: 'item-required' });
    expect(await iqError(a, xml('iq', { type: 'set' }, xml('pubsub', { xmlns: PUBSUB }, xml('publish', { node: 'urn:test:n0' }, xml('item', { id: '1' })))))).toMatchObject({ condition: 'bad-request', app: 'payload-required' });
  });

  it('account removal deletes the PEP data', async () => {
    const alice = await newUser('pa');
    const a = await login(alice);
    await a.iq(publishIq(undefined, NICK, 'n', nick('A')));
    expect(await srv.storage.pubsub.countNodes(alice)).toBe(1);
    await a.stop();
    await srv.storage.accounts.remove(alice);
    expect(await srv.storage.pubsub.countNodes(alice)).toBe(0);
  });
});
