// TLS material: on first start, a local certificate authority and a server certificate it signs
// (kept in dataDir/tls across restarts), or the configured PEM files; one SecureContext per virtual
// host for SNI.
//
// Why a CA and not one self-signed certificate: clients built on NSS (Pidgin/finch through
// libpurple, Firefox) only let an administrator trust a certificate that is a CA (basicConstraints
// cA, keyCertSign), while a certificate that is a CA must not be a server's. So the generated pair
// is a CA (dataDir/tls/ca.pem, its key ca-key.pem, 0600) that people install once, and a server
// certificate (cert.pem: leaf + CA, a chain; key.pem) for every host and *.host, serverAuth, not a
// CA. The server certificate is re-issued from the same CA when a host is added or it nears its
// end, so clients that trust the CA keep trusting the server. Installs from before the CA (a
// cert.pem without ca-key.pem) and configured certificates (`tls.cert`, `hosts[].cert`) are left
// alone.
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { constants, createHash, X509Certificate } from 'node:crypto';
import { generate } from 'selfsigned';
import type { ResolvedConfig } from './config.js';
import type { ChannelBindingType } from './transport.js';

export interface TlsMaterial {
  /** SecureContext for a servername (falls back to the default). */
  contextFor(servername: string | undefined): SecureContext;
  readonly defaultContext: SecureContext;
  /** Paths of the default certificate and key. */
  readonly certPath: string;
  readonly keyPath: string;
  /** The generated local CA that signed the default certificate (null: configured or pre-CA certificate). */
  readonly ca: LocalCa | null;
}

/** The local certificate authority administrators distribute to clients. */
export interface LocalCa {
  /** dataDir/tls/ca.pem */
  path: string;
  /** SHA-256 fingerprint of the CA certificate, colon-separated upper-case hex (as openssl prints it). */
  fingerprint256: string;
}

/** TLS options shared by every listener: TLS 1.2+, no renegotiation (HARDENING.md). */
export const TLS_BASE_OPTIONS = {
  minVersion: 'TLSv1.2' as const,
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_NO_TICKET,
};

/** Lifetime of a generated server certificate (825 days: what Apple platforms accept at most). */
const SERVER_CERT_DAYS = 825;
/** A generated server certificate with less than this left is re-issued at start. */
const RENEW_BEFORE_DAYS = 30;
const CA_YEARS = 20;
const DAY_MS = 86_400_000;

export interface GeneratedTls {
  certPath: string;
  keyPath: string;
  /** The local CA, when the certificate at certPath is one it signed. */
  ca: LocalCa | null;
  /** A certificate (and maybe the CA) was written by this call. */
  generated: boolean;
}

function pemBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * Makes sure dataDir/tls holds a server certificate for `names` signed by the local CA, generating
 * the CA on first use. An existing certificate without the CA (older installs) is left alone.
 */
