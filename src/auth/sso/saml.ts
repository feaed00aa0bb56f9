/*
 * SAML 2.0 service provider (issue 9): Web Browser SSO profile (SAML Profiles §4.1) with the
 * HTTP-Redirect binding towards the IdP and the HTTP-POST binding back (SAML Bindings §3.4, §3.5),
 * and Single Logout (SAML Profiles §4.4) in both directions, Redirect or POST.
 *
 * Endpoints, under /sso/saml/<name>:
 *   GET  /metadata   our SP metadata (what the administrator gives the IdP)
 *   POST /acs        assertion consumer: verifies the Response, then 303 to GET /complete
 *   GET  /complete   ends the sign-in in the browser that started it (flow cookie), ctx.complete()
 *   GET|POST /slo    the IdP's LogoutRequest (IdP-initiated) or LogoutResponse (after ours)
 *
 * Who checks what (HARDENING "SAML" row):
 *   - passport + @node-saml/passport-saml's Strategy runs the ACS, as the issue asks. node-saml
 *     checks: the Response's own enveloped signature (wantAuthnResponseSigned) and the assertion's
 *     (wantAssertionsSigned), each against the configured IdP certificates, each referencing its
 *     own parent element by an ID that occurs once (signature wrapping); exactly one assertion; it
 *     reads the assertion only from the bytes the Response signature covers; InResponseTo present
 *     and known in the request cache (validateInResponseTo 'always', the cache is our database-
 *     backed SsoCache, so any process may receive the response); Conditions and
 *     SubjectConfirmationData time windows within the clock skew; the Audience.
 *   - node-saml does NOT check, so this file does, on the signed bytes only (getVerifiedXml again,
 *     then Parley's hardened XML parser): the Response's Destination is our ACS URL; the Status is
 *     Success; the Response's and the assertion's Issuer are the configured IdP (node-saml's
 *     idpIssuer applies to logout messages only); a bearer SubjectConfirmation with Recipient = our
 *     ACS URL and InResponseTo = the request; an IssueInstant after our request was made (minus the
 *     skew); the assertion ID was never accepted before (replay cache in the shared SsoCache, kept
 *     until the assertion expires); the request is used once (atomic take of the flow record).
 *   - before any of that, the decoded XML goes through Parley's one hardened parser (no DOCTYPE,
 *     entities, comments or processing instructions; size, depth and attribute limits), so
 *     node-saml's xmldom/xml2js never see those constructs (comment-truncated NameIDs included).
 *   - the browser: the return URL stays server-side with the request id; a RelayState that comes
 *     back different from what we sent must be on the exact-match allow-list or the response is
 *     refused; we never redirect to it. The ACS does not sign in by itself: it 303s to /complete,
 *     a top-level GET that carries the SameSite=Lax flow cookie, and the sign-in completes only in
 *     the browser whose cookie started it (no login CSRF with somebody else's valid response).
 *     IdP-initiated (unsolicited) responses are refused: there is no request to answer.
 *   - single logout uses node-saml's SAML class directly, not the Strategy: the Strategy's logout
 *     path expects a passport login session (req.user, req.logout), which Parley does not have;
 *     our sessions are ended by ctx.endSessions(). LogoutRequests and LogoutResponses must be
 *     signed (node-saml would accept an unsigned Redirect-binding message).
 * Encrypted assertions are not supported (no decryption key is configured); the IdP must send them
 * signed in the clear over TLS. Only persistent NameIDs are accepted (allowMutableNameId lets an
 * e-mail or unspecified one through, for an IdP that never reassigns them). Transient NameIDs are refused: a sign-in binds issuer + NameID to
 * one account, which a NameID that changes at every sign-in cannot do.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { inflateRawSync } from 'node:zlib';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import passport from 'passport';
import { SAML, Strategy as SamlStrategy, ValidateInResponseTo, type CacheProvider, type PassportSamlConfig, type Profile } from '@node-saml/passport-saml';
// node-saml's own signature check (the one it runs on every response), to re-obtain the signed
// bytes this file reads (@node-saml/node-saml is the library under @node-saml/passport-saml).
import { getVerifiedXml, parseDomFromString } from '@node-saml/node-saml/lib/xml.js';
import type { Element } from 'ltx';
import type { SamlProviderConfig } from '../../core/config.js';
import { parseElement } from '../../xmpp/parser.js';
import type { ProviderFactory, SsoContext, SsoIdentity, SsoProvider, WebSessionRecord } from './types.js';

const NS_P = 'urn:oasis:names:tc:SAML:2.0:protocol';
const NS_A = 'urn:oasis:names:tc:SAML:2.0:assertion';
const NS_MD = 'urn:oasis:names:tc:SAML:2.0:metadata';
const NS_DS = 'http://www.w3.org/2000/09/xmldsig#';
const BINDING_POST = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST';
const BINDING_REDIRECT = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
const STATUS_SUCCESS = 'urn:oasis:names:tc:SAML:2.0:status:Success';
const CM_BEARER = 'urn:oasis:names:tc:SAML:2.0:cm:bearer';
const NAMEID_TRANSIENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:transient';
const NAMEID_PERSISTENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent';
const NAMEID_UNSPECIFIED = 'urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified';
/** SAML Bindings §3.4.3/§3.5.3: RelayState MUST NOT exceed 80 bytes. */
const RELAY_STATE_MAX = 80;
const REDIRECT_PARAMS = new Set(['SAMLRequest', 'SAMLResponse', 'RelayState', 'SigAlg', 'Signature']);
/** How long a verified sign-in waits for its browser at /complete. */
const COMPLETE_TTL_MS = 120_000;
const MAX_ATTRIBUTES = 256;
const MAX_VALUE_CHARS = 4096;

