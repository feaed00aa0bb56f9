// SCRAM server side: SCRAM-SHA-1(-PLUS) (RFC 5802) and SCRAM-SHA-256(-PLUS) (RFC 7677), with
// channel binding types tls-server-end-point (RFC 5929 §4) and tls-exporter (RFC 9266).
//
// Exchange (RFC 5802 §5):
//   C: gs2-header client-first-message-bare      e.g. "n,,n=user,r=<cnonce>"
//   S: server-first-message                       "r=<cnonce><snonce>,s=<salt>,i=<iterations>"
//   C: client-final-message                       "c=<b64(gs2-header [+ cb-data])>,r=<nonce>,p=<proof>"
//   S: server-final-message (in <success/>)       "v=<server signature>"
// Errors are reported through <failure/> conditions (RFC 6120 §6.5); the RFC 5802 §7 "e=" value
// goes into the failure text for diagnostics, and is the same for a wrong password and an
// unknown user.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import saslprep from '@mongodb-js/saslprep';
import type { ScramHash, ScramSecret } from '../../storage/types.js';
import {
  DEFAULT_SCRAM_ITERATIONS,
  SCRAM_ALGORITHMS,
  SCRAM_SALT_BYTES,
  decodeScramSecret,
  scramH,
  scramHmac,
} from '../scram-secrets.js';
import { authzidAllowed } from './plain.js';
import type {
  ChannelBindingType,
  SaslContext,
  SaslFailureCondition,
  SaslMechanism,
  SaslServerSession,
  SaslStep,
} from './types.js';

export type ScramMechanismName = 'SCRAM-SHA-1' | 'SCRAM-SHA-256' | 'SCRAM-SHA-1-PLUS' | 'SCRAM-SHA-256-PLUS';

export const SCRAM_MECHANISM_NAMES: readonly ScramMechanismName[] = [
  'SCRAM-SHA-256-PLUS',
  'SCRAM-SHA-1-PLUS',
  'SCRAM-SHA-256',
  'SCRAM-SHA-1',
];

export interface ScramOptions {
  /**
   * Produces the server part of the nonce. Test hook only (RFC test vectors); the default is
   * 24 CSPRNG bytes in base64 (RFC 5802 §5.1 asks for a fresh, unpredictable value).
   */
  nonce?: () => string;
  /**
   * Iteration count advertised for unknown users. Must equal what new accounts get, otherwise
   * the count itself tells real accounts from fake ones. Defaults to DEFAULT_SCRAM_ITERATIONS.
   */
  iterations?: Partial<Record<ScramHash, number>>;
}

/** Upper bound on one client message; real ones are a few hundred bytes. */
const MAX_MESSAGE_BYTES = 8192;
const SERVER_NONCE_BYTES = 24;

// RFC 5802 §7: printable = %x21-2B / %x2D-7E (no comma); cb-name = 1*(ALPHA / DIGIT / "." / "-").
const NONCE_RE = /^[\x21-\x2b\x2d-\x7e]+$/;
const CB_NAME_RE = /^[A-Za-z0-9.-]+$/;
// attr-val = ALPHA "=" value; extensions after the mandatory attributes are ignored (§5.1).
const EXTENSION_RE = /^[A-Za-z]=/;
// Canonical base64 (§7: base64 is RFC 4648 with padding).
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const utf8 = new TextDecoder('utf-8', { fatal: true });

type Fail = { kind: 'failure'; condition: SaslFailureCondition; text?: string; username?: string };

function fail(condition: SaslFailureCondition, text: string, username?: string): Fail {
  return username === undefined ? { kind: 'failure', condition, text } : { kind: 'failure', condition, text, username };
}

/** UTF-8 text of a client message, or null when it is not valid UTF-8 or holds NUL (§7 forbids it). */
function decodeMessage(input: Buffer): string | null {
  if (input.length > MAX_MESSAGE_BYTES) return null;
  let s: string;
  try {
    s = utf8.decode(input);
  } catch {
    return null;
  }
  return s.includes('\u0000') ? null : s;
}

