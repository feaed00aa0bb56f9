// PLAIN (RFC 4616): one message, message = [authzid] UTF8NUL authcid UTF8NUL passwd.
// authcid and passwd are SASLprepped as query strings (RFC 4616 §2, RFC 4013); a preparation
// failure or an empty result fails the verification. The password travels in clear inside the
// stream, so the mechanism is only offered over TLS unless the operator opts out.
import saslprep from '@mongodb-js/saslprep';
import { Jid } from '../../xmpp/jid.js';
import type { SaslContext, SaslFailureCondition, SaslMechanism, SaslServerSession, SaslStep } from './types.js';

/** RFC 4616 §2: each of the three fields is at most 255 octets. */
const MAX_FIELD_BYTES = 255;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function fail(condition: SaslFailureCondition, text: string, username?: string): SaslStep {
  return username === undefined ? { kind: 'failure', condition, text } : { kind: 'failure', condition, text, username };
}

function prep(s: string): string | null {
  try {
    return saslprep(s, { allowUnassigned: true });
  } catch {
    return null;
  }
}

/**
 * authzid may only name the authenticating user itself, as "user" or "user@host" (Parley has no
 * proxy authorization). Shared with SCRAM.
 */
export function authzidAllowed(authzid: string, username: string, host: string): boolean {
  if (authzid === username || authzid === `${username}@${host}`) return true;
  try {
    const want = Jid.of(username, host);
    const got = Jid.parse(authzid.includes('@') ? authzid : `${authzid}@${host}`);
    return got.isBare && got.bare === want.bare;
  } catch {
    return false;
  }
}

class PlainServerSession implements SaslServerSession {
  private state: 'first' | 'done' = 'first';
  private emptyFirstSeen = false;
  private username: string | undefined;

  constructor(private readonly ctx: SaslContext) {}

  async step(input: Buffer): Promise<SaslStep> {
    if (this.state === 'done') return fail('malformed-request', 'unexpected message', this.username);
    this.state = 'done';
    // No initial response: RFC 6120 §6.4.2 — answer with an empty challenge, once.
    if (input.length === 0 && !this.emptyFirstSeen) {
      this.emptyFirstSeen = true;
      this.state = 'first';
      return { kind: 'challenge', data: Buffer.alloc(0) };
    }
    if (input.length > 3 * MAX_FIELD_BYTES + 2) return fail('malformed-request', 'message too long');
    let msg: string;
    try {
      msg = utf8.decode(input);
    } catch {
      return fail('malformed-request', 'invalid UTF-8');
    }
    const parts = msg.split('\u0000');
    if (parts.length !== 3) return fail('malformed-request', 'expected [authzid] NUL authcid NUL passwd');
    const [rawAuthzid, rawAuthcid, rawPassword] = parts as [string, string, string];

    const username = prep(rawAuthcid);
    const password = prep(rawPassword);
    if (username) this.username = username;
    if (!username || !password) return fail('not-authorized', 'empty or invalid credentials', this.username);
    if (rawAuthzid !== '' && !authzidAllowed(rawAuthzid, username, this.ctx.host)) {
      return fail('invalid-authzid', 'authzid is not the authenticating user', username);
    }
    let ok: boolean;
    try {
      ok = await this.ctx.verifyPassword(username, password);
    } catch {
      return fail('temporary-auth-failure', 'account lookup failed', username);
    }
    if (!ok) return { kind: 'failure', condition: 'not-authorized', text: 'invalid credentials', username, wrongCredentials: true };
    return { kind: 'success', username };
  }
}

export function plainMechanism(): SaslMechanism {
  return {
    name: 'PLAIN',
    available: (ctx, opts) => ctx.secure || opts.allowPlainWithoutTls,
    start: (ctx) => new PlainServerSession(ctx),
  };
}
