// SASL mechanisms offered to clients (RFC 6120 §6.3.3: listed in server preference order).
// Channel-bound SCRAM first, then SCRAM-SHA-256 over SHA-1 (RFC 7677), PLAIN last (RFC 4616).
import { plainMechanism } from './plain.js';
import { type ScramOptions, scramMechanism } from './scram.js';
import type { SaslMechanism } from './types.js';

export interface SaslMechanismOptions {
  scram?: ScramOptions;
}

/** Every mechanism, most preferred first; filter with `available()` per stream. */
export function saslMechanisms(opts: SaslMechanismOptions = {}): SaslMechanism[] {
  return [
    scramMechanism('SCRAM-SHA-256-PLUS', opts.scram),
    scramMechanism('SCRAM-SHA-1-PLUS', opts.scram),
    scramMechanism('SCRAM-SHA-256', opts.scram),
    scramMechanism('SCRAM-SHA-1', opts.scram),
    plainMechanism(),
  ];
}

/** The mechanism with this name (SASL names are case-sensitive upper case, RFC 4422 §3.1), or null. */
export function findMechanism(name: string, opts: SaslMechanismOptions = {}): SaslMechanism | null {
  return saslMechanisms(opts).find((m) => m.name === name) ?? null;
}