/** Thrown by the checks below; becomes ctx.fail(status, reason, details). */
class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(reason);
  }
}

interface FlowRecord {
  returnTo: string;
  binding: string;
  /** When the AuthnRequest was made (ms). */
  at: number;
  /** The RelayState sent with it ('' when none). */
  relayState: string;
}

interface CompletedRecord {
  identity: SsoIdentity;
  returnTo: string;
  binding: string;
}

/** PEM text or a file of PEM text -> each CERTIFICATE block as a normalized PEM string. */
export function loadCertificates(values: readonly string[], what: string): string[] {
  const out: string[] = [];
  for (const v of values) {
    const text = v.includes('-----BEGIN') ? v : readPemFile(v, what);
    const blocks = [...text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)];
    if (!blocks.length) throw new Error(`${what}: no PEM certificate in ${v.includes('-----BEGIN') ? 'the configured text' : v}`);
    for (const b of blocks) {
      const body = (b[1] ?? '').replace(/\s+/g, '');
      out.push(`-----BEGIN CERTIFICATE-----\n${body.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END CERTIFICATE-----\n`);
    }
  }
  return out;
}

function readPemFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${what}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function firstString(v: unknown): string | undefined {
  const x = Array.isArray(v) ? v[0] : v;
  return typeof x === 'string' ? x : undefined;
}

/** The ID attribute of the root element of a deflated, base64 SAML message we generated. */
function messageIdFromUrl(url: string, param: 'SAMLRequest'): string {
  const b64 = new URL(url).searchParams.get(param);
  if (!b64) throw new Error(`no ${param} in the generated URL`);
  const xml = inflateRawSync(Buffer.from(b64, 'base64')).toString('utf8');
  const root = parseElement(xml);
  const id = root.attrs.ID;
  if (!id) throw new Error(`generated ${param} has no ID`);
  return id;
}

function child(el: Element, name: string, ns: string): Element | undefined {
  return el.getChild(name, ns);
}

function parseInstant(v: string | undefined): number | null {
  if (!v) return null;
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : null;
}

/** SAML attributes (string values only) plus the NameID, as identity claims. */
function claimsFrom(attributes: unknown, nameID: string): Record<string, string | string[]> {
  const entries: [string, string | string[]][] = [];
  if (attributes && typeof attributes === 'object') {
    for (const [name, raw] of Object.entries(attributes as Record<string, unknown>).slice(0, MAX_ATTRIBUTES)) {
      if (name === 'nameID') continue;
      const vals = (Array.isArray(raw) ? raw : [raw]).filter((x): x is string => typeof x === 'string').map((x) => x.slice(0, MAX_VALUE_CHARS));
      if (!vals.length) continue;
      entries.push([name, vals.length === 1 ? (vals[0] as string) : vals]);
    }
  }
  entries.push(['nameID', nameID]);
  // fromEntries defines own properties: an attribute named __proto__ stays data.
  return Object.fromEntries(entries);
}

