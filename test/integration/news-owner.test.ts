// News channels, the owner's side (XEP-0060 service at news.<host>) over real client connections:
// §8.6 approval by form message (and a non-owner's forbidden answer), §8.7 the pubsub#get-pending
// ad-hoc command at the service and through the host's XEP-0050 framework, pending requests kept
// across a restart, §8.9.4 affiliation change notifications (with pending requests approved for
// publishers and denied for outcasts), §8.2.5.3 pubsub#notify_config, notify_retract and
// notify_delete switched off, pubsub#item_expire on read and by the sweep, and account removal.
import { rmSync } from 'node:fs';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccessControl, ServiceRight, VenueRight } from '../../src/core/acl.js';
import type { Jid } from '../../src/xmpp/jid.js';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const OWNER = 'http://jabber.org/protocol/pubsub#owner';
const EVENT = 'http://jabber.org/protocol/pubsub#event';
const AUTH = 'http://jabber.org/protocol/pubsub#subscribe_authorization';
const COMMANDS = 'http://jabber.org/protocol/commands';
const GET_PENDING = 'http://jabber.org/protocol/pubsub#get-pending';
const DATA = 'jabber:x:data';
const SERVICE = 'news.localhost';
// In-band registration on: a user cancels its account with XEP-0077 <remove/> (fires account.removed).
const SERVER = { hosts: [{ domain: 'localhost', registration: { enabled: true } }], modules: { news: { expirySweepSeconds: 1 } } };

async function iqError(c: TestClient, el: Element): Promise<{ condition: string; type: string; app?: string }> {
  try {
    const r = await c.iq(el);
    throw new Error(`expected an error, got ${r}`);
  } catch (e) {
    const err = e as { condition?: string; type?: string; application?: Element };
    if (!err.condition) throw e;
    return { condition: err.condition, type: err.type ?? '', app: err.application?.name };
  }
}

function form(formType: string | null, fields: Record<string, string>, type = 'submit'): Element {
  return xml(
    'x',
    { xmlns: DATA, type },
    ...(formType ? [xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, formType))] : []),
    ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, xml('value', {}, v))),
  );
}

const ps = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: SERVICE }, xml('pubsub', { xmlns: PUBSUB }, ...children));
const own = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: SERVICE }, xml('pubsub', { xmlns: OWNER }, ...children));
const createIq = (node: string, fields: Record<string, string> = {}) => ps('set', xml('create', { node }), xml('configure', {}, form(`${PUBSUB}#node_config`, fields)));
const configureIq = (node: string, fields: Record<string, string>) => own('set', xml('configure', { node }, form(`${PUBSUB}#node_config`, fields)));
const publishIq = (node: string, id: string) => ps('set', xml('publish', { node }, xml('item', { id }, xml('entry', { xmlns: 'http://www.w3.org/2005/Atom' }, xml('title', {}, id)))));
const subscribeIq = (node: string, jid: string) => ps('set', xml('subscribe', { node, jid }));
const affiliationsIq = (node: string, affs: Record<string, string>) =>
  own('set', xml('affiliations', { node }, ...Object.entries(affs).map(([jid, affiliation]) => xml('affiliation', { jid, affiliation }))));
const commandIq = (to: string, attrs: Record<string, string> = {}, ...children: Element[]) =>
  xml('iq', { type: 'set', to }, xml('command', { xmlns: COMMANDS, node: GET_PENDING, ...attrs }, ...children));
const authorizeMsg = (node: string, jid: string, allow: boolean) =>
  xml('message', { to: SERVICE, id: `auth-${Math.random().toString(36).slice(2)}` }, form(AUTH, { 'pubsub#node': node, 'pubsub#subscriber_jid': jid, 'pubsub#allow': String(allow) }));
const bare = (c: TestClient) => c.jid.split('/')[0] as string;

