// Issue 9, OpenID Connect: Chromium signs in to Parley through a real OpenID provider
// (node-oidc-provider on loopback, test/helpers/oidc-idp.ts), then the browser session becomes an
// XMPP login over WebSocket with OAUTHBEARER (/signin/). The attacks of HARDENING.md's OIDC
// row are played against the real callback: tampered, replayed and transplanted state, a replayed
// nonce (an earlier flow's ID token), a missing or wrong PKCE verifier, and wrong issuers (in
// discovery, in the ID token, in the RFC 9207 `iss` response parameter), plus a forged ID token
// signature. Each refusal is checked three ways: the status the browser gets, no session, and the
// reason Parley logged — and, where it can be, a control shows the same request untampered works.
import { createServer, type Server } from 'node:http';
import { Writable } from 'node:stream';
import { generateKeyPair, SignJWT, decodeJwt } from 'jose';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { freePort, launchBrowser } from '../helpers/browser.js';
import { startIdp, type TestIdp } from '../helpers/oidc-idp.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';

let logText = '';

describe('OpenID Connect sign-in (openid-client RP, node-oidc-provider OP, Chromium)', () => {
  let idp: TestIdp;
  let srv: TestServer;
  let browser: Browser;
  let base: string;
  let mixup: Server;
  let mixupIssuer: string;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    const port = await freePort();
    base = `https://localhost:${port}`;
    idp = await startIdp({
      redirectUris: ['corp', 'jit', 'mixup'].map((n) => `${base}/sso/oidc/${n}/callback`),
      postLogoutRedirectUris: [`${base}/`],
    });
    // A discovery document served from another address than the issuer it names: whoever is
    // configured with this address must not trust it (OpenID Connect Discovery 1.0 §4.3).
    const mixupPort = await freePort();
    mixupIssuer = `http://127.0.0.1:${mixupPort}`;
    mixup = createServer((req, res) => {
      if (req.url !== '/.well-known/openid-configuration') return void res.writeHead(404).end();
      void fetch(`${idp.issuer}/.well-known/openid-configuration`)
        .then((r) => r.text())
        .then((body) => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
    });
    await new Promise<void>((resolve) => mixup.listen(mixupPort, '127.0.0.1', resolve));

    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logText += chunk.toString();
        cb();
      },
    });
    const provider = (name: string, over: Record<string, unknown> = {}) => ({
      type: 'oidc',
      name,
      host: 'localhost',
      issuer: idp.issuer,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      allowHttp: true,
      identity: { localpart: 'preferred_username', displayName: 'name', groups: 'groups' },
      ...over,
    });
    srv = await startTestServer(
      {
        http: { address: '127.0.0.1', port: 0, tlsPort: port },
        sso: { baseUrl: base, providers: [provider('corp'), provider('jit', { jit: true }), provider('mixup', { issuer: mixupIssuer })] },
      },
      { log: createLogger({ level: 'debug', destination: sink }) },
    );
    browser = await launchBrowser();
  });
  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await srv?.close();
    await idp?.close();
    await new Promise<void>((resolve) => (mixup ? mixup.close(() => resolve()) : resolve()));
    // The server logged sign-ins and refusals, never an ID token or the client secret.
    for (const t of idp?.idTokens ?? []) expect(logText).not.toContain(t);
    expect(logText).not.toContain(idp.clientSecret);
  });

  /** A fresh browser (no cookies at Parley or the IdP) that only talks to loopback servers. */
  async function freshPage(): Promise<Page> {
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    contexts.push(ctx);
    // The provider's pages link web fonts; nothing leaves the machine.
    await ctx.route('**/*', (route) => {
      const host = new URL(route.request().url()).hostname;
      return host === '127.0.0.1' || host === 'localhost' ? route.continue() : route.abort();
    });
    return ctx.newPage();
  }

  /** A person at the IdP: an account with a `sub` unlike the user name the JID is made of. */
  function person(local: string, extra: { name?: string; groups?: string[] } = {}) {
    return idp.addUser({ sub: `u-${local}-${Math.random().toString(36).slice(2, 8)}`, username: local, ...extra });
  }

  /**
   * Signs in the way a person does: opens the sign-in page, clicks the provider's link, goes
   * through the IdP's login and consent pages, and lets the browser go wherever the servers send
   * it; resolves where it landed. With `hold`, the IdP's redirect back to Parley is caught and not
   * followed: resolves the callback URL instead.
   */
  async function signIn(page: Page, sub: string, o: { provider?: string; hold?: boolean } = {}): Promise<string> {
    const provider = o.provider ?? 'corp';
    const callback = `${base}/sso/oidc/${provider}/callback`;
    idp.hold = o.hold ? `${callback}?` : null;
    const heldBefore = idp.held.length;
    await page.goto(`${base}/signin/`);
    await Promise.all([page.waitForURL((u) => u.href.startsWith(idp.issuer)), page.click(`#providers a[href^="/sso/login?provider=${provider}&"]`)]);
    for (let step = 0; step < 4 && page.url().startsWith(idp.issuer) && !(await page.content()).includes('held by the test'); step++) {
      const prompt = await page.locator('input[name=prompt]').getAttribute('value');
      if (prompt === 'login') {
        await page.fill('input[name=login]', sub);
        await page.fill('input[name=password]', 'whatever-the-dev-idp-ignores');
      }
      const before = page.url();
      await Promise.all([page.waitForURL((u) => u.href !== before), page.click('button[type=submit]')]);
    }
    if (o.hold) {
      idp.hold = null;
      expect(idp.held.length).toBe(heldBefore + 1);
      return idp.held.at(-1) as string;
    }
    return page.url();
  }

  /** The sign-in page the browser came back to connects by itself: resolves its state once bound (or failed). */
  async function connected(page: Page): Promise<{ state: string; jid: string; errors: string[] }> {
    expect(page.url()).toBe(`${base}/signin/`);
    await page.waitForFunction(() => ['bound', 'error'].includes((window as unknown as { parleySso?: { state: string } }).parleySso?.state ?? ''), undefined, { timeout: 15_000 });
    return page.evaluate(() => (window as unknown as { parleySso: { state: string; jid: string; errors: string[] } }).parleySso);
  }

  async function session(page: Page): Promise<Record<string, unknown>> {
    return page.evaluate(async () => (await fetch('/sso/session')).json() as Promise<Record<string, unknown>>);
  }

  /** Follows a (possibly edited) callback URL in the page; resolves the HTTP status Parley answered. */
  async function follow(page: Page, url: string): Promise<number> {
    const res = await page.goto(url);
    // A success is a 303 to the return URL; the browser shows where that landed.
    return res?.request().redirectedFrom() ? 303 : (res?.status() ?? 0);
  }

  function logged(reason: string): boolean {
    return logText.includes(reason);
  }

  it('signs in through the IdP in Chromium, then logs in to XMPP over WebSocket with OAUTHBEARER', async () => {
    const local = uniqueUser('oidc');
    const jid = await srv.addUser(local);
    const who = person(local, { name: 'Olive Idson', groups: ['staff', 'eng'] });
    const page = await freshPage();
    const authRequests: URL[] = [];
    page.on('request', (r) => {
      if (r.url().startsWith(`${idp.issuer}/auth?`)) authRequests.push(new URL(r.url()));
    });

    expect(await signIn(page, who.sub)).toBe(`${base}/signin/`);
    // Parley asked for the code flow with PKCE S256, a state and a nonce, with its exact callback.
    const a = authRequests[0] as URL;
    expect(a.searchParams.get('response_type')).toBe('code');
    expect(a.searchParams.get('code_challenge_method')).toBe('S256');
    expect(a.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(a.searchParams.get('state')).toBeTruthy();
    expect(a.searchParams.get('nonce')).toBeTruthy();
    expect(a.searchParams.get('redirect_uri')).toBe(`${base}/sso/oidc/corp/callback`);
    expect(a.searchParams.get('scope')?.split(' ')).toContain('openid');

    const s = await session(page);
    // The display name came from userinfo (this IdP keeps profile claims out of the ID token).
    expect(s).toMatchObject({ authenticated: true, jid, host: 'localhost', provider: 'corp', displayName: 'Olive Idson' });
    const binding = await srv.storage.ssoIdentities.get('localhost', idp.issuer, who.sub);
    expect(binding).toMatchObject({ user: jid, provider: 'corp' });
    expect(binding?.groups.sort()).toEqual(['eng', 'staff']);
    expect(logged('signed in')).toBe(true);

    // The browser is back on the sign-in page that started it, which connects without being told.
    const state = await connected(page);
    expect(state.errors).toEqual([]);
    expect(state.state).toBe('bound');
    expect(state.jid.startsWith(`${jid}/`)).toBe(true);
    expect(srv.server.sessions.count(jid)).toBe(1);
  });

  it('shows a display name from the IdP as text on the sign-in page (no markup, no script)', async () => {
    const local = uniqueUser('xss');
    await srv.addUser(local);
    const evil = '<img src=x onerror="window.__xss=1">Eve <b>&amp;</b>';
    const who = person(local, { name: evil });
    const page = await freshPage();
    expect(await signIn(page, who.sub)).toBe(`${base}/signin/`);
    await connected(page);
    expect(await page.locator('#name').textContent()).toBe(evil);
    expect(await page.locator('#who img, #who b').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
  });

  it('RP-initiated logout ends the Parley session and sends the browser to the IdP\'s end_session endpoint', async () => {
    const local = uniqueUser('out');
    const jid = await srv.addUser(local);
    const who = person(local);
    const page = await freshPage();
    expect(await signIn(page, who.sub)).toBe(`${base}/signin/`);
    const idToken = idp.idTokens.at(-1) as string;
    expect((await connected(page)).state).toBe('bound');
    expect(srv.server.sessions.count(jid)).toBe(1);

    const endSession = page.waitForRequest((r) => r.url().startsWith(`${idp.issuer}/session/end?`));
    await page.click('#logout');
    const u = new URL((await endSession).url());
    expect(u.searchParams.get('id_token_hint')).toBe(idToken);
    expect(u.searchParams.get('post_logout_redirect_uri')).toBe(`${base}/`);
    expect(u.searchParams.get('client_id')).toBe(idp.clientId);
    // The IdP asks for confirmation, then comes back to the registered post-logout URI.
    await page.waitForSelector('button[name=logout][value=yes]');
    await Promise.all([page.waitForURL(`${base}/`), page.click('button[name=logout][value=yes]')]);
    expect(await session(page)).toEqual({ authenticated: false });
    // The XMPP session that logged in with the session's token ended with it.
    await expect.poll(() => srv.server.sessions.count(jid), { timeout: 5_000 }).toBe(0);
    // The IdP session is over too: a new sign-in asks for the login again.
    await page.goto(`${base}/sso/login?provider=corp`);
    expect(page.url().startsWith(idp.issuer)).toBe(true);
    expect(await page.locator('input[name=prompt]').getAttribute('value')).toBe('login');
  });

  it('refuses a callback whose state was tampered with; the untouched callback still works', async () => {
    const local = uniqueUser('st');
    const jid = await srv.addUser(local);
    const who = person(local);
    const page = await freshPage();
    const held = await signIn(page, who.sub, { hold: true });
    const url = new URL(held);
    const state = url.searchParams.get('state') as string;
    url.searchParams.set('state', `${state.slice(0, -2)}${state.endsWith('AA') ? 'BB' : 'AA'}`);
    expect(await follow(page, url.href)).toBe(400);
    expect(await session(page)).toEqual({ authenticated: false });
    // And with no state at all.
    url.searchParams.delete('state');
    expect(await follow(page, url.href)).toBe(400);
    expect(logged('OIDC callback without a state')).toBe(true);
    expect(await session(page)).toEqual({ authenticated: false });
    // Control: the callback as the IdP sent it signs in.
    expect(await follow(page, held)).toBe(303);
    expect(await session(page)).toMatchObject({ authenticated: true, jid });
  });

  it('a callback works once: replaying it is refused and leaves the session as it was', async () => {
    const local = uniqueUser('rp');
    const jid = await srv.addUser(local);
    const who = person(local);
    const page = await freshPage();
    const held = await signIn(page, who.sub, { hold: true });
    expect(await follow(page, held)).toBe(303);
    const first = await session(page);
    expect(first).toMatchObject({ authenticated: true, jid });
    const before = logText.length;
    expect(await follow(page, held)).toBe(400);
    expect(logText.slice(before)).toContain('OIDC state unknown, expired or already used');
    // The replay neither created a session nor replaced the existing one.
    expect((await session(page)).csrf).toBe(first.csrf);
    // Nor does it work in another browser.
    const other = await freshPage();
    expect(await follow(other, held)).toBe(400);
    expect(await session(other)).toEqual({ authenticated: false });
  });

  it('refuses a callback in a browser that did not start the sign-in (state bound to the flow cookie)', async () => {
    const local = uniqueUser('bd');
    await srv.addUser(local);
    const who = person(local);
    const victim = await freshPage();
    const attacker = await freshPage();
    // Login CSRF: the attacker's own authorization response, delivered to someone else's browser.
    const held = await signIn(attacker, who.sub, { hold: true });
    const before = logText.length;
    expect(await follow(victim, held)).toBe(403);
    expect(logText.slice(before)).toContain('OIDC callback from a browser that did not start this sign-in');
    expect(await session(victim)).toEqual({ authenticated: false });
  });

  it('refuses an ID token from an earlier flow (replayed nonce)', async () => {
    const local = uniqueUser('nc');
    const jid = await srv.addUser(local);
    const who = person(local);
    const page = await freshPage();
    expect(await signIn(page, who.sub)).toBe(`${base}/signin/`);
    expect(await session(page)).toMatchObject({ authenticated: true, jid });
    const earlier = idp.idTokens.at(-1) as string;
    // A new sign-in in a new browser, where the token endpoint hands back the earlier ID token:
    // same issuer, audience, subject and a valid signature; only its nonce is another flow's.
    const page2 = await freshPage();
    const held = await signIn(page2, who.sub, { hold: true });
    idp.tamper = () => earlier;
    try {
      const before = logText.length;
      expect(await follow(page2, held)).toBe(400);
      const log = logText.slice(before);
      expect(log).toContain('OIDC authorization response or ID token refused');
      expect(log).toContain('"claim":"nonce"');
    } finally {
      idp.tamper = null;
    }
    expect(await session(page2)).toEqual({ authenticated: false });
  });

  it('never redeems a code without its PKCE verifier; a wrong verifier is refused by the OP', async () => {
    const local = uniqueUser('pk');
    await srv.addUser(local);
    const who = person(local);
    const cache = srv.storage.ssoCache;

    // The flow state loses its verifier (as if a downgrade had stripped it): Parley refuses before
    // it ever calls the token endpoint, so the OP's own PKCE enforcement is not what saves us.
    const page = await freshPage();
    let held = await signIn(page, who.sub, { hold: true });
    let key = `oidc:corp:${new URL(held).searchParams.get('state')}`;
    let entry = JSON.parse((await cache.get(key)) as string) as Record<string, unknown>;
    expect(entry.codeVerifier).toEqual(expect.any(String));
    delete entry.codeVerifier;
    await cache.delete(key);
    expect(await cache.add(key, JSON.stringify(entry), 60_000)).toBe(true);
    let tokenRequests = idp.tokenRequests;
    expect(await follow(page, held)).toBe(400);
    expect(idp.tokenRequests).toBe(tokenRequests);
    expect(logged('OIDC flow state without a PKCE verifier')).toBe(true);
    expect(await session(page)).toEqual({ authenticated: false });

    // Another verifier than the one whose challenge went to the IdP: the code is not redeemable,
    // so the challenge Parley sent is the one the OP holds it to.
    const page2 = await freshPage();
    held = await signIn(page2, who.sub, { hold: true });
    key = `oidc:corp:${new URL(held).searchParams.get('state')}`;
    entry = JSON.parse((await cache.get(key)) as string) as Record<string, unknown>;
    entry.codeVerifier = 'x'.repeat(43);
    await cache.delete(key);
    await cache.add(key, JSON.stringify(entry), 60_000);
    tokenRequests = idp.tokenRequests;
    const before = logText.length;
    expect(await follow(page2, held)).toBe(400);
    expect(idp.tokenRequests).toBe(tokenRequests + 1);
    expect(logText.slice(before)).toMatch(/invalid_grant/);
    expect(await session(page2)).toEqual({ authenticated: false });
  });

  it('refuses wrong issuers: in discovery, in the ID token, and in the authorization response', async () => {
    const local = uniqueUser('is');
    await srv.addUser(local);
    const who = person(local);

    // Discovery: the document names another issuer than the one configured → no sign-in starts,
    // the browser is never sent to the IdP.
    const page = await freshPage();
    const toIdp: string[] = [];
    page.on('request', (r) => {
      if (r.url().startsWith(idp.issuer)) toIdp.push(r.url());
    });
    const res = await page.goto(`${base}/sso/login?provider=mixup`);
    expect(res?.status()).toBe(502);
    expect(toIdp).toEqual([]);
    expect(logged('OpenID provider discovery failed')).toBe(true);

    // The ID token names another issuer (signed with the IdP's own key).
    const page2 = await freshPage();
    let held = await signIn(page2, who.sub, { hold: true });
    idp.tamper = async (t) => idp.sign({ ...decodeJwt(t), iss: 'http://127.0.0.1:1' });
    try {
      const before = logText.length;
      expect(await follow(page2, held)).toBe(400);
      expect(logText.slice(before)).toContain('"claim":"iss"');
    } finally {
      idp.tamper = null;
    }
    expect(await session(page2)).toEqual({ authenticated: false });

    // The authorization response's `iss` (RFC 9207, which this OP announces) is another's.
    const page3 = await freshPage();
    held = await signIn(page3, who.sub, { hold: true });
    const url = new URL(held);
    expect(url.searchParams.get('iss')).toBe(idp.issuer);
    url.searchParams.set('iss', mixupIssuer);
    const tokenRequests = idp.tokenRequests;
    const before3 = logText.length;
    expect(await follow(page3, url.href)).toBe(400);
    expect(idp.tokenRequests).toBe(tokenRequests); // refused before the code is redeemed
    expect(logText.slice(before3)).toContain('OIDC authorization response or ID token refused');
    expect(await session(page3)).toEqual({ authenticated: false });
  });

  it('refuses an ID token whose signature is not the IdP\'s', async () => {
    const local = uniqueUser('sg');
    await srv.addUser(local);
    const who = person(local);
    const page = await freshPage();
    const held = await signIn(page, who.sub, { hold: true });
    const { privateKey } = await generateKeyPair('RS256');
    idp.tamper = async (t) => {
      const [h] = t.split('.');
      const { kid } = JSON.parse(Buffer.from(h as string, 'base64url').toString()) as { kid: string };
      return new SignJWT(decodeJwt(t)).setProtectedHeader({ alg: 'RS256', kid }).sign(privateKey);
    };
    try {
      const before = logText.length;
      expect(await follow(page, held)).toBe(400);
      expect(logText.slice(before)).toContain('OIDC authorization response or ID token refused');
    } finally {
      idp.tamper = null;
    }
    expect(await session(page)).toEqual({ authenticated: false });
  });

  it('a person without an account is refused (403) when jit is off, and gets one when it is on', async () => {
    const local = uniqueUser('nj');
    const who = person(local, { name: 'New Comer' });
    const page = await freshPage();
    const answer = page.waitForResponse((r) => r.url().startsWith(`${base}/sso/oidc/corp/callback?`));
    await signIn(page, who.sub);
    expect((await answer).status()).toBe(403);
    expect(page.url().startsWith(`${base}/sso/oidc/corp/callback?`)).toBe(true);
    expect(await page.locator('h1').textContent()).toBe('Sign-in failed');
    expect(await session(page)).toEqual({ authenticated: false });
    expect(await srv.server.auth.exists(`${local}@localhost`)).toBe(false);

    const page2 = await freshPage();
    expect(await signIn(page2, who.sub, { provider: 'jit' })).toBe(`${base}/signin/`);
    expect(await session(page2)).toMatchObject({ authenticated: true, jid: `${local}@localhost`, provider: 'jit' });
    expect(await srv.server.auth.exists(`${local}@localhost`)).toBe(true);
    expect(await connected(page2)).toMatchObject({ state: 'bound', errors: [] });
  });
});
