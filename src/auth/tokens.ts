// XMPP bearer tokens (issue 9): short-lived, audience-bound, revocable tokens that log a user in
// with SASL OAUTHBEARER (RFC 7628) instead of a password. `parley token issue` issues them now; the
// SSO web layer will, after a sign-in.
//
// - A token is 32 CSPRNG bytes in base64url (RFC 4648 §5; fits RFC 6750's b64token).
// - Only SHA-256(token) is stored, as the row's primary key: a login is one lookup by key, and a
//   copy of the database gives nobody a usable token. No secret is compared in JavaScript: the
//   database matches a hash of a 256-bit random value, whose timing tells an attacker nothing
//   about any other token.
// - Reusable until it expires or is revoked (not single-use): a web client reconnects after a
//   WebSocket drop with the same token, within its short lifetime. RFC 7628 leaves token lifetime
//   and reuse to the token issuer; revocation covers a leaked one.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { TokenRecord, TokenStore } from '../storage/types.js';
import { Jid } from '../xmpp/jid.js';

export class TokenError extends Error {
  override name = 'TokenError';
}

export interface TokenOptions {
  /** Lifetime of a token when the issuer does not ask for one (seconds). */
  lifetimeSeconds: number;
  /** The longest lifetime an issuer may ask for (seconds). */
  maxLifetimeSeconds: number;
}

export interface IssuedToken {
  /** The secret: shown once, never stored. */
  token: string;
  id: string;
  expiresAt: number;
}

/** A token as listings show it: everything but the secret (which is not stored anyway). */
export type TokenInfo = TokenRecord;

const TOKEN_BYTES = 32;
/** base64url of 32 bytes, no padding. Anything else cannot be one of ours: no lookup needed. */
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

/** Whether a string has the shape of a Parley XMPP token (anything else is not ours). */
export function isXmppToken(s: string): boolean {
  return TOKEN_RE.test(s);
}

/** Hex SHA-256 of a token: the storage key. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export class TokenService {
  constructor(
    private readonly store: TokenStore,
    private readonly opts: TokenOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /** Issues a token for `user` (a bare JID) valid on host `audience`. */
  async issue(user: string, audience: string, o: { lifetimeSeconds?: number; label?: string; issuer?: string } = {}): Promise<IssuedToken> {
    const jid = Jid.tryParse(user);
    if (!jid?.local || jid.resource) throw new TokenError(`invalid user JID ${user}: expected user@host`);
    if (!audience) throw new TokenError('a token needs an audience (the host it is for)');
    const lifetime = o.lifetimeSeconds ?? this.opts.lifetimeSeconds;
    if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > this.opts.maxLifetimeSeconds) {
      throw new TokenError(`lifetime must be a whole number of seconds from 1 to ${this.opts.maxLifetimeSeconds}`);
    }
    const token = randomBytes(TOKEN_BYTES).toString('base64url');
    const createdAt = this.now();
    const rec: TokenRecord = {
      id: `tok-${randomUUID()}`,
      user: jid.bare,
      audience,
      label: o.label ?? null,
      issuer: o.issuer ?? null,
      createdAt,
      expiresAt: createdAt + lifetime * 1000,
      revokedAt: null,
    };
    await this.store.insert(rec, tokenHash(token));
    return { token, id: rec.id, expiresAt: rec.expiresAt };
  }

  /** The bare JID the token stands for, or null: unknown, expired, revoked, or for another audience. */
  async verify(token: string, audience: string): Promise<string | null> {
    return (await this.verifyRecord(token, audience))?.user ?? null;
  }

  /** Like verify(), with the token's record (its id names the credential a session logged in with). */
  async verifyRecord(token: string, audience: string): Promise<TokenRecord | null> {
    if (!TOKEN_RE.test(token)) return null;
    const rec = await this.store.byHash(tokenHash(token));
    if (!rec || rec.revokedAt !== null || rec.expiresAt <= this.now() || rec.audience !== audience) return null;
    return rec;
  }

  revoke(id: string): Promise<boolean> {
    return this.store.revoke(id, this.now());
  }

  revokeAll(user: string): Promise<number> {
    return this.store.revokeAll(user, this.now());
  }

  list(user: string): Promise<TokenInfo[]> {
    return this.store.list(user);
  }

  /** Which of these token ids have been revoked (by any process: the CLI, another node). */
  revokedAmong(ids: readonly string[]): Promise<string[]> {
    return ids.length ? this.store.revokedAmong(ids) : Promise.resolve([]);
  }

  /** Deletes expired tokens (revoked or not); resolves how many. */
  purge(now = this.now()): Promise<number> {
    return this.store.purge(now);
  }
}
