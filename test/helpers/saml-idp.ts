// A real SAML 2.0 identity provider on a loopback port for the SSO tests (issue 9), built with
// samlify's IdentityProvider: it reads Parley's SP metadata, takes AuthnRequests over the
// HTTP-Redirect binding, shows a login form for a fixed in-memory user list, and answers with a
// signed Response holding a signed assertion through an auto-submitting HTML form (HTTP-POST);
// it does single logout in both directions over HTTP-Redirect with signed messages. Its key pairs
// are generated at test time (selfsigned); no key file is in the repository.
//
// It also exports what the negative tests need to forge responses the way an attacker (or a broken
// IdP) would: a Response builder, an xml-crypto signer with any key, and the classic signature-
// wrapping rearrangements of a legitimately signed Response.
import { randomBytes, sign } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import express from 'express';
import { DOMParser } from '@xmldom/xmldom';
import samlify from 'samlify';
import { generate } from 'selfsigned';
import { SignedXml } from 'xml-crypto';

export const NAMEID_PERSISTENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent';
export const NAMEID_TRANSIENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:transient';
const REDIRECT = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
const RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';

// samlify insists on a schema validator. This one is the TEST IdP's, not Parley's: it only checks
// that a message is well-formed XML without a DOCTYPE (Parley checks what it receives itself).
let validatorSet = false;
function setTestValidator(): void {
  if (validatorSet) return;
  validatorSet = true;
  samlify.setSchemaValidator({
    validate: async (xml: string) => {
      if (/<!DOCTYPE/i.test(xml)) throw new Error('DOCTYPE not allowed');
      const errors: string[] = [];
      const doc = new DOMParser({ onError: (level, msg) => void (level !== 'warning' && errors.push(msg)) }).parseFromString(xml, 'text/xml');
      if (errors.length || !doc.documentElement) throw new Error(`not well-formed: ${errors.join('; ')}`);
      return 'ok';
    },
  });
}

export interface KeyPair {
  key: string;
  cert: string;
}

/** An RSA key and a self-signed certificate for XML signatures. */
export async function makeKeyPair(cn: string): Promise<KeyPair> {
  const now = Date.now();
  const r = await generate([{ name: 'commonName', value: cn }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 3600_000),
    notAfterDate: new Date(now + 30 * 86400_000),
  });
  return { key: r.private, cert: r.cert };
}

export interface IdpUser {
  username: string;
  password: string;
  /** The persistent NameID (an opaque id, as real IdPs send). */
  nameID: string;
  /** Attributes released: uid, displayName, groups. */
  uid: string;
  displayName: string;
  groups: string[];
}

/** Where Parley said its endpoints are (from its SP metadata). */
export interface SpInfo {
  entityId: string;
  acsUrl: string;
  sloUrl: string;
}

