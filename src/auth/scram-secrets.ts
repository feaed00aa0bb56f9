// SCRAM secrets (RFC 5802 §3, RFC 7677 §3). The server never stores a password, only, per hash:
//   SaltedPassword := Hi(Normalize(password), salt, i)      (Hi is PBKDF2 with dkLen = hash length)
//   ClientKey      := HMAC(SaltedPassword, "Client Key")
//   StoredKey      := H(ClientKey)
//   ServerKey      := HMAC(SaltedPassword, "Server Key")
// Normalize() is SASLprep (RFC 4013). PBKDF2 is deliberately expensive, so every function that can
// be on a login path has an async variant running on libuv's thread pool instead of the event loop.
import { createHash, createHmac, pbkdf2, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import saslprep from '@mongodb-js/saslprep';
import type { ScramHash, ScramSecret } from '../storage/types.js';

const pbkdf2Async = promisify(pbkdf2);

/** Iteration counts for new secrets. RFC 7677 §4 asks for at least 4096 for SHA-256. */
export const DEFAULT_SCRAM_ITERATIONS: Readonly<Record<ScramHash, number>> = Object.freeze({
  'SHA-1': 4096,
  'SHA-256': 4096,
});

/** Salt length for new secrets; fake salts for unknown users use the same length. */
export const SCRAM_SALT_BYTES = 16;

export const SCRAM_HASHES: readonly ScramHash[] = ['SHA-1', 'SHA-256'];

/** node:crypto algorithm name and output length of each SCRAM hash. */
export const SCRAM_ALGORITHMS: Readonly<Record<ScramHash, { alg: 'sha1' | 'sha256'; length: number }>> =
  Object.freeze({
    'SHA-1': { alg: 'sha1', length: 20 },
    'SHA-256': { alg: 'sha256', length: 32 },
  });

export function scramH(hash: ScramHash, data: Buffer): Buffer {
  return createHash(SCRAM_ALGORITHMS[hash].alg).update(data).digest();
}

export function scramHmac(hash: ScramHash, key: Buffer, data: Buffer | string): Buffer {
  return createHmac(SCRAM_ALGORITHMS[hash].alg, key).update(data).digest();
}

/** StoredKey and ServerKey from SaltedPassword (RFC 5802 §3). */
export function scramKeys(hash: ScramHash, saltedPassword: Buffer): { storedKey: Buffer; serverKey: Buffer } {
  const clientKey = scramHmac(hash, saltedPassword, 'Client Key');
  return {
    storedKey: scramH(hash, clientKey),
    serverKey: scramHmac(hash, saltedPassword, 'Server Key'),
  };
}

/**
 * SASLprep for a password being set (a "stored string", RFC 4013 §2 / RFC 3454 §7: unassigned
 * code points refused) or being checked (a "query", unassigned allowed, as RFC 5802 §2.2 says).
 * Throws on prohibited characters or an empty result.
 */
export function preparePassword(password: string, mode: 'stored' | 'query'): string {
  const out = saslprep(password, { allowUnassigned: mode === 'query' });
  if (out.length === 0) throw new Error('empty password');
  return out;
}

function checkParams(hash: ScramHash, iterations: number, salt: Buffer): void {
  if (!(hash in SCRAM_ALGORITHMS)) throw new Error(`unknown SCRAM hash ${String(hash)}`);
  if (!Number.isSafeInteger(iterations) || iterations < 1) throw new Error('bad SCRAM iteration count');
  if (salt.length === 0) throw new Error('empty SCRAM salt');
}

function toSecret(hash: ScramHash, salted: Buffer, salt: Buffer, iterations: number): ScramSecret {
  const { storedKey, serverKey } = scramKeys(hash, salted);
  return {
    salt: salt.toString('base64'),
    iterations,
    storedKey: storedKey.toString('base64'),
    serverKey: serverKey.toString('base64'),
  };
}

/** Derives the SCRAM secret for a new password (synchronous: blocks for the whole PBKDF2 run). */
export function deriveScram(
  password: string,
  hash: ScramHash,
  iterations: number = DEFAULT_SCRAM_ITERATIONS[hash],
  salt: Buffer = randomBytes(SCRAM_SALT_BYTES),
): ScramSecret {
  checkParams(hash, iterations, salt);
  const { alg, length } = SCRAM_ALGORITHMS[hash];
  const salted = pbkdf2Sync(preparePassword(password, 'stored'), salt, iterations, length, alg);
  return toSecret(hash, salted, salt, iterations);
}

/** Like deriveScram, with PBKDF2 off the event loop. */
export async function deriveScramAsync(
  password: string,
  hash: ScramHash,
  iterations: number = DEFAULT_SCRAM_ITERATIONS[hash],
  salt: Buffer = randomBytes(SCRAM_SALT_BYTES),
): Promise<ScramSecret> {
  checkParams(hash, iterations, salt);
  const { alg, length } = SCRAM_ALGORITHMS[hash];
  const salted = await pbkdf2Async(preparePassword(password, 'stored'), salt, iterations, length, alg);
  return toSecret(hash, salted, salt, iterations);
}

export type ScramIterations = number | Partial<Record<ScramHash, number>>;

function iterationsFor(hash: ScramHash, iterations: ScramIterations | undefined): number {
  if (typeof iterations === 'number') return iterations;
  return iterations?.[hash] ?? DEFAULT_SCRAM_ITERATIONS[hash];
}

/** Secrets for every supported hash, each with its own salt (so they cannot be correlated). */
export function deriveAllScram(password: string, iterations?: ScramIterations): Record<ScramHash, ScramSecret> {
  return {
    'SHA-1': deriveScram(password, 'SHA-1', iterationsFor('SHA-1', iterations)),
    'SHA-256': deriveScram(password, 'SHA-256', iterationsFor('SHA-256', iterations)),
  };
}

export async function deriveAllScramAsync(
  password: string,
  iterations?: ScramIterations,
): Promise<Record<ScramHash, ScramSecret>> {
  const [sha1, sha256] = await Promise.all([
    deriveScramAsync(password, 'SHA-1', iterationsFor('SHA-1', iterations)),
    deriveScramAsync(password, 'SHA-256', iterationsFor('SHA-256', iterations)),
  ]);
  return { 'SHA-1': sha1, 'SHA-256': sha256 };
}

/** Decodes a stored secret; null when it is unusable (corrupt row, wrong key length). */
export function decodeScramSecret(
  secret: ScramSecret,
  hash: ScramHash,
): { salt: Buffer; iterations: number; storedKey: Buffer; serverKey: Buffer } | null {
  const algo = SCRAM_ALGORITHMS[hash];
  if (!algo) return null;
  const salt = Buffer.from(secret.salt, 'base64');
  const storedKey = Buffer.from(secret.storedKey, 'base64');
  const serverKey = Buffer.from(secret.serverKey, 'base64');
  if (salt.length === 0 || storedKey.length !== algo.length || serverKey.length !== algo.length) return null;
  if (!Number.isSafeInteger(secret.iterations) || secret.iterations < 1) return null;
  return { salt, iterations: secret.iterations, storedKey, serverKey };
}

function prepQuery(password: string): string | null {
  try {
    return preparePassword(password, 'query');
  } catch {
    return null;
  }
}

/**
 * Checks a plaintext password (PLAIN, admin tools) against a stored secret by recomputing
 * StoredKey with the stored salt and iteration count. Synchronous: prefer the async variant.
 */
export function verifyPasswordAgainstScram(password: string, secret: ScramSecret, hash: ScramHash): boolean {
  const dec = decodeScramSecret(secret, hash);
  const prepped = prepQuery(password);
  if (!dec || prepped === null) return false;
  const { alg, length } = SCRAM_ALGORITHMS[hash];
  const salted = pbkdf2Sync(prepped, dec.salt, dec.iterations, length, alg);
  return timingSafeEqual(scramKeys(hash, salted).storedKey, dec.storedKey);
}

export async function verifyPasswordAgainstScramAsync(
  password: string,
  secret: ScramSecret,
  hash: ScramHash,
): Promise<boolean> {
  const dec = decodeScramSecret(secret, hash);
  const prepped = prepQuery(password);
  if (!dec || prepped === null) return false;
  const { alg, length } = SCRAM_ALGORITHMS[hash];
  const salted = await pbkdf2Async(prepped, dec.salt, dec.iterations, length, alg);
  return timingSafeEqual(scramKeys(hash, salted).storedKey, dec.storedKey);
}
