// XEP-0357 push notifications between real clients. The "app server" (XMPP Push Service) is another
// test account: notifications are addressed to its full JID, it sees the pubsub publish and answers.
// Covers: disco feature on the account, enable with publish options, the notification when a message
// goes offline (summary form, no body by default, publish options echoed, offline storage still
// done), rate limiting folding messages into one trailing notification, the count reset when the
// user comes online, disable (all nodes or one), an app server's error disabling the registration,
// malformed and unauthorized requests, the registration limit, app servers on other domains refused
// (no federation yet), and persistence across a restart.
// With stream management and a full offline store: no notification for a message storage refused,
// and a message held for a hibernated session is notified once, not again when the hibernation
// times out and it goes to offline storage (a message written to the live session and never
// acknowledged is notified once, at that point).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { iqReplyPattern, RawClient, waitUntil } from '../helpers/raw.js';
import { afterSessionClosed, startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS_PUSH = 'urn:xmpp:push:0';
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_XDATA = 'jabber:x:data';
const INTERVAL = 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function publishOptions(secret: string): Element {
  return xml(
    'x',
    { xmlns: NS_XDATA, type: 'submit' },
    xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'http://jabber.org/protocol/pubsub#publish-options')),
    xml('field', { var: 'secret' }, xml('value', {}, secret)),
  );
}

function enable(jid: string | undefined, node: string | undefined, form?: Element, to?: string): Element {
  const attrs: Record<string, string> = { xmlns: NS_PUSH };
  if (jid !== undefined) attrs.jid = jid;
  if (node !== undefined) attrs.node = node;
  return xml('iq', to ? { type: 'set', to } : { type: 'set' }, xml('enable', attrs, ...(form ? [form] : [])));
}

function disable(jid: string, node?: string): Element {
  return xml('iq', { type: 'set' }, xml('disable', node ? { xmlns: NS_PUSH, jid, node } : { xmlns: NS_PUSH, jid }));
}

function isPublish(el: Element): boolean {
  return el.name === 'iq' && el.attrs.type === 'set' && !!el.getChild('pubsub', NS_PUBSUB);
}

/** The fields of a data form, var -> values. */
function formFields(x: Element | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const f of x?.getChildren('field') ?? []) out[f.attrs.var as string] = f.getChildren('value').map((v) => v.getText());
  return out;
}

function summary(iq: Element): { node?: string; fields: Record<string, string[]>; options: Record<string, string[]> } {
  const pubsub = iq.getChild('pubsub', NS_PUBSUB) as Element;
  const publish = pubsub.getChild('publish');
  const x = publish?.getChild('item')?.getChild('notification', NS_PUSH)?.getChild('x', NS_XDATA);
  expect(x?.attrs.type).toBe('submit');
  return { node: publish?.attrs.node, fields: formFields(x), options: formFields(pubsub.getChild('publish-options')?.getChild('x', NS_XDATA)) };
}

/**
 * Makes a test client answer pubsub iqs as an app server would. @xmpp/client answers unhandled iqs
 * with service-unavailable by itself, so the answer has to come from its iq callee.
 */
