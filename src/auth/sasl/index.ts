// SASL mechanisms offered to clients (RFC 6120 §6.3.3: listed in server preference order).
// Channel-bound SCRAM first, then SCRAM-SHA-256 over SHA-1 (RFC 7677), PLAIN (RFC 4616), then
// OAUTHBEARER (RFC 7628) when XMPP tokens exist: last, so that clients that follow the server's
// order take a password mechanism unless they hold a token.
import { oauthBearerMechanism } from './oauthbearer.js';
import { plainMechanism } from './plain.js';
import { type ScramOptions, scramMechanism } from './scram.js';
import type { SaslMechanism } from './types.js';

export interface SaslMechanismOptions {
  scram?: ScramOptions;
  /** Offer OAUTHBEARER (the server has a token service). */
  oauthbearer?: boolean;
}

/** Every mechanism, most preferred first; filter with `available()` per stream. */
export function saslMechanisms(opts: SaslMechanismOptions = {}): SaslMechanism[] {
  return [
    scramMechanism('SCRAM-SHA-256-PLUS', opts.scram),
    scramMechanism('SCRAM-SHA-1-PLUS', opts.scram),
    scramMechanism('SCRAM-SHA-256', opts.scram),
    scramMechanism('SCRAM-SHA-1', opts.scram),
    plainMechanism(),
    ...(opts.oauthbearer ? [oauthBearerMechanism()] : []),
  ];
}

/** The mechanism with this name (SASL names are case-sensitive upper case, RFC 4422 §3.1), or null. */
export function findMechanism(name: string, opts: SaslMechanismOptions = {}): SaslMechanism | null {
  return saslMechanisms(opts).find((m) => m.name === name) ?? null;
}
