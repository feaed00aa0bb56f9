// Issue 15 §4: the generated certificate is one that NSS clients (Pidgin/finch, Firefox) can be made
// to trust: a local CA in dataDir/tls (ca.pem, ca-key.pem 0600) signs a server certificate (every
// host and *.host, serverAuth, not a CA) sent with its chain. The CA may sign only for the
// configured hosts (test/core/tls-ca.test.ts checks its constraints, the lock and an offline key). `parley start` prints the CA's path
// and SHA-256 fingerprint. Checked with openssl itself and with a Node TLS client that verifies
// everything against ca.pem only; an install from before the CA keeps its certificate.
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { generate } from 'selfsigned';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureSelfSigned } from '../../src/core/tls.js';
import { startServerProcess, tempConfig, waitExit } from '../helpers/process.js';

/** Opens a direct TLS connection with full verification; resolves the peer certificate chain length, or rejects with the TLS error. */
function verifiedConnect(port: number, opts: tls.ConnectionOptions): Promise<{ authorized: boolean; chain: number }> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: true, ...opts }, () => {
      let chain = 0;
      for (let c: tls.DetailedPeerCertificate | undefined = sock.getPeerCertificate(true); c && chain < 5; c = c.issuerCertificate === c ? undefined : c.issuerCertificate) chain++;
      const authorized = sock.authorized;
      sock.destroy();
      resolve({ authorized, chain });
    });
    sock.once('error', reject);
  });
}