export interface ResponseOptions {
  /** The IdP's entity ID by default. */
  issuer?: string;
  /** The Response's Issuer (default: `issuer`); null leaves it out. */
  responseIssuer?: string | null;
  responseId?: string;
  assertionId?: string;
  /** null leaves the attribute out (an unsolicited response). */
  inResponseTo?: string | null;
  destination?: string | null;
  audience?: string;
  recipient?: string;
  nameID: string;
  nameIDFormat?: string;
  sessionIndex?: string;
  attributes?: Record<string, string | string[]>;
  /** Default: now. */
  issueInstant?: Date;
  notBefore?: Date;
  notOnOrAfter?: Date;
  status?: string;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function newId(): string {
  return `_${randomBytes(20).toString('hex')}`;
}

/** The assertion alone (unsigned). */
export function buildAssertion(o: ResponseOptions & { issuer: string; audience: string; recipient: string }): string {
  const now = o.issueInstant ?? new Date();
  const notBefore = o.notBefore ?? new Date(now.getTime() - 1000);
  const notOnOrAfter = o.notOnOrAfter ?? new Date(now.getTime() + 5 * 60_000);
  const irt = o.inResponseTo ? ` InResponseTo="${esc(o.inResponseTo)}"` : '';
  const attrs = Object.entries(o.attributes ?? {})
    .map(([name, v]) => {
      const vals = (Array.isArray(v) ? v : [v]).map((x) => `<saml:AttributeValue xsi:type="xs:string">${esc(x)}</saml:AttributeValue>`).join('');
      return `<saml:Attribute Name="${esc(name)}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">${vals}</saml:Attribute>`;
    })
    .join('');
  return (
    `<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="${esc(o.assertionId ?? newId())}" Version="2.0" IssueInstant="${now.toISOString()}">` +
    `<saml:Issuer>${esc(o.issuer)}</saml:Issuer>` +
    `<saml:Subject><saml:NameID Format="${esc(o.nameIDFormat ?? NAMEID_PERSISTENT)}">${esc(o.nameID)}</saml:NameID>` +
    `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="${notOnOrAfter.toISOString()}" Recipient="${esc(o.recipient)}"${irt}/></saml:SubjectConfirmation></saml:Subject>` +
    `<saml:Conditions NotBefore="${notBefore.toISOString()}" NotOnOrAfter="${notOnOrAfter.toISOString()}"><saml:AudienceRestriction><saml:Audience>${esc(o.audience)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
    `<saml:AuthnStatement AuthnInstant="${now.toISOString()}" SessionIndex="${esc(o.sessionIndex ?? newId())}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
    (attrs ? `<saml:AttributeStatement>${attrs}</saml:AttributeStatement>` : '') +
    `</saml:Assertion>`
  );
}

/** A whole Response around one assertion (or the given assertion XML), unsigned. */
export function buildResponse(o: ResponseOptions & { issuer: string; audience: string; recipient: string; destination: string | null }, assertionXml?: string): string {
  const now = o.issueInstant ?? new Date();
  const irt = o.inResponseTo ? ` InResponseTo="${esc(o.inResponseTo)}"` : '';
  const dest = o.destination ? ` Destination="${esc(o.destination)}"` : '';
  const respIssuer = o.responseIssuer === null ? '' : `<saml:Issuer>${esc(o.responseIssuer ?? o.issuer)}</saml:Issuer>`;
  return (
    `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${esc(o.responseId ?? newId())}" Version="2.0" IssueInstant="${now.toISOString()}"${dest}${irt}>` +
    respIssuer +
    `<samlp:Status><samlp:StatusCode Value="${esc(o.status ?? 'urn:oasis:names:tc:SAML:2.0:status:Success')}"/></samlp:Status>` +
    (assertionXml ?? buildAssertion(o)) +
    `</samlp:Response>`
  );
}

const SIG_TARGET = {
  response: "/*[local-name(.)='Response']",
  assertion: "/*[local-name(.)='Response']/*[local-name(.)='Assertion']",
  /** Any root element (a LogoutRequest for the HTTP-POST binding). */
  root: '/*',
} as const;

/**
 * Adds an enveloped XML signature (RSA-SHA256, exclusive C14N) to the Response, to its assertion,
 * or to whatever the root is, placed after the element's Issuer (SAML Core §5.4), with `key`.
 */
export function signXml(xml: string, what: keyof typeof SIG_TARGET, key: KeyPair): string {
  const xpath = SIG_TARGET[what];
  const sig = new SignedXml({ privateKey: key.key, publicCert: key.cert, signatureAlgorithm: RSA_SHA256, canonicalizationAlgorithm: 'http://www.w3.org/2001/10/xml-exc-c14n#' });
  sig.addReference({
    xpath,
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
    transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
  });
  // After the Issuer (SAML Core §5.4.1), or first when the element has none.
  const hasIssuer = what === 'assertion' || /^(?:<\?xml[^>]*\?>\s*)?<samlp:[A-Za-z]+[^>]*><saml:Issuer>/.test(xml);
  const location = hasIssuer ? { reference: `${xpath}/*[local-name(.)='Issuer']`, action: 'after' as const } : { reference: xpath, action: 'prepend' as const };
  sig.computeSignature(xml, { prefix: 'ds', location });
  return sig.getSignedXml();
}

/** Assertion signed, then Response signed: what a correct IdP sends. */
export function signBoth(xml: string, key: KeyPair): string {
  return signXml(signXml(xml, 'assertion', key), 'response', key);
}

/** The first ds:Signature element of a document (the Response's own, as signXml places it). */
function firstSignature(xml: string): string {
  const m = xml.match(/<ds:Signature[\s\S]*?<\/ds:Signature>/);
  if (!m) throw new Error('no signature');
  return m[0];
}

function stripDeclaration(xml: string): string {
  return xml.replace(/^<\?xml[^>]*\?>\s*/, '');
}

/** `xml` without its first ds:Signature (the Response's own, where signXml puts it). */
function withoutFirstSignature(xml: string): string {
  return xml.replace(firstSignature(xml), '');
}

/**
 * Signature wrapping (Somorovsky et al., "On Breaking SAML", XSW1): the legitimately signed
 * Response's signature moves to an evil Response (unsigned, carrying the attacker's assertion),
 * and the legitimate Response, minus that signature, travels inside the signature's ds:Object.
 * The signature still verifies cryptographically (see signatureVerifies); a verifier that checks
 * "a valid signature is present" and then reads the document root is fooled.
 */
export function xswWrapInSignatureObject(signedLegit: string, evilUnsigned: string): string {
  const legit = stripDeclaration(signedLegit);
  const sig = firstSignature(legit).replace(/<\/ds:Signature>$/, `<ds:Object>${withoutFirstSignature(legit)}</ds:Object></ds:Signature>`);
  return evilUnsigned.replace(/(<samlp:Response[^>]*>(?:<saml:Issuer>[^<]*<\/saml:Issuer>)?)/, `$1${sig}`);
}

/**
 * XSW2-style: the legitimate signature moves to the evil Response, and the legitimately signed
 * Response (minus that signature) becomes a child of the evil one.
 */
export function xswLegitAsChild(signedLegit: string, evilUnsigned: string): string {
  const legit = stripDeclaration(signedLegit);
  const sig = firstSignature(legit);
  return evilUnsigned
    .replace(/(<samlp:Response[^>]*>(?:<saml:Issuer>[^<]*<\/saml:Issuer>)?)/, `$1${sig}`)
    .replace(/<\/samlp:Response>$/, `${withoutFirstSignature(legit)}</samlp:Response>`);
}

/**
 * Whether the first signature of the document verifies with `cert`, wherever the element it
 * references is: what a naive verifier checks. The wrapped documents above pass this.
 */
export function signatureVerifies(xml: string, cert: string): boolean {
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  const node = doc.getElementsByTagNameNS('http://www.w3.org/2000/09/xmldsig#', 'Signature')[0];
  if (!node) return false;
  const sig = new SignedXml({ publicCert: cert });
  sig.loadSignature(node as unknown as Node);
  try {
    return sig.checkSignature(xml);
  } catch {
    return false;
  }
}

/**
 * Assertion-level wrapping of a Response whose assertion alone is signed (XSW7-style): the signed
 * assertion moves into samlp:Extensions and the attacker's unsigned assertion takes its place.
 */
export function xswAssertionIntoExtensions(assertionSignedResponse: string, evilAssertion: string): string {
  const m = assertionSignedResponse.match(/<saml:Assertion[\s\S]*<\/saml:Assertion>/);
  if (!m) throw new Error('no assertion');
  return assertionSignedResponse
    .replace(m[0], evilAssertion)
    .replace(/(<\/saml:Issuer>)/, `$1<samlp:Extensions>${m[0]}</samlp:Extensions>`);
}

/** The same, XSW3-style: the attacker's assertion inserted before the signed one. */
export function xswAssertionBeforeSigned(assertionSignedResponse: string, evilAssertion: string): string {
  return assertionSignedResponse.replace(/<saml:Assertion /, `${evilAssertion}<saml:Assertion `);
}

/** The ID of the AuthnRequest or LogoutRequest in a Redirect-binding URL. */
export function requestIdFromRedirect(location: string): string {
  const b64 = new URL(location).searchParams.get('SAMLRequest');
  if (!b64) throw new Error(`no SAMLRequest in ${location}`);
  const xml = inflateRawSync(Buffer.from(b64, 'base64')).toString('utf8');
  const m = xml.replace(/^<\?xml[^>]*\?>\s*/, "").match(/^<[^>]*\sID="([^"]+)"/);
  if (!m?.[1]) throw new Error('no ID in the request');
  return m[1];
}