function serveAsApp(app: TestClient, answer: 'result' | 'error' = 'result'): void {
  const callee = (app.xmpp as unknown as { iqCallee: { set(ns: string, name: string, h: () => unknown): void } }).iqCallee;
  callee.set(NS_PUBSUB, 'pubsub', () =>
    answer === 'result' ? true : xml('error', { type: 'cancel' }, xml('item-not-found', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' })),
  );
}

function errorCondition(err: unknown): string | undefined {
  return (err as { condition?: string }).condition;
}

describe('push notifications (XEP-0357)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    return srv.addUser(u);
  }

  async function login(bare: string, resource?: string): Promise<TestClient> {
    const c = await connect({ port, username: bare.split('@')[0] as string, resource, mechanism: 'PLAIN' });
    clients.push(c);
    await c.send(xml('presence'));
    await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    return c;
  }

  /** Disconnects and waits until the server has dropped the session, so messages go offline. */
  async function logout(c: TestClient): Promise<void> {
    const bare = c.jid.split('/')[0] as string;
    await c.stop();
    for (let i = 0; i < 250 && srv.server.sessions.count(bare) > 0; i++) await sleep(20);
    expect(srv.server.sessions.count(bare)).toBe(0);
  }

  async function say(from: TestClient, to: string, body: string): Promise<void> {
    await from.send(xml('message', { to, type: 'chat', id: `m-${body}` }, xml('body', {}, body)));
    // Barrier: the message has been routed once the ping comes back.
    await from.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  }

  /** The app server's next publish (answered by the handler serveAsApp installed). */
  function nextPublish(app: TestClient, timeoutMs = 5000): Promise<Element> {
    return app.waitFor(isPublish, timeoutMs);
  }

  function publishCount(app: TestClient): number {
    return app.received.filter(isPublish).length;
  }

  beforeAll(async () => {
    srv = await startTestServer({ modules: { push: { minIntervalMs: INTERVAL, maxRegistrations: 3 } } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('announces urn:xmpp:push:0 on the account', async () => {
    const bob = await newUser('bob');
    const b = await login(bob);
    const res = await b.iq(xml('iq', { type: 'get', to: bob }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(res.getChild('query')?.getChildren('feature').map((f) => f.attrs.var)).toContain(NS_PUSH);
  });

  it('notifies the app server when a message goes offline, with the summary form and no body', async () => {
    const [alice, bob, appUser] = [await newUser('alice'), await newUser('bob'), await newUser('app')];
    const app = await login(appUser, 'push');
    serveAsApp(app);
    const a = await login(alice, 'desk');
    const b = await login(bob, 'phone');
    await b.iq(enable(app.jid, 'node-1', publishOptions('s3cr3t'), bob));
    await logout(b);

    await say(a, bob, 'hello bob');
    const iq = await nextPublish(app);
    expect(iq.attrs.from).toBe(bob);
    expect(iq.attrs.to).toBe(app.jid);
    const s = summary(iq);
    expect(s.node).toBe('node-1');
    expect(s.fields.FORM_TYPE).toEqual(['urn:xmpp:push:summary']);
    expect(s.fields['message-count']).toEqual(['1']);
    expect(s.fields['last-message-sender']).toEqual([`${alice}/desk`]);
    expect(s.fields['last-message-body']).toBeUndefined();
    expect(JSON.stringify(iq.toString())).not.toContain('hello bob');
    expect(s.options).toEqual({ FORM_TYPE: ['http://jabber.org/protocol/pubsub#publish-options'], secret: ['s3cr3t'] });
    // The push handler does not take the event: the offline module still stored the message.
    expect(await srv.storage.offline.count(bob)).toBe(1);
    expect(a.received.some((el) => el.attrs.type === 'error')).toBe(false);

    // Chat states alone wake nobody.
    await a.send(xml('message', { to: bob, type: 'chat' }, xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
    await sleep(INTERVAL + 300);
    expect(publishCount(app)).toBe(1);
    // The app server's result kept the registration.
    expect(await srv.storage.keyval.get(bob, 'push', 'registrations')).toContain('node-1');
  });

  it('folds messages inside the rate-limit interval into one trailing notification, and resets the count when the user comes online', async () => {
    const [alice, bob, appUser] = [await newUser('alice'), await newUser('bob'), await newUser('app')];
    const app = await login(appUser, 'push');
    serveAsApp(app);
    const a = await login(alice, 'desk');
    let b = await login(bob, 'phone');
    await b.iq(enable(app.jid, 'n', undefined, bob));
    await logout(b);

    await say(a, bob, 'one');
    expect(summary(await nextPublish(app)).fields['message-count']).toEqual(['1']);
    await say(a, bob, 'two');
    await say(a, bob, 'three');
    const trailing = await nextPublish(app, INTERVAL + 3000);
    const t = summary(trailing);
    expect(t.fields['message-count']).toEqual(['3']);
    expect(t.options).toEqual({});
    await sleep(INTERVAL + 300);
    expect(publishCount(app)).toBe(2);

    // Coming online resets the count (and the offline messages are delivered).
    b = await login(bob, 'phone');
    await logout(b);
    await sleep(INTERVAL);
    await say(a, bob, 'four');
    expect(summary(await nextPublish(app)).fields['message-count']).toEqual(['1']);
  });

  it('notifies for a message held for a hibernated session (session.held), not for other stanzas', async () => {
    // XEP-0198 does not fire session.held yet: the hook is fired here as the session code will.
    const [alice, bob, appUser] = [await newUser('alice'), await newUser('bob'), await newUser('app')];
    const app = await login(appUser, 'push');
    serveAsApp(app);
    const b = await login(bob, 'phone');
    await b.iq(enable(app.jid, 'held'));
    const session = srv.server.sessions.resources(bob)[0];
    expect(session).toBeDefined();
    const fire = (stanza: Element) => srv.server.hooks.fire('session.held', { session: session as NonNullable<typeof session>, stanza });
    expect(await fire(xml('presence', { from: `${alice}/desk`, to: b.jid }))).toBe(false);
    expect(await fire(xml('message', { from: `${alice}/desk`, to: b.jid, type: 'groupchat' }, xml('body', {}, 'room')))).toBe(false);
    expect(await fire(xml('message', { from: `${alice}/desk`, to: b.jid, type: 'chat' }, xml('body', {}, 'held one')))).toBe(false);
    const s = summary(await nextPublish(app));
    expect(s.node).toBe('held');
    expect(s.fields['message-count']).toEqual(['1']);
    expect(s.fields['last-message-sender']).toEqual([`${alice}/desk`]);
    // The hooks above resolved once their notifications were routed: bob's iq to the app server
    // arrives after any of them.
    await barrier(b, app);
    expect(publishCount(app)).toBe(1);
  });

  it('stops notifying after disable: one node, then every node of the service', async () => {
    const [alice, bob, appUser] = [await newUser('alice'), await newUser('bob'), await newUser('app')];
    const app = await login(appUser, 'push');
    serveAsApp(app);
    const a = await login(alice, 'desk');
    let b = await login(bob, 'phone');
    await b.iq(enable(app.jid, 'n1'));
    await b.iq(enable(app.jid, 'n2'));
    await b.iq(disable(app.jid, 'n1'));
    await logout(b);

    await say(a, bob, 'first');
    const iq = await nextPublish(app);
    expect(summary(iq).node).toBe('n2');
    // Alice's message was handled (and its notifications routed) before her barrier iq.
    await barrier(a, app);
    expect(publishCount(app)).toBe(1);

    b = await login(bob, 'phone');
    await b.iq(enable(app.jid, 'n3'));
    await b.iq(disable(app.jid));
    expect(await srv.storage.keyval.get(bob, 'push', 'registrations')).toBeNull();
    await logout(b);
    await sleep(INTERVAL);
    await say(a, bob, 'second');
    await sleep(INTERVAL + 300);
    expect(publishCount(app)).toBe(1);
  });

  it('disables a registration when the app server answers with an error', async () => {
    const [alice, bob, appUser] = [await newUser('alice'), await newUser('bob'), await newUser('app')];
    const app = await login(appUser, 'push');
    serveAsApp(app, 'error');
    const a = await login(alice, 'desk');
    const b = await login(bob, 'phone');
    await b.iq(enable(app.jid, 'gone'));
    await logout(b);

    await say(a, bob, 'first');
    await nextPublish(app);
    for (let i = 0; i < 100 && (await srv.storage.keyval.get(bob, 'push', 'registrations')) !== null; i++) await sleep(20);
    expect(await srv.storage.keyval.get(bob, 'push', 'registrations')).toBeNull();
    // After the rate-limit interval a second message would be notified if the registration remained.
    await sleep(INTERVAL + 100);
    await say(a, bob, 'second');
    await sleep(INTERVAL + 300);
    expect(publishCount(app)).toBe(1);
  });

  it('disables a registration when the push service withdraws the affiliation', async () => {
    const [bob, appUser] = [await newUser('bob'), await newUser('app')];
    const app = await login(appUser, 'push');
    const b = await login(bob, 'phone');
    await b.iq(enable(app.jid, 'keep'));
    await b.iq(enable(app.jid, 'drop'));
    const withdraw = (node: string, jid: string) =>
      app.send(xml('message', { to: bob }, xml('pubsub', { xmlns: NS_PUBSUB, node }, xml('affiliation', { jid, affiliation: 'none' }))));
    // About someone else: ignored.
    await withdraw('keep', 'someone@localhost');
    await withdraw('drop', bob);
    let stored: string | null = null;
    for (let i = 0; i < 100; i++) {
      stored = await srv.storage.keyval.get(bob, 'push', 'registrations');
      if (!stored?.includes('"drop"')) break;
      await sleep(20);
    }
    expect(stored).not.toContain('"drop"');
    expect(stored).toContain('"keep"');
  });

  it('refuses malformed and unauthorized requests, and caps registrations', async () => {
    const [bob, carol] = [await newUser('bob'), await newUser('carol')];
    const b = await login(bob);
    const c = await login(carol);
    const err = async (iq: Element): Promise<string | undefined> => {
      try {
        await b.iq(iq);
      } catch (e) {
        return errorCondition(e);
      }
      return 'no error';
    };
    const wrongForm = xml('x', { xmlns: NS_XDATA, type: 'submit' }, xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'urn:example:other')));
    const formNotSubmit = xml('x', { xmlns: NS_XDATA, type: 'form' }, xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'http://jabber.org/protocol/pubsub#publish-options')));
    expect(await err(enable(undefined, 'n'))).toBe('bad-request');
    expect(await err(enable('push.example.net', undefined))).toBe('bad-request');
    expect(await err(enable('push.example.net', 'n', wrongForm))).toBe('bad-request');
    expect(await err(enable('push.example.net', 'n', formNotSubmit))).toBe('bad-request');
    expect(await err(enable('a@b@c', 'n'))).toBe('jid-malformed');
    expect(await err(disable(''))).toBe('bad-request');
    // Nothing was stored by the refused requests.
    expect(await srv.storage.keyval.get(bob, 'push', 'registrations')).toBeNull();
    // Someone else's account is not bob's to configure.
    await expect(c.iq(enable('push.example.net', 'n', undefined, bob))).rejects.toSatisfy((e) => errorCondition(e) === 'forbidden');

    // maxRegistrations: 3; re-enabling the same jid+node replaces and does not count twice.
    const app = `${uniqueUser('app')}@localhost/push`;
    for (const n of ['a', 'b', 'c', 'c']) await b.iq(enable(app, n));
    expect(await err(enable(app, 'd'))).toBe('resource-constraint');
    const stored = JSON.parse((await srv.storage.keyval.get(bob, 'push', 'registrations')) as string) as { node: string }[];
    expect(stored.map((r) => r.node)).toEqual(['a', 'b', 'c']);
    // Still serving.
    await b.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  });
});

describe('push app servers on other domains (no federation yet)', () => {
  let srv: TestServer;
  const clients: TestClient[] = [];
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('refuses an app server on a domain this server does not host, saying why; local ones and hosted services are accepted', async () => {
    const bob = await srv.addUser(uniqueUser('bob'));
    const b = await connect({ port: srv.ports.c2s as number, username: bob.split('@')[0] as string, mechanism: 'PLAIN' });
    clients.push(b);
    for (const remote of ['push.example.net', 'app@push.example.net/x', 'localhost.example.org']) {
      let caught: { condition?: string; type?: string; text?: string } | undefined;
      try {
        await b.iq(enable(remote, 'n', publishOptions('s')));
      } catch (e) {
        caught = e as typeof caught;
      }
      expect(caught?.condition, remote).toBe('feature-not-implemented');
      expect(caught?.type).toBe('cancel');
      expect(caught?.text).toMatch(/remote push services need server-to-server federation/);
    }
    // Nothing was stored for the refused app servers.
    expect(await srv.storage.keyval.get(bob, 'push', 'registrations')).toBeNull();
    // An app server on this server: an account (any resource), the host itself, a hosted service.
    for (const local of [`${uniqueUser('app')}@localhost/push`, 'localhost', 'conference.localhost']) await b.iq(enable(local, 'n'));
    const stored = JSON.parse((await srv.storage.keyval.get(bob, 'push', 'registrations')) as string) as { jid: string }[];
    expect(stored.map((r) => r.jid)).toHaveLength(3);
  });
});

describe('push registrations across a restart', () => {
  it('keeps registrations in storage, and sends the body only when configured', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-push-'));
    const first = await startTestServer({ dataDir });
    const clients: TestClient[] = [];
    let second: TestServer | undefined;
    try {
      const [bob, alice, appUser] = [uniqueUser('bob'), uniqueUser('alice'), uniqueUser('app')];
      const bobJid = await first.addUser(bob);
      await first.addUser(alice);
      await first.addUser(appUser);
      const b = await connect({ port: first.ports.c2s as number, username: bob, mechanism: 'PLAIN' });
      clients.push(b);
      // The app server will be on the restarted server with a fixed resource.
      await b.iq(enable(`${appUser}@localhost/push`, 'persist', publishOptions('k')));
      await b.stop();
      await first.stop(); // keeps dataDir, unlike close()

      second = await startTestServer({ dataDir, modules: { push: { includeBody: true } } });
      const port = second.ports.c2s as number;
      const app = await connect({ port, username: appUser, resource: 'push', mechanism: 'PLAIN' });
      const a = await connect({ port, username: alice, mechanism: 'PLAIN' });
      clients.push(app, a);
      serveAsApp(app);
      await a.send(xml('message', { to: bobJid, type: 'chat' }, xml('body', {}, 'after restart')));
      const iq = await app.waitFor(isPublish);
      const s = summary(iq);
      expect(s.node).toBe('persist');
      expect(s.fields['last-message-body']).toEqual(['after restart']);
      expect(s.options.secret).toEqual(['k']);
    } finally {
      await Promise.all(clients.map((c) => c.stop()));
      await second?.close();
      await first.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('push with offline storage limits and stream management', () => {
  const PW = 'secret-password';
  const SM = 'urn:xmpp:sm:3';
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];
  const raws: RawClient[] = [];

  beforeAll(async () => {
    // No rate limit: a duplicate notification would go out at once instead of being folded.
    srv = await startTestServer({ modules: { push: { minIntervalMs: 0 }, sm: { resumeSeconds: 1 } }, limits: { offlineQuota: 2 } });
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  async function login(prefix: string, resource?: string): Promise<TestClient> {
    const bare = await srv.addUser(uniqueUser(prefix), PW);
    const c = await connect({ port, username: bare.split('@')[0] as string, resource, mechanism: 'PLAIN' });
    clients.push(c);
    return c;
  }

  async function app(): Promise<TestClient> {
    const a = await login('app', 'push');
    serveAsApp(a);
    return a;
  }

  const publishes = (a: TestClient) => a.received.filter(isPublish);

  async function say(from: TestClient, to: string, body: string): Promise<void> {
    await from.send(xml('message', { to, type: 'chat', id: `m-${body}` }, xml('body', {}, body)));
    // Barrier: the message has been routed once the ping comes back.
    await from.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  }

  /** Bob on a raw connection: logged in with presence, push enabled towards `appJid`, SM with resumption. */
  async function phone(appJid: string): Promise<{ raw: RawClient; bare: string }> {
    const local = uniqueUser('bob');
    const bare = await srv.addUser(local, PW);
    const raw = await RawClient.login(port, local, PW, { resource: 'phone', presence: true });
    raws.push(raw);
    const id = raw.nextId('push');
    await raw.send(`<iq type='set' id='${id}'><enable xmlns='${NS_PUSH}' jid='${appJid}' node='sm'/></iq>`);
    expect((await raw.waitFor(iqReplyPattern(id)))[0]).toMatch(/type=['"]result['"]/);
    await raw.send(`<enable xmlns='${SM}' resume='true'/>`);
    await raw.waitFor(/<enabled\b[^>]*resume=['"]true['"]/);
    return { raw, bare };
  }

  async function dropAndWaitHibernated(raw: RawClient, bare: string): Promise<void> {
    raw.destroy();
    await waitUntil(() => srv.server.sessions.resources(bare).some((s) => s.hibernated), 5000, 'the session to hibernate');
  }

  /** Waits until the hibernation timed out (resumeSeconds: 1) and `n` messages are in offline storage. */
  async function waitOffline(bare: string, n: number): Promise<void> {
    await waitUntil(() => srv.server.sessions.count(bare) === 0, 5000, 'the hibernated session to end');
    for (let i = 0; i < 100 && (await srv.storage.offline.count(bare)) < n; i++) await sleep(20);
    expect(await srv.storage.offline.count(bare)).toBe(n);
  }

  it('sends no notification for a message offline storage refused (quota full)', async () => {
    const service = await app();
    const a = await login('alice', 'desk');
    const b = await login('bob', 'phone');
    const bob = b.jid.split('/')[0] as string;
    await b.iq(enable(service.jid, 'quota'));
    await b.stop();
    await waitUntil(() => srv.server.sessions.count(bob) === 0, 5000, 'bob to go offline');

    await say(a, bob, 'q1');
    await say(a, bob, 'q2');
    await waitUntil(() => publishes(service).length === 2, 5000, 'two notifications');
    // offlineQuota is 2: the third is refused to the sender, and nobody is woken up for it.
    await say(a, bob, 'q3');
    const bounce = await a.waitFor((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.id === 'm-q3');
    expect(bounce.getChild('error')?.getChild('resource-constraint')).toBeDefined();
    await barrier(a, service);
    expect(publishes(service)).toHaveLength(2);
    expect(summary(publishes(service)[1] as Element).fields['message-count']).toEqual(['2']);
    expect(await srv.storage.offline.count(bob)).toBe(2);
  });

  it('notifies a message held for a hibernated session once, also after the hibernation times out and it goes offline', async () => {
    const service = await app();
    const a = await login('alice', 'desk');
    const { raw, bare } = await phone(service.jid);
    const closed = afterSessionClosed(srv, raw.jid);
    await dropAndWaitHibernated(raw, bare);

    await say(a, bare, 'held');
    const first = await service.waitFor(isPublish);
    expect(summary(first).fields['message-count']).toEqual(['1']);
    expect(summary(first).node).toBe('sm');

    // Not resumed: the session ends and the unacknowledged message is stored offline (redelivery).
    await waitOffline(bare, 1);
    // The session's close handlers (redelivery, and the notification it might cause) are done;
    // then alice's iq reaches the app server after anything they routed to it.
    await closed;
    await barrier(a, service);
    expect(publishes(service)).toHaveLength(1);
  });

  it('a message written to the live session and never acknowledged is notified once, when it goes offline', async () => {
    const service = await app();
    const a = await login('alice', 'desk');
    const { raw, bare } = await phone(service.jid);
    const closed = afterSessionClosed(srv, raw.jid);
    await say(a, bare, 'live');
    await raw.waitFor(/<body>live<\/body>/);
    await dropAndWaitHibernated(raw, bare); // 'live' was never acknowledged

    await say(a, bare, 'held');
    expect(summary(await service.waitFor(isPublish)).fields['message-count']).toEqual(['1']);

    await waitOffline(bare, 2);
    await waitUntil(() => publishes(service).length >= 2, 5000, 'the notification for the unannounced message');
    expect(summary(publishes(service)[1] as Element).fields['message-count']).toEqual(['2']);
    await closed;
    await barrier(a, service);
    expect(publishes(service)).toHaveLength(2);
  });
});
