// TLS material: a self-signed certificate generated on first start (kept in dataDir across
// restarts), or the configured PEM files; one SecureContext per virtual host for SNI.
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { constants, createHash } from 'node:crypto';
import { generate } from 'selfsigned';
import type { ResolvedConfig } from './config.js';

export interface TlsMaterial {
  /** SecureContext for a servername (falls back to the default). */
  contextFor(servername: string | undefined): SecureContext;
  readonly defaultContext: SecureContext;
  /** Paths of the default certificate and key. */
  readonly certPath: string;
  readonly keyPath: string;
}

/** TLS options shared by every listener: TLS 1.2+, no renegotiation (HARDENING.md). */
export const TLS_BASE_OPTIONS = {
  minVersion: 'TLSv1.2' as const,
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_NO_TICKET,
};

/** Generates a self-signed certificate for the given names unless one exists at the paths. */
export async function ensureSelfSigned(dir: string, names: string[]): Promise<{ certPath: string; keyPath: string; generated: boolean }> {
  const certPath = join(dir, 'tls', 'cert.pem');
  const keyPath = join(dir, 'tls', 'key.pem');
  if (existsSync(certPath) && existsSync(keyPath)) return { certPath, keyPath, generated: false };
  mkdirSync(join(dir, 'tls'), { recursive: true, mode: 0o700 });
  const altNames = names.flatMap((n) => [
    { type: 2 as const, value: n },
    { type: 2 as const, value: `*.${n}` },
  ]);
  const now = new Date();
  const res = await generate([{ name: 'commonName', value: names[0] ?? 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now.getTime() - 3600_000),
    notAfterDate: new Date(now.getTime() + 10 * 365 * 86400_000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  writeFileSync(keyPath, res.private, { mode: 0o600 });
  chmodSync(keyPath, 0o600);
  writeFileSync(certPath, res.cert);
  return { certPath, keyPath, generated: true };
}

export async function loadTlsMaterial(config: Readonly<ResolvedConfig>): Promise<TlsMaterial & { generated: boolean }> {
  let certPath = config.tls.cert;
  let keyPath = config.tls.key;
  let generated = false;
  if (!certPath || !keyPath) {
    mkdirSync(config.dataDir, { recursive: true });
    const r = await ensureSelfSigned(config.dataDir, config.hosts.map((h) => h.domain));
    certPath = r.certPath;
    keyPath = r.keyPath;
    generated = r.generated;
  }
  const make = (cert: string, key: string) =>
    createSecureContext({ cert: readFileSync(cert), key: readFileSync(key), ...TLS_BASE_OPTIONS });
  const defaultContext = make(certPath, keyPath);
  const perHost = new Map<string, SecureContext>();
  for (const h of config.hosts) if (h.cert && h.key) perHost.set(h.domain, make(h.cert, h.key));
  return {
    defaultContext,
    certPath,
    keyPath,
    generated,
    contextFor(servername) {
      if (!servername) return defaultContext;
      const name = servername.toLowerCase();
      const direct = perHost.get(name);
      if (direct) return direct;
      // Subdomains (conference.example.com) use their parent host's certificate.
      for (const [host, ctx] of perHost) if (name.endsWith(`.${host}`)) return ctx;
      return defaultContext;
    },
  };
}

/** RFC 5929 §4.1: hash of the server certificate with its signature hash, SHA-256 for MD5/SHA-1. */
export function tlsServerEndPoint(der: Buffer): Buffer {
  // Signature algorithm OIDs (DER) for SHA-384 and SHA-512 based signatures; SHA-256 otherwise.
  const tail = der.subarray(Math.max(0, der.length - 160));
  const has = (hex: string) => tail.includes(Buffer.from(hex, 'hex'));
  let alg = 'sha256';
  if (has('2a864886f70d01010c') || has('2a8648ce3d040303')) alg = 'sha384';
  else if (has('2a864886f70d01010d') || has('2a8648ce3d040304')) alg = 'sha512';
  return createHash(alg).update(der).digest();
}