/** saslname (§5.1): "," and "=" travel as "=2C" and "=3D"; any other "=" is an error. */
export function decodeSaslname(s: string): string | null {
  if (!/^(?:[^=,]|=2[Cc]|=3[Dd])*$/.test(s)) return null;
  return s.replace(/=2[Cc]|=3[Dd]/g, (m) => (m[1] === '2' ? ',' : '='));
}

interface ClientFirst {
  flag: 'n' | 'y' | 'p';
  cbName?: string;
  authzid?: string;
  username: string; // unescaped, not yet SASLprepped
  nonce: string;
  gs2Header: string;
  bare: string;
}

function parseClientFirst(msg: string): ClientFirst | Fail {
  const bad = (why: string) => fail('malformed-request', why);
  // gs2-header = gs2-cbind-flag "," [ authzid ] ","
  let flag: ClientFirst['flag'];
  let cbName: string | undefined;
  let i: number;
  if (msg.startsWith('n,') || msg.startsWith('y,')) {
    flag = msg[0] as 'n' | 'y';
    i = 2;
  } else if (msg.startsWith('p=')) {
    const comma = msg.indexOf(',', 2);
    if (comma < 0) return bad('invalid gs2 header');
    cbName = msg.slice(2, comma);
    if (!CB_NAME_RE.test(cbName)) return bad('invalid channel binding name');
    flag = 'p';
    i = comma + 1;
  } else {
    return bad('invalid gs2 header');
  }
  const comma = msg.indexOf(',', i);
  if (comma < 0) return bad('invalid gs2 header');
  const az = msg.slice(i, comma);
  let authzid: string | undefined;
  if (az !== '') {
    if (!az.startsWith('a=')) return bad('invalid gs2 header');
    const decoded = decodeSaslname(az.slice(2));
    if (decoded === null || decoded === '') return bad('invalid-username-encoding');
    authzid = decoded;
  }
  const gs2Header = msg.slice(0, comma + 1);
  const bare = msg.slice(comma + 1);
  const attrs = bare.split(',');
  // "m=" is reserved for mandatory extensions; none are defined, so the server MUST fail (§5.1).
  if (attrs.some((a) => a.startsWith('m='))) return bad('extensions-not-supported');
  const [n, r, ...rest] = attrs;
  if (n === undefined || !n.startsWith('n=')) return bad('missing username');
  const username = decodeSaslname(n.slice(2));
  if (username === null || username === '') return bad('invalid-username-encoding');
  if (r === undefined || !r.startsWith('r=')) return bad('missing nonce');
  const nonce = r.slice(2);
  if (!NONCE_RE.test(nonce)) return bad('invalid nonce');
  if (!rest.every((a) => EXTENSION_RE.test(a))) return bad('invalid attribute');
  return { flag, cbName, authzid, username, nonce, gs2Header, bare };
}

interface ClientFinal {
  channelBinding: string;
  nonce: string;
  proof: string;
  withoutProof: string;
}

function parseClientFinal(msg: string): ClientFinal | Fail {
  const bad = (why: string) => fail('malformed-request', why);
  const attrs = msg.split(',');
  if (attrs.length < 3) return bad('invalid client-final-message');
  const c = attrs[0] ?? '';
  const r = attrs[1] ?? '';
  const p = attrs[attrs.length - 1] ?? '';
  if (!c.startsWith('c=')) return bad('missing channel binding');
  if (!r.startsWith('r=')) return bad('missing nonce');
  if (!p.startsWith('p=')) return bad('missing proof');
  if (!attrs.slice(2, -1).every((a) => EXTENSION_RE.test(a) && !a.startsWith('p='))) return bad('invalid attribute');
  return {
    channelBinding: c.slice(2),
    nonce: r.slice(2),
    proof: p.slice(2),
    withoutProof: msg.slice(0, msg.length - p.length - 1),
  };
}

