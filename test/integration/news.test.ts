// News channels (XEP-0060 service at news.<host>, issue 7) over real client connections: disco of
// the service and its channels, create/configure/publish/retract/purge/delete with notifications
// carrying payloads, access models (open, authorize with owner approval, whitelist, presence),
// affiliations (owner, publisher, member, outcast), subscription options and multi-subscribe, the
// last item for a subscriber at login, the channel.create right and per-channel rights from an
// access control implementation, and the limits.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccessControl, ServiceRight, VenueRight } from '../../src/core/acl.js';
import type { Jid } from '../../src/xmpp/jid.js';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const OWNER = 'http://jabber.org/protocol/pubsub#owner';
const EVENT = 'http://jabber.org/protocol/pubsub#event';
const ERRORS = 'http://jabber.org/protocol/pubsub#errors';
const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';
const ATOM = 'http://www.w3.org/2005/Atom';
const SERVICE = 'news.localhost';

async function iqError(c: TestClient, el: Element): Promise<{ condition: string; type: string; app?: string }> {
  try {
    const r = await c.iq(el);
    throw new Error(`expected an error, got ${r}`);
  } catch (e) {
    const err = e as { condition?: string; type?: string; application?: Element };
    if (!err.condition) throw e;
    return { condition: err.condition, type: err.type ?? '', app: err.application?.attrs.xmlns === ERRORS ? err.application.name : undefined };
  }
}

function form(formType: string, fields: Record<string, string>, type = 'submit'): Element {
  return xml(
    'x',
    { xmlns: 'jabber:x:data', type },
    xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, formType)),
    ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, xml('value', {}, v))),
  );
}

const ps = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: SERVICE }, xml('pubsub', { xmlns: PUBSUB }, ...children));
const own = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: SERVICE }, xml('pubsub', { xmlns: OWNER }, ...children));
const nodeConfig = (fields: Record<string, string>) => xml('configure', {}, form(`${PUBSUB}#node_config`, fields));
const createIq = (node: string, fields?: Record<string, string>) => ps('set', xml('create', { node }), ...(fields ? [nodeConfig(fields)] : []));
const entry = (title: string) => xml('entry', { xmlns: ATOM }, xml('title', {}, title), xml('summary', {}, `about ${title}`));
const publishIq = (node: string, id: string | undefined, payload: Element) => ps('set', xml('publish', { node }, xml('item', { id }, payload)));
const subscribeIq = (node: string, jid: string, options?: Record<string, string>) =>
  ps('set', xml('subscribe', { node, jid }), ...(options ? [xml('options', {}, form(`${PUBSUB}#subscribe_options`, options))] : []));
const itemsIq = (node: string, attrs: Record<string, string> = {}, ...children: Element[]) => ps('get', xml('items', { node, ...attrs }, ...children));
const bare = (c: TestClient) => c.jid.split('/')[0] as string;

const eventOf = (el: Element) => (el.name === 'message' ? el.getChild('event', EVENT) : undefined);
const itemsEvent = (node: string) => (el: Element) => eventOf(el)?.getChild('items')?.attrs.node === node && !!eventOf(el)?.getChild('items')?.getChild('item');
const retractEvent = (node: string) => (el: Element) => eventOf(el)?.getChild('items')?.attrs.node === node && !!eventOf(el)?.getChild('items')?.getChild('retract');
const subscriptionEvent = (node: string) => (el: Element) => eventOf(el)?.getChild('subscription')?.attrs.node === node;

