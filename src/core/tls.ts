// TLS material: on first start, a local certificate authority and a server certificate it signs
// (kept in dataDir/tls across restarts), or the configured PEM files; one SecureContext per virtual
// host for SNI.
//
// Why a CA and not one self-signed certificate: clients built on NSS (Pidgin/finch through
// libpurple, Firefox) only let an administrator trust a certificate that is a CA (basicConstraints
// cA, keyCertSign), while a certificate that is a CA must not be a server's. So the generated pair
// is a CA (dataDir/tls/ca.pem, its key ca-key.pem, 0600) that people install once, and a server
// certificate (cert.pem: leaf + CA, a chain; key.pem) for every host and *.host, serverAuth, not a
// CA. The server certificate is re-issued from the same CA when it nears its end (or no longer
// matches its key or the CA), so clients that trust the CA keep trusting the server. Installs from
// before the CA (a cert.pem without ca files) and configured certificates (`tls.cert`,
// `hosts[].cert`) are left alone.
//
// The CA is installed as a trust anchor on client machines, so it is made as harmless as possible
// to them (docs/tls.md): it can only sign server certificates (extKeyUsage serverAuth; keyUsage
// keyCertSign + cRLSign), with no intermediate below it (pathlen 0), for the configured hosts only
// (a critical nameConstraints extension: each host and its subdomains, plus 127.0.0.1 and ::1 with
// localhost; every other IP address excluded), for 10 years. A host added later is outside those
// constraints: it needs a new CA (move dataDir/tls away). Certificates are built with
// @peculiar/x509 (selfsigned cannot write nameConstraints, SKI or AKI; OpenSSL's -x509_strict and
// Python 3.13's default VERIFY_X509_STRICT need the key identifiers).
//
// Concurrency: the server, a standalone mux sharing its dataDir and embedded mux children may all
// start at once. Whatever writes holds dataDir/tls/.lock (created with 'wx'; taken over when older
// than LOCK_STALE_MS) around the whole check-and-generate and re-checks after taking it; every
// file is written to a temporary name (0600, 'wx') and renamed into place; ca.pem and ca-key.pem
// are never overwritten. A state that needs no write (a valid leaf signed by the CA) is accepted
// without the lock, so a CA whose key was moved offline keeps working on a read-only directory.
import {
  closeSync,
  existsSync,
  fstatSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { constants, createHash, createPrivateKey, randomBytes, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import * as x509 from '@peculiar/x509';
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

/** Lifetime of a generated server certificate (825 days: what Apple platforms accept at most), never beyond its CA's. */
const SERVER_CERT_DAYS = 825;
/** A generated server certificate with less than this left is re-issued at start (unless it already ends with its CA). */
const RENEW_BEFORE_DAYS = 30;
/** Lifetime of a generated local CA. */
const CA_YEARS = 10;
const DAY_MS = 86_400_000;
/** A dataDir/tls/.lock older than this is left over by a process that died: it is taken over. */
export const LOCK_STALE_MS = 60_000;
/** How long a start waits for another process's lock before giving up. */
const LOCK_WAIT_MS = 2 * LOCK_STALE_MS;

export interface GeneratedTls {
  certPath: string;
  keyPath: string;
  /** The local CA, when the certificate at certPath is one it signed. */
  ca: LocalCa | null;
  /** A certificate (and maybe the CA) was written by this call. */
  generated: boolean;
  /** The certificate (chain) and key as checked (or written) by this call, read once so both match. */
  cert?: Buffer;
  key?: Buffer;
}

/** A configuration error in dataDir/tls that an administrator has to resolve (the server does not start). */
export class TlsSetupError extends Error {
  override name = 'TlsSetupError';
}

function pemBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function readIfExists(path: string): Buffer | null {
  try {
    return readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

// --- DER, just enough for the nameConstraints extension (RFC 5280 §4.2.1.10) ---

function derTlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, content]);
}

/** The TLVs directly inside `buf` (tag, content). */
function derChildren(buf: Buffer): { tag: number; content: Buffer }[] {
  const out: { tag: number; content: Buffer }[] = [];
  let i = 0;
  while (i + 2 <= buf.length) {
    const tag = buf[i] as number;
    let len = buf[i + 1] as number;
    let p = i + 2;
    if (len & 0x80) {
      const k = len & 0x7f;
      len = 0;
      for (let j = 0; j < k; j++) len = len * 256 + (buf[p + j] as number);
      p += k;
    }
    out.push({ tag, content: buf.subarray(p, p + len) });
    i = p + len;
  }
  return out;
}

function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  const [l = '', r] = ip.split('::');
  const left = l ? l.split(':') : [];
  const right = r !== undefined && r ? r.split(':') : [];
  const groups = r === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return Buffer.concat(groups.map((g) => Buffer.from([parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff])));
}

