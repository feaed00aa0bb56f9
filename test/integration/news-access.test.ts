// Issue 16 §2: nobody who lost access to a news channel receives its items. Read access is checked
// for each recipient at each notification and at login (last items), and a subscription is
// cancelled, with the XEP-0060 §8.8.4 notice (subscription='none'), whenever access is lost: an
// owner's roster change (through the roster protocol, or behind the server's back as a directory
// roster would), an access-model change, an affiliation change.
//
// "Did not receive" is proved with a barrier: after the publish that must not reach the subscriber,
// the owner publishes to a second, open channel the subscriber is subscribed to; the service sends
// notifications in order, so once that one arrives, an earlier one would have too.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const OWNER = `${PUBSUB}#owner`;
const EVENT = `${PUBSUB}#event`;
const ATOM = 'http://www.w3.org/2005/Atom';
const SERVICE = 'news.localhost';

function form(formType: string, fields: Record<string, string>): Element {
  return xml(
    'x',
    { xmlns: 'jabber:x:data', type: 'submit' },
    xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, formType)),
    ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, xml('value', {}, v))),
  );
}

const ps = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: SERVICE }, xml('pubsub', { xmlns: PUBSUB }, ...children));
const own = (type: 'get' | 'set', ...children: Element[]) => xml('iq', { type, to: SERVICE }, xml('pubsub', { xmlns: OWNER }, ...children));
const createIq = (node: string, fields: Record<string, string> = {}) => ps('set', xml('create', { node }), xml('configure', {}, form(`${PUBSUB}#node_config`, fields)));
const entry = (title: string) => xml('entry', { xmlns: ATOM }, xml('title', {}, title));
const publishIq = (node: string, id: string) => ps('set', xml('publish', { node }, xml('item', { id }, entry(id))));
const subscribeIq = (node: string, jid: string) => ps('set', xml('subscribe', { node, jid }));
const bare = (c: TestClient) => c.jid.split('/')[0] as string;

const eventOf = (el: Element) => (el.name === 'message' ? el.getChild('event', EVENT) : undefined);
const itemIds = (c: TestClient, node: string) =>
  c.received.flatMap((el) => (eventOf(el)?.getChild('items')?.attrs.node === node ? (eventOf(el)?.getChild('items')?.getChildren('item') ?? []).map((i) => i.attrs.id as string) : []));
const cancelled = (node: string) => (el: Element) => {
  const s = eventOf(el)?.getChild('subscription');
  return s?.attrs.node === node && s.attrs.subscription === 'none';
};
const itemEvent = (node: string, id: string) => (el: Element) => eventOf(el)?.getChild('items')?.attrs.node === node && eventOf(el)?.getChild('items')?.getChild('item')?.attrs.id === id;

