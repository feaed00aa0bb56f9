// XEP-0077 in-band registration over real sockets: the stream feature (§8), the registration form and
// account creation before authentication (§3.1, §3.1.1, data forms §4), every creation error
// (not-acceptable, conflict, jid-malformed, the per-address rate limit), service-unavailable where
// registration is off, and for logged-in users <registered/>, password change (§3.3) and
// cancellation (§3.2) with its errors. Pre-auth traffic uses a raw socket client (no XMPP library
// registers before SASL); logins use the real @xmpp/client.
import { type Element, parse } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { iqError, connect, type TestClient, xml } from '../helpers/client.js';
import { iqReplyPattern, RawClient } from '../helpers/raw.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS = 'jabber:iq:register';
const NS_FEATURE = 'http://jabber.org/features/iq-register';
const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const MIN_PASSWORD = 10;
const GOOD_PASSWORD = 'correct horse battery';

/** A raw connection through STARTTLS, stopped before SASL; returns it and the pre-auth features. */
async function preauth(port: number): Promise<{ c: RawClient; features: string; tlsFeatures: string }> {
  const c = await RawClient.connect(port);
  const tlsFeatures = await c.openStream();
  await c.startTls();
  const features = await c.openStream();
  return { c, features, tlsFeatures };
}

/** Sends a raw iq and resolves the parsed reply. */
async function rawIq(c: RawClient, type: 'get' | 'set', inner: string, attrs = ''): Promise<Element> {
  const id = c.nextId('reg');
  await c.send(`<iq type='${type}' id='${id}'${attrs}>${inner}</iq>`);
  const m = await c.waitFor(iqReplyPattern(id), 10_000, 0);
  return parse(m[0]);
}