/** GeneralSubtree for a dNSName [2] or an iPAddress [7] (address then mask). */
function subtree(base: { dns: string } | { ip: string; bits: number }): Buffer {
  if ('dns' in base) return derTlv(0x30, derTlv(0x82, Buffer.from(base.dns, 'ascii')));
  const addr = ipBytes(base.ip);
  const mask = Buffer.alloc(addr.length);
  for (let b = 0; b < base.bits; b++) mask[b >> 3] = (mask[b >> 3] as number) | (0x80 >> (b & 7));
  return derTlv(0x30, derTlv(0x87, Buffer.concat([addr, mask])));
}

/**
 * nameConstraints for the CA: each host (a dNSName constraint permits the name and its
 * subdomains), 127.0.0.1/32 and ::1/128 with localhost; every other IPv4/IPv6 address excluded
 * (without an iPAddress subtree, IP names would be unconstrained).
 */
function nameConstraintsDer(hosts: string[]): Buffer {
  const permitted = hosts.map((h) => subtree({ dns: h }));
  const excluded: Buffer[] = [];
  if (hosts.includes('localhost')) permitted.push(subtree({ ip: '127.0.0.1', bits: 32 }), subtree({ ip: '::1', bits: 128 }));
  else excluded.push(subtree({ ip: '0.0.0.0', bits: 0 }), subtree({ ip: '::', bits: 0 }));
  const parts = [derTlv(0xa0, Buffer.concat(permitted))];
  if (excluded.length) parts.push(derTlv(0xa1, Buffer.concat(excluded)));
  return derTlv(0x30, Buffer.concat(parts));
}

/** The dNSName subtrees a CA permits, or null when it has no nameConstraints (a CA from before them). */
function permittedDnsNames(caPem: string): string[] | null {
  const ext = new x509.X509Certificate(caPem).getExtension('2.5.29.30');
  if (!ext) return null;
  const [seq] = derChildren(Buffer.from(ext.value));
  const names: string[] = [];
  for (const part of seq ? derChildren(seq.content) : []) {
    if (part.tag !== 0xa0) continue;
    for (const st of derChildren(part.content)) {
      const [base] = derChildren(st.content);
      if (base?.tag === 0x82) names.push(base.content.toString('ascii').toLowerCase());
    }
  }
  return names;
}

function dnsPermitted(host: string, bases: string[]): boolean {
  return bases.some((b) => {
    const base = b.startsWith('.') ? b.slice(1) : b;
    return base === '' || host === base || host.endsWith(`.${base}`);
  });
}

