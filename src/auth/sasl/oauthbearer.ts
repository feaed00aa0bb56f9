// OAUTHBEARER (RFC 7628) with Parley's XMPP tokens (src/auth/tokens.ts).
//
// §3.1 client response:  gs2-header kvsep *kvpair kvsep, kvpair = key "=" value kvsep, kvsep = %x01
//   e.g. "n,a=alice@example.com,\x01host=example.com\x01port=5222\x01auth=Bearer <token>\x01\x01"
//   gs2-header is RFC 5801's; OAUTHBEARER has no channel binding, so "p=" is refused. `host` and
//   `port` are informational and ignored, like any other well-formed key.
// §3.2.2 error: the server sends a challenge holding {"status":"invalid_token"}, the client
//   answers with a single %x01, and only then does the server fail (<not-authorized/>).
// An authzid naming anyone but the token's user fails with invalid-authzid (no proxy login).
// XEP-0493: when the host accepts its OpenID provider's access tokens, the error JSON carries the
// provider's discovery URL (`openid-configuration`) and the scope to ask for, and a client that
// sends "auth=Bearer " with no token (to discover them) gets that error flow, not a malformed-request.
import { decodeSaslname } from './scram.js';
import { authzidAllowed } from './plain.js';
import type { SaslContext, SaslFailureCondition, SaslMechanism, SaslServerSession, SaslStep } from './types.js';

/** Generous for a 43-character token plus host/port; RFC 7628 sets no limit. */
const MAX_MESSAGE_BYTES = 4096;
const KVSEP = '\u0001';
// §3.1: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF).
const KEY_RE = /^[A-Za-z]+$/;
const VALUE_RE = /^[\x21-\x7e \t\r\n]*$/;
// RFC 6750 §2.1: "Bearer" 1*SP b64token (the scheme is case-insensitive, RFC 7235 §2.1).
const AUTH_RE = /^bearer +([A-Za-z0-9\-._~+/]+=*)?$/i;
/** §3.2.2 error response; the `status` values come from RFC 6750 §3.1. */
const INVALID_TOKEN = Buffer.from(JSON.stringify({ status: 'invalid_token' }), 'utf8');

/** XEP-0493 §"Scopes": the scope of a client with normal access to the account. */
export const XMPP_SCOPE = 'xmpp:client:normal';

const utf8 = new TextDecoder('utf-8', { fatal: true });

function fail(condition: SaslFailureCondition, text: string, username?: string): SaslStep {
  return username === undefined ? { kind: 'failure', condition, text } : { kind: 'failure', condition, text, username };
}

interface ClientResponse {
  authzid?: string;
  token: string;
}

/** Parses the §3.1 client response; a string is the reason it is malformed. */
export function parseClientResponse(msg: string): ClientResponse | string {
  // gs2-header = [gs2-nonstd-flag ","] gs2-cb-flag "," [gs2-authzid] "," (RFC 5801 §4).
  let rest = msg.startsWith('F,') ? msg.slice(2) : msg;
  if (rest.startsWith('p=')) return 'channel binding is not supported by OAUTHBEARER';
  if (!rest.startsWith('n,') && !rest.startsWith('y,')) return 'invalid gs2 header';
  rest = rest.slice(2);
  const comma = rest.indexOf(',');
  if (comma < 0) return 'invalid gs2 header';
  const az = rest.slice(0, comma);
  let authzid: string | undefined;
  if (az !== '') {
    // RFC 5801 wants "a=saslname"; StanzaJS 12 sends the saslname alone, which cannot be mistaken
    // for anything else here, so it is accepted too (the authzid check below applies either way).
    const decoded = decodeSaslname(az.startsWith('a=') ? az.slice(2) : az);
    if (decoded === null || decoded === '') return 'invalid authzid encoding';
    authzid = decoded;
  }
  rest = rest.slice(comma + 1);
  // kvsep *kvpair kvsep: the pairs start after a kvsep and the whole ends with an empty pair.
  if (!rest.startsWith(KVSEP) || !rest.endsWith(KVSEP + KVSEP) || rest.length < 2) return 'invalid key/value section';
  const pairs = rest.slice(1, -2);
  let token: string | undefined;
  for (const pair of pairs === '' ? [] : pairs.split(KVSEP)) {
    const eq = pair.indexOf('=');
    if (eq < 1) return 'invalid key/value pair';
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    if (!KEY_RE.test(key) || !VALUE_RE.test(value)) return 'invalid key/value pair';
    if (key !== 'auth') continue; // host, port and unknown keys are not used
    if (token !== undefined) return 'auth given twice';
    const m = AUTH_RE.exec(value);
    if (!m) return 'auth is not a Bearer token';
    token = m[1] ?? '';
  }
  if (token === undefined) return 'no auth';
  return authzid === undefined ? { token } : { authzid, token };
}

class OauthBearerServerSession implements SaslServerSession {
  private state: 'first' | 'error-sent' | 'done' = 'first';
  private emptyFirstSeen = false;

  constructor(private readonly ctx: SaslContext) {}

  async step(input: Buffer): Promise<SaslStep> {
    const state = this.state;
    this.state = 'done'; // before any await: a step is never replayed
    if (state === 'error-sent') {
      // §3.2.2: the client acknowledges the error with %x01; then the exchange fails.
      if (input.length === 1 && input[0] === 1) return { kind: 'failure', condition: 'not-authorized', text: 'invalid token', wrongCredentials: true };
      return fail('malformed-request', 'expected %x01 after the error response');
    }
    if (state === 'done') return fail('malformed-request', 'unexpected message');
    // No initial response: RFC 6120 §6.4.2 — an empty challenge, once.
    if (input.length === 0 && !this.emptyFirstSeen) {
      this.emptyFirstSeen = true;
      this.state = 'first';
      return { kind: 'challenge', data: Buffer.alloc(0) };
    }
    if (input.length > MAX_MESSAGE_BYTES) return fail('malformed-request', 'message too long');
    let msg: string;
    try {
      msg = utf8.decode(input);
    } catch {
      return fail('malformed-request', 'invalid UTF-8');
    }
    const parsed = parseClientResponse(msg);
    if (typeof parsed === 'string') return fail('malformed-request', parsed);
    const verify = this.ctx.verifyToken;
    if (!verify) return fail('temporary-auth-failure', 'tokens are not available');
    let username: string | null;
    let credential: string | undefined;
    try {
      const login = parsed.token === '' ? null : await verify(parsed.token);
      username = login?.username ?? null;
      credential = login?.credential;
    } catch {
      return fail('temporary-auth-failure', 'token lookup failed');
    }
    if (username === null) {
      this.state = 'error-sent';
      const discovery = this.ctx.oauthDiscovery;
      return {
        kind: 'challenge',
        data: discovery ? Buffer.from(JSON.stringify({ status: 'invalid_token', scope: XMPP_SCOPE, 'openid-configuration': discovery }), 'utf8') : INVALID_TOKEN,
      };
    }
    if (parsed.authzid !== undefined && !authzidAllowed(parsed.authzid, username, this.ctx.host)) {
      return fail('invalid-authzid', 'authzid is not the token\'s user', username);
    }
    return credential === undefined ? { kind: 'success', username } : { kind: 'success', username, credential };
  }
}

export function oauthBearerMechanism(): SaslMechanism {
  return {
    name: 'OAUTHBEARER',
    // A bearer token is as good as a password to whoever sees it: TLS only, with no opt-out.
    available: (ctx) => ctx.secure,
    start: (ctx) => new OauthBearerServerSession(ctx),
  };
}
