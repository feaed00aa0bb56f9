// Stanza routing between real clients (RFC 6120 §8, §10 and RFC 6121 §8.5): bare-JID delivery by
// priority, full-JID fallbacks per message type, errors for missing accounts/resources/domains,
// 'from' stamping, resource conflicts, server-generated resources and the legacy session iq.
import { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { errorCondition, NS_STREAMS, RawXmppClient } from '../helpers/scram-client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

function chat(to: string, body: string, type = 'chat'): Element {
  return xml('message', { to, type, id: `m-${body}` }, xml('body', {}, body));
}

function hasBody(body: string) {
  return (el: Element) => el.name === 'message' && el.attrs.type !== 'error' && el.getChildText('body') === body;
}

function isErrorFor(id: string) {
  return (el: Element) => el.attrs.type === 'error' && el.attrs.id === id;
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

describe('routing (RFC 6121 §8.5)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];
  const raws: RawXmppClient[] = [];

  async function newUser(prefix: string): Promise<string> {
    const u = uniqueUser(prefix);
    await srv.addUser(u);
    return `${u}@localhost`;
  }

  /** Logs in with PLAIN and sends initial presence with the given priority (null: stays unavailable). */
  async function login(bare: string, resource?: string, priority: number | null = 0): Promise<TestClient> {
    const c = await connect({ port, username: bare.split('@')[0] as string, resource, mechanism: 'PLAIN' });
    clients.push(c);
    if (priority !== null) {
      await c.send(xml('presence', {}, xml('priority', {}, String(priority))));
      await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    }
    return c;
  }

  async function rawLogin(bare: string, resource?: string): Promise<RawXmppClient> {
    const r = await RawXmppClient.connect({ port });
    raws.push(r);
    await r.login(bare.split('@')[0] as string, 'secret-password', resource);
    return r;
  }

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  describe('messages to a bare JID (§8.5.2.1)', () => {
    it('go to the highest-priority resource only; with equal priorities, to each of them', async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      const a = await login(alice);
      const high = await login(bob, 'high', 5);
      const low = await login(bob, 'low', 1);
      await a.send(chat(bob, 'one'));
      const got = await high.waitFor(hasBody('one'));
      expect(got.attrs.to).toBe(bob); // §8.5.2.1.1: 'to' is not rewritten
      expect(got.attrs.from).toBe(a.jid);
      // The lower one now matches: both get the next message.
      await low.send(xml('presence', {}, xml('priority', {}, '5')));
      await low.waitFor((el) => el.name === 'presence' && el.attrs.from === low.jid && el.getChildText('priority') === '5');
      await a.send(chat(bob, 'two'));
      await high.waitFor(hasBody('two'));
      await low.waitFor(hasBody('two'));
      await barrier(a, low);
      expect(low.received.some(hasBody('one'))).toBe(false);
    });

    it('headline goes to every non-negative resource', async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      const a = await login(alice);
      const b1 = await login(bob, 'one', 3);
      const b2 = await login(bob, 'two', 0);
      const neg = await login(bob, 'neg', -1);
      await a.send(chat(bob, 'news', 'headline'));
      await b1.waitFor(hasBody('news'));
      await b2.waitFor(hasBody('news'));
      await barrier(a, neg);
      expect(neg.received.some(hasBody('news'))).toBe(false);
    });

    it('never go to a negative-priority resource; with only those, the message waits offline', async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      const a = await login(alice);
      const neg = await login(bob, 'neg', -1);
      await a.send(chat(bob, 'for later'));
      await a.send(chat(bob, 'normal for later', 'normal'));
      // Addressed to its full JID, the negative resource does get messages (§8.5.3.1).
      await a.send(chat(neg.jid, 'direct'));
      await neg.waitFor(hasBody('direct'));
      await barrier(a, neg);
      expect(neg.received.some(hasBody('for later'))).toBe(false);
      expect(neg.received.some(hasBody('normal for later'))).toBe(false);
      expect(a.received.some((el) => el.attrs.type === 'error')).toBe(false);
      // A changed priority is not a new presence session: nothing is flushed to it now.
      await neg.send(xml('presence', {}, xml('priority', {}, '-5')));
      await barrier(neg);
      expect(neg.received.some(hasBody('for later'))).toBe(false);
      // A non-negative resource logging in gets them.
      const pos = await login(bob, 'pos', 0);
      const m = await pos.waitFor(hasBody('for later'));
      expect(m.getChild('delay', 'urn:xmpp:delay')).toBeDefined();
      await pos.waitFor(hasBody('normal for later'));
    });
  });

  describe('messages to a full JID with no such resource (§8.5.3.2.1)', () => {
    let alice: string;
    let bob: string;
    let a: TestClient;
    let b: TestClient;
    beforeAll(async () => {
      alice = await newUser('alice');
      bob = await newUser('bob');
      a = await login(alice);
      b = await login(bob, 'here');
    });

    it('chat is handled as if sent to the bare JID', async () => {
      await a.send(chat(`${bob}/gone`, 'to gone'));
      const m = await b.waitFor(hasBody('to gone'));
      expect(m.attrs.from).toBe(a.jid);
    });

    it('normal is answered with service-unavailable and not delivered', async () => {
      await a.send(chat(`${bob}/gone`, 'normal to gone', 'normal'));
      const err = await a.waitFor(isErrorFor('m-normal to gone'));
      expect(err.attrs.from).toBe(`${bob}/gone`);
      expect(errorCondition(err)).toBe('service-unavailable');
      await barrier(a, b);
      expect(b.received.some(hasBody('normal to gone'))).toBe(false);
    });

    it('groupchat is answered with service-unavailable', async () => {
      await a.send(chat(`${bob}/gone`, 'gc', 'groupchat'));
      const err = await a.waitFor(isErrorFor('m-gc'));
      expect(errorCondition(err)).toBe('service-unavailable');
      await barrier(a, b);
      expect(b.received.some(hasBody('gc'))).toBe(false);
    });

    it('groupchat to the bare JID is answered with service-unavailable too (§8.5.2.1.1)', async () => {
      await a.send(chat(bob, 'gc-bare', 'groupchat'));
      expect(errorCondition(await a.waitFor(isErrorFor('m-gc-bare')))).toBe('service-unavailable');
      await barrier(a, b);
      expect(b.received.some(hasBody('gc-bare'))).toBe(false);
    });

    it('headline is silently dropped', async () => {
      await a.send(chat(`${bob}/gone`, 'headline to gone', 'headline'));
      await barrier(a, b);
      expect(b.received.some(hasBody('headline to gone'))).toBe(false);
      expect(a.received.some(isErrorFor('m-headline to gone'))).toBe(false);
    });
  });

  describe('errors', () => {
    let a: TestClient;
    let alice: string;
    beforeAll(async () => {
      alice = await newUser('alice');
      a = await login(alice);
    });

    it('a message to an account that does not exist -> service-unavailable', async () => {
      const ghost = `${uniqueUser('ghost')}@localhost`;
      for (const type of ['chat', 'normal']) {
        await a.send(chat(ghost, `hello-${type}`, type));
        const err = await a.waitFor(isErrorFor(`m-hello-${type}`));
        expect(errorCondition(err)).toBe('service-unavailable');
        expect(err.attrs.from).toBe(ghost);
        expect(err.attrs.to).toBe(a.jid);
      }
    });

    it('an iq to a full JID that is not connected -> service-unavailable', async () => {
      const bob = await newUser('bob');
      const ping = (to: string) => xml('iq', { type: 'get', to }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
      expect(await iqError(a, ping(`${bob}/nowhere`))).toBe('service-unavailable');
      expect(await iqError(a, ping(`${uniqueUser('ghost')}@localhost/res`))).toBe('service-unavailable');
    });

    it("an iq to another user's bare JID is answered by the server: known namespace -> result, unknown -> service-unavailable", async () => {
      const bob = await newUser('bob');
      await login(bob);
      const pong = await a.iq(xml('iq', { type: 'get', to: bob }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
      expect(pong.attrs.from).toBe(bob);
      expect(await iqError(a, xml('iq', { type: 'get', to: bob }, xml('query', { xmlns: 'urn:example:unknown' })))).toBe('service-unavailable');
      expect(await iqError(a, xml('iq', { type: 'set', to: bob }, xml('thing', { xmlns: 'urn:example:unknown' })))).toBe('service-unavailable');
    });

    it('an iq with no payload or two payloads -> bad-request (RFC 6120 §8.2.3)', async () => {
      const two = xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' }), xml('query', { xmlns: 'jabber:iq:version' }));
      expect(await iqError(a, two)).toBe('bad-request');
      const twoSelf = xml('iq', { type: 'get' }, xml('ping', { xmlns: 'urn:xmpp:ping' }), xml('ping', { xmlns: 'urn:xmpp:ping' }));
      expect(await iqError(a, twoSelf)).toBe('bad-request');
      expect(await iqError(a, xml('iq', { type: 'get', to: 'localhost' }))).toBe('bad-request');
    });

    it('a stanza for a domain that is not served here -> remote-server-not-found', async () => {
      expect(await iqError(a, xml('iq', { type: 'get', to: 'example.invalid' }, xml('ping', { xmlns: 'urn:xmpp:ping' })))).toBe('remote-server-not-found');
      await a.send(chat('someone@example.invalid', 'far away'));
      expect(errorCondition(await a.waitFor(isErrorFor('m-far away')))).toBe('remote-server-not-found');
    });

    it('a message of type error is never answered with an error', async () => {
      const ghost = `${uniqueUser('ghost')}@localhost`;
      const bob = await newUser('bob');
      await a.send(xml('message', { to: ghost, type: 'error', id: 'err-1' }, xml('error', { type: 'cancel' }, xml('item-not-found', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }))));
      await a.send(xml('message', { to: `${bob}/nowhere`, type: 'error', id: 'err-2' }));
      await a.send(xml('message', { to: 'x@example.invalid', type: 'error', id: 'err-3' }));
      await a.send(xml('iq', { to: ghost, type: 'error', id: 'err-4' }));
      // A later request/response proves the earlier stanzas were processed (and any error sent).
      await barrier(a);
      expect(a.received.filter((el) => el.attrs.id?.startsWith('err-'))).toEqual([]);
    });
  });

  describe("'from' stamping (RFC 6120 §8.1.2.1)", () => {
    it('the server stamps the full JID, whether the client sent none or its bare JID', async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      const a = await login(alice, 'desk');
      const b = await login(bob);
      await a.send(chat(bob, 'no from'));
      await a.send(xml('message', { to: bob, from: alice, type: 'chat' }, xml('body', {}, 'bare from')));
      expect((await b.waitFor(hasBody('no from'))).attrs.from).toBe(`${alice}/desk`);
      expect((await b.waitFor(hasBody('bare from'))).attrs.from).toBe(`${alice}/desk`);
    });

    it("a forged 'from' ends the stream with invalid-from", async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      const r = await rawLogin(alice);
      r.write(`<message to='${bob}' from='${bob}/spoof' type='chat'><body>spoof</body></message>`);
      const err = await r.next((el) => el.name === 'stream:error');
      expect(err.getChild('invalid-from', NS_STREAMS)).toBeDefined();
      await r.waitClosed();
    });
  });

  describe('resource binding (RFC 6120 §7)', () => {
    it('binding a resource in use replaces the old session with a conflict stream error; contacts see it go', async () => {
      const alice = await newUser('alice');
      const bob = await newUser('bob');
      await srv.storage.roster.setItem(alice, { jid: bob, subscription: 'both', ask: false, approved: false, groups: [] });
      await srv.storage.roster.setItem(bob, { jid: alice, subscription: 'both', ask: false, approved: false, groups: [] });
      const b = await login(bob);
      const old = await rawLogin(alice, 'dup');
      old.write("<presence><status>old</status></presence>");
      await b.waitFor((el) => el.name === 'presence' && el.attrs.from === `${alice}/dup` && el.getChildText('status') === 'old');

      const fresh = await rawLogin(alice, 'dup');
      expect(fresh.jid).toBe(`${alice}/dup`);
      const err = await old.next((el) => el.name === 'stream:error');
      expect(err.getChild('conflict', NS_STREAMS)).toBeDefined();
      await old.waitClosed();
      expect(old.streamClosed).toBe(true);
      const gone = await b.waitFor((el) => el.name === 'presence' && el.attrs.from === `${alice}/dup` && el.attrs.type === 'unavailable');
      expect(gone.attrs.to).toBe(bob);

      // The new session works and owns the JID.
      fresh.write("<presence><status>new</status></presence>");
      await b.waitFor((el) => el.name === 'presence' && el.attrs.from === `${alice}/dup` && el.getChildText('status') === 'new');
      await b.send(chat(`${alice}/dup`, 'to the new one'));
      const m = await fresh.next((el) => el.name === 'message');
      expect(m.getChildText('body')).toBe('to the new one');
    });

    it('without a requested resource, the server generates a distinct one', async () => {
      const alice = await newUser('alice');
      const r1 = await rawLogin(alice);
      const r2 = await rawLogin(alice);
      expect(r1.jid).toMatch(new RegExp(`^${alice.replace(/[.]/g, '\\.')}/.+`));
      expect(r2.jid).toMatch(new RegExp(`^${alice.replace(/[.]/g, '\\.')}/.+`));
      expect(r1.jid).not.toBe(r2.jid);
      // @xmpp/client without a resource gets one too.
      const c = await connect({ port, username: alice.split('@')[0] as string, mechanism: 'PLAIN' });
      clients.push(c);
      expect(c.jid.startsWith(`${alice}/`)).toBe(true);
      expect(c.jid.length).toBeGreaterThan(alice.length + 1);
    });

    it('the legacy session iq (RFC 3921) is answered with an empty result', async () => {
      const alice = await newUser('alice');
      const r = await rawLogin(alice);
      const res = await r.iq(new Element('iq', { type: 'set' }).c('session', { xmlns: 'urn:ietf:params:xml:ns:xmpp-session' }).up());
      expect(res.attrs.type).toBe('result');
      expect(res.getChildElements()).toHaveLength(0);
      const res2 = await r.iq(new Element('iq', { type: 'set', to: 'localhost' }).c('session', { xmlns: 'urn:ietf:params:xml:ns:xmpp-session' }).up());
      expect(res2.attrs.type).toBe('result');
    });
  });
});
