// Single sign-on (issue 9): what the protocol providers (OpenID Connect in oidc.ts, SAML 2.0 in
// saml.ts) and the SSO core (index.ts: browser sessions, identity mapping, the /sso routes, XMPP
// tokens) say to each other. A provider speaks its protocol with the identity provider and hands
// the core a verified identity; the core alone decides which JID that is, keeps the browser session
// and issues XMPP tokens. Providers keep nothing in memory that another process would need: flow
// state goes to the shared cache (SsoCache, in the database), so a response may reach any node.
import type { Request, Response, Router } from 'express';
import type { Logger } from '../../core/logger.js';
import type { SsoProviderConfig } from '../../core/config.js';
import type { SsoCache, WebSessionRecord } from '../../storage/types.js';

export type { SsoCache, WebSessionRecord };

/** An identity the provider has verified (signature, issuer, audience, time, replay, binding). */
export interface SsoIdentity {
  /** The provider's configured name. */
  provider: string;
  /** OIDC `iss`, or the SAML IdP's entity ID. */
  issuer: string;
  /** OIDC `sub`, or the SAML NameID. Together with `issuer`, what an account is bound to. */
  subject: string;
  /** Claims (OIDC: ID token + userinfo) or attributes (SAML; `nameID` too), as strings. */
  claims: Record<string, string | string[]>;
  /**
   * What the provider needs later to end the session at the IdP (OIDC: `idToken`; SAML: `nameID`,
   * `nameIDFormat`, `sessionIndex`). Kept with the browser session, never sent to the browser.
   */
  logout?: Record<string, string>;
}

export interface BeginFlow {
  /**
   * Hash of the browser's flow cookie: a provider that can (OIDC) stores it with its state and
   * refuses a callback from a browser whose cookie does not match (`ctx.flowBinding(req)`).
   */
  binding: string;
  /** Where the browser goes after sign-in (already checked against the allow-list). */
  returnTo: string;
}

export interface SsoProvider {
  readonly name: string;
  readonly type: 'oidc' | 'saml';
  /** The XMPP host people sign in to. */
  readonly host: string;
  readonly label: string;
  /** Start-up work (OIDC discovery). A failure is logged and retried at the next sign-in. */
  start?(): Promise<void>;
  /** Sends the browser to the IdP (a redirect, or an auto-submitting form). */
  begin(req: Request, res: Response, flow: BeginFlow): Promise<void>;
  /**
   * Adds the protocol endpoints to a router mounted at /sso/<type>/<name> (OIDC: GET /callback;
   * SAML: GET /metadata, POST /acs, GET|POST /slo). Handlers end in ctx.complete() or ctx.fail().
   */
  routes(router: Router): void;
  /**
   * Where to send the browser to end its IdP session after Parley ended its own (OIDC RP-initiated
   * logout, SAML single logout), or null when the IdP offers none.
   */
  logoutUrl(session: WebSessionRecord, returnTo: string): Promise<string | null>;
  close?(): Promise<void>;
}

/** What the core gives each provider. */
export interface SsoContext {
  readonly log: Logger;
  /** Public https:// base URL of the web container, without a trailing slash. */
  readonly baseUrl: string;
  /** Cache shared by every process on this database: flow state, InResponseTo, replay ids. */
  readonly cache: SsoCache;
  /** How long a sign-in may take at the IdP (ms): the lifetime of flow state. */
  readonly flowMs: number;
  /** The binding of this request's flow cookie (see BeginFlow.binding), or null without one. */
  flowBinding(req: Request): string | null;
  /** Whether a return URL is on the exact-match allow-list. */
  returnAllowed(url: string): boolean;
  /**
   * Ends a verified sign-in: maps the identity to a JID (binding iss+sub on first use, creating
   * the account when the provider allows), starts the browser session (cookie), and redirects to
   * `returnTo` — or answers with an error page when the identity cannot be admitted.
   */
  complete(req: Request, res: Response, identity: SsoIdentity, returnTo: string): Promise<void>;
  /** Answers with an error page (no details to the browser) and logs why. */
  fail(req: Request, res: Response, status: number, reason: string, details?: Record<string, unknown>): void;
  /**
   * IdP-initiated logout (SAML LogoutRequest): ends the browser sessions of that identity (those
   * with that session index, when given) and revokes their XMPP tokens; resolves how many ended.
   */
  endSessions(match: { provider: string; subject: string; sessionIndex?: string }): Promise<number>;
}

export type ProviderFactory = (config: SsoProviderConfig, ctx: SsoContext) => SsoProvider;
