// Single sign-on (issue 9): browser sign-in with OpenID Connect (oidc.ts) or SAML 2.0 (saml.ts),
// a server-side browser session, and the step from that session to XMPP: a short-lived XMPP token
// (src/auth/tokens.ts) the web client logs in with over SASL OAUTHBEARER.
//
// Routes on the web container (all under /sso; HTTPS is required: the cookies are `__Host-`):
//   GET  /sso/providers[?host=]       the sign-in choices (JSON), for a login page
//   GET  /sso/login?provider=&return= starts a sign-in: a flow cookie binds the browser, then the
//                                      provider redirects to the IdP; `return` (a URL, or a path on
//                                      our origin as the sign-in page sends it) must be on the
//                                      exact-match allow-list (sso.returnUrls, the base URL, /signin/)
//   /sso/oidc/<name>/..., /sso/saml/<name>/...   the protocol endpoints (callback, ACS, metadata, SLO)
//   GET  /sso/session                 who is signed in, and the CSRF token (JSON, no-store)
//   POST /sso/token                   an XMPP token for the signed-in user (CSRF)
//   POST /sso/logout                  ends the session, revokes its tokens, says where to go to end
//                                      the IdP session (CSRF)
// CSRF: state-changing routes need the session's CSRF token (header X-CSRF-Token, or a `csrf`
// form field) and, when the browser sends one, an Origin equal to the base URL's.
import { randomBytes, randomUUID } from 'node:crypto';
import express, { type Request, type Response, type Router } from 'express';
import type { HostConfig, ResolvedConfig, SsoProviderConfig } from '../../core/config.js';
import type { Logger } from '../../core/logger.js';
import type { Storage, WebSessionRecord } from '../../storage/types.js';
import type { AccountService } from '../index.js';
import { networkKey } from '../../core/addresses.js';
import { TokenBucket } from '../../core/bucket.js';
import { every } from '../../core/every.js';
import { CookieSigner, FLOW_COOKIE, SESSION_COOKIE, clearCookie, readCookies, safeEqual, setCookie } from './cookies.js';
import { AdmissionError, IdentityMapper, SsoGroups, type Admitted } from './identity.js';
import { createOidcProvider } from './oidc.js';
import { createSamlProvider } from './saml.js';
import { OidcBearerVerifier } from './bearer.js';
import type { SsoContext, SsoIdentity, SsoProvider } from './types.js';

export { AdmissionError, IdentityMapper, SsoGroups, mapToJid, claimValue } from './identity.js';
export type { SsoIdentity, SsoProvider, SsoContext } from './types.js';

export interface SsoDeps {
  config: Readonly<ResolvedConfig>;
  storage: Storage;
  accounts: AccountService;
  secret: Buffer;
  log: Logger;
  /** Forget a cached "no such account" after a just-in-time creation. */
  invalidateAccount(bare: string): void;
  /** The client address of a request (trusted-proxy aware). */
  remoteAddress(req: Request): string;
  /** Tokens of an ended browser session were revoked: XMPP sessions logged in with them end too. */
  tokensRevoked?(ids: readonly string[]): void;
}

/** Sign-ins started per client address (IPv6: per /64): a burst, then this many per minute. */
const LOGIN_BURST = 20;
const LOGINS_PER_MINUTE = 20;
/** Sign-ins started by everyone together: each leaves flow state in the database for a while. */
const ALL_LOGINS_BURST = 600;
const ALL_LOGINS_PER_MINUTE = 600;
/** Addresses whose buckets are kept (least recently used ones go first). */
const MAX_BUCKETS = 10_000;
/** XMPP tokens one browser session may hold (each reconnect of the page asks for one). */
const TOKENS_PER_SESSION = 200;
const TOKEN_BURST = 10;
const TOKENS_PER_MINUTE = 6;

export class SsoService {
  readonly router: Router = express.Router();
  readonly groups: SsoGroups;
  readonly providers = new Map<string, SsoProvider>();
  private readonly configs = new Map<string, SsoProviderConfig>();
  private readonly signer: CookieSigner;
  private readonly mapper: IdentityMapper;
  private readonly baseUrl: string;
  private readonly origin: string;
  private readonly returnUrls: Set<string>;
  private readonly log: Logger;
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly allLogins = new TokenBucket(ALL_LOGINS_PER_MINUTE / 60, ALL_LOGINS_BURST);
  private readonly tokenBuckets = new Map<string, TokenBucket>();
  private stopPurge: (() => void) | null = null;

