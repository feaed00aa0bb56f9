// OpenID Connect relying party (issue 9), with openid-client 6:
//   OpenID Connect Discovery 1.0 §4 (issuer must equal the configured one),
//   Core 1.0 §3.1 authorization code flow, RFC 7636 PKCE (S256 only),
//   Core §3.1.3.7 ID token validation (iss, aud, azp, exp, iat, nonce; the signature too, against
//   the OP's JWKS, although the token came straight from the token endpoint),
//   RFC 9207 `iss` in the authorization response when the OP announces it,
//   Core §5.3 userinfo (its `sub` must equal the ID token's),
//   RP-Initiated Logout 1.0 (id_token_hint, post_logout_redirect_uri).
//
// Flow state (state → nonce, PKCE verifier, binding, return URL) lives in the shared SsoCache under
// `oidc:<provider>:<state>`, is taken (deleted) by the first callback that names it, and is only
// honoured from the browser whose flow cookie it was created for: a replayed, forged or
// transplanted callback finds nothing or is refused before the code is redeemed.
import * as client from 'openid-client';
import type { Request, Response, Router } from 'express';
import type { OidcProviderConfig } from '../../core/config.js';
import { safeEqual } from './cookies.js';
import type { ProviderFactory, SsoContext, SsoIdentity, SsoProvider, WebSessionRecord } from './types.js';

interface FlowState {
  binding: string;
  nonce: string;
  codeVerifier: string;
  returnTo: string;
}

/** Discovery is retried at most this often after a failure (each sign-in would otherwise retry). */
const DISCOVERY_RETRY_MS = 5_000;
/** A string query parameter sent once, or undefined. */
function single(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/**
 * Claims as the core wants them: strings and string arrays kept, numbers and booleans as their
 * text, other values (objects, mixed arrays) as JSON. Null and undefined are dropped.
 */
export function flattenClaims(...sources: Record<string, unknown>[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const src of sources) {
    for (const [k, v] of Object.entries(src)) {
      if (k in out || v === null || v === undefined) continue;
      if (typeof v === 'string') out[k] = v;
      else if (typeof v === 'number' || typeof v === 'boolean') out[k] = String(v);
      else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) out[k] = v;
      else out[k] = JSON.stringify(v);
    }
  }
  return out;
}

class OidcProvider implements SsoProvider {
  readonly type = 'oidc' as const;
  readonly name: string;
  readonly host: string;
  readonly label: string;
  private readonly redirectUri: string;
  private config: client.Configuration | null = null;
  private discovering: Promise<client.Configuration> | null = null;
  private lastFailure = 0;

  constructor(
    private readonly cfg: OidcProviderConfig,
    private readonly ctx: SsoContext,
  ) {
    this.name = cfg.name;
    this.host = cfg.host;
    this.label = cfg.label ?? cfg.name;
    this.redirectUri = `${ctx.baseUrl}/sso/oidc/${cfg.name}/callback`;
    if (!cfg.allowHttp && new URL(cfg.issuer).protocol !== 'https:') throw new Error(`sso provider ${cfg.name}: issuer must be https:// (allowHttp is off)`);
  }

  async start(): Promise<void> {
    await this.discover();
  }

  /** Discovery once; a failure is remembered briefly, then tried again. */
  private discover(): Promise<client.Configuration> {
    if (this.config) return Promise.resolve(this.config);
    if (this.discovering) return this.discovering;
    if (Date.now() - this.lastFailure < DISCOVERY_RETRY_MS) return Promise.reject(new Error('discovery failed recently'));
    const execute: ((c: client.Configuration) => void)[] = [client.enableNonRepudiationChecks];
    if (this.cfg.allowHttp) execute.push(client.allowInsecureRequests);
    // No client secret: a public client, authenticated by PKCE alone.
    const auth = this.cfg.clientSecret === undefined ? client.None() : client.ClientSecretBasic(this.cfg.clientSecret);
    const metadata: Partial<client.ClientMetadata> = { redirect_uris: [this.redirectUri], response_types: ['code'] };
    this.discovering = client
      .discovery(new URL(this.cfg.issuer), this.cfg.clientId, metadata, auth, { execute, timeout: 10 })
      .then((c) => {
        this.config = c;
        this.ctx.log.info({ provider: this.name, issuer: c.serverMetadata().issuer }, 'OpenID provider discovered');
        return c;
      })
      .catch((err: unknown) => {
        this.lastFailure = Date.now();
        throw err;
      })
      .finally(() => {
        this.discovering = null;
      });
    return this.discovering;
  }

  async begin(req: Request, res: Response, flow: { binding: string; returnTo: string }): Promise<void> {
    let config: client.Configuration;
    try {
      config = await this.discover();
    } catch (err) {
      this.ctx.fail(req, res, 502, 'OpenID provider discovery failed', { provider: this.name, err: (err as Error).message });
      return;
    }
    const state = client.randomState();
    const nonce = client.randomNonce();
    const codeVerifier = client.randomPKCECodeVerifier();
    const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
    const entry: FlowState = { binding: flow.binding, nonce, codeVerifier, returnTo: flow.returnTo };
    if (!(await this.ctx.cache.add(this.key(state), JSON.stringify(entry), this.ctx.flowMs))) {
      this.ctx.fail(req, res, 500, 'OIDC state collision', { provider: this.name });
      return;
    }
    const url = client.buildAuthorizationUrl(config, {
      response_type: 'code',
      redirect_uri: this.redirectUri,
      scope: this.scope(),
      state,
      nonce,
      code_challenge: codeChallenge,
      code_challenge_method: 'S256',
    });
    res.setHeader('Cache-Control', 'no-store');
    res.redirect(303, url.href);
  }