/** A LogoutRequest from the IdP (unsigned XML). */
export function buildLogoutRequest(o: { sloUrl: string; issuer: string; nameID: string; sessionIndex?: string; id?: string; issueInstant?: Date }): string {
  return (
    `<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${esc(o.id ?? newId())}" Version="2.0" IssueInstant="${(o.issueInstant ?? new Date()).toISOString()}" Destination="${esc(o.sloUrl)}">` +
    `<saml:Issuer>${esc(o.issuer)}</saml:Issuer><saml:NameID Format="${NAMEID_PERSISTENT}">${esc(o.nameID)}</saml:NameID>` +
    (o.sessionIndex ? `<samlp:SessionIndex>${esc(o.sessionIndex)}</samlp:SessionIndex>` : '') +
    `</samlp:LogoutRequest>`
  );
}

/**
 * A LogoutRequest over the HTTP-Redirect binding, as an IdP would send for IdP-initiated logout,
 * signed over the query string with `key` (Bindings §3.4.4.1), or unsigned when `key` is null.
 */
export function logoutRequestUrl(o: { sloUrl: string; issuer: string; nameID: string; sessionIndex?: string; key: KeyPair | null; id?: string; issueInstant?: Date }): string {
  let query = `SAMLRequest=${encodeURIComponent(deflateRawSync(Buffer.from(buildLogoutRequest(o))).toString('base64'))}`;
  if (o.key) {
    query += `&SigAlg=${encodeURIComponent(RSA_SHA256)}`;
    query += `&Signature=${encodeURIComponent(sign('sha256', Buffer.from(query), o.key.key).toString('base64'))}`;
  }
  return `${o.sloUrl}?${query}`;
}

