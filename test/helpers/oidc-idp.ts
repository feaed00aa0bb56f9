// A real OpenID provider for the SSO tests (issue 9): node-oidc-provider on a loopback port, with
// an http:// issuer (Parley's provider config sets allowHttp), an in-memory account store, its
// development login/consent pages (any password; the login is the account id, `sub`), RP-initiated
// logout, and resource indicators issuing RFC 9068 JWT access tokens (typ at+jwt) for XMPP, as an
// XEP-0493 client would get them.
//
// Two clients are registered:
//   - Parley's web sign-in (confidential, client_secret_basic, PKCE required);
//   - a native XMPP app (public, PKCE), which `accessToken()` drives through the authorization
//     code flow with plain HTTP requests to obtain access tokens for SASL OAUTHBEARER.
//
// For attack tests the helper can rewrite the ID token of token-endpoint responses (`tamper`),
// counts token-endpoint requests, and exposes its signing key (`sign`) so a test can mint a JWT the
// provider itself would have signed (an expired access token, say: the provider cannot be asked
// for one that is already expired).
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';
import Provider, { errors as oidcErrors } from 'oidc-provider';
import { freePort } from './browser.js';

export interface IdpUser {
  /** The account id: what is typed on the sign-in page, and the `sub` of every token. */
  sub: string;
  /** preferred_username (default: the sub). Tests give one that differs from `sub`. */
  username?: string;
  name?: string;
  groups?: string[];
}

export interface IdpOptions {
  /** Fixed port (default: a free one). */
  port?: number;
  clientId?: string;
  clientSecret?: string;
  /** Parley's callback URL(s). */
  redirectUris: string[];
  postLogoutRedirectUris?: string[];
  /** Resource indicators that get JWT access tokens, with the scopes allowed for each. */
  resources?: Record<string, string>;
}

export interface AccessTokenRequest {
  /** The account (sub) that signs in. */
  sub: string;
  /** Resource indicator (RFC 8707): becomes the token's `aud`. */
  resource: string;
  scope?: string;
}

export interface TestIdp {
  issuer: string;
  port: number;
  clientId: string;
  clientSecret: string;
  /** The native app's client id (public client) and redirect URI. */
  appClientId: string;
  addUser(u: IdpUser): IdpUser;
  /** Rewrites the ID token in successful token responses (null: no rewriting). */
  tamper: ((idToken: string) => Promise<string> | string) | null;
  /** Every ID token the token endpoint issued, oldest first. */
  readonly idTokens: string[];
  /** How many requests reached the token endpoint. */
  tokenRequests: number;
  /**
   * While set, a redirect to a URL starting with this prefix (Parley's callback) is not sent: the
   * browser gets a plain page instead, and the URL is pushed to `held` — so a test can edit,
   * replay or transplant the authorization response. (Playwright cannot intercept a redirect.)
   */
  hold: string | null;
  readonly held: string[];
  /** Signs claims with the provider's own key (same kid), as the provider would. */
  sign(claims: JWTPayload, typ?: string): Promise<string>;
  /** Runs the authorization code flow (with PKCE) for the native app; resolves the access token. */
  accessToken(req: AccessTokenRequest): Promise<string>;
  close(): Promise<void>;
}

const APP_CLIENT = 'xmpp-native-app';
const APP_REDIRECT = 'http://127.0.0.1/xmpp-app/cb';

