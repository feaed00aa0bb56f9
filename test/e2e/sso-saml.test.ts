// Issue 9, SAML part: Parley as a SAML 2.0 service provider in front of a real IdP (samlify, on a
// loopback port, test/helpers/saml-idp.ts). Headless Chromium signs in through the IdP's login
// form and then logs in to XMPP with the token (web/public/signin/); single logout runs in
// both directions. Every attack of the HARDENING "SAML" row is POSTed to the assertion consumer
// with a live InResponseTo from a real sign-in start and must be refused with a 4xx, no session
// cookie and a logged reason naming the check that caught it. Each forged response differs from a
// response that is accepted (the "baseline" test) in one property only.
import { verify } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, launchBrowser } from '../helpers/browser.js';
import {
  NAMEID_TRANSIENT,
  buildAssertion,
  buildLogoutRequest,
  buildResponse,
  logoutRequestUrl,
  makeKeyPair,
  newId,
  requestIdFromRedirect,
  signBoth,
  signXml,
  signatureVerifies,
  startSamlIdp,
  xswAssertionBeforeSigned,
  xswAssertionIntoExtensions,
  xswLegitAsChild,
  xswWrapInSignatureObject,
  type IdpUser,
  type KeyPair,
  type ResponseOptions,
  type SamlTestIdp,
} from '../helpers/saml-idp.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';

const SESSION_COOKIE = '__Host-parley';

interface PageState {
  state: string;
  jid: string;
  errors: string[];
}