/** Everything the IdP saw, for assertions in tests. */
export type IdpEvent =
  | { type: 'authn-request'; id: string; issuer: string; relayState: string | undefined }
  | { type: 'login'; user: string; sessionIndex: string; inResponseTo: string }
  | { type: 'login-refused'; user: string }
  | { type: 'logout-request'; nameID: string; sessionIndex: string | undefined; issuer: string }
  | { type: 'logout-response'; inResponseTo: string; status: string; issuer: string }
  | { type: 'error'; where: string; message: string };

export interface SamlTestIdp {
  /** http://127.0.0.1:<port> */
  url: string;
  entityId: string;
  ssoUrl: string;
  sloUrl: string;
  /** The signing key pair (its certificate goes into Parley's idpCerts). */
  signing: KeyPair;
  users: IdpUser[];
  events: IdpEvent[];
  sp: SpInfo | null;
  /** Loads Parley's SP metadata (a URL to fetch, or the XML). */
  trustSp(metadata: string): Promise<SpInfo>;
  /** Uses another key for what it signs from now on (a key rotation at the IdP). */
  useSigningKey(k: KeyPair): void;
  /** Defaults for a forged Response to the trusted SP (issuer, audience, recipient, destination). */
  responseDefaults(): { issuer: string; audience: string; recipient: string; destination: string };
  /** Active IdP sessions by SessionIndex. */
  sessions: Map<string, { user: IdpUser }>;
  close(): Promise<void>;
}

function page(title: string, body: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;
}

/**
 * Starts the IdP on 127.0.0.1 (port 0 unless given). Routes:
 *   GET  /metadata   IdP metadata
 *   GET  /sso        AuthnRequest (Redirect) -> login form
 *   POST /login      form submit -> auto-posting form with the signed Response
 *   GET  /slo        LogoutRequest from the SP (-> signed LogoutResponse) or LogoutResponse
 *   GET  /logout?session=<SessionIndex>   IdP-initiated single logout for that session
 */