/** node-saml's CacheProvider over the shared SsoCache (InResponseTo across processes). */
function cacheAdapter(ctx: SsoContext, prefix: string, ttlMs: number): CacheProvider {
  return {
    async saveAsync(key, value) {
      const stored = await ctx.cache.add(prefix + key, value, ttlMs);
      return stored ? { value, createdAt: Date.now() } : null;
    },
    getAsync: (key) => ctx.cache.get(prefix + key),
    async removeAsync(key) {
      return key ? ctx.cache.take(prefix + key) : null;
    },
  };
}

export const createSamlProvider: ProviderFactory = (anyConfig, ctx): SsoProvider => {
  if (anyConfig.type !== 'saml') throw new Error(`sso provider ${anyConfig.name}: not a saml provider`);
  const config: SamlProviderConfig = anyConfig;
  const name = config.name;
  const what = `sso.providers ${name}`;
  const log = ctx.log.child({ sso: name, protocol: 'saml' });
  const base = `${ctx.baseUrl}/sso/saml/${name}`;
  const acsUrl = `${base}/acs`;
  const sloUrl = `${base}/slo`;
  const entityId = config.spEntityId ?? `${base}/metadata`;
  const skewMs = config.clockSkewSeconds * 1000;
  const ttlMs = config.requestTtlSeconds * 1000;
  const idpCerts = loadCertificates(config.idpCerts, `${what}: idpCerts`);
  const spKey = config.spKey ? (config.spKey.includes('-----BEGIN') ? config.spKey : readPemFile(config.spKey, `${what}: spKey`)) : undefined;
  const spCert = config.spCert ? loadCertificates([config.spCert], `${what}: spCert`)[0] : undefined;
  if (!!spKey !== !!spCert) throw new Error(`${what}: spKey and spCert go together`);
  const keys = {
    flow: (id: string) => `saml-flow:${name}:${id}`,
    done: (h: string) => `saml-done:${name}:${h}`,
    seen: (issuer: string, id: string) => `saml-seen:${name}:${issuer}:${id}`,
    slo: (id: string) => `saml-slo:${name}:${id}`,
    logoutSeen: (id: string) => `saml-lr:${name}:${id}`,
  };
  const strategyName = `saml-${name}`;

  const samlOptions: PassportSamlConfig = {
    name: strategyName,
    passReqToCallback: true,
    entryPoint: config.entryPoint,
    // node-saml falls back to the entry point when this is empty; logoutUrl() returns null first.
    logoutUrl: config.logoutUrl ?? config.entryPoint,
    issuer: entityId,
    callbackUrl: acsUrl,
    logoutCallbackUrl: sloUrl,
    audience: entityId,
    idpIssuer: config.idpIssuer,
    // Every configured certificate is trusted (rotation: old and new during the overlap).
    idpCert: idpCerts,
    wantAuthnResponseSigned: true,
    wantAssertionsSigned: true,
    validateInResponseTo: ValidateInResponseTo.always,
    requestIdExpirationPeriodMs: ttlMs,
    acceptedClockSkewMs: skewMs,
    // An assertion older than a request may live is stale whatever its NotOnOrAfter says.
    maxAssertionAgeMs: ttlMs,
    cacheProvider: cacheAdapter(ctx, `saml-req:${name}:`, ttlMs),
    // Let the IdP pick the NameID format and the authentication method: asking for ones it does
    // not support makes it answer with an error status.
    identifierFormat: null,
    disableRequestedAuthnContext: true,
    signatureAlgorithm: 'sha256',
    ...(spKey && spCert ? { privateKey: spKey, publicCert: spCert } : {}),
  };
  // The ACS goes through passport and the Strategy; requests, metadata and single logout use the
  // same options on node-saml's SAML class (see the banner).
  const saml = new SAML(samlOptions);
  const authenticator = new passport.Passport();
  const strategy = new SamlStrategy(
    samlOptions,
    (_req, profile, done) => done(null, (profile ?? undefined) as Record<string, unknown> | undefined),
    (_req, _profile, done) => done(new Error('single logout does not go through the strategy')),
  );
  // passport-saml is typed against its own copy of @types/passport (express 4): same runtime API.
  authenticator.use(strategyName, strategy as unknown as passport.Strategy);

  const bodyParser = express.urlencoded({ extended: false, limit: config.maxBodyBytes, parameterLimit: 16 });

  /** The urlencoded body with the configured limit; 413 above it. */
  function parseBody(req: Request, res: Response, next: NextFunction): void {
    bodyParser(req, res, (err?: unknown) => {
      if (!err) return next();
      const e = err as { type?: string; status?: number };
      if (e.type === 'entity.too.large' || e.status === 413) {
        ctx.fail(req, res, 413, 'SAML message larger than maxBodyBytes', { limit: config.maxBodyBytes, length: req.headers['content-length'] });
      } else {
        ctx.fail(req, res, 400, 'unreadable SAML POST body', { error: (err as Error).message });
      }
    });
  }

  /** Decoded XML of a base64 (POST) or deflated+base64 (Redirect) message, hardened-parsed. */
  function decode(b64: unknown, deflated: boolean): { xml: string; root: Element } {
    if (typeof b64 !== 'string' || !b64 || !/^[A-Za-z0-9+/=\s]+$/.test(b64)) throw new Refusal(400, 'missing or malformed SAML message');
    let bytes = Buffer.from(b64, 'base64');
    if (deflated) {
      try {
        bytes = inflateRawSync(bytes, { maxOutputLength: config.maxBodyBytes });
      } catch (err) {
        throw new Refusal(400, 'SAML message does not inflate (or inflates beyond maxBodyBytes)', { error: (err as Error).message });
      }
    }
    let root: Element;
    try {
      root = parseElement(bytes, { maxStanzaBytes: config.maxBodyBytes, maxDepth: 32, maxAttributes: 64 });
    } catch (err) {
      throw new Refusal(400, 'SAML message is not well-formed restricted XML', { error: (err as Error).message });
    }
    return { xml: bytes.toString('utf8'), root };
  }

  /** The element the root's enveloped signature covers, parsed from the signed bytes only. */
  async function signedRoot(xml: string): Promise<Element> {
    let verified: string | null;
    try {
      const dom = await parseDomFromString(xml);
      verified = getVerifiedXml(xml, dom.documentElement, idpCerts);
    } catch (err) {
      throw new Refusal(403, 'SAML message signature is invalid', { error: (err as Error).message });
    }
    if (!verified) throw new Refusal(403, 'SAML message is not signed by a configured IdP certificate');
    try {
      return parseElement(verified, { maxStanzaBytes: config.maxBodyBytes, maxDepth: 32, maxAttributes: 64 });
    } catch (err) {
      throw new Refusal(400, 'signed SAML content is not well-formed restricted XML', { error: (err as Error).message });
    }
  }

  function checkIssuer(el: Element, required: boolean, where: string): void {
    const issuer = el.getChildText('Issuer', NS_A)?.trim();
    if (issuer == null) {
      if (required) throw new Refusal(403, `SAML ${where} has no Issuer`);
      return;
    }
    if (issuer !== config.idpIssuer) throw new Refusal(403, `SAML ${where} Issuer is not the configured IdP`, { issuer });
  }

  function statusOf(el: Element): string | undefined {
    return child(el, 'Status', NS_P)?.getChild('StatusCode', NS_P)?.attrs.Value;
  }

  /** Runs the Strategy on the POSTed response; resolves node-saml's profile or throws Refusal. */
  function runStrategy(req: Request, res: Response): Promise<Profile> {
    return new Promise((resolve, reject) => {
      const handler = authenticator.authenticate(strategyName, { session: false }, (err: unknown, user: unknown, info: unknown) => {
        if (err) return reject(new Refusal(403, 'SAML response rejected', { error: (err as Error).message ?? String(err) }));
        if (!user) return reject(new Refusal(403, 'SAML response rejected', { error: typeof info === 'string' ? info : 'no profile' }));
        resolve(user as Profile);
      });
      handler(req, res, (err?: unknown) => reject(err ?? new Refusal(400, 'SAML strategy passed the request on')));
    });
  }

  async function acs(req: Request, res: Response): Promise<void> {
    // The Strategy looks at the query string first (Redirect-binding logout messages): an ACS
    // request carries its message in the body only.
    if (Object.keys(req.query as Record<string, unknown>).length) throw new Refusal(400, 'unexpected query parameters on the assertion consumer');
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (body.SAMLRequest !== undefined) throw new Refusal(400, 'a SAMLRequest was posted to the assertion consumer');
    const { xml, root } = decode(body.SAMLResponse, false);
    if (!root.is('Response', NS_P)) throw new Refusal(400, 'the posted SAML message is not a Response');
    const relayState = body.RelayState;
    if (relayState !== undefined && typeof relayState !== 'string') throw new Refusal(400, 'malformed RelayState');

    const profile = await runStrategy(req, res);

    // From here on, only the bytes the Response signature covers are read.
    const resp = await signedRoot(xml);
    if (!resp.is('Response', NS_P)) throw new Refusal(403, 'the signed element is not the Response');
    const destination = resp.attrs.Destination;
    if (destination !== acsUrl) throw new Refusal(403, 'SAML response Destination is not our assertion consumer URL', { destination: destination ?? null, expected: acsUrl });
    const status = statusOf(resp);
    if (status !== STATUS_SUCCESS) throw new Refusal(403, 'SAML response status is not Success', { status: status ?? null });
    checkIssuer(resp, false, 'response');
    const inResponseTo = resp.attrs.InResponseTo;
    if (!inResponseTo) throw new Refusal(403, 'SAML response has no InResponseTo (unsolicited responses are refused)');
    const assertions = resp.getChildren('Assertion', NS_A);
    const assertion = assertions[0];
    if (assertions.length !== 1 || !assertion) throw new Refusal(403, 'the signed SAML response does not hold exactly one assertion');
    checkIssuer(assertion, true, 'assertion');
    const assertionId = assertion.attrs.ID;
    if (!assertionId) throw new Refusal(403, 'SAML assertion has no ID');

    const now = Date.now();
    const subject = child(assertion, 'Subject', NS_A);
    const nameIdEl = subject && child(subject, 'NameID', NS_A);
    const nameID = nameIdEl?.getText().trim();
    if (!nameIdEl || !nameID) throw new Refusal(403, 'SAML assertion has no NameID');
    const nameIDFormat = nameIdEl.attrs.Format ?? NAMEID_UNSPECIFIED;
    if (nameIDFormat === NAMEID_TRANSIENT) {
      throw new Refusal(403, 'SAML assertion has a transient NameID, which cannot be bound to an account: configure the IdP to send a persistent NameID');
    }
    // The NameID is what an account is bound to: an e-mail address or a user name can be given to
    // somebody else later (a leaver's address reissued to a new hire), who would then sign in to the
    // leaver's account. Only a persistent NameID is accepted, unless the administrator vouches that
    // this IdP never reassigns its NameIDs (allowMutableNameId).
    if (nameIDFormat !== NAMEID_PERSISTENT && !config.allowMutableNameId) {
      throw new Refusal(403, 'SAML assertion NameID is not persistent: configure the IdP to send a persistent NameID, or set allowMutableNameId if its NameIDs are never reassigned', { nameIDFormat });
    }
    if (profile.nameID?.trim() !== nameID) throw new Refusal(403, 'SAML NameID differs between the strategy and the signed bytes');
    // SAML Profiles §4.1.4.2: a bearer confirmation for our ACS, answering our request, unexpired.
    let confirmedUntil: number | null = null;
    for (const sc of subject?.getChildren('SubjectConfirmation', NS_A) ?? []) {
      if (sc.attrs.Method !== CM_BEARER) continue;
      const data = child(sc, 'SubjectConfirmationData', NS_A);
      const until = parseInstant(data?.attrs.NotOnOrAfter);
      if (!data || data.attrs.Recipient !== acsUrl || data.attrs.InResponseTo !== inResponseTo || until === null || now - skewMs >= until) continue;
      const notBefore = parseInstant(data.attrs.NotBefore);
      if (notBefore !== null && now + skewMs < notBefore) continue;
      confirmedUntil = until;
      break;
    }
    if (confirmedUntil === null) {
      throw new Refusal(403, 'SAML assertion has no bearer SubjectConfirmation for our assertion consumer URL and this request', { expected: acsUrl });
    }
    const conditionsUntil = parseInstant(child(assertion, 'Conditions', NS_A)?.attrs.NotOnOrAfter);
    const expires = Math.min(confirmedUntil, conditionsUntil ?? confirmedUntil);
    const issued = parseInstant(assertion.attrs.IssueInstant);

    // The request: used once (node-saml removed its id; this take is atomic across processes).
    const flowRaw = await ctx.cache.take(keys.flow(inResponseTo));
    if (!flowRaw) throw new Refusal(403, 'SAML response answers no pending request of this server (used, expired or unknown)', { inResponseTo });
    const flow = JSON.parse(flowRaw) as FlowRecord;
    if (issued === null || issued < flow.at - skewMs || issued > now + skewMs) {
      throw new Refusal(403, 'SAML assertion IssueInstant is outside the request lifetime', { issueInstant: assertion.attrs.IssueInstant ?? null });
    }
    if (relayState !== undefined && relayState !== flow.relayState && relayState !== flow.returnTo && !ctx.returnAllowed(relayState)) {
      throw new Refusal(400, 'SAML RelayState is not an allowed return URL', { relayState: relayState.slice(0, 200) });
    }
    // Replay cache: an assertion is accepted once, until it expires (plus the skew).
    const fresh = await ctx.cache.add(keys.seen(config.idpIssuer, assertionId), String(now), Math.max(1000, expires - now + skewMs));
    if (!fresh) throw new Refusal(403, 'SAML assertion was already used (replay)', { assertionId });

    const sessionIndex = child(assertion, 'AuthnStatement', NS_A)?.attrs.SessionIndex;
    const logout: Record<string, string> = { nameID, nameIDFormat };
    if (sessionIndex) logout.sessionIndex = sessionIndex;
    if (nameIdEl.attrs.NameQualifier) logout.nameQualifier = nameIdEl.attrs.NameQualifier;
    if (nameIdEl.attrs.SPNameQualifier) logout.spNameQualifier = nameIdEl.attrs.SPNameQualifier;
    const identity: SsoIdentity = {
      provider: name,
      issuer: config.idpIssuer,
      subject: nameID,
      claims: claimsFrom(profile.attributes, nameID),
      logout,
    };
    const handle = randomBytes(32).toString('base64url');
    const rec: CompletedRecord = { identity, returnTo: flow.returnTo, binding: flow.binding };
    await ctx.cache.add(keys.done(handle), JSON.stringify(rec), COMPLETE_TTL_MS);
    log.info({ assertionId, sessionIndex: sessionIndex ?? null }, 'saml assertion accepted');
    res.set('Cache-Control', 'no-store');
    res.redirect(303, `${base}/complete?h=${handle}`);
  }

  async function complete(req: Request, res: Response): Promise<void> {
    const h = firstString(req.query.h);
    if (!h || !/^[A-Za-z0-9_-]{43}$/.test(h)) throw new Refusal(400, 'missing sign-in handle');
    const raw = await ctx.cache.take(keys.done(h));
    if (!raw) throw new Refusal(400, 'unknown, used or expired SAML sign-in');
    const rec = JSON.parse(raw) as CompletedRecord;
    const binding = ctx.flowBinding(req);
    if (!binding || binding !== rec.binding) {
      throw new Refusal(403, 'SAML sign-in completed in a browser that did not start it (flow cookie missing or different)');
    }
    await ctx.complete(req, res, rec.identity, rec.returnTo);
  }

  /** A LogoutRequest from the IdP (already signature-checked): end our sessions, answer it. */
  async function idpLogoutRequest(req: Request, res: Response, signed: Element, relayState: string | undefined): Promise<void> {
    if (!signed.is('LogoutRequest', NS_P)) throw new Refusal(400, 'not a LogoutRequest');
    checkIssuer(signed, true, 'LogoutRequest');
    const id = signed.attrs.ID;
    if (!id) throw new Refusal(400, 'LogoutRequest has no ID');
    const destination = signed.attrs.Destination;
    if (destination !== undefined && destination !== sloUrl) throw new Refusal(403, 'LogoutRequest Destination is not our single logout URL', { destination });
    const nameID = signed.getChildText('NameID', NS_A)?.trim();
    if (!nameID) throw new Refusal(400, 'LogoutRequest has no NameID (encrypted NameIDs are not supported)');
    // A captured request must not end sessions again once its replay-cache entry has aged out.
    const issued = parseInstant(signed.attrs.IssueInstant);
    // (The replay entry below outlives this window: ttl + 2 × skew.)
    if (issued === null || issued < Date.now() - ttlMs || issued > Date.now() + skewMs) {
      throw new Refusal(403, 'LogoutRequest IssueInstant is missing or outside the accepted window', { issueInstant: signed.attrs.IssueInstant ?? null });
    }
    const sessionIndex = signed.getChildText('SessionIndex', NS_P)?.trim() || undefined;
    if (!(await ctx.cache.add(keys.logoutSeen(id), '1', ttlMs + 2 * skewMs))) throw new Refusal(403, 'LogoutRequest was already processed (replay)', { id });
    const ended = await ctx.endSessions({ provider: name, subject: nameID, ...(sessionIndex ? { sessionIndex } : {}) });
    log.info({ ended, sessionIndex: sessionIndex ?? null }, 'saml single logout requested by the IdP');
    res.set('Cache-Control', 'no-store');
    if (!config.logoutUrl) {
      res.status(200).type('text/plain').send('Signed out.');
      return;
    }
    const url = await saml.getLogoutResponseUrlAsync({ ID: id, issuer: config.idpIssuer, nameID, nameIDFormat: NAMEID_UNSPECIFIED } as Profile, relayState ?? '', {}, true);
    res.redirect(303, url);
  }

  /** A LogoutResponse from the IdP (already signature-checked): back to where logout began. */
  async function idpLogoutResponse(_req: Request, res: Response, signed: Element, relayState: string | undefined): Promise<void> {
    if (!signed.is('LogoutResponse', NS_P)) throw new Refusal(400, 'not a LogoutResponse');
    checkIssuer(signed, true, 'LogoutResponse');
    const destination = signed.attrs.Destination;
    if (destination !== undefined && destination !== sloUrl) throw new Refusal(403, 'LogoutResponse Destination is not our single logout URL', { destination });
    const status = statusOf(signed);
    if (status !== STATUS_SUCCESS) log.warn({ status: status ?? null }, 'the IdP reports that single logout failed');
    const inResponseTo = signed.attrs.InResponseTo;
    const stored = inResponseTo ? await ctx.cache.take(keys.slo(inResponseTo)) : null;
    // Parley's own session ended before the browser went to the IdP; this only picks the page.
    let target = stored;
    if (!target && relayState && ctx.returnAllowed(relayState)) target = relayState;
    res.set('Cache-Control', 'no-store');
    res.redirect(303, target ?? `${ctx.baseUrl}/`);
  }

  async function slo(req: Request, res: Response): Promise<void> {
    const q = req.query as Record<string, unknown>;
    const body = (req.method === 'POST' ? (req.body ?? {}) : {}) as Record<string, unknown>;
    if (q.SAMLRequest !== undefined || q.SAMLResponse !== undefined) {
      // HTTP-Redirect binding: the signature is over the query string (Bindings §3.4.4.1).
      const kind = q.SAMLRequest !== undefined ? 'SAMLRequest' : 'SAMLResponse';
      if (typeof q.Signature !== 'string' || typeof q.SigAlg !== 'string') throw new Refusal(403, `unsigned ${kind} on the single logout endpoint`);
      const { root } = decode(q[kind], true);
      const rawQuery = req.originalUrl.slice(req.originalUrl.indexOf('?') + 1);
      // node-saml rebuilds the signed string by searching the raw query for these names: each
      // must occur once, spelled literally, so the bytes it verifies are the bytes we decode.
      const names = rawQuery.split('&').map((t) => (t.includes('=') ? t.slice(0, t.indexOf('=')) : t));
      if (new Set(names).size !== names.length || names.some((n) => !REDIRECT_PARAMS.has(n))) {
        throw new Refusal(400, 'unexpected or repeated query parameters on the single logout endpoint');
      }
      try {
        await saml.validateRedirectAsync(req.query as Record<string, string>, rawQuery);
      } catch (err) {
        throw new Refusal(403, `${kind} on the single logout endpoint rejected`, { error: (err as Error).message });
      }
      const relayState = firstString(q.RelayState);
      // The query signature covers the whole deflated message: `root` is signed bytes.
      if (kind === 'SAMLRequest') await idpLogoutRequest(req, res, root, relayState);
      else await idpLogoutResponse(req, res, root, relayState);
      return;
    }
    if (body.SAMLRequest !== undefined || body.SAMLResponse !== undefined) {
      // HTTP-POST binding: an enveloped signature on the message element.
      const kind = body.SAMLRequest !== undefined ? 'SAMLRequest' : 'SAMLResponse';
      const { xml } = decode(body[kind], false);
      const signed = await signedRoot(xml);
      const relayState = typeof body.RelayState === 'string' ? body.RelayState : undefined;
      if (kind === 'SAMLRequest') {
        try {
          await saml.validatePostRequestAsync({ SAMLRequest: body.SAMLRequest as string });
        } catch (err) {
          throw new Refusal(403, 'SAMLRequest on the single logout endpoint rejected', { error: (err as Error).message });
        }
        await idpLogoutRequest(req, res, signed, relayState);
      } else {
        await idpLogoutResponse(req, res, signed, relayState);
      }
      return;
    }
    throw new Refusal(400, 'no SAML message on the single logout endpoint');
  }

  function metadata(): string {
    const keyDescriptor = spCert
      ? `<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>${spCert.replace(/-----[A-Z ]+-----|\s+/g, '')}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>`
      : '';
    return (
      `<?xml version="1.0" encoding="UTF-8"?>\n` +
      `<md:EntityDescriptor xmlns:md="${NS_MD}" xmlns:ds="${NS_DS}" entityID="${escapeAttr(entityId)}">` +
      `<md:SPSSODescriptor protocolSupportEnumeration="${NS_P}" AuthnRequestsSigned="${spKey ? 'true' : 'false'}" WantAssertionsSigned="true">` +
      keyDescriptor +
      `<md:SingleLogoutService Binding="${BINDING_REDIRECT}" Location="${escapeAttr(sloUrl)}"/>` +
      `<md:SingleLogoutService Binding="${BINDING_POST}" Location="${escapeAttr(sloUrl)}"/>` +
      `<md:AssertionConsumerService index="0" isDefault="true" Binding="${BINDING_POST}" Location="${escapeAttr(acsUrl)}"/>` +
      `</md:SPSSODescriptor></md:EntityDescriptor>\n`
    );
  }

  /** Express handler that turns a Refusal (or any error) into ctx.fail. */
  const guard =
    (fn: (req: Request, res: Response) => Promise<void>) =>
    (req: Request, res: Response): void => {
      fn(req, res).catch((err: unknown) => {
        if (res.headersSent) {
          log.error({ err }, 'saml handler failed after answering');
          return;
        }
        if (err instanceof Refusal) ctx.fail(req, res, err.status, err.reason, err.details);
        else ctx.fail(req, res, 500, 'SAML handler failed', { error: (err as Error)?.message ?? String(err) });
      });
    };

  return {
    name,
    type: 'saml',
    host: config.host,
    label: config.label ?? name,

    async begin(_req, res, flow) {
      const relayState = Buffer.byteLength(flow.returnTo) <= RELAY_STATE_MAX ? flow.returnTo : '';
      const url = await saml.getAuthorizeUrlAsync(relayState, undefined, {});
      const id = messageIdFromUrl(url, 'SAMLRequest');
      const rec: FlowRecord = { returnTo: flow.returnTo, binding: flow.binding, at: Date.now(), relayState };
      await ctx.cache.add(keys.flow(id), JSON.stringify(rec), ttlMs);
      res.set('Cache-Control', 'no-store');
      res.redirect(303, url);
    },

    routes(router: Router) {
      router.get('/metadata', (_req, res) => {
        res.set('Cache-Control', 'no-cache').type('application/samlmetadata+xml').send(metadata());
      });
      router.post('/acs', parseBody, guard(acs));
      router.get('/complete', guard(complete));
      router.get('/slo', guard(slo));
      router.post('/slo', parseBody, guard(slo));
    },

    async logoutUrl(session: WebSessionRecord, returnTo: string) {
      const data = session.logout;
      if (!config.logoutUrl || !data?.nameID) return null;
      const user = {
        issuer: config.idpIssuer,
        nameID: data.nameID,
        nameIDFormat: data.nameIDFormat ?? NAMEID_UNSPECIFIED,
        ...(data.sessionIndex ? { sessionIndex: data.sessionIndex } : {}),
        ...(data.nameQualifier ? { nameQualifier: data.nameQualifier } : {}),
        ...(data.spNameQualifier ? { spNameQualifier: data.spNameQualifier } : {}),
      } as Profile;
      const relayState = Buffer.byteLength(returnTo) <= RELAY_STATE_MAX ? returnTo : '';
      const url = await saml.getLogoutUrlAsync(user, relayState, {});
      await ctx.cache.add(keys.slo(messageIdFromUrl(url, 'SAMLRequest')), returnTo, ttlMs);
      return url;
    },
  };
};
