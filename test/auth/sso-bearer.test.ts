// Issue 9, XEP-0493 style: OidcBearerVerifier against a real OpenID provider (node-oidc-provider
// on loopback). Access tokens come from the provider through the authorization code flow with PKCE
// and a resource indicator, as a native XMPP client gets them; the tokens it cannot be asked for
// (expired, signed by a stranger) are minted in the test. Every refusal is a null, not a throw;
// only an unreachable provider throws (the SASL layer answers temporary-auth-failure).
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SsoProviderConfig } from '../../src/core/config.js';
import { OidcBearerVerifier, XMPP_CLIENT_SCOPE } from '../../src/auth/sso/bearer.js';
import { freePort } from '../helpers/browser.js';
import { startIdp, type TestIdp } from '../helpers/oidc-idp.js';

const AUDIENCE = 'xmpp:localhost';

function providerConfig(issuer: string, over: Partial<Extract<SsoProviderConfig, { type: 'oidc' }>> = {}): SsoProviderConfig {
  return {
    type: 'oidc',
    name: 'corp',
    host: 'localhost',
    issuer,
    clientId: 'parley',
    scopes: ['openid'],
    allowHttp: true,
    identity: { localpart: 'preferred_username', linkBoundAccounts: false },
    jit: false,
    bearer: { audience: AUDIENCE },
    ...over,
  };
}