function condition(reply: Element): string | undefined {
  return reply.getChild('error')?.getChildElements().find((e) => e.attrs.xmlns === NS_STANZAS)?.name;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');

function legacySet(username?: string, password?: string): string {
  const u = username === undefined ? '' : `<username>${esc(username)}</username>`;
  const p = password === undefined ? '' : `<password>${esc(password)}</password>`;
  return `<query xmlns='${NS}'>${u}${p}</query>`;
}

const regSet = (...children: Element[]) => xml('iq', { type: 'set', to: 'localhost' }, xml('query', { xmlns: NS }, ...children));
const ping = (to: string) => xml('iq', { type: 'get', to }, xml('ping', { xmlns: 'urn:xmpp:ping' }));

describe('in-band registration (XEP-0077)', () => {
  let open: TestServer; // registration enabled
  let closed: TestServer; // registration off (the default)
  let tight: TestServer; // enabled, two accounts per address
  const clients: TestClient[] = [];
  const raws: RawClient[] = [];

  async function login(srv: TestServer, username: string, password = GOOD_PASSWORD, resource?: string): Promise<TestClient> {
    const c = await connect({ port: srv.ports.c2s as number, username, password, resource });
    clients.push(c);
    return c;
  }

  async function raw(srv: TestServer) {
    const r = await preauth(srv.ports.c2s as number);
    raws.push(r.c);
    return r;
  }

  async function register(srv: TestServer, username: string, password = GOOD_PASSWORD): Promise<Element> {
    const { c } = await raw(srv);
    try {
      return await rawIq(c, 'set', legacySet(username, password));
    } finally {
      c.destroy(); // pre-auth connections per address are capped
    }
  }

  /** Registers an account that the test needs; fails loudly if the server refuses. */
  async function mustRegister(srv: TestServer, username: string, password = GOOD_PASSWORD): Promise<void> {
    const res = await register(srv, username, password);
    if (res.attrs.type !== 'result') throw new Error(`registration of ${username} failed: ${res}`);
  }

  async function canLogin(srv: TestServer, username: string, password: string): Promise<boolean> {
    try {
      const c = await login(srv, username, password);
      await c.stop();
      return true;
    } catch {
      return false;
    }
  }

  beforeAll(async () => {
    const hosts = [{ domain: 'localhost', registration: { enabled: true, minPasswordLength: MIN_PASSWORD } }];
    [open, closed, tight] = await Promise.all([
      startTestServer({ hosts, modules: { register: { maxPerAddress: 1000 } } }),
      startTestServer(),
      startTestServer({ hosts, modules: { register: { maxPerAddress: 2 } } }),
    ]);
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    await Promise.all(clients.map((c) => c.stop()));
    await Promise.all([open?.close(), closed?.close(), tight?.close()]);
  });

  describe('registration enabled', () => {
    it('§8: <register/> is a stream feature after STARTTLS (not before)', async () => {
      const { features, tlsFeatures } = await raw(open);
      expect(features).toContain(`<register xmlns="${NS_FEATURE}"/>`);
      expect(tlsFeatures).not.toContain(NS_FEATURE);
    });

    it('§3.1: get returns instructions, username, password and the same fields as a data form', async () => {
      const { c } = await raw(open);
      const res = await rawIq(c, 'get', `<query xmlns='${NS}'/>`, " to='localhost'");
      expect(res.attrs.type).toBe('result');
      const q = res.getChild('query', NS) as Element;
      expect(q.getChildText('instructions')).toBeTruthy();
      expect(q.getChild('username')).toBeDefined();
      expect(q.getChild('password')).toBeDefined();
      expect(q.getChild('registered')).toBeUndefined();
      const form = q.getChild('x', 'jabber:x:data') as Element;
      expect(form.attrs.type).toBe('form');
      const fields = form.getChildren('field');
      expect(fields.find((f) => f.attrs.var === 'FORM_TYPE')?.getChildText('value')).toBe(NS);
      expect(fields.find((f) => f.attrs.var === 'username')?.getChild('required')).toBeDefined();
      expect(fields.find((f) => f.attrs.var === 'password')?.attrs.type).toBe('text-private');
    });

    it('§3.1: set creates the account, which can then log in', async () => {
      const u = uniqueUser('reg');
      const res = await register(open, u);
      expect(res.attrs.type).toBe('result');
      expect(res.getChildElements()).toHaveLength(0);
      const c = await login(open, u);
      expect(c.jid.startsWith(`${u}@localhost/`)).toBe(true);
    });

    it('§4: a submitted data form creates the account too', async () => {
      const u = uniqueUser('form');
      const { c } = await raw(open);
      const form =
        `<query xmlns='${NS}'><x xmlns='jabber:x:data' type='submit'>` +
        `<field var='FORM_TYPE'><value>${NS}</value></field>` +
        `<field var='username'><value>${u}</value></field>` +
        `<field var='password'><value>${GOOD_PASSWORD}</value></field></x></query>`;
      expect((await rawIq(c, 'set', form)).attrs.type).toBe('result');
      expect(await canLogin(open, u, GOOD_PASSWORD)).toBe(true);
    });

    it('§3.1: a taken username is conflict and the existing account is untouched', async () => {
      const u = uniqueUser('taken');
      await mustRegister(open, u);
      const res = await register(open, u, 'another password!!');
      expect(res.attrs.type).toBe('error');
      expect(condition(res)).toBe('conflict');
      expect(await canLogin(open, u, GOOD_PASSWORD)).toBe(true);
    });

    it('§3.1: missing or empty fields and short passwords are not-acceptable; the stream stays open', async () => {
      const u = uniqueUser('miss');
      const { c } = await raw(open);
      const cases: [string, string][] = [
        ['no password', legacySet(u)],
        ['empty password', `<query xmlns='${NS}'><username>${u}</username><password/></query>`],
        ['no username', legacySet(undefined, GOOD_PASSWORD)],
        ['empty username', legacySet('', GOOD_PASSWORD)],
        ['short password', legacySet(u, 'x'.repeat(MIN_PASSWORD - 1))],
      ];
      for (const [what, q] of cases) {
        const res = await rawIq(c, 'set', q);
        expect(condition(res), what).toBe('not-acceptable');
      }
      // Still the same stream, and nothing was created.
      expect((await rawIq(c, 'get', `<query xmlns='${NS}'/>`)).attrs.type).toBe('result');
      expect(c.streamError()).toBeUndefined();
      expect(await canLogin(open, u, 'x'.repeat(MIN_PASSWORD - 1))).toBe(false);
    });

    it('invalid or non-canonical usernames are jid-malformed', async () => {
      const { c } = await raw(open);
      for (const bad of ['with space', 'at@sign', 'slash/name', `Upper${uniqueUser('case')}`]) {
        const res = await rawIq(c, 'set', legacySet(bad, GOOD_PASSWORD));
        expect(condition(res), bad).toBe('jid-malformed');
      }
    });

    it('error replies never carry the submitted password back', async () => {
      const u = uniqueUser('echo');
      await mustRegister(open, u);
      const secret = 'do-not-echo-this-password';
      const { c } = await raw(open);
      const res = await rawIq(c, 'set', legacySet(u, secret));
      expect(condition(res)).toBe('conflict');
      expect(c.text).not.toContain(secret);
    });

    it('§3.2: <remove/> before authentication is unexpected-request', async () => {
      const { c } = await raw(open);
      const res = await rawIq(c, 'set', `<query xmlns='${NS}'><remove/></query>`);
      expect(condition(res)).toBe('unexpected-request');
    });

    it('§3.1.1: account creation is rate-limited per address (not-acceptable, wait)', async () => {
      const a = uniqueUser('rl');
      const b = uniqueUser('rl');
      const third = uniqueUser('rl');
      expect((await register(tight, a)).attrs.type).toBe('result');
      // A failed attempt does not use up the budget.
      expect(condition(await register(tight, a))).toBe('conflict');
      expect((await register(tight, b)).attrs.type).toBe('result');
      const res = await register(tight, third);
      expect(condition(res)).toBe('not-acceptable');
      expect(res.getChild('error')?.attrs.type).toBe('wait');
      expect(await canLogin(tight, third, GOOD_PASSWORD)).toBe(false);
    });

    it('§3.1: a logged-in user gets <registered/> with its username', async () => {
      const u = uniqueUser('me');
      await mustRegister(open, u);
      const c = await login(open, u);
      for (const to of ['localhost', undefined]) {
        const res = await c.iq(xml('iq', { type: 'get', to }, xml('query', { xmlns: NS })));
        const q = res.getChild('query', NS) as Element;
        expect(q.getChild('registered')).toBeDefined();
        expect(q.getChildText('username')).toBe(u);
      }
    });

    it('§3.3: password change; the old password stops working', async () => {
      const u = uniqueUser('pw');
      await mustRegister(open, u);
      const c = await login(open, u);
      const res = await c.iq(regSet(xml('username', {}, u), xml('password', {}, 'a brand new secret')));
      expect(res.attrs.type).toBe('result');
      expect(await canLogin(open, u, 'a brand new secret')).toBe(true);
      expect(await canLogin(open, u, GOOD_PASSWORD)).toBe(false);
    });

    it('§3.3: password change errors keep the old password', async () => {
      const u = uniqueUser('pwerr');
      const other = uniqueUser('pwother');
      await mustRegister(open, u);
      await mustRegister(open, other);
      const c = await login(open, u);
      const cases: [string, Element, string][] = [
        ['empty password', regSet(xml('username', {}, u), xml('password')), 'bad-request'],
        ['no username', regSet(xml('password', {}, 'whatever password')), 'bad-request'],
        ['short password', regSet(xml('username', {}, u), xml('password', {}, 'short')), 'not-acceptable'],
        ['someone else', regSet(xml('username', {}, other), xml('password', {}, 'hijacked password')), 'forbidden'],
      ];
      for (const [what, el, cond] of cases) {
        const err = await iqError(c, el);
        expect(err.condition, what).toBe(cond);
      }
      // The error replies do not reflect the passwords back.
      const errors = c.received.filter((el) => el.name === 'iq' && el.attrs.type === 'error');
      expect(errors).toHaveLength(cases.length);
      for (const e of errors) expect(String(e)).not.toMatch(/hijacked password|whatever password|short</);
      expect(await canLogin(open, u, GOOD_PASSWORD)).toBe(true);
      expect(await canLogin(open, other, GOOD_PASSWORD)).toBe(true);
    });

    it('§3.2: <remove/> must be the only child (bad-request)', async () => {
      const u = uniqueUser('rmbad');
      await mustRegister(open, u);
      const c = await login(open, u);
      const err = await iqError(c, regSet(xml('remove'), xml('username', {}, u)));
      expect(err.condition).toBe('bad-request');
      expect(await canLogin(open, u, GOOD_PASSWORD)).toBe(true);
    });

    it('§3.2: cancellation deletes the account and its data, ends its sessions, cancels subscriptions', async () => {
      const u = uniqueUser('rm');
      const friend = uniqueUser('friend');
      await mustRegister(open, u);
      await mustRegister(open, friend);
      const me = await login(open, u, GOOD_PASSWORD, 'main');
      const second = await login(open, u, GOOD_PASSWORD, 'second');
      const f = await login(open, friend);
      // Mutual subscription through pre-approvals; the friend watches its roster.
      await f.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
      await me.send(xml('presence', { to: `${friend}@localhost`, type: 'subscribed' }));
      await me.iq(ping('localhost'));
      await f.send(xml('presence', { to: `${u}@localhost`, type: 'subscribed' }));
      await f.iq(ping('localhost'));
      await me.send(xml('presence', { to: `${friend}@localhost`, type: 'subscribe' }));
      await f.send(xml('presence', { to: `${u}@localhost`, type: 'subscribe' }));
      const isItem = (sub: string) => (el: Element) =>
        el.name === 'iq' && el.attrs.type === 'set' && el.getChild('query', 'jabber:iq:roster')?.getChild('item')?.attrs.jid === `${u}@localhost` &&
        el.getChild('query', 'jabber:iq:roster')?.getChild('item')?.attrs.subscription === sub;
      await f.waitFor(isItem('both'));
      await me.iq(xml('iq', { type: 'set' }, xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Soon gone'))));

      // Each session ends with a not-authorized stream error, then the connection closes.
      const ended = (c: TestClient) =>
        new Promise<string>((resolve) => {
          let condition = '';
          c.xmpp.on('error', (e: unknown) => {
            condition ||= (e as { condition?: string }).condition ?? '';
          });
          c.xmpp.on('disconnect', () => resolve(condition));
        });
      const endMe = ended(me);
      const endSecond = ended(second);
      const res = await me.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: NS }, xml('remove'))));
      expect(res.attrs.type).toBe('result');
      expect(await endMe).toBe('not-authorized');
      expect(await endSecond).toBe('not-authorized');
      // The friend's roster no longer has a subscription with the removed account.
      await f.waitFor(isItem('none'));
      expect(await canLogin(open, u, GOOD_PASSWORD)).toBe(false);
      // The name is free again, and nothing of the old account survives.
      expect((await register(open, u, 'a second life password')).attrs.type).toBe('result');
      const reborn = await login(open, u, 'a second life password');
      const card = (await reborn.iq(xml('iq', { type: 'get' }, xml('vCard', { xmlns: 'vcard-temp' })))).getChild('vCard', 'vcard-temp');
      expect(card?.getChildElements()).toHaveLength(0);
      const roster = (await reborn.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })))).getChild('query', 'jabber:iq:roster');
      expect(roster?.getChildElements()).toHaveLength(0);
    });

    it('jabber:iq:register is in the server’s disco#info', async () => {
      const u = uniqueUser('disco');
      await mustRegister(open, u);
      const c = await login(open, u);
      const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
      expect(res.getChild('query')?.getChildren('feature').map((f) => f.attrs.var)).toContain(NS);
    });
  });

  describe('registration disabled (default)', () => {
    it('§8/§3.1: no stream feature; get and set are service-unavailable and the stream stays open', async () => {
      const u = uniqueUser('off');
      const { c, features } = await raw(closed);
      expect(features).not.toContain(NS_FEATURE);
      const get = await rawIq(c, 'get', `<query xmlns='${NS}'/>`);
      expect(condition(get)).toBe('service-unavailable');
      const set = await rawIq(c, 'set', legacySet(u, GOOD_PASSWORD));
      expect(condition(set)).toBe('service-unavailable');
      // Still usable: SASL works on the same stream (the account does not exist).
      expect(c.streamError()).toBeUndefined();
      expect(await c.authPlain(u, GOOD_PASSWORD)).toBe(false);
      expect(await canLogin(closed, u, GOOD_PASSWORD)).toBe(false);
    });

    it('§3.3: password change still works for a logged-in user', async () => {
      const u = uniqueUser('offpw');
      await closed.addUser(u, GOOD_PASSWORD);
      const c = await login(closed, u);
      expect((await c.iq(regSet(xml('username', {}, u), xml('password', {}, 'changed while closed')))).attrs.type).toBe('result');
      expect(await canLogin(closed, u, 'changed while closed')).toBe(true);
    });

    it('§3.2: <remove/> is not-allowed and the account stays', async () => {
      const u = uniqueUser('offrm');
      await closed.addUser(u, GOOD_PASSWORD);
      const c = await login(closed, u);
      const err = await iqError(c, xml('iq', { type: 'set' }, xml('query', { xmlns: NS }, xml('remove'))));
      expect(err.condition).toBe('not-allowed');
      expect((await c.iq(ping('localhost'))).attrs.type).toBe('result');
      expect(await canLogin(closed, u, GOOD_PASSWORD)).toBe(true);
    });
  });
});
