// Cookies of the single sign-on layer (issue 9). A cookie value is 32 CSPRNG bytes (base64url)
// followed by an HMAC-SHA256 of them under a key derived from the server secret; the database
// keeps only SHA-256 of the random part. A forged or altered cookie fails the HMAC (compared in
// constant time) before any lookup. Cookies are `__Host-` prefixed (Secure, Path=/, no Domain),
// HttpOnly and SameSite=Lax: sent on the top-level navigation back from an identity provider,
// never on cross-site sub-requests or POSTs (state-changing routes also check a CSRF token).
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Response } from 'express';

export const SESSION_COOKIE = '__Host-parley';
export const FLOW_COOKIE = '__Host-parley-flow';

const RAW_RE = /^[A-Za-z0-9_-]{43}$/;

export class CookieSigner {
  private readonly key: Buffer;

  constructor(serverSecret: Buffer) {
    // A key of its own, so a cookie MAC can never be replayed as anything else the secret signs.
    this.key = createHmac('sha256', serverSecret).update('parley sso cookies v1').digest();
  }

  /** A new random value, its signed cookie form, and the hash the database keeps. */
  mint(): { raw: string; cookie: string; hash: string } {
    const raw = randomBytes(32).toString('base64url');
    return { raw, cookie: `${raw}.${this.mac(raw)}`, hash: sha256(raw) };
  }

  /** The stored hash of a signed cookie value, or null when the value is malformed or forged. */
  verify(value: string | undefined): string | null {
    if (!value) return null;
    const dot = value.indexOf('.');
    if (dot !== 43) return null;
    const raw = value.slice(0, dot);
    if (!RAW_RE.test(raw)) return null;
    const given = Buffer.from(value.slice(dot + 1), 'utf8');
    const want = Buffer.from(this.mac(raw), 'utf8');
    if (given.length !== want.length || !timingSafeEqual(given, want)) return null;
    return sha256(raw);
  }

  private mac(raw: string): string {
    return createHmac('sha256', this.key).update(raw).digest('base64url');
  }
}

export function sha256(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

/** Equal strings, compared in constant time (for CSRF tokens). */
export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The cookies of a request (RFC 6265 §5.4 header syntax; the first of duplicate names wins). */
export function readCookies(req: IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  const header = req.headers.cookie;
  if (!header || header.length > 8192) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 1) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

export function setCookie(res: Response, name: string, value: string, maxAgeSeconds: number): void {
  res.append('Set-Cookie', `${name}=${value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}`);
}

export function clearCookie(res: Response, name: string): void {
  res.append('Set-Cookie', `${name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0`);
}