export async function ensureSelfSigned(dir: string, names: string[]): Promise<GeneratedTls> {
  const tlsDir = join(dir, 'tls');
  const certPath = join(tlsDir, 'cert.pem');
  const keyPath = join(tlsDir, 'key.pem');
  const caPath = join(tlsDir, 'ca.pem');
  const caKeyPath = join(tlsDir, 'ca-key.pem');
  const hosts = names.length ? names : ['localhost'];
  const haveCert = existsSync(certPath) && existsSync(keyPath);
  const haveCa = existsSync(caPath) && existsSync(caKeyPath);
  if (haveCert && !haveCa) return { certPath, keyPath, ca: null, generated: false };
  mkdirSync(tlsDir, { recursive: true, mode: 0o700 });
  const now = Date.now();
  let generated = false;
  if (!haveCa) {
    const ca = await generate(
      [
        { name: 'commonName', value: `Parley local CA for ${hosts[0]} (${new Date(now).toISOString().slice(0, 10)})` },
        { name: 'organizationName', value: 'Parley' },
      ],
      {
        keyType: 'ec',
        curve: 'P-256',
        algorithm: 'sha256',
        notBeforeDate: new Date(now - 3600_000),
        notAfterDate: new Date(now + CA_YEARS * 365 * DAY_MS),
        extensions: [
          { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
          { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
        ],
      },
    );
    writeFileSync(caKeyPath, ca.private, { mode: 0o600 });
    chmodSync(caKeyPath, 0o600);
    writeFileSync(caPath, ca.cert);
    generated = true;
  }
  const caPem = readFileSync(caPath, 'utf8');
  const caCert = new X509Certificate(caPem);
  const local: LocalCa = { path: caPath, fingerprint256: caCert.fingerprint256 };
  if (haveCert && !generated) {
    // Ours (issued by this CA), still covering every host and not near its end: keep it.
    const leaf = pemBlocks(readFileSync(certPath, 'utf8'))[0];
    const cert = leaf ? new X509Certificate(leaf) : null;
    if (!cert || !cert.checkIssued(caCert)) return { certPath, keyPath, ca: null, generated: false };
    const fresh = Date.parse(cert.validTo) - now > RENEW_BEFORE_DAYS * DAY_MS;
    const san = new Set((cert.subjectAltName ?? '').split(', '));
    if (fresh && hosts.every((h) => san.has(`DNS:${h}`) && san.has(`DNS:*.${h}`))) {
      return { certPath, keyPath, ca: local, generated: false };
    }
  }
  const altNames: { type: 2 | 7; value?: string; ip?: string }[] = hosts.flatMap((n) => [
    { type: 2 as const, value: n },
    { type: 2 as const, value: `*.${n}` },
  ]);
  // Clients that connect to the loopback address by number (tests, `parley mux` on the same machine).
  if (hosts.includes('localhost')) altNames.push({ type: 7, ip: '127.0.0.1' }, { type: 7, ip: '::1' });
  const res = await generate([{ name: 'commonName', value: hosts[0] as string }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 3600_000),
    notAfterDate: new Date(now + SERVER_CERT_DAYS * DAY_MS),
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
    ca: { key: readFileSync(caKeyPath, 'utf8'), cert: caPem },
  });
  writeFileSync(keyPath, res.private, { mode: 0o600 });
  chmodSync(keyPath, 0o600);
  // The chain: clients that were given only the CA can build the path from what the server sends.
  writeFileSync(certPath, `${res.cert.trim()}\n${caPem.trim()}\n`);
  return { certPath, keyPath, ca: local, generated: true };
}

export async function loadTlsMaterial(config: Readonly<ResolvedConfig>): Promise<TlsMaterial & { generated: boolean }> {
  let certPath = config.tls.cert;
  let keyPath = config.tls.key;
  let generated = false;
  let ca: LocalCa | null = null;
  if (!certPath || !keyPath) {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    const r = await ensureSelfSigned(config.dataDir, config.hosts.map((h) => h.domain));
    certPath = r.certPath;
    keyPath = r.keyPath;
    generated = r.generated;
    ca = r.ca;
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
    ca,
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

/**
 * RFC 5929 §3.1 tls-unique: the first Finished message of the most recent handshake, which is
 * the client's in a full handshake and the server's in a resumed one. Defined for TLS 1.2; on
 * TLS 1.3 this is the value OpenSSL-based clients (Python's ssl, hence slixmpp) compute and
 * ejabberd accepts (the client's Finished), so those clients can log in with -PLUS.
 * Renegotiation is refused (TLS_BASE_OPTIONS), so the "most recent handshake" is the only one.
 */
export function tlsUnique(tls: TLSSocket): Buffer | null {
  const v = tls.isSessionReused() ? tls.getFinished() : tls.getPeerFinished();
  return v && v.length > 0 ? v : null;
}

/** Channel-binding types a TLS connection can provide, in the server's preference order. */
export function channelBindingTypesFor(protocol: string | null): ChannelBindingType[] {
  // tls-exporter is only defined for TLS 1.3 here (RFC 9266 allows 1.2 only with the extended
  // master secret, which we cannot check); tls-server-end-point everywhere (XEP-0440 rule 1).
  return protocol === 'TLSv1.3' ? ['tls-exporter', 'tls-server-end-point', 'tls-unique'] : ['tls-unique', 'tls-server-end-point'];
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

