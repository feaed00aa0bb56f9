// XEP-0493 style logins (issue 9): a native client gets an access token from the configured OpenID
// provider itself (authorization code + PKCE, scope `xmpp:client:normal`) and presents it in SASL
// OAUTHBEARER (RFC 7628). The token is verified here, offline, as a JWT access token (RFC 9068):
//   - header `typ` must be `at+jwt` (RFC 9068 §4: keeps ID tokens and other JWTs out);
//   - signature against the provider's JWKS (jwks_uri from its discovery document), asymmetric
//     algorithms only;
//   - `iss` = the configured issuer, `aud` contains `bearer.audience`, `exp` required and in the
//     future, `nbf`/`iat` honoured, with CLOCK_TOLERANCE_S of clock difference;
//   - `sub` present, and the `scope` claim (space-separated string, RFC 9068 §2.2.3; an array of
//     strings is accepted too) contains `xmpp:client:normal` (XEP-0493 §"Scopes": the one scope a
//     server MUST support; the account-data-only scopes give no XMPP session here).
// What account the identity logs in to is decided by the SSO core (SsoService.admit), with the same
// rules as a browser sign-in. RFC 7628 §3.2.2 failures carry `openid-configuration`: discoveryUrl().
import { createRemoteJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import * as client from 'openid-client';
import type { OidcProviderConfig, SsoProviderConfig } from '../../core/config.js';
import type { Logger } from '../../core/logger.js';
import { flattenClaims } from './oidc.js';
import type { SsoIdentity } from './types.js';

/** The scope a token must carry to open an XMPP session (XEP-0493 §"Scopes"). */
export const XMPP_CLIENT_SCOPE = 'xmpp:client:normal';
const CLOCK_TOLERANCE_S = 30;
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
/** Discovery is tried again at most this often after a failure. */
const DISCOVERY_RETRY_MS = 5_000;
/** Longer is not an access token we would accept (and OAUTHBEARER messages are capped anyway). */
const MAX_TOKEN_CHARS = 8192;

/** Errors that say the token is bad (null), as opposed to the JWKS being unreachable (thrown). */
const TOKEN_ERRORS = new Set([
  joseErrors.JWTClaimValidationFailed.code,
  joseErrors.JWTExpired.code,
  joseErrors.JWTInvalid.code,
  joseErrors.JWSInvalid.code,
  joseErrors.JWSSignatureVerificationFailed.code,
  joseErrors.JWKSNoMatchingKey.code,
  joseErrors.JWKSMultipleMatchingKeys.code,
  joseErrors.JOSEAlgNotAllowed.code,
  joseErrors.JOSENotSupported.code,
]);

type Jwks = ReturnType<typeof createRemoteJWKSet>;
interface Keys {
  jwks: Jwks;
  /** The issuer as the discovery document spells it (equal to the configured one, RFC 8414 §3.3). */
  issuer: string;
}

/** `https://idp/realm/` and `https://idp/realm` name the same issuer in configuration files. */
const sameIssuer = (a: string, b: string) => a.replace(/\/+$/, '') === b.replace(/\/+$/, '');

class BearerIssuer {
  private known: Keys | null = null;
  private pending: Promise<Keys> | null = null;
  private lastFailure = 0;

  constructor(readonly cfg: OidcProviderConfig & { bearer: { audience: string } }) {}

  get discoveryUrl(): string {
    // OpenID Connect Discovery 1.0 §4: the issuer with its trailing slash removed, then the suffix.
    return `${this.cfg.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  }

  /** The provider's key set, found by discovery once (retried after a failure; throws meanwhile). */
  keys(): Promise<Keys> {
    if (this.known) return Promise.resolve(this.known);
    if (this.pending) return this.pending;
    if (Date.now() - this.lastFailure < DISCOVERY_RETRY_MS) return Promise.reject(new Error(`discovery of ${this.cfg.issuer} failed recently`));
    const execute = this.cfg.allowHttp ? [client.allowInsecureRequests] : [];
    this.pending = client
      .discovery(new URL(this.cfg.issuer), this.cfg.clientId, undefined, undefined, { execute, timeout: 10 })
      .then((c) => {
        const uri = c.serverMetadata().jwks_uri;
        if (!uri) throw new Error(`${this.cfg.issuer} has no jwks_uri`);
        const url = new URL(uri);
        if (url.protocol !== 'https:' && !this.cfg.allowHttp) throw new Error(`${this.cfg.issuer}: jwks_uri is not https://`);
        const jwks = createRemoteJWKSet(url, { timeoutDuration: 10_000, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
        this.known = { jwks, issuer: c.serverMetadata().issuer };
        return this.known;
      })
      .catch((err: unknown) => {
        this.lastFailure = Date.now();
        throw err;
      })
      .finally(() => {
        this.pending = null;
      });
    return this.pending;
  }
}

export class OidcBearerVerifier {
  private readonly byHost = new Map<string, BearerIssuer[]>();

  /** Takes every configured provider; those of type oidc with `bearer` are used. */
  constructor(
    providers: readonly SsoProviderConfig[],
    private readonly log?: Logger,
  ) {
    for (const p of providers) {
      if (p.type !== 'oidc' || !p.bearer) continue;
      const list = this.byHost.get(p.host) ?? [];
      list.push(new BearerIssuer(p as OidcProviderConfig & { bearer: { audience: string } }));
      this.byHost.set(p.host, list);
    }
  }

  /** Whether some provider of this host accepts bearer tokens. */
  has(host: string): boolean {
    return this.byHost.has(host);
  }

  /**
   * RFC 7628 §3.2.2 `openid-configuration` for failures on this host (XEP-0493 §"Servers": MUST):
   * the discovery URL of its (first) bearer-token provider, or null when it has none.
   */
  discoveryUrl(host: string): string | null {
    return this.byHost.get(host)?.[0]?.discoveryUrl ?? null;
  }

  /**
   * The identity a JWT access token proves on `host`, or null when the token is not one this host
   * accepts (not a JWT, wrong type, unknown issuer, bad signature, wrong audience, expired, no
   * subject, scope missing). Throws when the provider's discovery document or JWKS cannot be had:
   * the caller answers temporary-auth-failure, never success.
   */
  async verify(token: string, host: string): Promise<SsoIdentity | null> {
    const issuers = this.byHost.get(host);
    if (!issuers || token.length > MAX_TOKEN_CHARS) return null;
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      return null; // not a JWT (an opaque XMPP token, say): not ours
    }
    // The unverified `iss` only picks which key set to try; jwtVerify checks it again.
    const iss = unverified.iss;
    const issuer = typeof iss === 'string' ? issuers.find((i) => sameIssuer(i.cfg.issuer, iss)) : undefined;
    if (!issuer) return null;
    const keys = await issuer.keys();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys.jwks, {
        issuer: keys.issuer,
        audience: issuer.cfg.bearer.audience,
        algorithms: ASYMMETRIC,
        typ: 'at+jwt',
        requiredClaims: ['exp', 'sub'],
        clockTolerance: CLOCK_TOLERANCE_S,
      }));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== undefined && TOKEN_ERRORS.has(code)) {
        this.log?.debug({ provider: issuer.cfg.name, code }, 'bearer token refused');
        return null;
      }
      throw err;
    }
    if (typeof payload.sub !== 'string' || !payload.sub) return null;
    if (!scopes(payload).has(XMPP_CLIENT_SCOPE)) {
      this.log?.debug({ provider: issuer.cfg.name, subject: payload.sub }, `bearer token refused: no ${XMPP_CLIENT_SCOPE} scope`);
      return null;
    }
    return { provider: issuer.cfg.name, issuer: keys.issuer, subject: payload.sub, claims: flattenClaims(payload as Record<string, unknown>) };
  }
}

function scopes(payload: JWTPayload): Set<string> {
  const s = payload.scope;
  if (typeof s === 'string') return new Set(s.split(' ').filter(Boolean));
  if (Array.isArray(s) && s.every((x) => typeof x === 'string')) return new Set(s as string[]);
  return new Set();
}