// --- keys and certificates (@peculiar/x509 on node's webcrypto) ---

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** The webcrypto algorithm (for signing) of a private key read from PEM. */
function signingAlgorithm(key: KeyObject): EcKeyImportParams & { hash: string } | (RsaHashedImportParams & { hash: string }) {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const namedCurve = curve === 'prime256v1' ? 'P-256' : curve === 'secp384r1' ? 'P-384' : curve === 'secp521r1' ? 'P-521' : null;
    if (!namedCurve) throw new TlsSetupError(`the local CA key uses an unsupported curve (${curve ?? 'unknown'})`);
    return { name: 'ECDSA', namedCurve, hash: namedCurve === 'P-256' ? 'SHA-256' : 'SHA-384' };
  }
  if (key.asymmetricKeyType === 'rsa') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  throw new TlsSetupError(`the local CA key has an unsupported type (${key.asymmetricKeyType ?? 'unknown'})`);
}

async function importSigningKey(pem: Buffer): Promise<{ key: CryptoKey; alg: ReturnType<typeof signingAlgorithm> }> {
  const ko = createPrivateKey(pem);
  const alg = signingAlgorithm(ko);
  const der = ko.export({ type: 'pkcs8', format: 'der' });
  return { key: await webcrypto.subtle.importKey('pkcs8', der, alg, false, ['sign']), alg };
}

async function newKeyPair(): Promise<{ keys: CryptoKeyPair; pem: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const pem = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }) as string;
  return { keys, pem };
}

/** A positive 128-bit serial number (hex). */
function serial(): string {
  const b = randomBytes(16);
  b[0] = ((b[0] as number) & 0x7f) | 0x01;
  return b.toString('hex');
}

async function createCa(hosts: string[], now: number): Promise<{ cert: string; key: string }> {
  const { keys, pem } = await newKeyPair();
  const name = new x509.Name([
    { CN: [`Parley local CA for ${hosts[0] as string} (${new Date(now).toISOString().slice(0, 10)})`] },
    { O: ['Parley'] },
  ]);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name,
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + CA_YEARS * 365 * DAY_MS),
    keys,
    signingAlgorithm: EC_P256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      new x509.Extension('2.5.29.30', true, new Uint8Array(nameConstraintsDer(hosts))),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString('pem'), key: pem };
}

async function createLeaf(hosts: string[], caPem: string, caKeyPem: Buffer, now: number): Promise<{ cert: string; key: string }> {
  const ca = new x509.X509Certificate(caPem);
  const { key: signingKey, alg } = await importSigningKey(caKeyPem);
  const { keys, pem } = await newKeyPair();
  const altNames: x509.JsonGeneralName[] = hosts.flatMap((n) => [
    { type: 'dns' as const, value: n },
    { type: 'dns' as const, value: `*.${n}` },
  ]);
  // Clients that connect to the loopback address by number (tests, `parley mux` on the same machine).
  if (hosts.includes('localhost')) altNames.push({ type: 'ip', value: '127.0.0.1' }, { type: 'ip', value: '::1' });
  const ski = ca.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = ski ? new x509.AuthorityKeyIdentifierExtension(ski.keyId) : await x509.AuthorityKeyIdentifierExtension.create(ca.publicKey);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: new x509.Name([{ CN: [hosts[0] as string] }]),
    issuer: ca.subjectName,
    notBefore: new Date(Math.max(now - 3600_000, ca.notBefore.getTime())),
    // Never beyond the CA: a leaf that outlives its issuer is one nobody can verify at its end.
    notAfter: new Date(Math.min(now + SERVER_CERT_DAYS * DAY_MS, ca.notAfter.getTime())),
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension(altNames, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      aki,
    ],
  });
  return { cert: cert.toString('pem'), key: pem };
}

// --- the lock and atomic writes ---