interface Exchange {
  hash: ScramHash;
  username: string;
  gs2Header: string;
  cbData: Buffer | null;
  bare: string;
  serverFirst: string;
  nonce: string;
  storedKey: Buffer;
  serverKey: Buffer;
  /** False for an unknown user: the exchange runs to the end and then fails like a bad password. */
  real: boolean;
}

class ScramServerSession implements SaslServerSession {
  private state: 'first' | 'final' | 'done' = 'first';
  private emptyFirstSeen = false;
  private ex: Exchange | null = null;
  private username: string | undefined;

  constructor(
    private readonly ctx: SaslContext,
    private readonly hash: ScramHash,
    private readonly plus: boolean,
    private readonly opts: ScramOptions,
  ) {}

  async step(input: Buffer): Promise<SaslStep> {
    const state = this.state;
    // Mark busy before any await, so an overlapping or later call cannot replay a step.
    this.state = 'done';
    if (state === 'first') {
      // No initial response in <auth/>: RFC 6120 §6.4.2 — send an empty challenge, once.
      if (input.length === 0 && !this.emptyFirstSeen) {
        this.emptyFirstSeen = true;
        this.state = 'first';
        return { kind: 'challenge', data: Buffer.alloc(0) };
      }
      const res = await this.first(input);
      if (res.kind === 'challenge') this.state = 'final';
      return res;
    }
    if (state === 'final') return this.final(input);
    return fail('malformed-request', 'unexpected message', this.username);
  }

  private async first(input: Buffer): Promise<SaslStep> {
    const msg = decodeMessage(input);
    if (msg === null) return fail('malformed-request', 'invalid-encoding');
    const cf = parseClientFirst(msg);
    if ('kind' in cf) return cf;

    let username: string;
    try {
      // RFC 5802 §5.1: the server SASLpreps the username (as a query string, §2.2).
      username = saslprep(cf.username, { allowUnassigned: true });
    } catch {
      return fail('malformed-request', 'invalid-username-encoding');
    }
    if (username === '') return fail('malformed-request', 'invalid-username-encoding');
    this.username = username;

    // Channel binding negotiation (RFC 5802 §6).
    let cbData: Buffer | null = null;
    if (this.plus) {
      if (cf.flag !== 'p') return fail('malformed-request', 'channel binding required by -PLUS', username);
      const type = cf.cbName as ChannelBindingType;
      if (!this.ctx.channelBindingTypes.includes(type)) {
        return fail('not-authorized', 'unsupported-channel-binding-type', username);
      }
      cbData = this.ctx.channelBinding(type);
      if (!cbData) return fail('not-authorized', 'unsupported-channel-binding-type', username);
    } else if (cf.flag === 'p') {
      return fail('malformed-request', 'channel-binding-not-supported', username);
    } else if (cf.flag === 'y' && this.ctx.channelBindingTypes.length > 0) {
      // "y" = client supports channel binding but thinks we don't. We do advertise -PLUS, so an
      // attacker stripped it from the mechanism list: refuse (downgrade protection).
      return fail('not-authorized', 'server-does-support-channel-binding', username);
    }

    if (cf.authzid !== undefined && !authzidAllowed(cf.authzid, username, this.ctx.host)) {
      return fail('invalid-authzid', 'authzid is not the authenticating user', username);
    }

    let secret: ScramSecret | null;
    try {
      secret = await this.ctx.getScram(username, this.hash);
    } catch {
      return fail('temporary-auth-failure', 'no-resources', username);
    }
    const dec = secret ? decodeScramSecret(secret, this.hash) : null;
    const { length } = SCRAM_ALGORITHMS[this.hash];
    const salt = dec ? dec.salt : this.fakeSalt(username);
    const iterations = dec ? dec.iterations : (this.opts.iterations?.[this.hash] ?? DEFAULT_SCRAM_ITERATIONS[this.hash]);
    const serverNonce = this.opts.nonce ? this.opts.nonce() : randomBytes(SERVER_NONCE_BYTES).toString('base64');
    const nonce = cf.nonce + serverNonce;
    const serverFirst = `r=${nonce},s=${salt.toString('base64')},i=${iterations}`;
    this.ex = {
      hash: this.hash,
      username,
      gs2Header: cf.gs2Header,
      cbData,
      bare: cf.bare,
      serverFirst,
      nonce,
      storedKey: dec ? dec.storedKey : randomBytes(length),
      serverKey: dec ? dec.serverKey : randomBytes(length),
      real: dec !== null,
    };
    return { kind: 'challenge', data: Buffer.from(serverFirst, 'utf8') };
  }