  constructor(private readonly deps: SsoDeps) {
    const { config } = deps;
    this.log = deps.log.child({ component: 'sso' });
    // Normalized (https://Chat.Example.com:443/ -> https://chat.example.com), as URLs built from
    // it are compared with what browsers send.
    this.baseUrl = normalUrl(config.sso.baseUrl ?? config.http.publicUrl ?? 'https://localhost').replace(/\/+$/, '');
    this.origin = new URL(this.baseUrl).origin;
    this.returnUrls = new Set([`${this.baseUrl}/`, `${this.baseUrl}/signin/`, ...config.sso.returnUrls.map(normalUrl)]);
    this.signer = new CookieSigner(deps.secret);
    const hosts = new Map<string, HostConfig>(config.hosts.map((h) => [h.domain, h]));
    this.mapper = new IdentityMapper(deps.storage, deps.accounts, hosts, (bare) => deps.invalidateAccount(bare));
    this.groups = new SsoGroups(deps.storage.ssoIdentities);
    const ctx = this.context();
    for (const p of config.sso.providers) {
      const provider = p.type === 'oidc' ? createOidcProvider(p, ctx) : createSamlProvider(p, ctx);
      this.providers.set(p.name, provider);
      this.configs.set(p.name, p);
    }
    this.routes();
    // XEP-0493: hosts whose OpenID provider's access tokens log in natively (SASL OAUTHBEARER).
    const verifier = new OidcBearerVerifier(config.sso.providers, this.log);
    if (config.sso.providers.some((p) => p.type === 'oidc' && p.bearer)) {
      deps.accounts.setBearerTokens({
        discoveryUrl: (host) => verifier.discoveryUrl(host),
        verify: async (token, host) => {
          const identity = await verifier.verify(token, host);
          if (!identity) return null;
          try {
            const { jid } = await this.admit(identity);
            return jid.domain === host ? jid.local : null;
          } catch (err) {
            if (!(err instanceof AdmissionError)) throw err;
            this.log.info({ provider: identity.provider, subject: identity.subject, reason: err.reason }, 'access token refused');
            return null;
          }
        },
      });
    }
  }

  async start(): Promise<void> {
    await this.groups.load();
    // Not awaited: an identity provider that is down or slow must not hold up the XMPP server.
    for (const p of this.providers.values()) {
      void p.start?.().catch((err: unknown) => this.log.warn({ provider: p.name, err: (err as Error).message }, 'identity provider not ready; retried at the next sign-in'));
    }
    // Expired flow state, replay ids and sessions are useless; drop them every ten minutes.
    this.stopPurge = every(600_000, 'sso purge', () => this.purge(), this.log);
  }

  async close(): Promise<void> {
    this.stopPurge?.();
    this.deps.accounts.setBearerTokens(null);
    for (const p of this.providers.values()) await p.close?.();
  }

  async purge(now = Date.now()): Promise<void> {
    await this.deps.storage.ssoCache.purge(now);
    const ended = await this.deps.storage.webSessions.purge(now, now - this.deps.config.sso.idleMinutes * 60_000);
    for (const s of ended) await this.revokeTokens(s);
  }

  /** Maps a verified identity to its account (for browser sign-ins and XEP-0493 bearer tokens). */
  async admit(identity: SsoIdentity): Promise<Admitted> {
    const cfg = this.configs.get(identity.provider);
    if (!cfg) throw new AdmissionError('Unknown identity provider.', `no provider ${identity.provider}`);
    const admitted = await this.mapper.admit(identity, cfg);
    this.groups.set(admitted.jid.bare, admitted.groups);
    if (admitted.created) this.log.info({ user: admitted.jid.bare, provider: cfg.name }, 'account created at first sign-in (jit)');
    return admitted;
  }

  /** Whether a host has identity providers (then logins refresh the user's IdP groups). */
  hasProviders(host: string): boolean {
    return [...this.configs.values()].some((p) => p.host === host);
  }

  // ---- the context providers get ---------------------------------------------------------