const fieldValue = (x: Element | undefined, name: string) => x?.getChildren('field').find((f) => f.attrs.var === name)?.getChildText('value');
const eventOf = (el: Element) => (el.name === 'message' ? el.getChild('event', EVENT) : undefined);
/** §8.6.1 authorization form message for one subscriber on one channel. */
const authRequest = (node: string, jid: string) => (el: Element) => {
  const x = el.name === 'message' ? el.getChild('x', DATA) : undefined;
  return x?.attrs.type === 'form' && fieldValue(x, 'FORM_TYPE') === AUTH && fieldValue(x, 'pubsub#node') === node && fieldValue(x, 'pubsub#subscriber_jid') === jid;
};
const subscriptionEvent = (node: string, state: string) => (el: Element) => {
  const s = eventOf(el)?.getChild('subscription');
  return s?.attrs.node === node && s.attrs.subscription === state;
};
/** §8.9.4 affiliation change notification. */
const affiliationNotice = (node: string, affiliation: string) => (el: Element) => {
  const a = el.name === 'message' ? el.getChild('pubsub', PUBSUB)?.getChild('affiliations') : undefined;
  return a?.attrs.node === node && a.getChild('affiliation')?.attrs.affiliation === affiliation;
};
const configEvent = (node: string) => (el: Element) => eventOf(el)?.getChild('configuration')?.attrs.node === node;