describe('news channels: access lost, subscription gone', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];
  let barrierSeq = 0;

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  async function user(prefix: string, username = uniqueUser(prefix)): Promise<TestClient> {
    if (!(await srv.storage.accounts.get(`${username}@localhost`))) await srv.addUser(username);
    const c = await connect({ port, username });
    clients.push(c);
    await c.send(xml('presence'));
    return c;
  }

  /** An open channel of `owner` that `subscriber` follows: the barrier path. */
  async function barrierChannel(owner: TestClient, subscriber: TestClient): Promise<() => Promise<void>> {
    const node = `barrier-${++barrierSeq}-${Date.now()}`;
    await owner.iq(createIq(node));
    await subscriber.iq(subscribeIq(node, bare(subscriber)));
    return async () => {
      const id = `b${++barrierSeq}`;
      await owner.iq(publishIq(node, id));
      await subscriber.waitFor(itemEvent(node, id));
    };
  }

  const share = (owner: TestClient, contact: TestClient, subscription: 'from' | 'none') =>
    srv.storage.roster.setItem(bare(owner), { jid: bare(contact), subscription, ask: false, approved: false, groups: [] });

  it('presence model: the owner removes the subscriber from her roster; the subscription ends and no more items arrive', async () => {
    const alice = await user('pa-owner');
    const bob = await user('pa-sub');
    const node = `presence-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'presence' }));
    await share(alice, bob, 'from');
    await bob.iq(subscribeIq(node, bare(bob)));
    const barrier = await barrierChannel(alice, bob);
    await alice.iq(publishIq(node, 'while-shared'));
    await bob.waitFor(itemEvent(node, 'while-shared'));
    // Through the roster protocol (RFC 6121 §2.5): alice removes bob.
    await alice.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:roster' }, xml('item', { jid: bare(bob), subscription: 'remove' }))));
    await bob.waitFor(cancelled(node));
    await alice.iq(publishIq(node, 'after-removal'));
    await barrier();
    expect(itemIds(bob, node)).toEqual(['while-shared']);
    const subs = (await alice.iq(own('get', xml('subscriptions', { node })))).getChild('pubsub')?.getChild('subscriptions')?.getChildren('subscription') ?? [];
    expect(subs.map((s) => s.attrs.jid)).not.toContain(bare(bob));
  });

  it('presence model: the roster changes behind the server’s back (a directory roster); the next notification checks and cancels', async () => {
    const alice = await user('pd-owner');
    const bob = await user('pd-sub');
    const node = `presence-dir-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'presence' }));
    await share(alice, bob, 'from');
    await bob.iq(subscribeIq(node, bare(bob)));
    const barrier = await barrierChannel(alice, bob);
    await share(alice, bob, 'none'); // no roster module involved: no roster.changed
    await alice.iq(publishIq(node, 'not-for-bob'));
    await bob.waitFor(cancelled(node));
    await barrier();
    expect(itemIds(bob, node)).toEqual([]);
  });

  it('an access-model change shuts out those it no longer admits, with the notice', async () => {
    const alice = await user('am-owner');
    const friend = await user('am-friend');
    const stranger = await user('am-stranger');
    const node = `model-${Date.now()}`;
    await alice.iq(createIq(node));
    await share(alice, friend, 'from');
    await friend.iq(subscribeIq(node, bare(friend)));
    await stranger.iq(subscribeIq(node, bare(stranger)));
    const barrier = await barrierChannel(alice, stranger);
    await alice.iq(own('set', xml('configure', { node }, form(`${PUBSUB}#node_config`, { 'pubsub#access_model': 'presence' }))));
    await stranger.waitFor(cancelled(node));
    await alice.iq(publishIq(node, 'contacts-only'));
    await friend.waitFor(itemEvent(node, 'contacts-only'));
    await barrier();
    expect(itemIds(stranger, node)).toEqual([]);
  });

  it('an affiliation change: a member removed from a whitelist channel loses the subscription', async () => {
    const alice = await user('af-owner');
    const dave = await user('af-member');
    const node = `whitelist-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'whitelist' }));
    await alice.iq(own('set', xml('affiliations', { node }, xml('affiliation', { jid: bare(dave), affiliation: 'member' }))));
    await dave.iq(subscribeIq(node, bare(dave)));
    const barrier = await barrierChannel(alice, dave);
    await alice.iq(own('set', xml('affiliations', { node }, xml('affiliation', { jid: bare(dave), affiliation: 'none' }))));
    await dave.waitFor(cancelled(node));
    await alice.iq(publishIq(node, 'members-only'));
    await barrier();
    expect(itemIds(dave, node)).toEqual([]);
  });

  it('at login: no last item for a subscriber who lost access while away; the subscription is cancelled', async () => {
    const alice = await user('lg-owner');
    const name = uniqueUser('lg-sub');
    let erin = await user('lg-sub', name);
    const node = `login-${Date.now()}`;
    await alice.iq(createIq(node, { 'pubsub#access_model': 'presence', 'pubsub#send_last_published_item': 'on_sub_and_presence' }));
    await share(alice, erin, 'from');
    await erin.iq(subscribeIq(node, bare(erin)));
    await alice.iq(publishIq(node, 'before-logout'));
    await erin.waitFor(itemEvent(node, 'before-logout'));
    await erin.stop();
    await share(alice, erin, 'none');
    erin = await user('lg-sub', name);
    await erin.waitFor(cancelled(node));
    expect(itemIds(erin, node)).toEqual([]);
  });
});