  private context(): SsoContext {
    const flowMs = this.deps.config.sso.flowMinutes * 60_000;
    return {
      log: this.log,
      baseUrl: this.baseUrl,
      cache: this.deps.storage.ssoCache,
      flowMs,
      flowBinding: (req) => this.signer.verify(readCookies(req).get(FLOW_COOKIE)),
      returnAllowed: (url) => this.returnUrls.has(url),
      complete: (req, res, identity, returnTo) => this.complete(req, res, identity, returnTo),
      fail: (req, res, status, reason, details) => this.fail(req, res, status, reason, details),
      endSessions: (match) => this.endSessions(match),
    };
  }

  /** Ends the browser sessions of an identity (SAML IdP-initiated logout) and revokes their tokens. */
  async endSessions({ provider, subject, sessionIndex }: { provider: string; subject: string; sessionIndex?: string }): Promise<number> {
    const ended = await this.deps.storage.webSessions.removeBySubject(provider, subject, sessionIndex);
    for (const s of ended) await this.revokeTokens(s);
    if (ended.length) this.log.info({ provider, sessions: ended.map((s) => s.id) }, 'browser sessions ended by the identity provider');
    return ended.length;
  }

  private async complete(req: Request, res: Response, identity: SsoIdentity, returnTo: string): Promise<void> {
    let admitted: Admitted;
    try {
      admitted = await this.admit(identity);
    } catch (err) {
      if (err instanceof AdmissionError) {
        this.fail(req, res, 403, err.reason, { provider: identity.provider, issuer: identity.issuer, subject: identity.subject }, err.message);
        return;
      }
      throw err;
    }
    const target = this.returnUrls.has(returnTo) ? returnTo : `${this.baseUrl}/`;
    // A sign-in always starts a fresh session (no fixation); the browser's previous one ends.
    const previous = this.signer.verify(readCookies(req).get(SESSION_COOKIE));
    if (previous) {
      const old = await this.deps.storage.webSessions.remove(previous);
      if (old) await this.revokeTokens(old);
    }
    const { cookie, hash } = this.signer.mint();
    const now = Date.now();
    const lifetimeMs = this.deps.config.sso.sessionHours * 3_600_000;
    const rec: WebSessionRecord = {
      id: `ws-${randomUUID()}`,
      user: admitted.jid.bare,
      host: admitted.jid.domain,
      provider: identity.provider,
      subject: identity.subject,
      csrf: randomBytes(32).toString('base64url'),
      logout: identity.logout ?? null,
      sessionIndex: identity.logout?.sessionIndex ?? null,
      tokens: [],
      createdAt: now,
      lastSeenAt: now,
      expiresAt: now + lifetimeMs,
    };
    await this.deps.storage.webSessions.insert(rec, hash);
    setCookie(res, SESSION_COOKIE, cookie, lifetimeMs / 1000);
    // The flow cookie stays until it expires: another tab's sign-in may still be on its way back.
    this.log.info({ user: rec.user, provider: rec.provider, session: rec.id, address: this.deps.remoteAddress(req) }, 'signed in');
    res.setHeader('Cache-Control', 'no-store');
    res.redirect(303, target);
  }

  private fail(req: Request, res: Response, status: number, reason: string, details: Record<string, unknown> = {}, message?: string): void {
    this.log.info({ status, reason, ...details, path: req.path, address: this.deps.remoteAddress(req) }, 'sign-in refused');
    if (res.headersSent) return;
    const text = message ?? (status === 403 ? 'You may not sign in here.' : 'The sign-in could not be completed. Please start again.');
    res.status(status).setHeader('Cache-Control', 'no-store');
    res.type('html').send(`<!doctype html><meta charset="utf-8"><title>Sign-in failed</title><h1>Sign-in failed</h1><p>${escapeHtml(text)}</p><p><a href="${escapeHtml(this.baseUrl)}/">Back</a></p>\n`);
  }

  // ---- browser sessions ------------------------------------------------------------------

  /** The signed-in session of a request (expired or idle ones are ended), with its storage hash. */
  async session(req: Request): Promise<{ rec: WebSessionRecord; hash: string } | null> {
    const hash = this.signer.verify(readCookies(req).get(SESSION_COOKIE));
    if (!hash) return null;
    const rec = await this.deps.storage.webSessions.byHash(hash);
    if (!rec) return null;
    const now = Date.now();
    if (rec.expiresAt <= now || rec.lastSeenAt + this.deps.config.sso.idleMinutes * 60_000 <= now) {
      const gone = await this.deps.storage.webSessions.remove(hash);
      if (gone) await this.revokeTokens(gone);
      return null;
    }
    if (now - rec.lastSeenAt > 30_000) await this.deps.storage.webSessions.touch(hash, now);
    return { rec, hash };
  }