describe('generated certificates: a local CA and a server certificate it signs', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('generates a CA and a chain openssl verifies; a client trusting only ca.pem connects with full verification; the banner names the CA', async () => {
    const { dir, config } = tempConfig();
    dirs.push(dir);
    writeFileSync(config, readFileSync(config, 'utf8').replace('hosts: [localhost]', 'hosts: [localhost, example.org]'));
    const srv = await startServerProcess(config);
    try {
      const tlsDir = join(dir, 'data', 'tls');
      const ca = join(tlsDir, 'ca.pem');
      const cert = join(tlsDir, 'cert.pem');
      // openssl: the chain verifies against the CA alone, for TLS server use.
      expect(execFileSync('openssl', ['verify', '-purpose', 'sslserver', '-CAfile', ca, cert], { encoding: 'utf8' }).trim()).toBe(`${cert}: OK`);
      // ...also for strict verifiers (Python 3.13's default VERIFY_X509_STRICT): the leaf alone, not the chain file.
      const leafPem = join(dir, 'leaf.pem');
      writeFileSync(leafPem, `${(readFileSync(cert, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/) ?? [''])[0]}\n`);
      expect(execFileSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', ca, leafPem], { encoding: 'utf8' }).trim()).toBe(`${leafPem}: OK`);
      // Private keys are the owner's only.
      expect(statSync(join(tlsDir, 'ca-key.pem')).mode & 0o777).toBe(0o600);
      expect(statSync(join(tlsDir, 'key.pem')).mode & 0o777).toBe(0o600);

      const caCert = new X509Certificate(readFileSync(ca));
      expect(caCert.ca).toBe(true);
      const text = execFileSync('openssl', ['x509', '-in', ca, '-noout', '-text'], { encoding: 'utf8' });
      expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
      expect(text).toMatch(/Name Constraints: critical\s+Permitted:\s+DNS:localhost\s+DNS:example\.org\s/);
      for (const s of ['ca.pem', 'ca-key.pem', 'cert.pem', 'key.pem']) expect(statSync(join(tlsDir, s)).mode & 0o777).toBe(0o600);
      const blocks = readFileSync(cert, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
      expect(blocks).toHaveLength(2); // leaf, then the CA: a chain
      const leaf = new X509Certificate(blocks[0] as string);
      expect(leaf.ca).toBe(false);
      expect(leaf.checkIssued(caCert)).toBe(true);
      expect(new X509Certificate(blocks[1] as string).fingerprint256).toBe(caCert.fingerprint256);
      for (const name of ['localhost', '*.localhost', 'example.org', '*.example.org']) expect(leaf.subjectAltName).toContain(`DNS:${name}`);
      expect(leaf.keyUsage ?? []).not.toContain('1.3.6.1.5.5.7.3.2'); // not a client certificate
      expect(leaf.keyUsage).toContain('1.3.6.1.5.5.7.3.1'); // serverAuth

      // The start banner says where the CA is and its fingerprint, as openssl prints it.
      const fp = execFileSync('openssl', ['x509', '-in', ca, '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' }).trim().split('=')[1];
      expect(srv.output()).toContain(ca);
      expect(srv.output()).toContain(`SHA-256 fingerprint: ${fp}`);

      // A client that trusts ca.pem only verifies the server (chain and name) on the direct TLS port.
      const caPem = readFileSync(ca);
      for (const servername of ['localhost', 'example.org', 'conference.example.org']) {
        const ok = await verifiedConnect(srv.directTlsPort, { ca: caPem, servername });
        expect(ok.authorized, servername).toBe(true);
        expect(ok.chain).toBeGreaterThanOrEqual(2);
      }
      // Full verification is on: without the CA, or for a name the certificate does not carry, it fails.
      await expect(verifiedConnect(srv.directTlsPort, { ca: [], servername: 'localhost' })).rejects.toThrow(/self[- ]signed|unable to get local issuer/i);
      await expect(verifiedConnect(srv.directTlsPort, { ca: caPem, servername: 'other.example' })).rejects.toThrow(/altnames|Hostname/i);
    } finally {
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
  }, 60_000);

  it('keeps the CA across restarts and re-issues the server certificate from it; a host outside its name constraints needs a new CA', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-ca-'));
    dirs.push(dir);
    const first = await ensureSelfSigned(dir, ['localhost']);
    expect(first.generated).toBe(true);
    const caPem = readFileSync(join(dir, 'tls', 'ca.pem'), 'utf8');
    const certPem = readFileSync(first.certPath, 'utf8');
    const again = await ensureSelfSigned(dir, ['localhost']);
    expect(again.generated).toBe(false);
    expect(readFileSync(first.certPath, 'utf8')).toBe(certPem);
    expect(again.ca?.fingerprint256).toBe(first.ca?.fingerprint256);
    // Lost (or mismatched) server certificate: re-issued from the same CA, which clients keep trusting.
    rmSync(first.certPath);
    const reissued = await ensureSelfSigned(dir, ['localhost']);
    expect(reissued.generated).toBe(true);
    expect(readFileSync(join(dir, 'tls', 'ca.pem'), 'utf8')).toBe(caPem);
    execFileSync('openssl', ['verify', '-x509_strict', '-CAfile', join(dir, 'tls', 'ca.pem'), reissued.certPath]);
    // The CA may only sign for the hosts it was made for (nameConstraints): a new host needs a new CA.
    await expect(ensureSelfSigned(dir, ['localhost', 'example.com'])).rejects.toThrow(/new CA/);
    expect(readFileSync(join(dir, 'tls', 'ca.pem'), 'utf8')).toBe(caPem);
    renameSync(join(dir, 'tls'), join(dir, 'tls.old'));
    const more = await ensureSelfSigned(dir, ['localhost', 'example.com']);
    expect(more.generated).toBe(true);
    expect(readFileSync(join(dir, 'tls', 'ca.pem'), 'utf8')).not.toBe(caPem);
    expect(new X509Certificate(readFileSync(more.certPath)).subjectAltName).toContain('DNS:*.example.com');
    execFileSync('openssl', ['verify', '-x509_strict', '-CAfile', join(dir, 'tls', 'ca.pem'), more.certPath]);
  });

  it('leaves an existing certificate from before the CA alone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-oldcert-'));
    dirs.push(dir);
    mkdirSync(join(dir, 'tls'));
    const old = await generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' });
    writeFileSync(join(dir, 'tls', 'cert.pem'), old.cert);
    writeFileSync(join(dir, 'tls', 'key.pem'), old.private, { mode: 0o600 });
    const r = await ensureSelfSigned(dir, ['localhost', 'example.com']);
    expect(r).toMatchObject({ generated: false, ca: null });
    expect(readFileSync(r.certPath, 'utf8')).toBe(old.cert);
    expect(readFileSync(r.keyPath, 'utf8')).toBe(old.private);
  });
});