describe('SAML 2.0 single sign-on (issue 9)', () => {
  let idp: SamlTestIdp;
  let srv: TestServer;
  let browser: Browser;
  let base: string;
  let acsUrl: string;
  let rotated: KeyPair;
  let stranger: KeyPair;
  const logLines: string[] = [];
  const users: IdpUser[] = [];
  let alice: IdpUser;
  let bob: IdpUser;
  let forwarded = 0;
  let spKeys: KeyPair;
  let certDir: string;

  beforeAll(async () => {
    for (const [name, display] of [
      ['alice', 'Alice Liddell'],
      ['bob', 'Bob Builder'],
    ] as const) {
      const uid = uniqueUser(`saml${name}`);
      users.push({ username: name, password: `${name}-pw`, nameID: `p-${uid}`, uid, displayName: display, groups: ['staff', 'saml-users'] });
    }
    [alice, bob] = users as [IdpUser, IdpUser];
    idp = await startSamlIdp({ users });
    rotated = await makeKeyPair('Parley test IdP (next key)');
    stranger = await makeKeyPair('somebody else');
    spKeys = await makeKeyPair('Parley SP');
    // The second provider reads the IdP certificate from a file, as administrators configure it.
    certDir = mkdtempSync(join(tmpdir(), 'parley-saml-'));
    writeFileSync(join(certDir, 'idp.pem'), idp.signing.cert);
    const port = await freePort();
    base = `https://localhost:${port}`;
    acsUrl = `${base}/sso/saml/corp/acs`;
    const sink = new Writable({ write: (chunk, _enc, cb) => (logLines.push(String(chunk)), cb()) });
    srv = await startTestServer(
      {
        // The Node-side requests below say who they are with X-Forwarded-For (one address each),
        // so the per-address sign-in throttle of /sso/login does not meet its burst in this file.
        http: { address: '127.0.0.1', port: 0, tlsPort: port, trustedProxies: ['127.0.0.1'] },
        sso: {
          baseUrl: base,
          providers: [
            {
              type: 'saml',
              name: 'corp',
              host: 'localhost',
              label: 'Corp SAML',
              entryPoint: idp.ssoUrl,
              logoutUrl: idp.sloUrl,
              idpIssuer: idp.entityId,
              // The current key and the next one: a rotation in progress.
              idpCerts: [idp.signing.cert, rotated.cert],
              maxBodyBytes: 65536,
              identity: { localpart: 'uid', displayName: 'displayName', groups: 'groups' },
            },
            {
              // Signs its AuthnRequests (spKey/spCert); the IdP certificate comes from a file.
              type: 'saml',
              name: 'signed',
              host: 'localhost',
              entryPoint: idp.ssoUrl,
              idpIssuer: idp.entityId,
              idpCerts: [join(certDir, 'idp.pem')],
              spKey: spKeys.key,
              spCert: spKeys.cert,
              identity: { localpart: 'uid' },
            },
          ],
        },
      },
      { log: pino({ level: 'info' }, sink) },
    );
    for (const u of users) await srv.addUser(u.uid);
    await idp.trustSp(`${base}/sso/saml/corp/metadata`);
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await srv?.close();
    await idp?.close();
    if (certDir) rmSync(certDir, { recursive: true, force: true });
  });

  // ---- helpers ---------------------------------------------------------------------------

  /** Starts a sign-in the way a browser does: the AuthnRequest id and the flow cookie. */
  async function startLogin(provider = 'corp'): Promise<{ id: string; cookie: string; location: string }> {
    forwarded++;
    const r = await fetch(`${base}/sso/login?provider=${provider}`, { redirect: 'manual', headers: { 'X-Forwarded-For': `10.77.${forwarded >> 8}.${forwarded & 255}` } });
    expect(r.status).toBe(303);
    const location = r.headers.get('location') as string;
    expect(location.startsWith(`${idp.ssoUrl}?`)).toBe(true);
    const cookie = r.headers
      .getSetCookie()
      .map((c) => c.split(';')[0])
      .join('; ');
    return { id: requestIdFromRedirect(location), cookie, location };
  }

  /** A Response the IdP key signs (assertion, then envelope), answering `inResponseTo`. */
  function forge(inResponseTo: string | null, o: Partial<ResponseOptions> = {}, key: KeyPair = idp.signing): string {
    const d = idp.responseDefaults();
    return signBoth(buildResponse({ ...d, inResponseTo, nameID: alice.nameID, attributes: { uid: alice.uid, displayName: alice.displayName }, ...o }), key);
  }

  function postAcs(xml: string, extra: Record<string, string> = {}, headers: Record<string, string> = {}): Promise<globalThis.Response> {
    const body = new URLSearchParams({ SAMLResponse: Buffer.from(xml, 'utf8').toString('base64'), ...extra });
    return fetch(acsUrl, { method: 'POST', body, redirect: 'manual', headers });
  }

  function sessionCookie(r: globalThis.Response): string | undefined {
    return r.headers
      .getSetCookie()
      .map((c) => c.split(';')[0] as string)
      .find((c) => c.startsWith(`${SESSION_COOKIE}=`) && c.length > SESSION_COOKIE.length + 1);
  }

  /** The refusals logged since `mark` (the core's "sign-in refused" records). */
  function refusalsSince(mark: number): string[] {
    return logLines
      .slice(mark)
      .map((l) => JSON.parse(l) as { msg: string; reason?: string; error?: string })
      .filter((r) => r.msg === 'sign-in refused')
      .map((r) => `${r.reason ?? ''}${r.error ? `: ${r.error}` : ''}`);
  }

  /** POSTs a forged response and expects a refusal whose logged reason matches `why`. */
  async function expectRefused(xml: string, why: RegExp, extra: Record<string, string> = {}, status?: number): Promise<void> {
    const mark = logLines.length;
    const r = await postAcs(xml, extra);
    const body = await r.text();
    if (status) expect(r.status, body).toBe(status);
    expect(r.status, body).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(sessionCookie(r)).toBeUndefined();
    expect(r.headers.get('location')).toBeNull();
    const reasons = refusalsSince(mark);
    expect(reasons.length, 'one logged refusal').toBe(1);
    expect(reasons[0], JSON.stringify(reasons)).toMatch(why);
  }

  /** ACS accepts -> /complete in the browser that started it -> session cookie. */
  async function expectSignedIn(xml: string, login: { cookie: string }, extra: Record<string, string> = {}): Promise<string> {
    const r = await postAcs(xml, extra);
    expect(r.status, await r.clone().text()).toBe(303);
    expect(sessionCookie(r)).toBeUndefined();
    const next = r.headers.get('location') as string;
    expect(next.startsWith(`${base}/sso/saml/corp/complete?h=`)).toBe(true);
    const done = await fetch(next, { redirect: 'manual', headers: { cookie: login.cookie } });
    expect(done.status, await done.clone().text()).toBe(303);
    expect(done.headers.get('location')).toBe(`${base}/`);
    const cookie = sessionCookie(done);
    expect(cookie).toBeDefined();
    return cookie as string;
  }

  async function whoIs(cookie: string): Promise<{ authenticated: boolean; jid?: string; displayName?: string | null }> {
    return (await (await fetch(`${base}/sso/session`, { headers: { cookie } })).json()) as { authenticated: boolean; jid?: string };
  }

  // ---- metadata and the real IdP ---------------------------------------------------------

  it('publishes SP metadata: entity ID, HTTP-POST assertion consumer, single logout, signed assertions wanted', async () => {
    const r = await fetch(`${base}/sso/saml/corp/metadata`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/application\/samlmetadata\+xml/);
    const xml = await r.text();
    expect(xml).toContain(`entityID="${base}/sso/saml/corp/metadata"`);
    expect(xml).toMatch(new RegExp(`<md:AssertionConsumerService [^>]*Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="${acsUrl}"`));
    expect(xml).toContain(`Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="${base}/sso/saml/corp/slo"`);
    expect(xml).toContain('WantAssertionsSigned="true"');
    // The IdP read it: it knows where to send assertions.
    expect(idp.sp).toEqual({ entityId: `${base}/sso/saml/corp/metadata`, acsUrl, sloUrl: `${base}/sso/saml/corp/slo` });
  });

  it('signs in through the IdP login form in Chromium, then logs in to XMPP with the token', { timeout: 90_000 }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    // A person opens the sign-in page and clicks the provider's link; the browser goes wherever the
    // servers send it from there (the test never navigates it back itself).
    await page.goto(`${base}/signin/`);
    await Promise.all([page.waitForURL((u) => u.href.startsWith(idp.ssoUrl)), page.click('#providers a[href^="/sso/login?provider=corp&"]')]);
    // The AuthnRequest reached the IdP from our entity, with the page that started it as RelayState.
    const req = idp.events.filter((e) => e.type === 'authn-request').at(-1);
    expect(req).toMatchObject({ issuer: `${base}/sso/saml/corp/metadata`, relayState: `${base}/signin/` });
    // Its id is in the database-backed cache every Parley process shares (InResponseTo).
    expect(await srv.storage.ssoCache.get(`saml-req:corp:${req?.type === 'authn-request' ? req.id : ''}`)).not.toBeNull();
    await page.fill('#username', 'alice');
    await page.fill('#password', 'alice-pw');
    await Promise.all([page.waitForURL(`${base}/signin/`), page.click('#signin')]);
    const session = (await page.evaluate(() => fetch('/sso/session').then((r) => r.json()))) as Record<string, unknown>;
    expect(session).toMatchObject({ authenticated: true, jid: `${alice.uid}@localhost`, host: 'localhost', provider: 'corp', displayName: 'Alice Liddell' });
    // The request was answered once: its id is gone from the cache.
    expect(await srv.storage.ssoCache.get(`saml-req:corp:${req?.type === 'authn-request' ? req.id : ''}`)).toBeNull();

    // Back on the sign-in page, which connects by itself.
    expect(page.url()).toBe(`${base}/signin/`);
    await page
      .waitForFunction(() => {
        const s = (window as unknown as { parleySso?: PageState }).parleySso;
        return s !== undefined && ['bound', 'error', 'closed'].includes(s.state);
      }, undefined, { timeout: 30_000 })
      .catch(() => undefined); // the state is reported below either way
    const st = (await page.evaluate(() => (window as unknown as { parleySso?: PageState }).parleySso ?? { state: 'no page state', jid: '', errors: [] })) as PageState;
    expect(st.errors, JSON.stringify(st)).toEqual([]);
    expect(st.state).toBe('bound');
    expect(st.jid.startsWith(`${alice.uid}@localhost/`)).toBe(true);
    expect(errors).toEqual([]);

    // SP-initiated single logout: "Sign out" ends the Parley session, sends the browser to the
    // IdP with a LogoutRequest for this NameID and SessionIndex, and the IdP's signed
    // LogoutResponse brings it back to the return URL.
    const login = idp.events.filter((e) => e.type === 'login').at(-1);
    const sessionIndex = login?.type === 'login' ? login.sessionIndex : '';
    expect(idp.sessions.has(sessionIndex)).toBe(true);
    const mark = idp.events.length;
    await page.click('#logout');
    await page.waitForURL(`${base}/`, { timeout: 15_000 });
    const seen = idp.events.slice(mark);
    expect(seen).toContainEqual({ type: 'logout-request', nameID: alice.nameID, sessionIndex, issuer: `${base}/sso/saml/corp/metadata` });
    expect(seen.filter((e) => e.type === 'error')).toEqual([]);
    expect(idp.sessions.has(sessionIndex)).toBe(false);
    const after = (await page.evaluate(() => fetch('/sso/session').then((r) => r.json()))) as Record<string, unknown>;
    expect(after).toEqual({ authenticated: false });
    await context.close();
  });

  it('IdP-initiated single logout ends the Parley session and answers with a LogoutResponse', { timeout: 60_000 }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/signin/`);
    await Promise.all([page.waitForURL((u) => u.href.startsWith(idp.ssoUrl)), page.click('#providers a[href^="/sso/login?provider=corp&"]')]);
    await page.fill('#username', 'bob');
    await page.fill('#password', 'bob-pw');
    await Promise.all([page.waitForURL(`${base}/signin/`), page.click('#signin')]);
    expect(await page.evaluate(() => fetch('/sso/session').then((r) => r.json()))).toMatchObject({ authenticated: true, jid: `${bob.uid}@localhost` });
    const login = idp.events.filter((e) => e.type === 'login').at(-1);
    expect(login).toMatchObject({ type: 'login', user: 'bob' });
    const sessionIndex = login?.type === 'login' ? login.sessionIndex : '';

    const mark = idp.events.length;
    await page.goto(`${idp.url}/logout?session=${encodeURIComponent(sessionIndex)}`);
    await page.waitForSelector('#signed-out');
    // The IdP got (and samlify verified) Parley's LogoutResponse to its request.
    const resp = idp.events.slice(mark).find((e) => e.type === 'logout-response');
    expect(resp).toMatchObject({ type: 'logout-response', status: 'urn:oasis:names:tc:SAML:2.0:status:Success', issuer: `${base}/sso/saml/corp/metadata` });
    expect(idp.events.slice(mark).filter((e) => e.type === 'error')).toEqual([]);
    await page.goto(`${base}/sso/session`);
    expect(JSON.parse((await page.textContent('body')) as string)).toEqual({ authenticated: false });
    await context.close();
  });

  // ---- what is accepted ------------------------------------------------------------------

  it('baseline: a forged-but-correct response (signed by the IdP key) is accepted, once, by the browser that started it', async () => {
    const login = await startLogin();
    const cookie = await expectSignedIn(forge(login.id), login);
    expect(await whoIs(cookie)).toMatchObject({ authenticated: true, jid: `${alice.uid}@localhost` });
  });

  it('key rotation: a response signed with the second configured certificate is accepted; an unknown key is refused', async () => {
    const login = await startLogin();
    const cookie = await expectSignedIn(forge(login.id, {}, rotated), login);
    expect(await whoIs(cookie)).toMatchObject({ authenticated: true });
    const other = await startLogin();
    await expectRefused(forge(other.id, {}, stranger), /SAML response rejected: Invalid document signature/);
  });

  it('clock skew is bounded: 30 s past NotOnOrAfter is tolerated (skew 60 s), 10 minutes is not', async () => {
    const now = Date.now();
    const ok = await startLogin();
    await expectSignedIn(forge(ok.id, { issueInstant: new Date(now - 20_000), notOnOrAfter: new Date(now - 30_000) }), ok);
    const stale = await startLogin();
    await expectRefused(
      forge(stale.id, { issueInstant: new Date(now - 15 * 60_000), notBefore: new Date(now - 15 * 60_000), notOnOrAfter: new Date(now - 10 * 60_000) }),
      /SAML response rejected: (No valid subject confirmation|SAML assertion expired)/,
    );
  });

  // ---- what is refused -------------------------------------------------------------------

  it('refuses an assertion issued before the request it claims to answer', async () => {
    const login = await startLogin();
    const issued = new Date(Date.now() - 5 * 60_000);
    await expectRefused(forge(login.id, { issueInstant: issued, notBefore: issued }), /IssueInstant is outside the request lifetime/);
  });

  it('refuses a response with nothing signed', async () => {
    const login = await startLogin();
    const d = idp.responseDefaults();
    await expectRefused(buildResponse({ ...d, inResponseTo: login.id, nameID: alice.nameID, attributes: { uid: alice.uid } }), /Invalid document signature/, {}, 403);
  });

  it('refuses a signed Response whose assertion is unsigned (wantAssertionsSigned)', async () => {
    const login = await startLogin();
    const d = idp.responseDefaults();
    const xml = signXml(buildResponse({ ...d, inResponseTo: login.id, nameID: alice.nameID, attributes: { uid: alice.uid } }), 'response', idp.signing);
    await expectRefused(xml, /SAML response rejected: Invalid signature$/);
  });

  it('refuses a signed assertion in an unsigned Response (wantAuthnResponseSigned)', async () => {
    const login = await startLogin();
    const d = idp.responseDefaults();
    const xml = signXml(buildResponse({ ...d, inResponseTo: login.id, nameID: alice.nameID, attributes: { uid: alice.uid } }), 'assertion', idp.signing);
    await expectRefused(xml, /Invalid document signature/);
  });

  it('refuses an unsigned assertion beside a signed one, even inside an envelope the IdP key signed', async () => {
    const login = await startLogin();
    const d = idp.responseDefaults();
    const legitAssertion = buildAssertion({ ...d, inResponseTo: login.id, nameID: bob.nameID, attributes: { uid: bob.uid } });
    const evilAssertion = buildAssertion({ ...d, inResponseTo: login.id, nameID: alice.nameID, attributes: { uid: alice.uid } });
    // Sign the legitimate assertion inside a Response, then put the evil one before it and sign the envelope.
    const withSigned = signXml(buildResponse({ ...d, inResponseTo: login.id, nameID: bob.nameID }, legitAssertion), 'assertion', idp.signing);
    const xml = signXml(xswAssertionBeforeSigned(withSigned, evilAssertion), 'response', idp.signing);
    await expectRefused(xml, /multiple assertions/);
  });

  it('refuses signature wrapping: the signed Response moved into the ds:Object of its own signature, now on an evil Response (XSW1)', async () => {
    const login = await startLogin();
    const d = idp.responseDefaults();
    // What the attacker holds: a real response for bob (to some earlier request), envelope-signed.
    const legit = signXml(buildResponse({ ...d, inResponseTo: newId(), nameID: bob.nameID, attributes: { uid: bob.uid } }), 'response', idp.signing);
    const evil = buildResponse({ ...d, inResponseTo: login.id, nameID: alice.nameID, attributes: { uid: alice.uid } });
    const wrapped = xswWrapInSignatureObject(legit, evil);
    // The signature in it is genuine: only where it points is wrong.
    expect(signatureVerifies(wrapped, idp.signing.cert)).toBe(true);
    await expectRefused(wrapped, /SAML response rejected: Invalid signature: Referenced node does not refer to it's parent element/);
  });

  it('refuses signature wrapping: the signed Response as a child of the evil one, which carries its signature (XSW2)', async () => {
    const login = await startLogin();
    const d = idp.responseDefaults();
    const legit = forge(newId(), { nameID: bob.nameID, attributes: { uid: bob.uid } });
    const evil = buildResponse({ ...d, inResponseTo: login.id, nameID: alice.nameID, attributes: { uid: alice.uid } });
    const wrapped = xswLegitAsChild(legit, evil);
    expect(signatureVerifies(wrapped, idp.signing.cert)).toBe(true);
    await expectRefused(wrapped, /SAML response rejected: Invalid signature: Referenced node does not refer to it's parent element/);
  });

  it('refuses assertion wrapping of an IdP that signs assertions only: signed assertion moved into Extensions (XSW7) or after an evil one (XSW3)', async () => {
    const d = idp.responseDefaults();
    for (const wrap of [xswAssertionIntoExtensions, xswAssertionBeforeSigned]) {
      const login = await startLogin();
      const assertionOnly = signXml(buildResponse({ ...d, inResponseTo: login.id, nameID: bob.nameID, attributes: { uid: bob.uid } }), 'assertion', idp.signing);
      const evil = buildAssertion({ ...d, inResponseTo: login.id, nameID: alice.nameID, attributes: { uid: alice.uid } });
      await expectRefused(wrap(assertionOnly, evil), /SAML response rejected: (Invalid document signature|Invalid signature)/);
    }
  });

  it('refuses an assertion for another audience', async () => {
    const login = await startLogin();
    await expectRefused(forge(login.id, { audience: 'https://other-sp.example/metadata' }), /audience mismatch/);
  });

  it('refuses a response whose Destination is another URL', async () => {
    const login = await startLogin();
    await expectRefused(forge(login.id, { destination: 'https://other-sp.example/acs' }), /Destination is not our assertion consumer URL/);
    const again = await startLogin();
    await expectRefused(forge(again.id, { destination: null }), /Destination is not our assertion consumer URL/);
  });

  it('refuses a bearer confirmation for another Recipient', async () => {
    const login = await startLogin();
    await expectRefused(forge(login.id, { recipient: 'https://other-sp.example/acs' }), /no bearer SubjectConfirmation for our assertion consumer URL/);
  });

  it('refuses an assertion issued by another entity, even when signed with a trusted key', async () => {
    const login = await startLogin();
    await expectRefused(forge(login.id, { issuer: 'https://evil-idp.example/' }), /Issuer is not the configured IdP/);
    const again = await startLogin();
    await expectRefused(forge(again.id, { responseIssuer: null, issuer: 'https://evil-idp.example/' }), /assertion Issuer is not the configured IdP/);
  });

  it('refuses a transient NameID (it cannot be bound to an account), and an e-mail NameID (it may be reassigned)', async () => {
    const login = await startLogin();
    await expectRefused(forge(login.id, { nameIDFormat: NAMEID_TRANSIENT }), /transient NameID/);
    const email = await startLogin();
    await expectRefused(forge(email.id, { nameIDFormat: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress', nameID: 'alice@example.com' }), /NameID is not persistent/);
  });

  it('refuses an unsolicited (IdP-initiated) response and one answering a request never made', async () => {
    await expectRefused(forge(null), /InResponseTo is missing from response/);
    await expectRefused(forge(newId()), /InResponseTo is not valid/);
  });

  it('refuses a replayed response: the same bytes a second time', async () => {
    const login = await startLogin();
    const xml = forge(login.id);
    await expectSignedIn(xml, login);
    await expectRefused(xml, /InResponseTo is not valid/);
  });

  it('refuses an assertion ID seen before, even in an otherwise fresh response (replay cache)', async () => {
    const assertionId = newId();
    const first = await startLogin();
    await expectSignedIn(forge(first.id, { assertionId }), first);
    expect(await srv.storage.ssoCache.get(`saml-seen:corp:${idp.entityId}:${assertionId}`)).not.toBeNull();
    const second = await startLogin();
    await expectRefused(forge(second.id, { assertionId }), /assertion was already used \(replay\)/);
  });

  it('refuses a RelayState that points elsewhere, and never redirects to it', async () => {
    const login = await startLogin();
    await expectRefused(forge(login.id), /RelayState is not an allowed return URL/, { RelayState: 'https://evil.example/' }, 400);
    // The RelayState we sent comes back unchanged: fine.
    const ok = await startLogin();
    await expectSignedIn(forge(ok.id), ok, { RelayState: `${base}/` });
  });

  it('completes a sign-in only in the browser that started it (flow cookie)', async () => {
    const login = await startLogin();
    const r = await postAcs(forge(login.id));
    expect(r.status).toBe(303);
    const next = r.headers.get('location') as string;
    const mark = logLines.length;
    const other = await startLogin();
    const wrong = await fetch(next, { redirect: 'manual', headers: { cookie: other.cookie } });
    expect(wrong.status).toBe(403);
    expect(sessionCookie(wrong)).toBeUndefined();
    expect(refusalsSince(mark).join('\n')).toMatch(/did not start it/);
    // The handle was single-use: the right browser cannot use it afterwards either.
    const late = await fetch(next, { redirect: 'manual', headers: { cookie: login.cookie } });
    expect(late.status).toBe(400);
  });

  it('limits the assertion consumer body (413) and refuses DOCTYPEs and comments before any SAML processing', async () => {
    const login = await startLogin();
    const mark = logLines.length;
    const big = await fetch(acsUrl, { method: 'POST', body: new URLSearchParams({ SAMLResponse: 'A'.repeat(70_000) }), redirect: 'manual' });
    expect(big.status).toBe(413);
    expect(sessionCookie(big)).toBeUndefined();
    expect(refusalsSince(mark).join('\n')).toMatch(/larger than maxBodyBytes/);

    const valid = forge(login.id);
    const doctype = `<!DOCTYPE r [<!ENTITY x "${alice.uid}">]>${valid}`;
    await expectRefused(doctype, /not well-formed restricted XML/, {}, 400);
    // The classic comment truncation of a NameID (bob<!---->@...): refused outright.
    const commented = valid.replace(`>${alice.nameID}<`, `>${alice.nameID}<!-- -->x<`);
    await expectRefused(commented, /not well-formed restricted XML/, {}, 400);
  });

  it('refuses IdP-initiated LogoutRequests that are unsigned or signed by an unknown key; the session survives', async () => {
    const login = await startLogin();
    const sessionIndex = newId();
    const cookie = await expectSignedIn(forge(login.id, { sessionIndex }), login);
    const sloUrl = `${base}/sso/saml/corp/slo`;
    for (const key of [null, stranger]) {
      const mark = logLines.length;
      const r = await fetch(logoutRequestUrl({ sloUrl, issuer: idp.entityId, nameID: alice.nameID, sessionIndex, key }), { redirect: 'manual' });
      expect(r.status).toBe(403);
      expect(refusalsSince(mark).join('\n')).toMatch(key ? /SAMLRequest on the single logout endpoint rejected: Invalid query signature/ : /unsigned SAMLRequest/);
      expect(await whoIs(cookie)).toMatchObject({ authenticated: true });
    }
    // Signed by the IdP but issued 11 minutes ago (past the request lifetime): a stale capture.
    const staleMark = logLines.length;
    const stale = await fetch(logoutRequestUrl({ sloUrl, issuer: idp.entityId, nameID: alice.nameID, sessionIndex, key: idp.signing, issueInstant: new Date(Date.now() - 11 * 60_000) }), { redirect: 'manual' });
    expect(stale.status).toBe(403);
    expect(refusalsSince(staleMark).join('\n')).toMatch(/LogoutRequest IssueInstant is missing or outside the accepted window/);
    expect(await whoIs(cookie)).toMatchObject({ authenticated: true });
    // Signed by the IdP: this one ends the session and answers the IdP.
    const r = await fetch(logoutRequestUrl({ sloUrl, issuer: idp.entityId, nameID: alice.nameID, sessionIndex, key: idp.signing }), { redirect: 'manual' });
    expect(r.status).toBe(303);
    expect((r.headers.get('location') as string).startsWith(`${idp.sloUrl}?SAMLResponse=`)).toBe(true);
    expect(await whoIs(cookie)).toEqual({ authenticated: false });
  });

  it('takes IdP-initiated LogoutRequests over HTTP-POST too: enveloped signature required', async () => {
    const login = await startLogin();
    const sessionIndex = newId();
    const cookie = await expectSignedIn(forge(login.id, { sessionIndex }), login);
    const sloUrl = `${base}/sso/saml/corp/slo`;
    const post = (xml: string) => fetch(sloUrl, { method: 'POST', body: new URLSearchParams({ SAMLRequest: Buffer.from(xml).toString('base64') }), redirect: 'manual' });
    const request = buildLogoutRequest({ sloUrl, issuer: idp.entityId, nameID: alice.nameID, sessionIndex });
    const mark = logLines.length;
    expect((await post(request)).status).toBe(403);
    expect((await post(signXml(request, 'root', stranger))).status).toBe(403);
    expect(refusalsSince(mark)).toHaveLength(2);
    expect(await whoIs(cookie)).toMatchObject({ authenticated: true });
    const ok = await post(signXml(request, 'root', idp.signing));
    expect(ok.status).toBe(303);
    expect((ok.headers.get('location') as string).startsWith(`${idp.sloUrl}?SAMLResponse=`)).toBe(true);
    expect(await whoIs(cookie)).toEqual({ authenticated: false });
    // The same request again: a replay.
    const again = logLines.length;
    expect((await post(signXml(request, 'root', idp.signing))).status).toBe(403);
    expect(refusalsSince(again).join('\n')).toMatch(/already processed \(replay\)/);
  });

  it('signs AuthnRequests with spKey and publishes spCert in the metadata', async () => {
    const meta = await (await fetch(`${base}/sso/saml/signed/metadata`)).text();
    expect(meta).toContain('AuthnRequestsSigned="true"');
    expect(meta).toContain(`<ds:X509Certificate>${spKeys.cert.replace(/-----[A-Z ]+-----|\s+/g, '')}</ds:X509Certificate>`);
    const login = await startLogin('signed');
    // Verify as an IdP does (Bindings §3.4.4.1): over the raw query parameters, in this order.
    const raw = new Map(new URL(login.location).search.slice(1).split('&').map((t) => [t.slice(0, t.indexOf('=')), t] as const));
    const signed = ['SAMLRequest', 'RelayState', 'SigAlg'].map((k) => raw.get(k)).filter((t): t is string => t !== undefined).join('&');
    expect(decodeURIComponent((raw.get('SigAlg') as string).slice('SigAlg='.length))).toBe('http://www.w3.org/2001/04/xmldsig-more#rsa-sha256');
    const signature = Buffer.from(decodeURIComponent((raw.get('Signature') as string).slice('Signature='.length)), 'base64');
    expect(verify('sha256', Buffer.from(signed), spKeys.cert, signature)).toBe(true);
    expect(verify('sha256', Buffer.from(signed), stranger.cert, signature)).toBe(false);
  });

  it('InResponseTo works across Parley instances sharing the database', async () => {
    // A second server on the same data directory (SQLite file, server secret), behind the same
    // public URL: the request starts on the first instance and is answered on the second.
    const second = await startTestServer({
      dataDir: srv.dataDir,
      http: { address: '127.0.0.1', port: 0, tlsPort: 0 },
      sso: srv.config.sso,
    });
    try {
      const login = await startLogin();
      const body = new URLSearchParams({ SAMLResponse: Buffer.from(forge(login.id), 'utf8').toString('base64') });
      const secondAcs = `https://localhost:${second.ports.https}/sso/saml/corp/acs`;
      const r = await fetch(secondAcs, { method: 'POST', body, redirect: 'manual' });
      expect(r.status, await r.clone().text()).toBe(303);
      const next = new URL(r.headers.get('location') as string);
      const done = await fetch(`https://localhost:${second.ports.https}${next.pathname}${next.search}`, { redirect: 'manual', headers: { cookie: login.cookie } });
      expect(done.status).toBe(303);
      const cookie = sessionCookie(done) as string;
      expect(cookie).toBeDefined();
      // And the session is visible to the first instance too.
      expect(await whoIs(cookie)).toMatchObject({ authenticated: true, jid: `${alice.uid}@localhost` });
    } finally {
      // Stop only: the data directory belongs to the first server (remove the unused one made for it).
      await second.stop();
      if (second.dataDir !== srv.dataDir) rmSync(second.dataDir, { recursive: true, force: true });
    }
  });
});