describe('news channels (XEP-0060 service)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  async function user(prefix: string, presence = true): Promise<TestClient> {
    const jid = await srv.addUser(uniqueUser(prefix));
    const c = await connect({ port, username: jid.split('@')[0] as string });
    clients.push(c);
    if (presence) await c.send(xml('presence'));
    return c;
  }

  it('is listed in the server disco#items and answers disco#info as a pubsub service', async () => {
    const a = await user('disco');
    const items = await a.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: DISCO_ITEMS })));
    expect(items.getChild('query')?.getChildren('item').map((i) => i.attrs.jid)).toContain(SERVICE);
    const info = (await a.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: DISCO_INFO })))).getChild('query') as Element;
    expect(info.getChild('identity')?.attrs).toMatchObject({ category: 'pubsub', type: 'service' });
    const features = info.getChildren('feature').map((f) => f.attrs.var);
    for (const f of ['subscribe', 'publish', 'access-authorize', 'access-whitelist', 'manage-affiliations', 'subscription-options', 'last-published']) expect(features).toContain(`${PUBSUB}#${f}`);
  });

  it('creates, publishes with ids, notifies with payloads, retrieves, retracts, purges and deletes', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const node = `tech-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#title': 'Tech news', 'pubsub#description': 'What engineering does' }));
    expect(await iqError(alice, createIq(node))).toMatchObject({ condition: 'conflict' });

    // Disco of the channel list and of the channel (meta-data form).
    const list = await bob.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: DISCO_ITEMS })));
    const listed = list.getChild('query')?.getChildren('item').find((i) => i.attrs.node === node);
    expect(listed?.attrs).toMatchObject({ jid: SERVICE, name: 'Tech news' });
    const meta = (await bob.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: DISCO_INFO, node })))).getChild('query') as Element;
    expect(meta.getChild('identity')?.attrs).toMatchObject({ category: 'pubsub', type: 'leaf' });
    const fields = meta.getChild('x', 'jabber:x:data')?.getChildren('field') ?? [];
    const value = (v: string) => fields.find((f) => f.attrs.var === v)?.getChildText('value');
    expect(value('FORM_TYPE')).toBe(`${PUBSUB}#meta-data`);
    expect(value('pubsub#owner')).toBe(bare(alice));
    expect(value('pubsub#description')).toBe('What engineering does');

    const sub = (await bob.iq(subscribeIq(node, bare(bob)))).getChild('pubsub')?.getChild('subscription');
    expect(sub?.attrs).toMatchObject({ node, jid: bare(bob), subscription: 'subscribed' });
    expect(sub?.attrs.subid).toBeTruthy();

    const res = await alice.iq(publishIq(node, 'first', entry('Release 1.0')));
    expect(res.getChild('pubsub')?.getChild('publish')?.getChild('item')?.attrs.id).toBe('first');
    const note = await bob.waitFor(itemsEvent(node));
    expect(note.attrs).toMatchObject({ from: SERVICE, type: 'headline' });
    const item = eventOf(note)?.getChild('items')?.getChild('item');
    expect(item?.attrs.id).toBe('first');
    expect(item?.getChild('entry', ATOM)?.getChildText('title')).toBe('Release 1.0');

    // An id chosen by the service; items: all, max_items, by id.
    const gen = await alice.iq(publishIq(node, undefined, entry('Release 1.1')));
    const genId = gen.getChild('pubsub')?.getChild('publish')?.getChild('item')?.attrs.id as string;
    expect(genId).toMatch(/^[0-9a-f]{24}$/);
    await bob.waitFor(itemsEvent(node));
    const allItems = (await bob.iq(itemsIq(node))).getChild('pubsub')?.getChild('items')?.getChildren('item') ?? [];
    expect(allItems.map((i) => i.attrs.id)).toEqual(['first', genId]);
    const last = (await bob.iq(itemsIq(node, { max_items: '1' }))).getChild('pubsub')?.getChild('items')?.getChildren('item') ?? [];
    expect(last.map((i) => i.attrs.id)).toEqual([genId]);
    const byId = (await bob.iq(itemsIq(node, {}, xml('item', { id: 'first' })))).getChild('pubsub')?.getChild('items')?.getChild('item');
    expect(byId?.getChild('entry', ATOM)?.getChildText('title')).toBe('Release 1.0');
    expect(await iqError(bob, itemsIq(node, {}, xml('item', { id: 'nope' })))).toMatchObject({ condition: 'item-not-found' });

    // A subscriber is not a publisher on the default (publishers) model, nor may it retract or purge.
    expect(await iqError(bob, publishIq(node, 'x', entry('spam')))).toMatchObject({ condition: 'forbidden' });
    expect(await iqError(bob, ps('set', xml('retract', { node }, xml('item', { id: 'first' }))))).toMatchObject({ condition: 'forbidden' });
    expect(await iqError(bob, own('set', xml('purge', { node })))).toMatchObject({ condition: 'forbidden' });
    expect(await iqError(bob, own('get', xml('configure', { node })))).toMatchObject({ condition: 'forbidden' });
    // Payload rules.
    expect(await iqError(alice, ps('set', xml('publish', { node }, xml('item', { id: 'e' }))))).toMatchObject({ condition: 'bad-request', app: 'payload-required' });
    expect(await iqError(alice, publishIq(`${node}-missing`, 'a', entry('x')))).toMatchObject({ condition: 'item-not-found' });

    await alice.iq(ps('set', xml('retract', { node, notify: 'true' }, xml('item', { id: 'first' }))));
    const retracted = await bob.waitFor(retractEvent(node));
    expect(eventOf(retracted)?.getChild('items')?.getChild('retract')?.attrs.id).toBe('first');
    expect(await iqError(alice, ps('set', xml('retract', { node }, xml('item', { id: 'first' }))))).toMatchObject({ condition: 'item-not-found' });

    await alice.iq(own('set', xml('purge', { node })));
    await bob.waitFor((el) => eventOf(el)?.getChild('purge')?.attrs.node === node);
    expect((await bob.iq(itemsIq(node))).getChild('pubsub')?.getChild('items')?.getChildren('item')).toHaveLength(0);

    // Own subscriptions and affiliations.
    const mine = (await bob.iq(ps('get', xml('subscriptions')))).getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription') ?? [];
    expect(mine.map((s) => s.attrs.node)).toContain(node);
    const affs = (await alice.iq(ps('get', xml('affiliations')))).getChild('pubsub')?.getChild('affiliations')?.getChildren('affiliation') ?? [];
    expect(affs.find((a) => a.attrs.node === node)?.attrs.affiliation).toBe('owner');

    await alice.iq(own('set', xml('delete', { node }, xml('redirect', { uri: `xmpp:${SERVICE}?;node=elsewhere` }))));
    const deleted = await bob.waitFor((el) => eventOf(el)?.getChild('delete')?.attrs.node === node);
    expect(eventOf(deleted)?.getChild('delete')?.getChild('redirect')?.attrs.uri).toContain('elsewhere');
    expect(await iqError(bob, itemsIq(node))).toMatchObject({ condition: 'item-not-found' });
  });

  it('configures a channel: form, validation, default, and max_items trimming', async () => {
    const alice = await user('conf');
    const node = `conf-${Date.now()}`;
    await alice.iq(createIq(node));
    const conf = await alice.iq(own('get', xml('configure', { node })));
    const vars = conf.getChild('pubsub')?.getChild('configure')?.getChild('x')?.getChildren('field').map((f) => f.attrs.var) ?? [];
    for (const v of ['pubsub#title', 'pubsub#description', 'pubsub#access_model', 'pubsub#publish_model', 'pubsub#max_items', 'pubsub#send_last_published_item', 'pubsub#deliver_payloads']) expect(vars).toContain(v);
    const def = await alice.iq(own('get', xml('default')));
    expect(def.getChild('pubsub')?.getChild('default')?.getChild('x')).toBeTruthy();

    expect(await iqError(alice, own('set', xml('configure', { node }, form(`${PUBSUB}#node_config`, { 'pubsub#access_model': 'nobody' }))))).toMatchObject({ condition: 'not-acceptable' });
    expect(await iqError(alice, own('set', xml('configure', { node }, form(`${PUBSUB}#node_config`, { 'pubsub#unknown': '1' }))))).toMatchObject({ condition: 'not-acceptable' });
    for (const id of ['1', '2', '3']) await alice.iq(publishIq(node, id, entry(id)));
    await alice.iq(own('set', xml('configure', { node }, form(`${PUBSUB}#node_config`, { 'pubsub#max_items': '2', 'pubsub#title': 'Renamed' }))));
    const kept = (await alice.iq(itemsIq(node))).getChild('pubsub')?.getChild('items')?.getChildren('item') ?? [];
    expect(kept.map((i) => i.attrs.id)).toEqual(['2', '3']);

    // An instant node gets a generated name.
    const instant = await alice.iq(ps('set', xml('create')));
    expect(instant.getChild('pubsub')?.getChild('create')?.attrs.node).toMatch(/^[0-9a-f]{16}$/);
  });

  it('authorize model: the subscription waits for an owner, who approves or denies with the form', async () => {
    const alice = await user('owner');
    const bob = await user('reader');
    const carol = await user('denied');
    const node = `auth-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'authorize' }));
    await alice.iq(publishIq(node, 'welcome', entry('Welcome')));

    const pending = (await bob.iq(subscribeIq(node, bare(bob)))).getChild('pubsub')?.getChild('subscription');
    expect(pending?.attrs.subscription).toBe('pending');
    expect(await iqError(bob, itemsIq(node))).toMatchObject({ condition: 'not-authorized', app: 'not-subscribed' });

    const request = await alice.waitFor((el) => el.name === 'message' && el.getChild('x', 'jabber:x:data') !== undefined && el.toString().includes(bare(bob)));
    const x = request.getChild('x', 'jabber:x:data') as Element;
    const field = (v: string) => x.getChildren('field').find((f) => f.attrs.var === v)?.getChildText('value') as string;
    expect(field('FORM_TYPE')).toBe(`${PUBSUB}#subscribe_authorization`);
    expect(field('pubsub#node')).toBe(node);
    const answer = (allow: string, jid: string, subid: string) =>
      xml('message', { to: SERVICE }, form(`${PUBSUB}#subscribe_authorization`, { 'pubsub#subid': subid, 'pubsub#node': node, 'pubsub#subscriber_jid': jid, 'pubsub#allow': allow }));

    // Only an owner's answer counts.
    await carol.send(answer('true', bare(bob), field('pubsub#subid')));
    const refused = await carol.waitFor((el) => el.name === 'message' && el.attrs.type === 'error');
    expect(refused.getChild('error')?.getChild('forbidden')).toBeTruthy();
    const still = (await alice.iq(own('get', xml('subscriptions', { node })))).getChild('pubsub')?.getChild('subscriptions')?.getChild('subscription');
    expect(still?.attrs.subscription).toBe('pending');
    await alice.send(answer('true', bare(bob), field('pubsub#subid')));
    const approved = await bob.waitFor(subscriptionEvent(node));
    expect(eventOf(approved)?.getChild('subscription')?.attrs.subscription).toBe('subscribed');
    const lastItem = await bob.waitFor(itemsEvent(node));
    expect(eventOf(lastItem)?.getChild('items')?.getChild('item')?.attrs.id).toBe('welcome');
    expect((await bob.iq(itemsIq(node))).getChild('pubsub')?.getChild('items')?.getChildren('item')).toHaveLength(1);

    // Denied: the subscription goes.
    await carol.iq(subscribeIq(node, bare(carol)));
    const second = await alice.waitFor((el) => el.name === 'message' && el.toString().includes(bare(carol)));
    const subid = second.getChild('x', 'jabber:x:data')?.getChildren('field').find((f) => f.attrs.var === 'pubsub#subid')?.getChildText('value') as string;
    await alice.send(answer('false', bare(carol), subid));
    const denied = await carol.waitFor(subscriptionEvent(node));
    expect(eventOf(denied)?.getChild('subscription')?.attrs.subscription).toBe('none');
    const subs = (await alice.iq(own('get', xml('subscriptions', { node })))).getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription') ?? [];
    expect(subs.map((s) => [s.attrs.jid, s.attrs.subscription])).toEqual([[bare(bob), 'subscribed']]);

    // The owner may also approve through subscription management (§8.8).
    await carol.iq(subscribeIq(node, bare(carol)));
    await alice.iq(own('set', xml('subscriptions', { node }, xml('subscription', { jid: bare(carol), subscription: 'subscribed' }))));
    const ok = await carol.waitFor((el) => subscriptionEvent(node)(el) && eventOf(el)?.getChild('subscription')?.attrs.subscription === 'subscribed');
    expect(ok).toBeTruthy();
  });

  it('whitelist model: members only; presence model: contacts of an owner only', async () => {
    const alice = await user('wl-owner');
    const bob = await user('wl-member');
    const carol = await user('wl-stranger');
    const node = `wl-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'whitelist' }));
    expect(await iqError(bob, subscribeIq(node, bare(bob)))).toMatchObject({ condition: 'not-allowed', app: 'closed-node' });
    expect(await iqError(bob, itemsIq(node))).toMatchObject({ condition: 'not-allowed', app: 'closed-node' });
    // Hidden from non-members in disco.
    const hidden = await carol.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: DISCO_ITEMS })));
    expect(hidden.getChild('query')?.getChildren('item').map((i) => i.attrs.node)).not.toContain(node);
    await alice.iq(own('set', xml('affiliations', { node }, xml('affiliation', { jid: bare(bob), affiliation: 'member' }))));
    expect((await bob.iq(subscribeIq(node, bare(bob)))).getChild('pubsub')?.getChild('subscription')?.attrs.subscription).toBe('subscribed');
    expect(await iqError(carol, subscribeIq(node, bare(carol)))).toMatchObject({ condition: 'not-allowed' });

    const pnode = `presence-${Date.now()}`;
    await alice.iq(createIq(pnode, { 'pubsub#access_model': 'presence' }));
    expect(await iqError(bob, subscribeIq(pnode, bare(bob)))).toMatchObject({ condition: 'not-authorized', app: 'presence-subscription-required' });
    // Bob receives alice's presence (her roster has him as 'from').
    await srv.storage.roster.setItem(bare(alice), { jid: bare(bob), subscription: 'from', ask: false, approved: false, groups: [] });
    expect((await bob.iq(subscribeIq(pnode, bare(bob)))).getChild('pubsub')?.getChild('subscription')?.attrs.subscription).toBe('subscribed');
    expect(await iqError(carol, itemsIq(pnode))).toMatchObject({ condition: 'not-authorized' });
  });

  it('affiliations: publisher publishes and retracts, member reads only, outcast is shut out; the last owner stays', async () => {
    const alice = await user('aff-owner');
    const pub = await user('aff-pub');
    const mem = await user('aff-mem');
    const out = await user('aff-out');
    const node = `aff-${Date.now()}`;
    await alice.iq(createIq(node));
    await out.iq(subscribeIq(node, bare(out)));
    await alice.iq(
      own(
        'set',
        xml(
          'affiliations',
          { node },
          xml('affiliation', { jid: bare(pub), affiliation: 'publisher' }),
          xml('affiliation', { jid: bare(mem), affiliation: 'member' }),
          xml('affiliation', { jid: bare(out), affiliation: 'outcast' }),
        ),
      ),
    );
    const list = (await alice.iq(own('get', xml('affiliations', { node })))).getChild('pubsub')?.getChild('affiliations')?.getChildren('affiliation') ?? [];
    expect(Object.fromEntries(list.map((a) => [a.attrs.jid, a.attrs.affiliation]))).toEqual({ [bare(alice)]: 'owner', [bare(pub)]: 'publisher', [bare(mem)]: 'member', [bare(out)]: 'outcast' });
    // The outcast's subscription was removed and it was told so.
    const gone = await out.waitFor(subscriptionEvent(node));
    expect(eventOf(gone)?.getChild('subscription')?.attrs.subscription).toBe('none');

    await pub.iq(publishIq(node, 'p1', entry('by publisher')));
    await alice.iq(publishIq(node, 'o1', entry('by owner')));
    await pub.iq(ps('set', xml('retract', { node }, xml('item', { id: 'o1' })))); // a publisher retracts any item
    expect(await iqError(mem, publishIq(node, 'm1', entry('by member')))).toMatchObject({ condition: 'forbidden' });
    expect((await mem.iq(itemsIq(node))).getChild('pubsub')?.getChild('items')?.getChildren('item').map((i) => i.attrs.id)).toEqual(['p1']);
    expect(await iqError(mem, own('get', xml('affiliations', { node })))).toMatchObject({ condition: 'forbidden' });
    expect(await iqError(out, itemsIq(node))).toMatchObject({ condition: 'forbidden' });
    expect(await iqError(out, subscribeIq(node, bare(out)))).toMatchObject({ condition: 'forbidden' });
    expect(await iqError(alice, own('set', xml('affiliations', { node }, xml('affiliation', { jid: bare(alice), affiliation: 'none' }))))).toMatchObject({ condition: 'not-acceptable' });

    // publish_model=open lets anyone but outcasts publish; they retract their own items only.
    await alice.iq(own('set', xml('configure', { node }, form(`${PUBSUB}#node_config`, { 'pubsub#publish_model': 'open' }))));
    const anyone = await user('aff-any');
    await anyone.iq(publishIq(node, 'a1', entry('by anyone')));
    expect(await iqError(anyone, ps('set', xml('retract', { node }, xml('item', { id: 'p1' }))))).toMatchObject({ condition: 'forbidden' });
    await anyone.iq(ps('set', xml('retract', { node }, xml('item', { id: 'a1' }))));
    expect(await iqError(out, publishIq(node, 'x1', entry('by outcast')))).toMatchObject({ condition: 'forbidden' });
  });

  it('subscription options, multiple subscriptions with subids, and subscriber errors', async () => {
    const alice = await user('opt-owner');
    const bob = await user('opt-sub');
    const node = `opt-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#title': 'Ops' }));
    expect(await iqError(bob, subscribeIq(node, bare(alice)))).toMatchObject({ condition: 'bad-request', app: 'invalid-jid' });
    expect(await iqError(bob, ps('set', xml('unsubscribe', { node, jid: bare(bob) })))).toMatchObject({ condition: 'unexpected-request' });
    expect(await iqError(bob, subscribeIq(node, bare(bob), { 'pubsub#digest': '1' }))).toMatchObject({ condition: 'bad-request', app: 'invalid-options' });

    const first = (await bob.iq(subscribeIq(node, bare(bob), { 'pubsub#include_body': 'true' }))).getChild('pubsub')?.getChild('subscription')?.attrs.subid as string;
    const second = (await bob.iq(subscribeIq(node, bare(bob), { 'pubsub#deliver': 'true' }))).getChild('pubsub')?.getChild('subscription')?.attrs.subid as string;
    expect(first).not.toBe(second);

    const opts = await bob.iq(ps('get', xml('options', { node, jid: bare(bob), subid: first })));
    const optFields = opts.getChild('pubsub')?.getChild('options')?.getChild('x')?.getChildren('field') ?? [];
    expect(optFields.find((f) => f.attrs.var === 'pubsub#include_body')?.getChildText('value')).toBe('1');
    expect(await iqError(bob, ps('get', xml('options', { node, jid: bare(bob) })))).toMatchObject({ condition: 'bad-request', app: 'subid-required' });

    await alice.iq(publishIq(node, 'n1', entry('Maintenance tonight')));
    const note = await bob.waitFor(itemsEvent(node));
    expect(note.getChildText('body')).toBe('Ops: Maintenance tonight');
    const subids = note.getChild('headers', 'http://jabber.org/protocol/shim')?.getChildren('header').map((h) => h.getText());
    expect(subids?.sort()).toEqual([first, second].sort());

    expect(await iqError(bob, ps('set', xml('unsubscribe', { node, jid: bare(bob) })))).toMatchObject({ condition: 'bad-request', app: 'subid-required' });
    expect(await iqError(bob, ps('set', xml('unsubscribe', { node, jid: bare(bob), subid: 'nope' })))).toMatchObject({ condition: 'not-acceptable', app: 'invalid-subid' });
    await bob.iq(ps('set', xml('unsubscribe', { node, jid: bare(bob), subid: second })));
    // deliver=false on the remaining subscription: no more notifications.
    await bob.iq(ps('set', xml('options', { node, jid: bare(bob), subid: first }, form(`${PUBSUB}#subscribe_options`, { 'pubsub#deliver': 'false' }))));
    await alice.iq(publishIq(node, 'n2', entry('Not delivered')));
    await barrier(alice, bob); // notifications go out while the publish is handled
    expect(bob.received.some((el) => eventOf(el)?.getChild('items')?.getChild('item')?.attrs.id === 'n2')).toBe(false);
  });

  it('a subscriber offline during publication gets the last item at its next login', async () => {
    const alice = await user('login-owner');
    const local = uniqueUser('login-sub');
    const jid = await srv.addUser(local);
    const node = `login-${Date.now()}`;
    await alice.iq(createIq(node));
    const first = await connect({ port, username: local });
    await first.iq(subscribeIq(node, jid));
    await first.stop();
    await alice.iq(publishIq(node, 'old', entry('Older news')));
    await alice.iq(publishIq(node, 'new', entry('Latest news')));
    const again = await connect({ port, username: local });
    clients.push(again);
    await again.send(xml('presence'));
    const msg = await again.waitFor(itemsEvent(node));
    expect(eventOf(msg)?.getChild('items')?.getChild('item')?.attrs.id).toBe('new');
    expect(msg.getChild('delay', 'urn:xmpp:delay')?.attrs.from).toBe(SERVICE);
  });

  it('access control: channel.create refused; a per-channel NONE right shuts a user out', async () => {
    const alice = await user('acl-owner');
    const bob = await user('acl-banned');
    const node = `acl-${Date.now()}`;
    await alice.iq(createIq(node));
    const previous = srv.server.acl;
    const acl: AccessControl = {
      allows: (right: ServiceRight, who: Jid) => (right === 'channel.create' ? who.bare !== bare(bob) : previous.allows(right, who)),
      venue: (kind: 'room' | 'channel', venue: string, who: Jid): VenueRight | null => (kind === 'channel' && venue === node && who.bare === bare(bob) ? 'NONE' : null),
      entitled: (service, who) => previous.entitled(service, who),
      explain: (question, who) => previous.explain(question, who),
    };
    srv.server.acl = acl;
    try {
      expect(await iqError(bob, createIq(`${node}-bob`))).toMatchObject({ condition: 'forbidden', type: 'auth' });
      expect(await iqError(bob, subscribeIq(node, bare(bob)))).toMatchObject({ condition: 'forbidden' });
      expect(await iqError(bob, itemsIq(node))).toMatchObject({ condition: 'forbidden' });
      await alice.iq(createIq(`${node}-alice`));
    } finally {
      srv.server.acl = previous;
    }
    await bob.iq(createIq(`${node}-bob`));
  });
});

