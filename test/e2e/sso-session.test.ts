// Issue 9, the SSO core without an identity provider in the loop: browser sessions (signed
// `__Host-` cookies, stored as hashes), their expiry, CSRF on the state-changing routes, the
// browser session turning into an XMPP token that logs in over WebSocket with OAUTHBEARER, logout
// revoking that token, IdP-initiated logout, the return-URL allow-list and the sign-in rate limit.
// Sessions are created the way a completed sign-in creates them (a record in the database and
// the cookie signed with the server's secret), so these tests need no IdP; the OIDC and SAML
// tests (sso-oidc.test.ts, sso-saml.test.ts) drive the same routes through real providers.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CookieSigner, SESSION_COOKIE } from '../../src/auth/sso/cookies.js';
import type { WebSessionRecord } from '../../src/storage/types.js';
import { freePort } from '../helpers/browser.js';
import { oauthBearerPayload } from '../helpers/raw.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';
import { NS_SASL, openFrame, WsClient } from '../helpers/ws.js';

describe('SSO browser sessions and XMPP tokens', () => {
  let srv: TestServer;
  let base: string;
  const sockets: WsClient[] = [];

  beforeAll(async () => {
    const port = await freePort();
    base = `https://localhost:${port}`;
    // Conferences only for the IdP group "staff" (a group no configuration or directory defines).
    const acl = mkdtempSync(join(tmpdir(), 'parley-sso-acl-'));
    mkdirSync(join(acl, 'services'));
    writeFileSync(join(acl, 'services', 'conferences.acl'), 'allow @staff\n');
    srv = await startTestServer({
      acl: { directory: acl, watch: false },
      hosts: ['localhost', 'other.test'],
      http: { address: '127.0.0.1', port: 0, tlsPort: port },
      sso: {
        baseUrl: base,
        returnUrls: [`${base}/app/`],
        // Discovery fails (nothing listens there): the core still serves sessions and tokens.
        providers: [{ type: 'oidc', name: 'corp', host: 'localhost', issuer: 'http://127.0.0.1:9/', clientId: 'parley', allowHttp: true }],
      },
    });
  });
  afterAll(async () => {
    for (const s of sockets) s.terminate();
    await srv?.close();
  });

  /** A signed-in browser session as a completed sign-in leaves it; resolves its cookie header. */
  async function signedIn(user: string, o: Partial<WebSessionRecord> = {}): Promise<{ cookie: string; rec: WebSessionRecord; hash: string }> {
    const { cookie, hash } = new CookieSigner(srv.server.secret).mint();
    const now = Date.now();
    const rec: WebSessionRecord = {
      id: `ws-${randomBytes(6).toString('hex')}`,
      user,
      host: 'localhost',
      provider: 'corp',
      subject: `sub-${user}`,
      csrf: randomBytes(32).toString('base64url'),
      logout: null,
      sessionIndex: null,
      tokens: [],
      createdAt: now,
      lastSeenAt: now,
      expiresAt: now + 3_600_000,
      ...o,
    };
    await srv.storage.webSessions.insert(rec, hash);
    return { cookie: `${SESSION_COOKIE}=${cookie}`, rec, hash };
  }

  const get = (path: string, cookie?: string) => fetch(`${base}${path}`, { headers: cookie ? { cookie } : {}, redirect: 'manual' });
  const post = (path: string, cookie: string, headers: Record<string, string> = {}) => fetch(`${base}${path}`, { method: 'POST', headers: { cookie, ...headers }, redirect: 'manual' });

  async function wsLogin(token: string, domain = 'localhost', keep?: (ws: WsClient) => void, resource = 'web'): Promise<string> {
    const ws = await WsClient.connect(`wss://127.0.0.1:${srv.ports.https}/xmpp-websocket`);
    keep?.(ws);
    sockets.push(ws);
    ws.send(openFrame(domain));
    await ws.waitFor(/^<open\b/);
    await ws.waitFor(/^<stream:features\b/);
    ws.send(`<auth xmlns='${NS_SASL}' mechanism='OAUTHBEARER'>${oauthBearerPayload(token)}</auth>`);
    const r = await ws.waitFor(/^<(success|failure|challenge)\b/);
    if (!r.startsWith('<success')) return 'refused';
    ws.send(openFrame(domain));
    await ws.waitFor(/^<stream:features\b/);
    return ws.bind(resource);
  }

  it('without a valid cookie nobody is signed in; a forged cookie is not even looked up', async () => {
    expect(await (await get('/sso/session')).json()).toEqual({ authenticated: false });
    const forged = `${SESSION_COOKIE}=${randomBytes(32).toString('base64url')}.${randomBytes(32).toString('base64url')}`;
    expect(await (await get('/sso/session', forged)).json()).toEqual({ authenticated: false });
    expect((await post('/sso/token', forged, { 'X-CSRF-Token': 'x' })).status).toBe(401);
    // The same random part signed with another key is refused too.
    const other = new CookieSigner(randomBytes(32)).mint();
    await srv.storage.webSessions.insert({ ...(await signedIn('x@localhost')).rec, id: 'ws-other' }, other.hash);
    expect(await (await get('/sso/session', `${SESSION_COOKIE}=${other.cookie}`)).json()).toEqual({ authenticated: false });
  });

  it('turns a browser session into an XMPP token only with the CSRF token and a same-origin Origin; the token logs in over WebSocket', async () => {
    const user = `${uniqueUser('web')}@localhost`;
    await srv.server.auth.create(user, 'pw-not-used');
    const { cookie, rec } = await signedIn(user);
    const session = (await (await get('/sso/session', cookie)).json()) as Record<string, unknown>;
    expect(session).toMatchObject({ authenticated: true, jid: user, host: 'localhost', provider: 'corp', csrf: rec.csrf });

    expect((await post('/sso/token', cookie)).status).toBe(403); // no CSRF token
    expect((await post('/sso/token', cookie, { 'X-CSRF-Token': 'wrong' })).status).toBe(403);
    expect((await post('/sso/token', cookie, { 'X-CSRF-Token': rec.csrf, Origin: 'https://evil.example' })).status).toBe(403);
    const res = await post('/sso/token', cookie, { 'X-CSRF-Token': rec.csrf, Origin: base });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const t = (await res.json()) as { jid: string; token: string; websocket: string };
    expect(t.jid).toBe(user);
    expect(t.websocket).toBe(`wss://localhost:${new URL(base).port}/xmpp-websocket`);
    expect(await wsLogin(t.token)).toBe(`${user}/web`);
    // Audience-bound: the same token is refused on another host.
    expect(await wsLogin(t.token, 'other.test')).toBe('refused');
    expect((await srv.storage.webSessions.list(user))[0]?.tokens).toHaveLength(1);
  });

  it('logout (with CSRF) ends the session and revokes its tokens', async () => {
    const user = `${uniqueUser('out')}@localhost`;
    await srv.server.auth.create(user, 'pw-not-used');
    const { cookie, rec } = await signedIn(user);
    const { token } = (await (await post('/sso/token', cookie, { 'X-CSRF-Token': rec.csrf })).json()) as { token: string };
    // Connected with the token; another session of the same user logged in with a password stays.
    let live: WsClient | undefined;
    expect(await wsLogin(token, 'localhost', (w) => (live = w))).toBe(`${user}/web`);
    const other = await srv.server.auth.tokens!.issue(user, 'localhost');
    let bystander: WsClient | undefined;
    expect(await wsLogin(other.token, 'localhost', (w) => (bystander = w), 'other')).toBe(`${user}/other`);
    expect((await post('/sso/logout', cookie)).status).toBe(403);
    const out = await post('/sso/logout', cookie, { 'X-CSRF-Token': rec.csrf });
    expect(out.status).toBe(200);
    expect(out.headers.get('set-cookie')).toMatch(/__Host-parley=;.*Max-Age=0/);
    expect(await out.json()).toEqual({ redirect: null }); // the provider offers no logout endpoint (no discovery)
    expect(await (await get('/sso/session', cookie)).json()).toEqual({ authenticated: false });
    expect(await wsLogin(token)).toBe('refused');
    // The XMPP session that logged in with the session's token ends (not-authorized); the other stays.
    expect(await live!.waitFor(/not-authorized/)).toMatch(/signed out/);
    bystander!.send("<iq xmlns='jabber:client' type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>");
    expect(await bystander!.waitFor(/id=['"]still['"]/)).toMatch(/type=['"]result['"]/);
  });

  it('a browser session gets tokens at a bounded rate', async () => {
    const user = `${uniqueUser('many')}@localhost`;
    await srv.server.auth.create(user, 'pw-not-used');
    const { cookie, rec } = await signedIn(user);
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await post('/sso/token', cookie, { 'X-CSRF-Token': rec.csrf })).status);
    expect(statuses.slice(0, 10)).toEqual(Array(10).fill(200));
    expect(statuses.slice(10)).toEqual([429, 429]);
    expect((await srv.storage.webSessions.list(user))[0]?.tokens).toHaveLength(10);
  });

  it('an expired or idle session is over, and its tokens are revoked', async () => {
    const user = `${uniqueUser('old')}@localhost`;
    await srv.server.auth.create(user, 'pw-not-used');
    const expired = await signedIn(user, { expiresAt: Date.now() - 1 });
    expect(await (await get('/sso/session', expired.cookie)).json()).toEqual({ authenticated: false });
    const idle = await signedIn(user, { lastSeenAt: Date.now() - 61 * 60_000 }); // idleMinutes: 60
    const mine = await srv.server.auth.tokens!.issue(user, 'localhost');
    await srv.storage.webSessions.addToken(idle.hash, mine.id);
    const unrelated = await srv.server.auth.tokens!.issue(user, 'localhost');
    expect(await (await get('/sso/session', idle.cookie)).json()).toEqual({ authenticated: false });
    expect(await srv.storage.webSessions.list(user)).toEqual([]);
    expect(await wsLogin(mine.token)).toBe('refused');
    expect(await wsLogin(unrelated.token)).toBe(`${user}/web`); // a token not issued to that session is unaffected
  });

  it('IdP-initiated logout ends the sessions of that identity (and only those) and revokes their tokens', async () => {
    const user = `${uniqueUser('slo')}@localhost`;
    await srv.server.auth.create(user, 'pw-not-used');
    const a = await signedIn(user, { sessionIndex: 'idx-a' });
    const b = await signedIn(user, { sessionIndex: 'idx-b' });
    const { token } = (await (await post('/sso/token', a.cookie, { 'X-CSRF-Token': a.rec.csrf })).json()) as { token: string };
    const ended = await srv.sso!.endSessions({ provider: 'corp', subject: `sub-${user}`, sessionIndex: 'idx-a' });
    expect(ended).toBe(1);
    expect(await (await get('/sso/session', a.cookie)).json()).toEqual({ authenticated: false });
    expect(await (await get('/sso/session', b.cookie)).json()).toMatchObject({ authenticated: true });
    expect(await wsLogin(token)).toBe('refused');
  });

  it('sign-ins started in two tabs share the browser\'s flow cookie (both can complete); a forged one is replaced', async () => {
    const flow = (r: Response) => r.headers.getSetCookie().find((c) => c.startsWith('__Host-parley-flow='))?.split(';')[0] as string;
    const opts = (cookie?: string) => ({ redirect: 'manual' as const, headers: (cookie ? { cookie } : {}) as Record<string, string> });
    const first = flow(await fetch(`${base}/sso/login?provider=corp`, opts()));
    expect(first).toMatch(/^__Host-parley-flow=[A-Za-z0-9_-]{43}\./);
    expect(flow(await fetch(`${base}/sso/login?provider=corp`, opts(first)))).toBe(first);
    const forged = `__Host-parley-flow=${randomBytes(32).toString('base64url')}.${randomBytes(32).toString('base64url')}`;
    const fresh = flow(await fetch(`${base}/sso/login?provider=corp`, opts(forged)));
    expect(fresh).not.toBe(forged);
    expect(fresh).not.toBe(first);
  });

  it('sign-in requests: unknown provider 404, a return URL off the allow-list 400, then a per-address rate limit', async () => {
    expect((await get('/sso/login?provider=nope')).status).toBe(404);
    expect((await get(`/sso/login?provider=corp&return=${encodeURIComponent('https://evil.example/')}`)).status).toBe(400);
    expect((await get(`/sso/login?provider=corp&return=${encodeURIComponent(`${base}/app/x`)}`)).status).toBe(400); // exact match only
    // A page's own path (what /signin/ sends) is taken on our origin, then matched the same way.
    for (const path of ['/app/x', '//evil.example/', '/\\evil.example/', 'evil.example/signin/']) {
      expect((await get(`/sso/login?provider=corp&return=${encodeURIComponent(path)}`)).status, path).toBe(400);
    }
    // Allowed pages pass the check (and then fail at discovery: nothing listens at this issuer).
    for (const path of ['/signin/', '/app/']) expect((await get(`/sso/login?provider=corp&return=${encodeURIComponent(path)}`)).status, path).not.toBe(400);
    const statuses: number[] = [];
    for (let i = 0; i < 25; i++) statuses.push((await get(`/sso/login?provider=corp&return=${encodeURIComponent(`${base}/app/`)}`)).status);
    expect(statuses).toContain(429);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(4);
  });

  it('the providers list names the sign-in URLs', async () => {
    const list = (await (await get('/sso/providers?host=localhost')).json()) as { name: string; login: string }[];
    expect(list).toEqual([expect.objectContaining({ name: 'corp', type: 'oidc', login: `${base}/sso/login?provider=corp` })]);
    expect(await (await get('/sso/providers?host=other.test')).json()).toEqual([]);
  });

  it('groups from IdP claims are @group principals of the access files, read at XMPP login', async () => {
    const items = async (user: string): Promise<string> => {
      const { token } = await srv.server.auth.tokens!.issue(user, 'localhost');
      let ws: WsClient | undefined;
      expect(await wsLogin(token, 'localhost', (w) => (ws = w))).toBe(`${user}/web`);
      ws!.send(`<iq xmlns='jabber:client' type='get' id='items1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`);
      return ws!.waitFor(/^<iq\b[^>]*id=['"]items1['"]/);
    };
    const staff = `${uniqueUser('staff')}@localhost`;
    const other = `${uniqueUser('guest')}@localhost`;
    for (const u of [staff, other]) await srv.server.auth.create(u, 'pw-not-used');
    // As a sign-in on any node leaves them: the binding with the groups of the last sign-in.
    const bind = (user: string, groups: string[]) =>
      srv.storage.ssoIdentities.bind({ host: 'localhost', issuer: 'http://127.0.0.1:9/', subject: `s-${user}`, user, provider: 'corp', displayName: null, groups, createdAt: 1, lastLoginAt: 1 });
    await bind(staff, ['staff']);
    await bind(other, ['visitors']);
    expect(await items(staff)).toMatch(/jid=["']conference\.localhost["']/);
    expect(await items(other)).not.toContain('conference.localhost');
    expect(srv.acl.explain('conferences', (await import('../../src/xmpp/jid.js')).Jid.parse(staff))).toMatchObject({ allowed: true, via: expect.stringContaining('staff') });
  });
});