  routes(router: Router): void {
    router.get('/callback', (req, res, next) => {
      this.callback(req, res).catch(next);
    });
  }

  private async callback(req: Request, res: Response): Promise<void> {
    const log = { provider: this.name };
    const state = single(req.query.state);
    if (!state || state.length > 256) return this.ctx.fail(req, res, 400, 'OIDC callback without a state', log);
    // Taken before anything else: whatever happens next, this state is spent.
    const raw = await this.ctx.cache.take(this.key(state));
    if (raw === null) return this.ctx.fail(req, res, 400, 'OIDC state unknown, expired or already used', log);
    let entry: Partial<FlowState>;
    try {
      entry = JSON.parse(raw) as Partial<FlowState>;
    } catch {
      return this.ctx.fail(req, res, 500, 'OIDC flow state unreadable', log);
    }
    const binding = this.ctx.flowBinding(req);
    if (!binding || typeof entry.binding !== 'string' || !safeEqual(binding, entry.binding)) {
      return this.ctx.fail(req, res, 403, 'OIDC callback from a browser that did not start this sign-in', log);
    }
    // Never redeem a code without the verifier and nonce of its flow (no PKCE downgrade).
    if (typeof entry.codeVerifier !== 'string' || !entry.codeVerifier) return this.ctx.fail(req, res, 400, 'OIDC flow state without a PKCE verifier', log);
    if (typeof entry.nonce !== 'string' || !entry.nonce) return this.ctx.fail(req, res, 400, 'OIDC flow state without a nonce', log);
    if (typeof entry.returnTo !== 'string') return this.ctx.fail(req, res, 400, 'OIDC flow state without a return URL', log);
    const opError = single(req.query.error);
    if (opError !== undefined) return this.ctx.fail(req, res, 400, 'OpenID provider returned an error', { ...log, error: opError.slice(0, 64) });

    let config: client.Configuration;
    try {
      config = await this.discover();
    } catch (err) {
      return this.ctx.fail(req, res, 502, 'OpenID provider discovery failed', { ...log, err: (err as Error).message });
    }
    // openid-client reads the response from the URL the browser was sent to and derives the
    // redirect_uri of the token request from it: the registered redirect URI plus this query.
    const current = new URL(this.redirectUri);
    const q = req.originalUrl.indexOf('?');
    current.search = q < 0 ? '' : req.originalUrl.slice(q);

    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(config, current, {
        expectedState: state,
        expectedNonce: entry.nonce,
        pkceCodeVerifier: entry.codeVerifier,
        idTokenExpected: true,
      });
    } catch (err) {
      return this.ctx.fail(req, res, 400, 'OIDC authorization response or ID token refused', { ...log, ...errorDetails(err) });
    }
    const claims = tokens.claims();
    const idToken = tokens.id_token;
    if (!claims || !idToken) return this.ctx.fail(req, res, 400, 'OIDC token response without an ID token', log);

    let userinfo: Record<string, unknown> = {};
    if (config.serverMetadata().userinfo_endpoint && tokens.access_token) {
      try {
        userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
      } catch (err) {
        return this.ctx.fail(req, res, 502, 'OIDC userinfo refused', { ...log, ...errorDetails(err) });
      }
    }
    const identity: SsoIdentity = {
      provider: this.name,
      issuer: claims.iss,
      subject: claims.sub,
      // The ID token's claims are signed and win; userinfo adds what the ID token left out.
      claims: flattenClaims(claims, userinfo),
      logout: { idToken },
    };
    await this.ctx.complete(req, res, identity, entry.returnTo);
  }

  async logoutUrl(session: WebSessionRecord, returnTo: string): Promise<string | null> {
    const config = await this.discover();
    if (!config.serverMetadata().end_session_endpoint) return null;
    const params: Record<string, string> = { client_id: this.cfg.clientId, post_logout_redirect_uri: returnTo };
    const idToken = session.logout?.idToken;
    if (idToken) params.id_token_hint = idToken;
    return client.buildEndSessionUrl(config, params).href;
  }

  private key(state: string): string {
    return `oidc:${this.name}:${state}`;
  }

  private scope(): string {
    const s = new Set(this.cfg.scopes);
    s.add('openid');
    return [...s].join(' ');
  }
}

/**
 * What a failure says in the log: openid-client's message and code, the OP's error, the inner
 * oauth4webapi message and the name of the claim or attribute that failed — never a value.
 */
function errorDetails(err: unknown): Record<string, unknown> {
  const e = err as { code?: unknown; error?: unknown; message?: unknown; cause?: unknown };
  const out: Record<string, unknown> = { err: typeof e.message === 'string' ? e.message : String(err) };
  if (typeof e.code === 'string') out.code = e.code;
  if (typeof e.error === 'string') out.error = e.error;
  let cause: unknown = e.cause;
  for (let depth = 0; depth < 3 && cause && typeof cause === 'object'; depth++) {
    const c = cause as { message?: unknown; claim?: unknown; attribute?: unknown; cause?: unknown };
    if (cause instanceof Error && typeof c.message === 'string' && out.detail === undefined) out.detail = c.message;
    if (typeof c.claim === 'string') out.claim = c.claim;
    if (typeof c.attribute === 'string') out.attribute = c.attribute;
    cause = c.cause;
  }
  return out;
}

export const createOidcProvider: ProviderFactory = (config, ctx) => {
  if (config.type !== 'oidc') throw new Error(`sso provider ${config.name}: not an oidc provider`);
  return new OidcProvider(config, ctx);
};