describe('news channels: owners (XEP-0060 §8)', () => {
  let srv: TestServer;
  let port: number;
  let firstDataDir: string;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer(SERVER);
    firstDataDir = srv.dataDir;
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
    rmSync(firstDataDir, { recursive: true, force: true });
  });

  async function login(local: string): Promise<TestClient> {
    const c = await connect({ port, username: local });
    clients.push(c);
    await c.send(xml('presence'));
    return c;
  }
  async function user(prefix: string): Promise<TestClient> {
    const jid = await srv.addUser(uniqueUser(prefix));
    return login(jid.split('@')[0] as string);
  }

  it('§8.6/§8.7: get-pending lists owned channels and resends the forms; only owners approve; the subscriber hears the outcome', async () => {
    const alice = await user('own-alice');
    const bob = await user('own-bob');
    const carol = await user('own-carol');
    const dave = await user('own-dave');
    const node = `auth-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'authorize' }));

    const info = (await bob.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })))).getChild('query');
    const features = info?.getChildren('feature').map((f) => f.attrs.var);
    expect(features).toContain(COMMANDS);
    expect(features).toContain(`${PUBSUB}#get-pending`);

    const sub = await bob.iq(subscribeIq(node, bare(bob)));
    expect(sub.getChild('pubsub')?.getChild('subscription')?.attrs.subscription).toBe('pending');
    await alice.waitFor(authRequest(node, bare(bob))); // §8.6.1, sent at once
    await dave.iq(subscribeIq(node, bare(dave)));
    await alice.waitFor(authRequest(node, bare(dave)));

    // A non-owner's approval is refused with an error message, and the request stays pending.
    await carol.send(authorizeMsg(node, bare(bob), true));
    const refused = await carol.waitFor((el) => el.name === 'message' && el.attrs.type === 'error');
    expect(refused.getChild('error')?.getChild('forbidden')).toBeDefined();
    const stillPending = await alice.iq(own('get', xml('subscriptions', { node })));
    expect(stillPending.getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription').map((s) => s.attrs.subscription)).toEqual(['pending', 'pending']);

    // §8.7.3.3: carol owns no channel; once she owns one, alice's channel is neither offered nor allowed.
    expect(await iqError(carol, commandIq(SERVICE, { action: 'execute' }))).toMatchObject({ condition: 'forbidden' });
    const carolNode = `carol-${Date.now()}`;
    await carol.iq(createIq(carolNode));
    const carolStage = (await carol.iq(commandIq(SERVICE, { action: 'execute' }))).getChild('command', COMMANDS) as Element;
    const carolOptions = carolStage.getChild('x', DATA)?.getChildren('field').find((f) => f.attrs.var === 'pubsub#node')?.getChildren('option').map((o) => o.getChildText('value'));
    expect(carolOptions).toEqual([carolNode]);
    expect(await iqError(carol, commandIq(SERVICE, { sessionid: carolStage.attrs.sessionid as string }, form(null, { 'pubsub#node': node })))).toMatchObject({ condition: 'forbidden' });

    // The owner: stage 0 lists her channel with its FORM_TYPE; completing sends one form per pending request.
    const stage = (await alice.iq(commandIq(SERVICE, { action: 'execute' }))).getChild('command', COMMANDS) as Element;
    expect(stage.attrs).toMatchObject({ node: GET_PENDING, status: 'executing' });
    const x = stage.getChild('x', DATA);
    expect(fieldValue(x, 'FORM_TYPE')).toBe(AUTH);
    expect(x?.getChildren('field').find((f) => f.attrs.var === 'pubsub#node')?.getChildren('option').map((o) => o.getChildText('value'))).toEqual([node]);
    // XEP-0050 §3.3: a session belongs to its requester.
    expect(await iqError(carol, commandIq(SERVICE, { sessionid: stage.attrs.sessionid as string }, form(null, { 'pubsub#node': node })))).toMatchObject({ app: 'bad-sessionid' });
    const done = (await alice.iq(commandIq(SERVICE, { sessionid: stage.attrs.sessionid as string }, form(null, { 'pubsub#node': node })))).getChild('command', COMMANDS);
    expect(done?.attrs.status).toBe('completed');
    await alice.waitFor(authRequest(node, bare(bob)));
    await alice.waitFor(authRequest(node, bare(dave)));

    // Approve bob, deny dave: each hears the outcome (§8.6 / §12 subscription state notifications).
    await alice.send(authorizeMsg(node, bare(bob), true));
    const approved = await bob.waitFor(subscriptionEvent(node, 'subscribed'));
    expect(eventOf(approved)?.getChild('subscription')?.attrs.jid).toBe(bare(bob));
    await alice.send(authorizeMsg(node, bare(dave), false));
    await dave.waitFor(subscriptionEvent(node, 'none'));
    const after = await alice.iq(own('get', xml('subscriptions', { node })));
    expect(after.getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription').map((s) => [s.attrs.jid, s.attrs.subscription])).toEqual([[bare(bob), 'subscribed']]);

    // The same command through the host's XEP-0050 framework (adhoc.commands hook).
    const listed = await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items', node: COMMANDS })));
    expect(listed.getChild('query')?.getChildren('item').map((i) => i.attrs.node)).toContain(GET_PENDING);
    const hostStage = (await alice.iq(commandIq('localhost', { action: 'execute' }))).getChild('command', COMMANDS);
    expect(hostStage?.attrs.status).toBe('executing');
    expect(fieldValue(hostStage?.getChild('x', DATA), 'FORM_TYPE')).toBe(AUTH);
  });

  it('§8.9.4: affected entities hear of affiliation changes; pending requests of publishers are approved, of outcasts denied', async () => {
    const alice = await user('aff-alice');
    const bob = await user('aff-bob');
    const carol = await user('aff-carol');
    const dave = await user('aff-dave');
    const node = `aff-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'authorize' }));
    await bob.iq(subscribeIq(node, bare(bob)));
    await carol.iq(subscribeIq(node, bare(carol)));

    expect(await iqError(bob, affiliationsIq(node, { [bare(bob)]: 'owner' }))).toMatchObject({ condition: 'forbidden' });
    // §8.9.2.4: one entity named twice.
    const twice = own('set', xml('affiliations', { node }, xml('affiliation', { jid: bare(dave), affiliation: 'member' }), xml('affiliation', { jid: bare(dave), affiliation: 'publisher' })));
    expect(await iqError(alice, twice)).toMatchObject({ condition: 'bad-request' });

    await alice.iq(affiliationsIq(node, { [bare(bob)]: 'publisher', [bare(carol)]: 'outcast', [bare(dave)]: 'member' }));
    const toBob = await bob.waitFor(affiliationNotice(node, 'publisher'));
    expect(toBob.getChild('pubsub', PUBSUB)?.getChild('affiliations')?.getChild('affiliation')?.attrs.jid).toBe(bare(bob));
    await bob.waitFor(subscriptionEvent(node, 'subscribed'));
    await carol.waitFor(affiliationNotice(node, 'outcast'));
    await carol.waitFor(subscriptionEvent(node, 'none'));
    await dave.waitFor(affiliationNotice(node, 'member'));

    // Unchanged affiliations are not announced again; a removed one is announced as none.
    await alice.iq(affiliationsIq(node, { [bare(dave)]: 'member', [bare(bob)]: 'none' }));
    await bob.waitFor(affiliationNotice(node, 'none'));
    await barrier(alice, dave); // notices go out while Alice's change is handled
    expect(dave.received.filter(affiliationNotice(node, 'member'))).toHaveLength(1);
    const subs = await alice.iq(own('get', xml('subscriptions', { node })));
    expect(subs.getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription').map((s) => [s.attrs.jid, s.attrs.subscription])).toEqual([[bare(bob), 'subscribed']]);
  });

  it('notify_config sends the configuration (form only with payloads); notify_retract and notify_delete off are silent', async () => {
    const alice = await user('cfg-alice');
    const bob = await user('cfg-bob');
    const node = `cfg-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#notify_config': '1', 'pubsub#notify_retract': '0', 'pubsub#notify_delete': '0' }));
    const conf = await alice.iq(own('get', xml('configure', { node })));
    const cx = conf.getChild('pubsub')?.getChild('configure')?.getChild('x', DATA);
    expect(fieldValue(cx, 'pubsub#notify_config')).toBe('1');
    expect(fieldValue(cx, 'pubsub#item_expire')).toBe('0');
    await bob.iq(subscribeIq(node, bare(bob)));

    await alice.iq(configureIq(node, { 'pubsub#title': 'Renamed' }));
    const withForm = await bob.waitFor(configEvent(node));
    const x = eventOf(withForm)?.getChild('configuration')?.getChild('x', DATA);
    expect(x?.attrs.type).toBe('result');
    expect(fieldValue(x, 'pubsub#title')).toBe('Renamed');

    await alice.iq(configureIq(node, { 'pubsub#deliver_payloads': '0' }));
    const bareEvent = await bob.waitFor(configEvent(node));
    expect(eventOf(bareEvent)?.getChild('configuration')?.getChildElements()).toHaveLength(0);

    await alice.iq(configureIq(node, { 'pubsub#notify_config': '0', 'pubsub#deliver_payloads': '1' }));
    await alice.iq(configureIq(node, { 'pubsub#title': 'Quiet' }));
    await alice.iq(publishIq(node, 'one'));
    await bob.waitFor((el) => eventOf(el)?.getChild('items')?.getChild('item')?.attrs.id === 'one');
    await alice.iq(ps('set', xml('retract', { node }, xml('item', { id: 'one' }))));
    await alice.iq(own('set', xml('delete', { node })));
    await barrier(alice, bob);
    expect(bob.received.filter(configEvent(node))).toHaveLength(2);
    expect(bob.received.filter((el) => !!eventOf(el)?.getChild('items')?.getChild('retract'))).toHaveLength(0);
    expect(bob.received.filter((el) => !!eventOf(el)?.getChild('delete'))).toHaveLength(0);
  });

  it('pubsub#item_expire: expired items are hidden on read and removed by the sweep', async () => {
    const alice = await user('exp-alice');
    const node = `exp-${Date.now()}`;
    expect(await iqError(alice, createIq(node, { 'pubsub#item_expire': 'soon' }))).toMatchObject({ condition: 'not-acceptable' });
    await alice.iq(createIq(node, { 'pubsub#item_expire': '3600' }));
    const store = srv.server.storage.pubsub;
    const old = Date.now() - 2 * 3600_000;
    await store.publish(SERVICE, node, { id: 'old', publisher: bare(alice), payload: '<x xmlns="urn:test"/>', createdAt: old, updatedAt: old }, 10);
    await alice.iq(publishIq(node, 'fresh'));

    const items = await alice.iq(ps('get', xml('items', { node })));
    expect(items.getChild('pubsub')?.getChild('items')?.getChildren('item').map((i) => i.attrs.id)).toEqual(['fresh']);
    expect(await iqError(alice, ps('get', xml('items', { node }, xml('item', { id: 'old' }))))).toMatchObject({ condition: 'item-not-found' });

    // A channel nobody reads: the sweep (every second here) removes the old item and keeps the fresh one.
    const unread = `${node}-unread`;
    await alice.iq(createIq(unread, { 'pubsub#item_expire': '3600' }));
    await store.publish(SERVICE, unread, { id: 'old', publisher: bare(alice), payload: '<x xmlns="urn:test"/>', createdAt: old, updatedAt: old }, 10);
    await alice.iq(publishIq(unread, 'fresh'));
    expect(await store.countItems(SERVICE, unread)).toBe(2);
    const deadline = Date.now() + 5000;
    while ((await store.countItems(SERVICE, unread)) > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect((await store.getItems(SERVICE, unread)).map((i) => i.id)).toEqual(['fresh']);
  });

  it('account removal drops subscriptions and affiliations; an ownerless channel is managed by admins only', async () => {
    const alice = await user('rm-alice');
    const admin = await user('rm-admin');
    const erinLocal = uniqueUser('rm-erin');
    await srv.addUser(erinLocal);
    const erin = await login(erinLocal);
    const shared = `rm-shared-${Date.now()}`;
    const orphan = `rm-orphan-${Date.now()}`;
    await alice.iq(createIq(shared));
    await erin.iq(subscribeIq(shared, bare(erin)));
    await alice.iq(affiliationsIq(shared, { [bare(erin)]: 'publisher' }));
    await erin.iq(createIq(orphan));

    await erin.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:register' }, xml('remove'))));

    const subs = await alice.iq(own('get', xml('subscriptions', { node: shared })));
    expect(subs.getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription')).toHaveLength(0);
    const affs = await alice.iq(own('get', xml('affiliations', { node: shared })));
    expect(affs.getChild('pubsub')?.getChild('affiliations')?.getChildren('affiliation').map((a) => a.attrs.jid)).toEqual([bare(alice)]);

    // The orphaned channel stays; nobody but an administrator may manage it.
    expect(await iqError(alice, own('get', xml('configure', { node: orphan })))).toMatchObject({ condition: 'forbidden' });
    expect(await iqError(admin, own('get', xml('configure', { node: orphan })))).toMatchObject({ condition: 'forbidden' });
    const previous = srv.server.acl;
    const acl: AccessControl = {
      allows: (right: ServiceRight, who: Jid) => (right === 'admin' ? who.bare === bare(admin) : previous.allows(right, who)),
      venue: (kind: 'room' | 'channel', venue: string, who: Jid): VenueRight | null => previous.venue(kind, venue, who),
      entitled: (service, who) => previous.entitled(service, who),
      explain: (question, who) => previous.explain(question, who),
    };
    srv.server.acl = acl;
    try {
      await admin.iq(own('get', xml('configure', { node: orphan })));
      await admin.iq(affiliationsIq(orphan, { [bare(alice)]: 'owner' }));
      await alice.iq(own('get', xml('configure', { node: orphan })));
      // Once owned again, the administrator has no special right.
      expect(await iqError(admin, own('get', xml('configure', { node: orphan })))).toMatchObject({ condition: 'forbidden' });
    } finally {
      srv.server.acl = previous;
    }

    // Someone registering the removed name again is not its owner.
    await srv.addUser(erinLocal);
    const erin2 = await login(erinLocal);
    expect(await iqError(erin2, own('get', xml('configure', { node: orphan })))).toMatchObject({ condition: 'forbidden' });
  });

  // Last: it restarts the server.
  it('pending requests survive a restart', async () => {
    const aliceJid = await srv.addUser(uniqueUser('rs-alice'));
    const bobJid = await srv.addUser(uniqueUser('rs-bob'));
    const alice = await login(aliceJid.split('@')[0] as string);
    const bob = await login(bobJid.split('@')[0] as string);
    const node = `restart-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'authorize' }));
    await bob.iq(subscribeIq(node, bobJid));
    await alice.waitFor(authRequest(node, bobJid));
    await Promise.all([alice.stop(), bob.stop()]);

    await srv.stop();
    srv = await startTestServer({ ...SERVER, dataDir: firstDataDir });
    port = srv.ports.c2s as number;

    const alice2 = await login(aliceJid.split('@')[0] as string);
    const bob2 = await login(bobJid.split('@')[0] as string);
    const stage = (await alice2.iq(commandIq(SERVICE, { action: 'execute' }))).getChild('command', COMMANDS) as Element;
    const option = stage.getChild('x', DATA)?.getChildren('field').find((f) => f.attrs.var === 'pubsub#node')?.getChildren('option').find((o) => o.getChildText('value') === node);
    expect(option?.attrs.label).toContain('1 pending');
    await alice2.iq(commandIq(SERVICE, { sessionid: stage.attrs.sessionid as string }, form(null, { 'pubsub#node': node })));
    await alice2.waitFor(authRequest(node, bobJid));
    await alice2.send(authorizeMsg(node, bobJid, true));
    await bob2.waitFor(subscriptionEvent(node, 'subscribed'));
  });
});