export async function startIdp(opts: IdpOptions): Promise<TestIdp> {
  const port = opts.port ?? (await freePort());
  const issuer = `http://127.0.0.1:${port}`;
  const clientId = opts.clientId ?? 'parley';
  const clientSecret = opts.clientSecret ?? randomBytes(24).toString('base64url');
  const resources = opts.resources ?? {};
  const users = new Map<string, IdpUser>();

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = `k-${randomUUID()}`;
  const jwk: JWK = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: opts.redirectUris,
        post_logout_redirect_uris: opts.postLogoutRedirectUris ?? [],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: APP_CLIENT,
        application_type: 'native',
        redirect_uris: [APP_REDIRECT],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'none',
      },
    ],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    // PKCE for every client, not only public ones: a flow without it fails at the provider too.
    pkce: { required: () => true },
    claims: { openid: ['sub'], profile: ['name', 'preferred_username', 'groups'] },
    scopes: ['openid', 'profile', 'email', 'xmpp:client:normal', 'xmpp:account:read'],
    findAccount: (_ctx, id) => {
      // The dev login page takes the typed login as the account id, which becomes `sub`.
      const u = users.get(id);
      if (!u) return undefined;
      return {
        accountId: id,
        claims: () => ({ sub: u.sub, preferred_username: u.username ?? u.sub, name: u.name, groups: u.groups }),
      };
    },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        getResourceServerInfo: (_ctx: unknown, indicator: string) => {
          const scope = resources[indicator];
          if (scope === undefined) throw new oidcErrors.InvalidTarget();
          return { scope, audience: indicator, accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
    // What an enterprise IdP (Keycloak, Entra) also puts in access tokens: the user name.
    extraTokenClaims: (_ctx, token) => {
      const accountId = 'accountId' in token ? token.accountId : undefined;
      const u = accountId ? users.get(accountId) : undefined;
      return u ? { preferred_username: u.username ?? u.sub } : undefined;
    },
  });
  // The dev pages print debugging details; keep the test output quiet.
  provider.on('server_error', () => undefined);

  const idp: TestIdp = {
    issuer,
    port,
    clientId,
    clientSecret,
    appClientId: APP_CLIENT,
    tamper: null,
    idTokens: [],
    tokenRequests: 0,
    hold: null,
    held: [],
    addUser(u) {
      users.set(u.sub, u);
      return u;
    },
    async sign(claims, typ = 'JWT') {
      return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ }).sign(privateKey);
    },
    accessToken: (req) => runCodeFlow(issuer, req),
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
    },
  };

  provider.use(async (ctx, next) => {
    if (ctx.path === '/token') idp.tokenRequests++;
    await next();
    const location = ctx.response.get('location');
    if (idp.hold && (ctx.status === 302 || ctx.status === 303) && location.startsWith(idp.hold)) {
      idp.held.push(location);
      ctx.remove('location');
      ctx.status = 200;
      ctx.type = 'text/plain';
      ctx.body = 'held by the test';
      return;
    }
    if (ctx.path !== '/token' || ctx.status !== 200 || !ctx.body || typeof ctx.body !== 'object') return;
    const body = ctx.body as Record<string, unknown>;
    if (typeof body.id_token !== 'string') return;
    idp.idTokens.push(body.id_token);
    if (idp.tamper) ctx.body = { ...body, id_token: await idp.tamper(body.id_token) };
  });

  const server: Server = createServer(provider.callback());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return idp;
}

/** Re-signs a JWT with changed claims (with `key` and its kid), e.g. another issuer. */
export async function resign(jwt: string, change: JWTPayload, key: CryptoKey, kid: string): Promise<string> {
  const header = decodeProtectedHeader(jwt);
  return new SignJWT({ ...decodeJwt(jwt), ...change }).setProtectedHeader({ alg: 'RS256', kid, typ: header.typ }).sign(key);
}

/**
 * The authorization code flow with PKCE as a native XMPP client runs it (XEP-0493), through the
 * provider's development login and consent pages, with plain HTTP and a cookie jar.
 */
async function runCodeFlow(issuer: string, req: AccessTokenRequest): Promise<string> {
  const jar = new Map<string, string>();
  const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const remember = (res: globalThis.Response) => {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = (pair as string).indexOf('=');
      jar.set((pair as string).slice(0, eq).trim(), (pair as string).slice(eq + 1).trim());
    }
  };
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const auth = new URL(`${issuer}/auth`);
  for (const [k, v] of Object.entries({
    client_id: APP_CLIENT,
    response_type: 'code',
    redirect_uri: APP_REDIRECT,
    scope: req.scope ?? 'openid xmpp:client:normal',
    resource: req.resource,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: randomBytes(16).toString('base64url'),
  })) {
    auth.searchParams.set(k, v);
  }
  let url = auth.href;
  let method = 'GET';
  let body: string | undefined;
  for (let hop = 0; hop < 20; hop++) {
    const res = await fetch(url, { method, body, redirect: 'manual', headers: { cookie: cookieHeader(), ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) } });
    remember(res);
    method = 'GET';
    body = undefined;
    const location = res.headers.get('location');
    if (location) {
      const next = new URL(location, url);
      if (next.href.startsWith(APP_REDIRECT)) {
        const code = next.searchParams.get('code');
        if (!code) throw new Error(`authorization failed: ${next.searchParams.get('error')} ${next.searchParams.get('error_description')}`);
        return exchange(issuer, code, verifier, req.resource);
      }
      url = next.href;
      continue;
    }
    const html = await res.text();
    const prompt = /name="prompt" value="(\w+)"/.exec(html)?.[1];
    if (res.status !== 200 || !prompt) throw new Error(`unexpected page at ${url}: ${res.status} ${html.slice(0, 300)}`);
    // The form posts back to the interaction URL it was served from.
    method = 'POST';
    body = new URLSearchParams(prompt === 'login' ? { prompt, login: req.sub, password: 'any' } : { prompt }).toString();
  }
  throw new Error('too many redirects in the authorization flow');
}

async function exchange(issuer: string, code: string, verifier: string, resource: string): Promise<string> {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: APP_REDIRECT, client_id: APP_CLIENT, code_verifier: verifier, resource }).toString(),
  });
  const json = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
  if (!json.access_token) throw new Error(`token request failed: ${json.error} ${json.error_description}`);
  return json.access_token;
}