describe('news channel limits', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({
      modules: { news: { maxNodesPerUser: 2, maxNodes: 3, maxItems: 3, defaultMaxItems: 2, maxPayloadBytes: 512, maxSubscriptionsPerUser: 2 } },
    });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  async function user(prefix: string): Promise<TestClient> {
    const jid = await srv.addUser(uniqueUser(prefix));
    const c = await connect({ port, username: jid.split('@')[0] as string });
    clients.push(c);
    return c;
  }

  it('caps channels per user and per service, items, payload size and subscriptions per user', async () => {
    const alice = await user('lim-a');
    const bob = await user('lim-b');
    await alice.iq(createIq('one'));
    await alice.iq(createIq('two'));
    expect(await iqError(alice, createIq('three'))).toMatchObject({ condition: 'not-allowed', app: 'max-nodes-exceeded' });
    await bob.iq(createIq('three'));
    expect(await iqError(bob, createIq('four'))).toMatchObject({ condition: 'resource-constraint' });

    expect(await iqError(alice, own('set', xml('configure', { node: 'one' }, form(`${PUBSUB}#node_config`, { 'pubsub#max_items': '4' }))))).toMatchObject({ condition: 'not-acceptable' });
    for (const id of ['a', 'b', 'c']) await alice.iq(publishIq('one', id, entry(id)));
    // Default max_items 2.
    expect((await alice.iq(itemsIq('one'))).getChild('pubsub')?.getChild('items')?.getChildren('item').map((i) => i.attrs.id)).toEqual(['b', 'c']);
    expect(await iqError(alice, publishIq('one', 'big', entry('x'.repeat(600))))).toMatchObject({ condition: 'not-acceptable', app: 'payload-too-big' });

    await bob.iq(subscribeIq('one', bare(bob)));
    await bob.iq(subscribeIq('two', bare(bob)));
    expect(await iqError(bob, subscribeIq('three', bare(bob)))).toMatchObject({ condition: 'policy-violation', app: 'too-many-subscriptions' });
  });
});
