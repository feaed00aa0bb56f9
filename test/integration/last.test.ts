// XEP-0012 last activity over real client connections: server uptime (§5), the offline-user query
// at the bare JID with the last unavailable status (§3), seconds=0 with a connected resource, the
// forbidden answer without a presence subscription (§3, §4), full-JID queries (§4) and disco (§6).
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { iqError, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS = 'jabber:iq:last';
const NS_ROSTER = 'jabber:iq:roster';

const lastGet = (to: string) => xml('iq', { type: 'get', to }, xml('query', { xmlns: NS }));
const ping = (to: string) => xml('iq', { type: 'get', to }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
const bare = (c: TestClient) => c.jid.split('/')[0] as string;

async function lastOf(c: TestClient, to: string): Promise<{ seconds: number; text: string; raw: Element }> {
  const res = await c.iq(lastGet(to));
  const q = res.getChild('query', NS);
  if (!q || q.attrs.seconds === undefined) throw new Error(`no seconds in ${res}`);
  expect(q.attrs.seconds).toMatch(/^\d+$/);
  return { seconds: Number(q.attrs.seconds), text: q.getText(), raw: res };
}

describe('last activity (XEP-0012)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  async function login(username: string, resource?: string): Promise<TestClient> {
    const c = await connect({ port, username, resource });
    clients.push(c);
    return c;
  }

  async function newUser(prefix = 'la'): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return u;
  }

  async function flush(c: TestClient): Promise<void> {
    await c.iq(ping('localhost'));
  }

  /** `watcher` gets a 'from' subscription on `target`'s roster (may see its presence), via pre-approval. */
  async function allowPresence(target: TestClient, watcher: TestClient): Promise<void> {
    await target.send(xml('presence', { to: bare(watcher), type: 'subscribed' }));
    await flush(target);
    await watcher.send(xml('presence', { to: bare(target), type: 'subscribe' }));
    await flush(watcher);
    const deadline = Date.now() + 5000;
    for (;;) {
      const q = (await target.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: NS_ROSTER })))).getChild('query', NS_ROSTER);
      const sub = q?.getChildren('item').find((i) => i.attrs.jid === bare(watcher))?.attrs.subscription;
      if (sub === 'from' || sub === 'both') return;
      if (Date.now() > deadline) throw new Error('subscription not established');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Waits until the server no longer holds a session of `bareJid` (the client has gone). */
  async function gone(bareJid: string): Promise<void> {
    const deadline = Date.now() + 5000;
    while (srv.server.sessions.count(bareJid) > 0) {
      if (Date.now() > deadline) throw new Error(`${bareJid} still connected`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Polls the last-activity answer until `pred` holds (the logout record is written just after the session ends). */
  async function lastUntil(c: TestClient, to: string, pred: (r: { seconds: number; text: string }) => boolean) {
    const deadline = Date.now() + 5000;
    for (;;) {
      const r = await lastOf(c, to);
      if (pred(r)) return r;
      if (Date.now() > deadline) throw new Error(`last activity never matched; last answer ${r.raw}`);
      await new Promise((res) => setTimeout(res, 20));
    }
  }

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  it('§5: the server answers with its uptime (seconds, no text)', async () => {
    const c = await login(await newUser());
    const r = await lastOf(c, 'localhost');
    expect(r.raw.attrs.from).toBe('localhost');
    expect(r.seconds).toBeGreaterThanOrEqual(0);
    expect(r.text).toBe('');
    const r2 = await lastOf(c, 'localhost');
    expect(r2.seconds).toBeGreaterThanOrEqual(r.seconds);
  });

  it('§6: jabber:iq:last is advertised', async () => {
    const c = await login(await newUser());
    const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(res.getChild('query')?.getChildren('feature').map((f) => f.attrs.var)).toContain(NS);
  });

  it('§3: with a connected resource the answer is seconds=0, for the user and for a subscribed contact', async () => {
    const u = await newUser();
    const target = await login(u);
    const contact = await login(await newUser());
    await allowPresence(target, contact);
    const self = await lastOf(target, `${u}@localhost`);
    expect(self.seconds).toBe(0);
    expect(self.text).toBe('');
    const seen = await lastOf(contact, `${u}@localhost`);
    expect(seen.seconds).toBe(0);
    expect(seen.raw.attrs.from).toBe(`${u}@localhost`);
  });

  it('§3: after logout, a subscribed contact gets the time since logout and the last unavailable status', async () => {
    const u = await newUser();
    const target = await login(u);
    const contact = await login(await newUser());
    await allowPresence(target, contact);
    await target.send(xml('presence'));
    await target.send(xml('presence', { type: 'unavailable' }, xml('status', {}, 'Heading Home')));
    await flush(target);
    await target.stop();
    await gone(`${u}@localhost`);
    const r = await lastUntil(contact, `${u}@localhost`, (x) => x.text === 'Heading Home');
    expect(r.seconds).toBeGreaterThanOrEqual(0);
    expect(r.seconds).toBeLessThan(3600);

    // Next time the session just ends: the old status is not reused, and an available status is not one.
    const again = await login(u);
    await again.send(xml('presence', {}, xml('status', {}, 'Busy')));
    await flush(again);
    expect((await lastOf(contact, `${u}@localhost`)).seconds).toBe(0);
    await again.stop();
    await gone(`${u}@localhost`);
    const r2 = await lastUntil(contact, `${u}@localhost`, (x) => x.text !== 'Heading Home');
    expect(r2.text).toBe('');
  });

  it('§3: without a presence subscription the answer is forbidden (online and offline)', async () => {
    const u = await newUser();
    const target = await login(u);
    const stranger = await login(await newUser());
    // The target subscribes to the stranger: the wrong direction grants nothing.
    await allowPresence(stranger, target);
    let err = await iqError(stranger, lastGet(`${u}@localhost`));
    expect(err).toEqual({ condition: 'forbidden', type: 'auth' });
    await target.stop();
    await gone(`${u}@localhost`);
    err = await iqError(stranger, lastGet(`${u}@localhost`));
    expect(err.condition).toBe('forbidden');
  });

  it('§4: a full-JID query reaches the client only from a subscribed contact; others get forbidden', async () => {
    const u = await newUser();
    const target = await login(u, 'balcony');
    const contact = await login(await newUser());
    const stranger = await login(await newUser());
    await allowPresence(target, contact);

    expect((await iqError(stranger, lastGet(target.jid))).condition).toBe('forbidden');
    await flush(target);
    const isLastQuery = (from: string) => (el: Element) => el.name === 'iq' && el.attrs.type === 'get' && el.attrs.from === from && !!el.getChild('query', NS);
    expect(target.received.filter(isLastQuery(stranger.jid))).toHaveLength(0);

    // Delivered to the client, which (like this test client) may decline with service-unavailable.
    const answer = await iqError(contact, lastGet(target.jid));
    expect(answer.condition).toBe('service-unavailable');
    expect(target.received.filter(isLastQuery(contact.jid))).toHaveLength(1);
  });

  it('an unknown account gets service-unavailable, like any iq to it', async () => {
    const c = await login(await newUser());
    expect((await iqError(c, lastGet(`${uniqueUser('ghost')}@localhost`))).condition).toBe('service-unavailable');
  });
});