export async function startSamlIdp(opts: { users: IdpUser[]; port?: number }): Promise<SamlTestIdp> {
  setTestValidator();
  const app = express();
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(opts.port ?? 0, '127.0.0.1', () => resolve(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const entityId = `${url}/metadata`;
  let signing = await makeKeyPair('Parley test IdP');
  const events: IdpEvent[] = [];
  const sessions = new Map<string, { user: IdpUser }>();
  type Parsed = Awaited<ReturnType<samlify.IdentityProviderInstance['parseLoginRequest']>>;
  const pending = new Map<string, { requestInfo: Parsed; relayState: string | undefined }>();
  let sp: ReturnType<typeof samlify.ServiceProvider> | null = null;
  let spInfo: SpInfo | null = null;

  const makeIdp = () =>
    samlify.IdentityProvider({
      entityID: entityId,
      privateKey: signing.key,
      signingCert: signing.cert,
      requestSignatureAlgorithm: RSA_SHA256,
      nameIDFormat: [NAMEID_PERSISTENT],
      singleSignOnService: [{ Binding: REDIRECT, Location: `${url}/sso` }],
      singleLogoutService: [{ Binding: REDIRECT, Location: `${url}/slo` }],
      wantAuthnRequestsSigned: false,
      wantLogoutRequestSigned: false,
    });
  let idp = makeIdp();

  const requireSp = () => {
    if (!sp || !spInfo) throw new Error('the test IdP does not know the SP yet (trustSp)');
    return { sp, spInfo };
  };
  const fail = (res: express.Response, where: string, err: unknown) => {
    events.push({ type: 'error', where, message: (err as Error)?.message ?? String(err) });
    res.status(400).type('text/html').send(page('IdP error', `<p id="error">${esc(String((err as Error)?.message ?? err))}</p>`));
  };
  const octetString = (req: express.Request) => req.originalUrl.slice(req.originalUrl.indexOf('?') + 1).split('&').filter((p) => !p.startsWith('Signature=')).join('&');

  app.get('/metadata', (_req, res) => {
    res.type('application/samlmetadata+xml').send(idp.getMetadata());
  });

  app.get('/sso', async (req, res) => {
    try {
      const { sp: target } = requireSp();
      const parsed = await idp.parseLoginRequest(target, 'redirect', { query: req.query as Record<string, unknown>, octetString: octetString(req) });
      const request = parsed.extract.request as Record<string, string>;
      const relayState = typeof req.query.RelayState === 'string' ? req.query.RelayState : undefined;
      events.push({ type: 'authn-request', id: request.id ?? '', issuer: String(parsed.extract.issuer ?? ''), relayState });
      const rid = randomBytes(16).toString('hex');
      pending.set(rid, { requestInfo: parsed, relayState });
      res.type('text/html').send(
        page(
          'Test IdP sign-in',
          `<h1>Test IdP</h1><form method="post" action="/login"><input type="hidden" name="rid" value="${rid}">` +
            `<label>User <input id="username" name="username" autocomplete="username"></label>` +
            `<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>` +
            `<button id="signin" type="submit">Sign in</button></form>`,
        ),
      );
    } catch (err) {
      fail(res, 'sso', err);
    }
  });

  app.post('/login', express.urlencoded({ extended: false }), async (req, res) => {
    try {
      const { sp: target, spInfo: info } = requireSp();
      const { rid, username, password } = req.body as Record<string, string>;
      const p = rid ? pending.get(rid) : undefined;
      if (!p) throw new Error('unknown sign-in');
      const user = opts.users.find((u) => u.username === username && u.password === password);
      if (!user) {
        events.push({ type: 'login-refused', user: String(username) });
        res.status(401).type('text/html').send(page('Test IdP sign-in', '<p id="error">Wrong user name or password.</p>'));
        return;
      }
      pending.delete(rid as string);
      const sessionIndex = newId();
      const inResponseTo = String((p.requestInfo.extract.request as Record<string, string>).id);
      sessions.set(sessionIndex, { user });
      events.push({ type: 'login', user: user.username, sessionIndex, inResponseTo });
      const responseId = newId();
      const xml = buildResponse({
        issuer: entityId,
        audience: info.entityId,
        recipient: info.acsUrl,
        destination: info.acsUrl,
        inResponseTo,
        responseId,
        nameID: user.nameID,
        sessionIndex,
        attributes: { uid: user.uid, displayName: user.displayName, groups: user.groups },
      });
      // samlify signs the assertion (the SP metadata says WantAssertionsSigned) and the message
      // (wantMessageSigned on the SP entity); the template is ours so it carries the attributes
      // and a SessionIndex.
      const out = (await idp.createLoginResponse(target, { ...p.requestInfo }, 'post', { email: user.nameID }, {
        relayState: p.relayState,
        customTagReplacement: () => ({ id: responseId, context: xml }),
      })) as { context: string; entityEndpoint: string; relayState?: string };
      const relay = p.relayState !== undefined ? `<input type="hidden" name="RelayState" value="${esc(p.relayState)}">` : '';
      res.type('text/html').send(
        page(
          'Signing in',
          `<form id="post" method="post" action="${esc(out.entityEndpoint)}"><input type="hidden" name="SAMLResponse" value="${esc(out.context)}">${relay}<noscript><button type="submit">Continue</button></noscript></form>` +
            `<script>document.getElementById('post').submit();</script>`,
        ),
      );
    } catch (err) {
      fail(res, 'login', err);
    }
  });

  app.get('/slo', async (req, res) => {
    try {
      const { sp: target } = requireSp();
      const q = { query: req.query as Record<string, unknown>, octetString: octetString(req) };
      if (typeof req.query.SAMLRequest === 'string') {
        // SP-initiated logout: end the IdP session, answer with a signed LogoutResponse.
        const parsed = await idp.parseLogoutRequest(target, 'redirect', q);
        const nameID = String(parsed.extract.nameID ?? '');
        const si = parsed.extract.sessionIndex as unknown;
        const sessionIndex = typeof si === 'string' ? si : Array.isArray(si) ? String(si[0]) : undefined;
        events.push({ type: 'logout-request', nameID, sessionIndex, issuer: String(parsed.extract.issuer ?? '') });
        if (sessionIndex) sessions.delete(sessionIndex);
        const relayState = typeof req.query.RelayState === 'string' ? req.query.RelayState : undefined;
        const out = idp.createLogoutResponse(target, { ...parsed }, 'redirect', relayState ? { relayState } : {});
        res.redirect(303, (out as { context: string }).context);
        return;
      }
      if (typeof req.query.SAMLResponse === 'string') {
        // The SP's answer to our LogoutRequest (samlify verifies the signature when it has one).
        const parsed = await idp.parseLogoutResponse(target, 'redirect', q);
        const response = parsed.extract.response as Record<string, string>;
        // samlify has checked the status (it throws on anything but Success); record what it was.
        const status = parsed.samlContent.match(/StatusCode Value="([^"]+)"/)?.[1] ?? '';
        events.push({ type: 'logout-response', inResponseTo: response.inResponseTo ?? '', status, issuer: String(parsed.extract.issuer ?? '') });
        res.type('text/html').send(page('Signed out', '<p id="signed-out">You are signed out.</p>'));
        return;
      }
      throw new Error('no SAML message');
    } catch (err) {
      fail(res, 'slo', err);
    }
  });

  app.get('/logout', (req, res) => {
    try {
      const { sp: target } = requireSp();
      const sessionIndex = String(req.query.session ?? '');
      const s = sessions.get(sessionIndex);
      if (!s) throw new Error('no such IdP session');
      sessions.delete(sessionIndex);
      const out = idp.createLogoutRequest(target, 'redirect', { logoutNameID: s.user.nameID, sessionIndex });
      res.redirect(303, (out as { context: string }).context);
    } catch (err) {
      fail(res, 'logout', err);
    }
  });

  return {
    url,
    entityId,
    ssoUrl: `${url}/sso`,
    sloUrl: `${url}/slo`,
    get signing() {
      return signing;
    },
    users: opts.users,
    events,
    sessions,
    get sp() {
      return spInfo;
    },
    async trustSp(metadata: string) {
      const xml = metadata.startsWith('http') ? await (await fetch(metadata)).text() : metadata;
      sp = samlify.ServiceProvider({ metadata: xml, wantMessageSigned: true, wantLogoutRequestSigned: true, wantLogoutResponseSigned: true });
      const entity = sp.entityMeta;
      spInfo = {
        entityId: entity.getEntityID(),
        acsUrl: String(entity.getAssertionConsumerService('post')),
        sloUrl: String(entity.getSingleLogoutService('redirect')),
      };
      return spInfo;
    },
    useSigningKey(k: KeyPair) {
      signing = k;
      idp = makeIdp();
    },
    responseDefaults() {
      const { spInfo: info } = requireSp();
      return { issuer: entityId, audience: info.entityId, recipient: info.acsUrl, destination: info.acsUrl };
    },
    close() {
      return new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}