async function withLock<T>(tlsDir: string, fn: () => Promise<T>): Promise<T> {
  const lockPath = join(tlsDir, '.lock');
  const until = Date.now() + LOCK_WAIT_MS;
  let ino: number;
  for (;;) {
    try {
      const fd = openSync(lockPath, 'wx', 0o600);
      try {
        writeSync(fd, `${process.pid} ${new Date().toISOString()}\n`);
        ino = fstatSync(fd).ino;
      } finally {
        closeSync(fd);
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let st;
    try {
      st = statSync(lockPath);
    } catch {
      continue; // released meanwhile
    }
    if (Date.now() - st.mtimeMs > LOCK_STALE_MS) {
      // Left over by a process that died: move it aside (atomic, so one taker wins) and try again.
      // If what was moved is not the stale lock seen above (another taker was quicker), put it back.
      const aside = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}`;
      try {
        renameSync(lockPath, aside);
      } catch {
        continue;
      }
      const moved = statSync(aside);
      if (moved.ino !== st.ino || moved.mtimeMs !== st.mtimeMs) {
        try {
          linkSync(aside, lockPath);
        } catch {
          /* a third process holds it now */
        }
      }
      unlinkSync(aside);
      continue;
    }
    if (Date.now() > until) {
      throw new TlsSetupError(`${lockPath} is held by another process (${readIfExists(lockPath)?.toString().trim() ?? '?'}); remove it if no Parley process is generating certificates`);
    }
    await sleep(25 + Math.random() * 50);
  }
  try {
    return await fn();
  } finally {
    // Only our own lock (not one that replaced it after a takeover).
    try {
      if (statSync(lockPath).ino === ino) unlinkSync(lockPath);
    } catch {
      /* already gone */
    }
  }
}

/** Writes `data` to `path` through a temporary file (0600, 'wx') renamed into place; with `noReplace`, fails if `path` exists. */
function writeAtomic(path: string, data: string, noReplace = false): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600, flag: 'wx' });
  try {
    if (!noReplace) {
      renameSync(tmp, path);
      return;
    }
    try {
      linkSync(tmp, path); // atomic create-if-absent
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new TlsSetupError(`${path} appeared while generating the local CA; not overwriting it`);
      if (existsSync(path)) throw new TlsSetupError(`${path} exists; not overwriting it`);
      renameSync(tmp, path); // file systems without hard links (we hold the lock)
    }
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      /* renamed */
    }
  }
}

// --- the state of dataDir/tls ---

type TlsState =
  | { kind: 'pre-ca' }
  | { kind: 'ok'; ca: LocalCa; cert: Buffer; key: Buffer }
  | { kind: 'new-ca' }
  | { kind: 'reissue'; caPem: string; caKey: Buffer; why: string }
  | { kind: 'refuse'; message: string };

function inspect(tlsDir: string, hosts: string[], now: number): TlsState {
  const certPath = join(tlsDir, 'cert.pem');
  const keyPath = join(tlsDir, 'key.pem');
  const caPath = join(tlsDir, 'ca.pem');
  const caKeyPath = join(tlsDir, 'ca-key.pem');
  // Leaf first, then the CA files: the CA is always written before the leaf, so a leaf seen
  // without CA files is really from before the CA, not one half of a generation in progress.
  const cert = readIfExists(certPath);
  const key = readIfExists(keyPath);
  const caBuf = readIfExists(caPath);
  const caKey = readIfExists(caKeyPath);
  if (!caBuf && !caKey) return cert && key ? { kind: 'pre-ca' } : { kind: 'new-ca' };
  const fix = `move ${caKeyPath} away (a new CA is generated; clients then have to install the new ca.pem), or configure tls.cert/tls.key`;
  if (!caBuf) {
    return { kind: 'refuse', message: `${caKeyPath} exists without ${caPath}: put the CA certificate back next to its key, or ${fix}` };
  }
  const caPem = caBuf.toString('utf8');
  let caCert: X509Certificate;
  try {
    caCert = new X509Certificate(caPem);
  } catch {
    return { kind: 'refuse', message: `${caPath} is not a certificate` };
  }
  if (!caCert.ca) return { kind: 'refuse', message: `${caPath} is not a CA certificate` };
  if (caKey) {
    let matches = false;
    try {
      matches = caCert.checkPrivateKey(createPrivateKey(caKey));
    } catch {
      /* not a key */
    }
    if (!matches) return { kind: 'refuse', message: `${caKeyPath} is not the key of ${caPath}: put the matching pair back, or move both away to generate a new CA (clients then have to install the new ca.pem)` };
  }
  const caEnd = Date.parse(caCert.validTo);
  if (caEnd <= now) {
    return { kind: 'refuse', message: `the local CA ${caPath} expired on ${caCert.validTo}: move ${tlsDir} away to generate a new CA (clients then have to install the new ca.pem), or configure tls.cert/tls.key` };
  }
  const local: LocalCa = { path: caPath, fingerprint256: caCert.fingerprint256 };
  let why = 'there is no server certificate';
  if (cert && key) {
    why = leafProblem(cert, key, caCert, hosts, now);
    // With the CA key offline, a leaf that is due for renewal is used until its end.
    if (!why || (why === RENEW_SOON && !caKey)) return { kind: 'ok', ca: local, cert, key };
  }
  if (!caKey) {
    return {
      kind: 'refuse',
      message: `the server certificate ${certPath} has to be re-issued (${why}) but the local CA key ${caKeyPath} is absent: bring the CA key back for this start (it can be moved offline again afterwards), or configure tls.cert/tls.key`,
    };
  }
  return { kind: 'reissue', caPem, caKey, why };
}

const RENEW_SOON = 'it ends within 30 days';

/** Why the leaf in cert.pem/key.pem cannot be kept ('' when it can; RENEW_SOON: still valid, but due). */
function leafProblem(certBuf: Buffer, keyBuf: Buffer, caCert: X509Certificate, hosts: string[], now: number): string {
  const blocks = pemBlocks(certBuf.toString('utf8'));
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(blocks[0] ?? '');
  } catch {
    return 'cert.pem holds no certificate';
  }
  if (leaf.ca || !leaf.verify(caCert.publicKey)) return 'it is not signed by the local CA';
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(keyBuf))) return 'key.pem does not match it';
  } catch {
    return 'key.pem is not a private key';
  }
  const end = Date.parse(leaf.validTo);
  const caEnd = Date.parse(caCert.validTo);
  if (end <= now) return 'it has expired';
  if (end - now <= RENEW_BEFORE_DAYS * DAY_MS && end < caEnd) return RENEW_SOON;
  const san = new Set((leaf.subjectAltName ?? '').split(', '));
  const missing = hosts.find((h) => !san.has(`DNS:${h}`) || !san.has(`DNS:*.${h}`));
  if (missing) return `it does not name ${missing}`;
  if (blocks[1] && new X509Certificate(blocks[1]).fingerprint256 !== caCert.fingerprint256) return 'its chain holds another CA';
  return '';
}

/**
 * Makes sure dataDir/tls holds a server certificate for `names` signed by the local CA, generating
 * the CA on first use. An existing certificate without the CA (older installs) is left alone.
 * Throws TlsSetupError when dataDir/tls needs an administrator (docs/tls.md).
 */
export async function ensureSelfSigned(dir: string, names: string[]): Promise<GeneratedTls> {
  const tlsDir = join(dir, 'tls');
  const certPath = join(tlsDir, 'cert.pem');
  const keyPath = join(tlsDir, 'key.pem');
  const caPath = join(tlsDir, 'ca.pem');
  const caKeyPath = join(tlsDir, 'ca-key.pem');
  const hosts = [...new Set((names.length ? names : ['localhost']).map((n) => n.toLowerCase()))];
  const settled = (s: TlsState): GeneratedTls | null =>
    s.kind === 'pre-ca' ? { certPath, keyPath, ca: null, generated: false } : s.kind === 'ok' ? { certPath, keyPath, ca: s.ca, generated: false, cert: s.cert, key: s.key } : null;
  // Nothing to write: no lock (a read-only directory with the CA key offline keeps working).
  const first = settled(inspect(tlsDir, hosts, Date.now()));
  if (first) return first;
  mkdirSync(tlsDir, { recursive: true, mode: 0o700 });
  return withLock(tlsDir, async () => {
    const now = Date.now();
    const state = inspect(tlsDir, hosts, now); // another process may have done it meanwhile
    const done = settled(state);
    if (done) return done;
    if (state.kind === 'refuse') throw new TlsSetupError(state.message);
    let caPem: string;
    let caKey: Buffer;
    if (state.kind === 'new-ca') {
      const ca = await createCa(hosts, now);
      writeAtomic(caKeyPath, ca.key, true);
      writeAtomic(caPath, ca.cert, true);
      caPem = ca.cert;
      caKey = Buffer.from(ca.key);
    } else if (state.kind === 'reissue') {
      caPem = state.caPem;
      caKey = state.caKey;
      const permitted = permittedDnsNames(caPem);
      const outside = permitted ? hosts.filter((h) => !dnsPermitted(h, permitted)) : [];
      if (outside.length) {
        throw new TlsSetupError(
          `the local CA ${caPath} may only sign for ${permitted?.join(', ')} (its name constraints), not ${outside.join(', ')}: ` +
            `a new host needs a new CA: move ${tlsDir} away (a new CA is generated at the next start; clients then have to install the new ca.pem), or configure tls.cert/tls.key`,
        );
      }
    } else {
      throw new Error(`unexpected TLS state ${state.kind}`);
    }
    const leaf = await createLeaf(hosts, caPem, caKey, now);
    const chain = `${leaf.cert.trim()}\n${caPem.trim()}\n`;
    // Key first: a reader between the two renames sees a mismatch, takes the lock and waits for us.
    writeAtomic(keyPath, leaf.key);
    // The chain: clients that were given only the CA can build the path from what the server sends.
    writeAtomic(certPath, chain);
    const caCert = new X509Certificate(caPem);
    return {
      certPath,
      keyPath,
      ca: { path: caPath, fingerprint256: caCert.fingerprint256 },
      generated: true,
      cert: Buffer.from(chain),
      key: Buffer.from(leaf.key),
    };
  });
}

export async function loadTlsMaterial(config: Readonly<ResolvedConfig>): Promise<TlsMaterial & { generated: boolean }> {
  let certPath = config.tls.cert;
  let keyPath = config.tls.key;
  let generated = false;
  let ca: LocalCa | null = null;
  let pems: { cert: Buffer; key: Buffer } | null = null;
  if (!certPath || !keyPath) {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    const r = await ensureSelfSigned(config.dataDir, config.hosts.map((h) => h.domain));
    certPath = r.certPath;
    keyPath = r.keyPath;
    generated = r.generated;
    ca = r.ca;
    // The pair ensureSelfSigned checked, not a re-read that another process may be replacing.
    if (r.cert && r.key) pems = { cert: r.cert, key: r.key };
  }
  const make = (cert: string, key: string) =>
    createSecureContext({ cert: readFileSync(cert), key: readFileSync(key), ...TLS_BASE_OPTIONS });
  const defaultContext = pems ? createSecureContext({ ...pems, ...TLS_BASE_OPTIONS }) : make(certPath, keyPath);
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

/** Channel-binding data of one type for a TLS connection (the server's side), or null when it has none. */
export function channelBindingData(tls: TLSSocket, type: ChannelBindingType): Buffer | null {
  if (type === 'tls-exporter') {
    // RFC 9266: only defined for TLS 1.3 (or 1.2 with extended master secret, which we do not assume).
    if (tls.getProtocol() !== 'TLSv1.3') return null;
    return tls.exportKeyingMaterial(32, 'EXPORTER-Channel-Binding', Buffer.alloc(0));
  }
  if (type === 'tls-unique') return tlsUnique(tls);
  const cert = tls.getCertificate();
  if (!cert || !('raw' in cert) || !cert.raw) return null;
  return tlsServerEndPoint(cert.raw);
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