describe('OidcBearerVerifier (JWT access tokens, RFC 9068, from the configured OpenID provider)', () => {
  let idp: TestIdp;
  let v: OidcBearerVerifier;

  beforeAll(async () => {
    idp = await startIdp({
      redirectUris: ['https://localhost:1/sso/oidc/corp/callback'],
      resources: { [AUDIENCE]: `${XMPP_CLIENT_SCOPE} xmpp:account:read`, 'urn:other-service': XMPP_CLIENT_SCOPE },
    });
    idp.addUser({ sub: 'u-1001', username: 'alice', name: 'Alice Example', groups: ['staff'] });
    v = new OidcBearerVerifier([providerConfig(idp.issuer), { ...providerConfig('https://idp.other.test'), name: 'other', host: 'other.test' }]);
  });
  afterAll(async () => {
    await idp?.close();
  });

  it('accepts a token the provider issued for the XMPP audience with xmpp:client:normal', async () => {
    const token = await idp.accessToken({ sub: 'u-1001', resource: AUDIENCE });
    const id = await v.verify(token, 'localhost');
    expect(id).toMatchObject({ provider: 'corp', issuer: idp.issuer, subject: 'u-1001' });
    expect(id?.claims.preferred_username).toBe('alice');
    expect(id?.claims.scope).toBe(XMPP_CLIENT_SCOPE);
    // An issuer configured with a trailing slash is the same issuer; the identity names it as the
    // provider does (and as its ID tokens do), so web and token logins bind the same iss+sub.
    expect(await new OidcBearerVerifier([providerConfig(`${idp.issuer}/`)]).verify(token, 'localhost')).toMatchObject({ issuer: idp.issuer, subject: 'u-1001' });
    // Only on the host the provider serves.
    expect(await v.verify(token, 'other.test')).toBeNull();
    expect(await v.verify(token, 'nowhere.test')).toBeNull();
  });

  it('refuses a token for another audience, or without the xmpp:client:normal scope', async () => {
    const otherAud = await idp.accessToken({ sub: 'u-1001', resource: 'urn:other-service' });
    expect(await v.verify(otherAud, 'localhost')).toBeNull();
    const readOnly = await idp.accessToken({ sub: 'u-1001', resource: AUDIENCE, scope: 'openid xmpp:account:read' });
    expect(await v.verify(readOnly, 'localhost')).toBeNull();
  });

  it('refuses expired tokens, ID tokens, strangers\' signatures, and altered tokens', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: idp.issuer, aud: AUDIENCE, sub: 'u-1001', scope: XMPP_CLIENT_SCOPE, client_id: idp.appClientId, jti: 'j1' };
    // Control: the provider's key, the right type and claims → accepted; so each refusal below is
    // the one thing it changes.
    expect(await v.verify(await idp.sign({ ...claims, iat: now, exp: now + 300 }, 'at+jwt'), 'localhost')).not.toBeNull();
    // Expired beyond the 30 s tolerance.
    expect(await v.verify(await idp.sign({ ...claims, iat: now - 900, exp: now - 120 }, 'at+jwt'), 'localhost')).toBeNull();
    // No exp at all.
    expect(await v.verify(await idp.sign({ ...claims, iat: now }, 'at+jwt'), 'localhost')).toBeNull();
    // Not an access token (RFC 9068 §4: typ must be at+jwt), e.g. an ID token with the same claims.
    expect(await v.verify(await idp.sign({ ...claims, iat: now, exp: now + 300 }, 'JWT'), 'localhost')).toBeNull();
    // Another key, even one claiming the provider's kid.
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    const stranger = await new SignJWT({ ...claims, iat: now, exp: now + 300 }).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: 'stranger' }).sign(privateKey);
    expect(await v.verify(stranger, 'localhost')).toBeNull();
    const good = await idp.accessToken({ sub: 'u-1001', resource: AUDIENCE });
    const [h] = good.split('.');
    const kid = (JSON.parse(Buffer.from(h as string, 'base64url').toString()) as { kid: string }).kid;
    const impostor = await new SignJWT({ ...claims, iat: now, exp: now + 300 }).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid }).sign(privateKey);
    expect(await v.verify(impostor, 'localhost')).toBeNull();
    // A symmetric algorithm keyed with the public key (the classic alg confusion) is not allowed.
    const pub = await exportJWK(publicKey);
    const hs = await new SignJWT({ ...claims, iat: now, exp: now + 300 }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid }).sign(Buffer.from(JSON.stringify(pub)));
    expect(await v.verify(hs, 'localhost')).toBeNull();
    // The provider's token with its payload changed (another subject): the signature no longer holds.
    const [gh, gp, gs] = good.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(gp, 'base64url').toString()) as Record<string, unknown>;
    const altered = `${gh}.${Buffer.from(JSON.stringify({ ...payload, sub: 'u-admin' })).toString('base64url')}.${gs}`;
    expect(await v.verify(altered, 'localhost')).toBeNull();
    // Wrong issuer (signed by the provider's key, but naming another issuer).
    expect(await v.verify(await idp.sign({ ...claims, iss: 'http://127.0.0.1:1', iat: now, exp: now + 300 }, 'at+jwt'), 'localhost')).toBeNull();
    // Not a JWT at all (an opaque XMPP token) and garbage.
    expect(await v.verify('x'.repeat(43), 'localhost')).toBeNull();
    expect(await v.verify('a.b.c', 'localhost')).toBeNull();
  });

  it('throws, rather than refusing or accepting, when the provider cannot be reached', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const dv = new OidcBearerVerifier([providerConfig(dead)]);
    const now = Math.floor(Date.now() / 1000);
    const token = await idp.sign({ iss: dead, aud: AUDIENCE, sub: 'u-1001', scope: XMPP_CLIENT_SCOPE, iat: now, exp: now + 300 }, 'at+jwt');
    await expect(dv.verify(token, 'localhost')).rejects.toThrow();
  });

  it('names the discovery document for RFC 7628 failure messages, per host', () => {
    expect(v.discoveryUrl('localhost')).toBe(`${idp.issuer}/.well-known/openid-configuration`);
    expect(v.discoveryUrl('other.test')).toBe('https://idp.other.test/.well-known/openid-configuration');
    expect(v.discoveryUrl('nowhere.test')).toBeNull();
    expect(v.has('localhost')).toBe(true);
    // Providers without `bearer` are not used for tokens.
    expect(new OidcBearerVerifier([providerConfig(idp.issuer, { bearer: undefined })]).discoveryUrl('localhost')).toBeNull();
  });
});