  private async revokeTokens(rec: WebSessionRecord): Promise<void> {
    const tokens = this.deps.accounts.tokens;
    if (!tokens || !rec.tokens.length) return;
    for (const id of rec.tokens) await tokens.revoke(id);
    this.deps.tokensRevoked?.(rec.tokens);
  }

  /** CSRF: the session's token in X-CSRF-Token (or a `csrf` form field), and a same-origin Origin if sent. */
  private csrfOk(req: Request, rec: WebSessionRecord): boolean {
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== this.origin) return false;
    const given = req.get('x-csrf-token') ?? (typeof req.body === 'object' && req.body && typeof (req.body as Record<string, unknown>).csrf === 'string' ? (req.body as Record<string, string>).csrf : '');
    return !!given && safeEqual(given, rec.csrf);
  }

  private allowStart(req: Request): boolean {
    const addr = this.deps.remoteAddress(req);
    // One IPv6 client usually holds a whole /64: count it as one address.
    const key = networkKey(addr);
    if (!take(this.buckets, key, () => new TokenBucket(LOGINS_PER_MINUTE / 60, LOGIN_BURST))) return false;
    return takeOne(this.allLogins);
  }

  // ---- routes ----------------------------------------------------------------------------

  private routes(): void {
    const r = this.router;
    const form = express.urlencoded({ extended: false, limit: '4kb', parameterLimit: 10 });
    const wrap = (fn: (req: Request, res: Response) => Promise<void>) => (req: Request, res: Response, next: (err?: unknown) => void) => {
      fn(req, res).catch(next);
    };

    r.get('/providers', (req, res) => {
      const host = typeof req.query.host === 'string' ? req.query.host.toLowerCase() : undefined;
      const list = [...this.providers.values()]
        .filter((p) => !host || p.host === host)
        .map((p) => ({ name: p.name, type: p.type, label: p.label, host: p.host, login: `${this.baseUrl}/sso/login?provider=${encodeURIComponent(p.name)}` }));
      res.setHeader('Cache-Control', 'no-store');
      res.json(list);
    });

    r.get(
      '/login',
      wrap(async (req, res) => {
        const name = typeof req.query.provider === 'string' ? req.query.provider : '';
        const provider = this.providers.get(name);
        if (!provider) return this.fail(req, res, 404, 'unknown provider', { provider: name.slice(0, 64) }, 'Unknown identity provider.');
        // A page of ours passes its own path (`/signin/`): taken on our origin, then the same exact match.
        const given = typeof req.query.return === 'string' ? req.query.return : `${this.baseUrl}/`;
        const ret = /^\/(?![/\\])/.test(given) ? `${this.origin}${given}` : given;
        if (!this.returnUrls.has(ret)) return this.fail(req, res, 400, 'return URL not on the allow-list', { return: ret.slice(0, 256) });
        if (!this.allowStart(req)) {
          res.setHeader('Retry-After', '60');
          return this.fail(req, res, 429, 'too many sign-ins from this address', {}, 'Too many sign-in attempts. Please wait a minute.');
        }
        // A browser keeps its flow cookie across sign-ins started in several tabs (each flow stays
        // bound to it); the first sign-in gets a new one.
        const existing = readCookies(req).get(FLOW_COOKIE);
        const kept = this.signer.verify(existing);
        const { cookie, hash } = kept && existing ? { cookie: existing, hash: kept } : this.signer.mint();
        setCookie(res, FLOW_COOKIE, cookie, this.deps.config.sso.flowMinutes * 60);
        res.setHeader('Cache-Control', 'no-store');
        await provider.begin(req, res, { binding: hash, returnTo: ret });
      }),
    );

    for (const p of this.providers.values()) {
      const sub = express.Router();
      p.routes(sub);
      r.use(`/${p.type}/${p.name}`, sub);
    }

    r.get(
      '/session',
      wrap(async (req, res) => {
        res.setHeader('Cache-Control', 'no-store');
        const s = await this.session(req);
        if (!s) {
          res.json({ authenticated: false });
          return;
        }
        const { rec } = s;
        const binding = await this.deps.storage.ssoIdentities.byUser(rec.user);
        const displayName = binding.find((b) => b.subject === rec.subject && b.provider === rec.provider)?.displayName ?? null;
        res.json({ authenticated: true, jid: rec.user, host: rec.host, displayName, provider: rec.provider, csrf: rec.csrf, expiresAt: new Date(rec.expiresAt).toISOString() });
      }),
    );

    r.post(
      '/token',
      form,
      wrap(async (req, res) => {
        res.setHeader('Cache-Control', 'no-store');
        const s = await this.session(req);
        if (!s) {
          res.status(401).json({ error: 'not signed in' });
          return;
        }
        if (!this.csrfOk(req, s.rec)) {
          this.log.info({ session: s.rec.id, address: this.deps.remoteAddress(req) }, 'token request refused: CSRF check failed');
          res.status(403).json({ error: 'CSRF check failed' });
          return;
        }
        const tokens = this.deps.accounts.tokens;
        if (!tokens) {
          res.status(503).json({ error: 'tokens are not available' });
          return;
        }
        if (s.rec.tokens.length >= TOKENS_PER_SESSION || !take(this.tokenBuckets, s.rec.id, () => new TokenBucket(TOKENS_PER_MINUTE / 60, TOKEN_BURST))) {
          this.log.info({ session: s.rec.id, tokens: s.rec.tokens.length }, 'token request refused: too many for this browser session');
          res.setHeader('Retry-After', '10');
          res.status(429).json({ error: 'too many token requests for this session' });
          return;
        }
        const issued = await tokens.issue(s.rec.user, s.rec.host, { issuer: `sso:${s.rec.provider}`, label: `browser session ${s.rec.id}` });
        await this.deps.storage.webSessions.addToken(s.hash, issued.id);
        this.log.info({ user: s.rec.user, session: s.rec.id, token: issued.id }, 'XMPP token issued to a browser session');
        const ws = `${this.baseUrl.replace(/^http/, 'ws')}/xmpp-websocket`;
        res.json({ jid: s.rec.user, token: issued.token, expiresAt: new Date(issued.expiresAt).toISOString(), websocket: ws });
      }),
    );

    r.post(
      '/logout',
      form,
      wrap(async (req, res) => {
        res.setHeader('Cache-Control', 'no-store');
        const s = await this.session(req);
        if (!s) {
          clearCookie(res, SESSION_COOKIE);
          res.json({ redirect: null });
          return;
        }
        if (!this.csrfOk(req, s.rec)) {
          this.log.info({ session: s.rec.id, address: this.deps.remoteAddress(req) }, 'logout refused: CSRF check failed');
          res.status(403).json({ error: 'CSRF check failed' });
          return;
        }
        const raw = (typeof req.query.return === 'string' ? req.query.return : undefined) ?? (req.body as Record<string, unknown> | undefined)?.return;
        const returnTo = typeof raw === 'string' && this.returnUrls.has(raw) ? raw : `${this.baseUrl}/`;
        await this.deps.storage.webSessions.remove(s.hash);
        await this.revokeTokens(s.rec);
        clearCookie(res, SESSION_COOKIE);
        this.log.info({ user: s.rec.user, session: s.rec.id }, 'signed out');
        let redirect: string | null = null;
        try {
          redirect = (await this.providers.get(s.rec.provider)?.logoutUrl(s.rec, returnTo)) ?? null;
        } catch (err) {
          this.log.warn({ provider: s.rec.provider, err: (err as Error).message }, 'no logout URL from the identity provider');
        }
        res.json({ redirect });
      }),
    );
  }
}

/** Takes one from the bucket under `key` (created on first use; the least recently used go past MAX_BUCKETS). */
function take(buckets: Map<string, TokenBucket>, key: string, make: () => TokenBucket): boolean {
  let b = buckets.get(key);
  if (b) buckets.delete(key);
  else {
    b = make();
    if (buckets.size >= MAX_BUCKETS) buckets.delete(buckets.keys().next().value as string);
  }
  buckets.set(key, b); // most recently used last
  return takeOne(b);
}

/** One token if there is one; a refusal costs nothing (a client that keeps trying is not banned for longer). */
function takeOne(b: TokenBucket): boolean {
  if (b.take(1) === 0) return true;
  b.take(-1);
  return false;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A URL as the WHATWG parser writes it (lower-case host, default port dropped), or as given when it does not parse. */
function normalUrl(u: string): string {
  try {
    return new URL(u).href;
  } catch {
    return u;
  }
}
