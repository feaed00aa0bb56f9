// Issue 9, XEP-0493 style: a native client gets an access token from the host's OpenID provider
// (node-oidc-provider on loopback; authorization code flow with PKCE and a resource indicator, as
// the XEP describes) and logs in to Parley with SASL OAUTHBEARER over TCP (STARTTLS). Tokens for
// another audience, without the xmpp:client:normal scope, expired, or signed by another key are
// refused with RFC 7628 §3.2.2's error flow, whose JSON names the provider's discovery document
// (`openid-configuration`, which XEP-0493 §"Servers" makes mandatory). A client with no token
// (XEP-0493's discovery step) gets the same JSON. The server's log never holds a token.
import { Writable } from 'node:stream';
import { generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoginThrottle } from '../../src/auth/backoff.js';
import { createLogger } from '../../src/core/logger.js';
import { startIdp, type TestIdp } from '../helpers/oidc-idp.js';
import { NS_SASL, oauthBearerPayload, RawClient } from '../helpers/raw.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';

const AUDIENCE = 'xmpp:localhost';
const SASL_END = /<success\b[^>]*(?:\/>|>[\s\S]*?<\/success>)|<failure\b[^>]*>[\s\S]*?<\/failure>|<challenge\b[^>]*>[\s\S]*?<\/challenge>/;

/** RFC 7628 §3.1 client response, with host and port pairs. */
const bearer = (token: string, authzid?: string) => oauthBearerPayload(token, authzid, { host: 'localhost', port: 5222 });

