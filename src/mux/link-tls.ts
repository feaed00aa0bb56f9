// The mux's side of link security (docs/mux-protocol.md, "Link security"): whether the link to the
// server is TLS, how the server's certificate is verified (a CA file, a SHA-256 pin, or the
// server's generated CA in dataDir), the optional client certificate, and the connect-time refusal
// of a plaintext link to a non-loopback address.
import type { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { isLoopback, unixSocketPath } from '../core/addresses.js';
import { muxLinkEncrypted, type ResolvedConfig } from '../core/config.js';
import { TLS_BASE_OPTIONS } from '../core/tls.js';

export interface LinkTlsClient {
  /** Trust anchors for the server certificate (PEM). */
  ca?: string | Buffer;
  /** SHA-256 fingerprint the server certificate must have (hex, any case, colons optional). */
  fingerprint?: string;
  /** Name checked against the certificate (with `ca`) and sent as SNI. */
  servername?: string;
  /** Client certificate and key (mux.auth: certificate). */
  cert?: Buffer;
  key?: Buffer;
}

export function readPem(v: string): string | Buffer {
  return v.includes('-----BEGIN') ? v : readFileSync(v);
}

/**
 * TLS settings of a standalone mux's link from its configuration (mux.server), or null for a
 * plaintext link. Throws when TLS is on and nothing can verify the server.
 */
export function linkTlsFromConfig(config: Readonly<ResolvedConfig>, host: string): LinkTlsClient | null {
  const s = config.mux.server;
  if (!muxLinkEncrypted(s.tls, host)) return null;
  let ca: string | Buffer | undefined = s.ca ? readPem(s.ca) : undefined;
  if (!ca && !s.fingerprint) {
    const generated = join(config.dataDir, 'tls', 'ca.pem');
    if (!existsSync(generated)) {
      throw new Error(
        `mux.server.ca or mux.server.fingerprint is needed to verify the server over TLS: the server's CA certificate (its dataDir/tls/ca.pem, or ${generated} here), or its certificate's SHA-256 fingerprint`,
      );
    }
    ca = readFileSync(generated);
  }
  return {
    ca,
    fingerprint: s.fingerprint,
    servername: s.servername ?? (net.isIP(host) || unixSocketPath(host) ? config.hosts[0]?.domain : host),
    cert: s.cert ? readFileSync(s.cert) : undefined,
    key: s.key ? readFileSync(s.key) : undefined,
  };
}

/**
 * The names a mux's client certificate carries: its subject CN, then its DNS subjectAltNames. In the
 * certificate modes of mux.auth the server accepts only one of them as the mux's name.
 */
export function certificateNames(cert: X509Certificate): string[] {
  const names: string[] = [];
  for (const line of cert.subject.split('\n')) if (line.startsWith('CN=')) names.push(line.slice(3));
  for (const part of (cert.subjectAltName ?? '').split(', ')) if (part.startsWith('DNS:')) names.push(part.slice(4));
  return names;
}

export function normalizeFingerprint(f: string): string {
  return f.replace(/:/g, '').toUpperCase();
}

/**
 * Opens the link socket. `onReady` runs once the socket may carry frames: at TCP connect for a
 * plaintext link (after the loopback check), after the handshake and the certificate checks for a
 * TLS one. `onRefused` reports why a link was refused before that (the socket is destroyed).
 */
export function openLink(
  host: string,
  port: number,
  t: LinkTlsClient | null,
  insecure: boolean,
  onReady: () => void,
  onRefused: (why: string) => void,
): net.Socket {
  const path = unixSocketPath(host);
  const where = path ? { path } : { host, port };
  if (!t) {
    const sock = net.connect(where);
    sock.once('connect', () => {
      // The configured name may resolve anywhere: the address actually reached decides.
      if (!insecure && !path && !isLoopback(sock.remoteAddress ?? '')) {
        onRefused(`refusing a plaintext link to ${sock.remoteAddress}, which is not a loopback address (set mux.server.tls: on, or mux.insecure: true)`);
        sock.destroy();
        return;
      }
      onReady();
    });
    return sock;
  }
  const sock = tls.connect({
    ...where,
    servername: t.servername && !net.isIP(t.servername) ? t.servername : undefined,
    ca: t.ca,
    cert: t.cert,
    key: t.key,
    // With a CA, Node checks the chain and the name (servername) and drops a failure itself; a
    // pin alone is checked below, before any frame is read or written.
    rejectUnauthorized: !!t.ca,
    checkServerIdentity: (_host, cert) => (t.servername ? tls.checkServerIdentity(t.servername, cert) : undefined),
    ...TLS_BASE_OPTIONS,
  });
  sock.once('secureConnect', () => {
    if (t.fingerprint) {
      const got = sock.getPeerCertificate()?.fingerprint256 ?? '';
      if (normalizeFingerprint(got) !== normalizeFingerprint(t.fingerprint)) {
        onRefused(`server certificate fingerprint ${got || '(none)'} does not match mux.server.fingerprint`);
        sock.destroy();
        return;
      }
    }
    onReady();
  });
  return sock;
}