  /**
   * A stable salt for a username with no secret: an attacker probing the same name twice must
   * see the same salt, as for a real account. Keyed by the hash too, because real accounts have
   * a distinct salt per hash.
   */
  private fakeSalt(username: string): Buffer {
    return createHmac('sha256', this.ctx.serverSecret)
      .update(`parley-scram-fake-salt\u0000${this.hash}\u0000${username}`)
      .digest()
      .subarray(0, SCRAM_SALT_BYTES);
  }

  private async final(input: Buffer): Promise<SaslStep> {
    const ex = this.ex;
    if (!ex) return fail('malformed-request', 'unexpected message', this.username);
    const msg = decodeMessage(input);
    if (msg === null) return fail('malformed-request', 'invalid-encoding', ex.username);
    const cf = parseClientFinal(msg);
    if ('kind' in cf) return { ...cf, username: ex.username };

    // Syntax first: these checks do not depend on the account, so they reveal nothing about it.
    if (!BASE64_RE.test(cf.proof)) return fail('malformed-request', 'invalid-encoding', ex.username);
    const proof = Buffer.from(cf.proof, 'base64');
    if (proof.length !== SCRAM_ALGORITHMS[ex.hash].length) return fail('malformed-request', 'invalid proof length', ex.username);

    // c= must be exactly base64(gs2-header [|| cb-data]) (§7): this also proves the gs2 header
    // (and so the "y"/"n"/"p" choice) was not altered in transit.
    const cbInput = ex.cbData ? Buffer.concat([Buffer.from(ex.gs2Header, 'utf8'), ex.cbData]) : Buffer.from(ex.gs2Header, 'utf8');
    if (cf.channelBinding !== cbInput.toString('base64')) {
      return fail('not-authorized', 'channel-bindings-dont-match', ex.username);
    }
    if (cf.nonce !== ex.nonce) return fail('not-authorized', 'invalid nonce', ex.username);

    // RFC 5802 §3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); check H(ClientKey).
    const authMessage = `${ex.bare},${ex.serverFirst},${cf.withoutProof}`;
    const signature = scramHmac(ex.hash, ex.storedKey, authMessage);
    const clientKey = Buffer.alloc(proof.length);
    for (let i = 0; i < proof.length; i++) clientKey[i] = proof[i] ^ signature[i];
    const match = timingSafeEqual(scramH(ex.hash, clientKey), ex.storedKey);
    // Same work and same answer for an unknown user as for a wrong password.
    if (!match || !ex.real) return { ...fail('not-authorized', 'invalid-proof', ex.username), wrongCredentials: true };

    const verifier = scramHmac(ex.hash, ex.serverKey, authMessage).toString('base64');
    return { kind: 'success', username: ex.username, data: Buffer.from(`v=${verifier}`, 'utf8') };
  }
}

/** A SCRAM mechanism; `opts` are mainly for tests. */
export function scramMechanism(name: ScramMechanismName, opts: ScramOptions = {}): SaslMechanism {
  const plus = name.endsWith('-PLUS');
  const hash: ScramHash = name.startsWith('SCRAM-SHA-256') ? 'SHA-256' : 'SHA-1';
  if (!SCRAM_MECHANISM_NAMES.includes(name)) throw new Error(`unknown SCRAM mechanism ${name}`);
  return {
    name,
    // Non-PLUS is always offered (whether to allow it before TLS is the session's decision);
    // -PLUS only when the transport can produce channel-binding data.
    available: (ctx) => !plus || ctx.channelBindingTypes.length > 0,
    start: (ctx) => new ScramServerSession(ctx, hash, plus, opts),
  };
}