describe('XEP-0493: OpenID provider access tokens in SASL OAUTHBEARER', () => {
  let idp: TestIdp;
  let srv: TestServer;
  let logText = '';
  const issued: string[] = [];
  const clients: RawClient[] = [];

  beforeAll(async () => {
    idp = await startIdp({
      redirectUris: ['https://localhost/sso/oidc/corp/callback'],
      resources: { [AUDIENCE]: 'xmpp:client:normal xmpp:account:read', 'urn:other-service': 'xmpp:client:normal' },
    });
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logText += chunk.toString();
        cb();
      },
    });
    srv = await startTestServer(
      {
        sso: {
          baseUrl: 'https://localhost',
          providers: [
            {
              type: 'oidc',
              name: 'corp',
              host: 'localhost',
              issuer: idp.issuer,
              clientId: idp.clientId,
              clientSecret: idp.clientSecret,
              allowHttp: true,
              identity: { localpart: 'preferred_username' },
              bearer: { audience: AUDIENCE },
            },
          ],
        },
      },
      { log: createLogger({ level: 'debug', destination: sink }) },
    );
    // Several refusals come from one address on purpose: no backoff delays or bans here.
    const off = { maxFailures: 1_000_000, windowMs: 1000, banMs: 1000 };
    (srv.server as unknown as { throttle: LoginThrottle }).throttle = new LoginThrottle({ perAddress: off, perPair: off, accountDelay: { freeFailures: 1_000_000 }, addressDelay: { freeFailures: 1_000_000 } });
  });
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await srv?.close();
    await idp?.close();
    for (const t of issued) expect(logText).not.toContain(t);
  });

  async function token(req: Parameters<TestIdp['accessToken']>[0]): Promise<string> {
    const t = await idp.accessToken(req);
    issued.push(t);
    return t;
  }

  async function tls(): Promise<RawClient> {
    const c = await RawClient.connect(srv.ports.c2s as number);
    clients.push(c);
    await c.openStream('localhost');
    await c.startTls();
    expect(await c.openStream('localhost')).toMatch(/<mechanism>OAUTHBEARER<\/mechanism>/);
    return c;
  }

  async function auth(c: RawClient, payload: string): Promise<string> {
    const since = c.mark();
    await c.send(`<auth xmlns='${NS_SASL}' mechanism='OAUTHBEARER'>${payload}</auth>`);
    return (await c.waitFor(SASL_END, 10_000, since))[0];
  }

  /** RFC 7628 §3.2.2: the error challenge (resolved, parsed), the client's %x01, then not-authorized. */
  async function refused(c: RawClient, first: string): Promise<Record<string, unknown>> {
    const challenge = /^<challenge\b[^>]*>([\s\S]*?)<\/challenge>$/.exec(first)?.[1];
    expect(challenge, first).toBeDefined();
    const json = JSON.parse(Buffer.from(challenge as string, 'base64').toString('utf8')) as Record<string, unknown>;
    const since = c.mark();
    await c.send(`<response xmlns='${NS_SASL}'>AQ==</response>`);
    const failure = (await c.waitFor(/<failure\b[^>]*>[\s\S]*?<\/failure>/, 10_000, since))[0];
    expect(RawClient.saslCondition(failure)).toBe('not-authorized');
    return json;
  }

  function person(local: string) {
    return idp.addUser({ sub: `u-${local}`, username: local });
  }

  it('logs in with an access token from the provider; the JID comes from the token\'s identity', async () => {
    const local = uniqueUser('xep493');
    const jid = await srv.addUser(local);
    const who = person(local);
    const t = await token({ sub: who.sub, resource: AUDIENCE });
    const c = await tls();
    expect(await auth(c, bearer(t, jid))).toMatch(/^<success\b/);
    await c.openStream('localhost');
    expect(/<jid>([^<]+)<\/jid>/.exec(await c.bind('native'))?.[1]).toBe(`${jid}/native`);
    // The identity is now bound to the account, as after a browser sign-in.
    expect(await srv.storage.ssoIdentities.get('localhost', idp.issuer, who.sub)).toMatchObject({ user: jid, provider: 'corp' });
  });

  it('refuses another audience, a missing scope, an expired token and another key; the error names the discovery document', async () => {
    const local = uniqueUser('bad493');
    await srv.addUser(local);
    const who = person(local);
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: idp.issuer, aud: AUDIENCE, sub: who.sub, preferred_username: local, scope: 'xmpp:client:normal', client_id: idp.appClientId };
    const { privateKey } = await generateKeyPair('RS256');
    const bad = {
      audience: await token({ sub: who.sub, resource: 'urn:other-service' }),
      scope: await token({ sub: who.sub, resource: AUDIENCE, scope: 'openid xmpp:account:read' }),
      expired: await idp.sign({ ...claims, iat: now - 900, exp: now - 120, jti: 'e1' }, 'at+jwt'),
      stranger: await new SignJWT({ ...claims, iat: now, exp: now + 300, jti: 's1' }).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: 'stranger' }).sign(privateKey),
    };
    issued.push(bad.expired, bad.stranger);
    // Control: the same claims, fresh and signed by the provider, log in — so each refusal below
    // is about the one thing that differs.
    const good = await idp.sign({ ...claims, iat: now, exp: now + 300, jti: 'g1' }, 'at+jwt');
    issued.push(good);
    const ok = await tls();
    expect(await auth(ok, bearer(good))).toMatch(/^<success\b/);

    const c = await tls();
    for (const [what, t] of Object.entries(bad)) {
      const json = await refused(c, await auth(c, bearer(t)));
      expect(json, what).toEqual({ status: 'invalid_token', scope: 'xmpp:client:normal', 'openid-configuration': `${idp.issuer}/.well-known/openid-configuration` });
    }
  });

  it('a client without a token learns where to get one (XEP-0493 discovery step)', async () => {
    const c = await tls();
    const json = await refused(c, await auth(c, bearer('')));
    expect(json['openid-configuration']).toBe(`${idp.issuer}/.well-known/openid-configuration`);
    // And that document is the provider's, naming the issuer tokens must come from.
    const doc = (await (await fetch(json['openid-configuration'] as string)).json()) as { issuer: string };
    expect(doc.issuer).toBe(idp.issuer);
  });

  it('a valid token for a person without an account is refused (jit off)', async () => {
    const who = person(uniqueUser('noacct'));
    const t = await token({ sub: who.sub, resource: AUDIENCE });
    const c = await tls();
    await refused(c, await auth(c, bearer(t)));
  });
});
