// The generated local CA (src/core/tls.ts, docs/tls.md): what it may sign (names, purposes,
// lifetime), the key identifiers strict verifiers need, consistency when several processes start
// at once, and a CA key kept offline.
import { execFile, execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureSelfSigned, TlsSetupError } from '../../src/core/tls.js';

const run = promisify(execFile);
const TLS_MODULE = join(__dirname, '..', '..', 'src', 'core', 'tls.ts');
const DAY = 86_400_000;

const dirs: string[] = [];
function tempDir(prefix = 'parley-tlsca-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function blocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** Writes the leaf of cert.pem alone (not the chain) and returns its path. */
function leafFile(tlsDir: string): string {
  const p = join(tlsDir, '..', `leaf-${Math.random().toString(36).slice(2)}.pem`);
  writeFileSync(p, `${blocks(readFileSync(join(tlsDir, 'cert.pem'), 'utf8'))[0]}\n`);
  return p;
}

/** `openssl verify -x509_strict -purpose sslserver` of the leaf alone against ca.pem: '' when OK, else openssl's complaint. */
function strictVerify(tlsDir: string, leaf = leafFile(tlsDir)): string {
  try {
    execFileSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', join(tlsDir, 'ca.pem'), leaf], { encoding: 'utf8', stdio: 'pipe' });
    return '';
  } catch (err) {
    return `${(err as { stdout?: string }).stdout ?? ''}${(err as { stderr?: string }).stderr ?? ''}` || 'failed';
  }
}

/** A certificate for `san` signed with the CA key by openssl itself (what someone holding ca-key.pem could make). */
function opensslIssue(tlsDir: string, san: string, extra = 'extendedKeyUsage=serverAuth'): string {
  const work = mkdtempSync(join(tmpdir(), 'parley-evil-'));
  dirs.push(work);
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=test', '-keyout', join(work, 'k.pem'), '-out', join(work, 'req.pem')], { stdio: 'pipe' });
  writeFileSync(join(work, 'ext.cnf'), `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n${extra}\nsubjectAltName=${san}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n`);
  execFileSync('openssl', ['x509', '-req', '-in', join(work, 'req.pem'), '-CA', join(tlsDir, 'ca.pem'), '-CAkey', join(tlsDir, 'ca-key.pem'), '-set_serial', '4242', '-days', '30', '-extfile', join(work, 'ext.cnf'), '-out', join(work, 'c.pem')], { stdio: 'pipe' });
  return join(work, 'c.pem');
}

/** Everything in dataDir/tls agrees: CA pair, leaf signed by the CA, key.pem is the leaf's, chain ends with the CA. */
function expectConsistent(tlsDir: string): void {
  const ca = new X509Certificate(readFileSync(join(tlsDir, 'ca.pem')));
  expect(ca.checkPrivateKey(createPrivateKey(readFileSync(join(tlsDir, 'ca-key.pem'))))).toBe(true);
  const chain = blocks(readFileSync(join(tlsDir, 'cert.pem'), 'utf8'));
  expect(chain).toHaveLength(2);
  const leaf = new X509Certificate(chain[0] as string);
  expect(leaf.verify(ca.publicKey)).toBe(true);
  expect(leaf.checkPrivateKey(createPrivateKey(readFileSync(join(tlsDir, 'key.pem'))))).toBe(true);
  expect(new X509Certificate(chain[1] as string).fingerprint256).toBe(ca.fingerprint256);
  expect(strictVerify(tlsDir)).toBe('');
}

describe('the generated local CA', () => {
  it('can only sign server certificates for the configured hosts, for at most 10 years; the leaf never outlives it', async () => {
    const dir = tempDir();
    await ensureSelfSigned(dir, ['localhost', 'example.org']);
    const tlsDir = join(dir, 'tls');
    const text = execFileSync('openssl', ['x509', '-in', join(tlsDir, 'ca.pem'), '-noout', '-text'], { encoding: 'utf8' });
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0\n/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign\n/); // no Digital Signature
    expect(text).toMatch(/Extended Key Usage:\s*\n\s+TLS Web Server Authentication\n/);
    expect(text).toMatch(/Name Constraints: critical\s+Permitted:\s+DNS:localhost\s+DNS:example\.org\s+IP:127\.0\.0\.1\/255\.255\.255\.255\s+IP:0:0:0:0:0:0:0:1\/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF\n/);
    expect(text).toMatch(/Subject Key Identifier/);
    const ca = new X509Certificate(readFileSync(join(tlsDir, 'ca.pem')));
    expect(Date.parse(ca.validTo) - Date.now()).toBeLessThanOrEqual(10 * 366 * DAY);
    const leaf = new X509Certificate(blocks(readFileSync(join(tlsDir, 'cert.pem'), 'utf8'))[0] as string);
    expect(Date.parse(leaf.validTo)).toBeLessThanOrEqual(Date.parse(ca.validTo));
    const leafText = execFileSync('openssl', ['x509', '-in', leafFile(tlsDir), '-noout', '-text'], { encoding: 'utf8' });
    expect(leafText).toMatch(/Subject Key Identifier/);
    expect(leafText).toMatch(/Authority Key Identifier/);

    // Strict verifiers (openssl -x509_strict, Python 3.13's default) accept the leaf.
    expect(strictVerify(tlsDir)).toBe('');
    // The CA key cannot make a certificate others trust for another name, or for an IP address not listed.
    expect(strictVerify(tlsDir, opensslIssue(tlsDir, 'DNS:chat.example.org'))).toBe(''); // a subdomain: allowed
    expect(strictVerify(tlsDir, opensslIssue(tlsDir, 'DNS:www.bank.example'))).toMatch(/subtree violation/);
    expect(strictVerify(tlsDir, opensslIssue(tlsDir, 'DNS:example.org.evil.example'))).toMatch(/subtree violation/);
    expect(strictVerify(tlsDir, opensslIssue(tlsDir, 'IP:10.1.2.3'))).toMatch(/subtree violation/);
    // ...nor one for another purpose (code signing, e-mail, client authentication).
    expect(strictVerify(tlsDir, opensslIssue(tlsDir, 'DNS:example.org', 'extendedKeyUsage=clientAuth'))).not.toBe('');
    const clientPurpose = (() => {
      try {
        execFileSync('openssl', ['verify', '-purpose', 'sslclient', '-CAfile', join(tlsDir, 'ca.pem'), opensslIssue(tlsDir, 'DNS:example.org', 'extendedKeyUsage=clientAuth')], { stdio: 'pipe' });
        return 'OK';
      } catch {
        return 'refused';
      }
    })();
    expect(clientPurpose).toBe('refused');
  });

  it('without localhost, no IP address at all is permitted', async () => {
    const dir = tempDir();
    await ensureSelfSigned(dir, ['example.com']);
    const tlsDir = join(dir, 'tls');
    expect(strictVerify(tlsDir)).toBe('');
    expect(strictVerify(tlsDir, opensslIssue(tlsDir, 'IP:127.0.0.1'))).toMatch(/subtree violation/);
    expect(strictVerify(tlsDir, opensslIssue(tlsDir, 'IP:::1'))).toMatch(/subtree violation/);
    expect(strictVerify(tlsDir, opensslIssue(tlsDir, 'DNS:localhost'))).toMatch(/subtree violation/);
  });

  it('a host outside the CA name constraints needs a new CA: a clear error, nothing overwritten', async () => {
    const dir = tempDir();
    await ensureSelfSigned(dir, ['localhost']);
    const before = Object.fromEntries(['ca.pem', 'ca-key.pem', 'cert.pem', 'key.pem'].map((f) => [f, readFileSync(join(dir, 'tls', f), 'utf8')]));
    await expect(ensureSelfSigned(dir, ['localhost', 'example.com'])).rejects.toThrow(TlsSetupError);
    await expect(ensureSelfSigned(dir, ['localhost', 'example.com'])).rejects.toThrow(/new CA.*move .*tls away/);
    for (const [f, text] of Object.entries(before)) expect(readFileSync(join(dir, 'tls', f), 'utf8')).toBe(text);
    expect(existsSync(join(dir, 'tls', '.lock'))).toBe(false);
  });

  it('never issues a leaf that outlives its CA (an older CA near its end), and does not re-issue it at every start', async () => {
    const dir = tempDir();
    const tlsDir = join(dir, 'tls');
    mkdirSync(tlsDir, { recursive: true });
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '20', '-subj', '/CN=old local CA', '-keyout', join(tlsDir, 'ca-key.pem'), '-out', join(tlsDir, 'ca.pem'), '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], { stdio: 'pipe' });
    const first = await ensureSelfSigned(dir, ['localhost']);
    expect(first.generated).toBe(true);
    const ca = new X509Certificate(readFileSync(join(tlsDir, 'ca.pem')));
    const leaf = new X509Certificate(blocks(readFileSync(first.certPath, 'utf8'))[0] as string);
    expect(Date.parse(leaf.validTo)).toBeLessThanOrEqual(Date.parse(ca.validTo));
    expect(strictVerify(tlsDir)).toBe('');
    expect((await ensureSelfSigned(dir, ['localhost'])).generated).toBe(false);
  });

  it('re-issues a leaf that its CA did not sign (same issuer name) or whose key does not match', async () => {
    const a = tempDir();
    const b = tempDir();
    await ensureSelfSigned(a, ['localhost']);
    await ensureSelfSigned(b, ['localhost']);
    // Another CA with the very same name signed b's leaf: a name-only check would accept it.
    cpSync(join(b, 'tls', 'cert.pem'), join(a, 'tls', 'cert.pem'));
    cpSync(join(b, 'tls', 'key.pem'), join(a, 'tls', 'key.pem'));
    const r = await ensureSelfSigned(a, ['localhost']);
    expect(r.generated).toBe(true);
    expect(r.ca).not.toBeNull();
    expectConsistent(join(a, 'tls'));
    // key.pem of another certificate (a crash or a race between two writers).
    cpSync(join(b, 'tls', 'key.pem'), join(a, 'tls', 'key.pem'));
    expect((await ensureSelfSigned(a, ['localhost'])).generated).toBe(true);
    expectConsistent(join(a, 'tls'));
  });

  it('refuses to start when ca-key.pem is not the key of ca.pem', async () => {
    const a = tempDir();
    const b = tempDir();
    await ensureSelfSigned(a, ['localhost']);
    await ensureSelfSigned(b, ['localhost']);
    cpSync(join(b, 'tls', 'ca-key.pem'), join(a, 'tls', 'ca-key.pem'));
    unlinkSync(join(a, 'tls', 'cert.pem'));
    await expect(ensureSelfSigned(a, ['localhost'])).rejects.toThrow(/ca-key\.pem is not the key of .*ca\.pem/);
    expect(existsSync(join(a, 'tls', 'cert.pem'))).toBe(false);
  });

  it('keeps all files consistent when several processes generate at once', async () => {
    for (let round = 0; round < 4; round++) {
      const dir = tempDir('parley-tlsrace-');
      // Every child loads the module, then starts at the same instant (process start-up times vary).
      const startAt = Date.now() + 2500;
      const script = `import(${JSON.stringify(TLS_MODULE)}).then(async (m) => { await new Promise((r) => setTimeout(r, ${startAt} - Date.now())); const r = await m.ensureSelfSigned(${JSON.stringify(dir)}, ['localhost']); console.log(r.ca.fingerprint256); })`;
      const outs = await Promise.all(Array.from({ length: 3 }, () => run(process.execPath, ['--import', 'tsx', '-e', script], { encoding: 'utf8' })));
      const fingerprints = new Set(outs.map((o) => o.stdout.trim()));
      // One CA for everyone: the one on disk.
      expect(fingerprints.size, `round ${round}`).toBe(1);
      expect([...fingerprints][0]).toBe(new X509Certificate(readFileSync(join(dir, 'tls', 'ca.pem'))).fingerprint256);
      expectConsistent(join(dir, 'tls'));
      expect(readdirSync(join(dir, 'tls')).sort()).toEqual(['ca-key.pem', 'ca.pem', 'cert.pem', 'key.pem']); // no lock, no temporary files
      for (const f of ['ca-key.pem', 'key.pem']) expect(statSync(join(dir, 'tls', f)).mode & 0o777).toBe(0o600);
    }
  }, 60_000);

  it('waits for a lock held by another process, and takes over a stale one', async () => {
    const dir = tempDir();
    const tlsDir = join(dir, 'tls');
    mkdirSync(tlsDir, { recursive: true });
    const lock = join(tlsDir, '.lock');
    writeFileSync(lock, 'someone\n');
    let done = false;
    const p = ensureSelfSigned(dir, ['localhost']).then((r) => {
      done = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(done).toBe(false);
    expect(existsSync(join(tlsDir, 'ca.pem'))).toBe(false);
    unlinkSync(lock);
    expect((await p).generated).toBe(true);
    expectConsistent(tlsDir);

    const dir2 = tempDir();
    mkdirSync(join(dir2, 'tls'), { recursive: true });
    writeFileSync(join(dir2, 'tls', '.lock'), '12345 crashed\n');
    const old = new Date(Date.now() - 5 * 60_000);
    utimesSync(join(dir2, 'tls', '.lock'), old, old);
    expect((await ensureSelfSigned(dir2, ['localhost'])).generated).toBe(true);
    expect(existsSync(join(dir2, 'tls', '.lock'))).toBe(false);
    expectConsistent(join(dir2, 'tls'));
  });
});

describe('a CA key kept offline', () => {
  it('with ca.pem and without ca-key.pem: keeps a valid server certificate; refuses when it must be re-issued; overwrites nothing', async () => {
    const dir = tempDir();
    const tlsDir = join(dir, 'tls');
    const first = await ensureSelfSigned(dir, ['localhost']);
    const offline = join(dir, 'offline-ca-key.pem');
    cpSync(join(tlsDir, 'ca-key.pem'), offline);
    unlinkSync(join(tlsDir, 'ca-key.pem'));
    const files = Object.fromEntries(['ca.pem', 'cert.pem', 'key.pem'].map((f) => [f, readFileSync(join(tlsDir, f), 'utf8')]));

    const kept = await ensureSelfSigned(dir, ['localhost']);
    expect(kept).toMatchObject({ generated: false, ca: { path: join(tlsDir, 'ca.pem'), fingerprint256: first.ca?.fingerprint256 } });

    // The leaf must be re-issued (its key no longer matches): refuse, saying what to do.
    writeFileSync(join(tlsDir, 'key.pem'), readFileSync(offline));
    await expect(ensureSelfSigned(dir, ['localhost'])).rejects.toThrow(/CA key .*ca-key\.pem is absent: bring the CA key back.*tls\.cert\/tls\.key/);
    writeFileSync(join(tlsDir, 'key.pem'), files['key.pem'] as string);
    unlinkSync(join(tlsDir, 'cert.pem'));
    await expect(ensureSelfSigned(dir, ['localhost'])).rejects.toThrow(TlsSetupError);
    expect(existsSync(join(tlsDir, 'ca-key.pem'))).toBe(false);
    expect(readFileSync(join(tlsDir, 'ca.pem'), 'utf8')).toBe(files['ca.pem']);
    expect(existsSync(join(tlsDir, '.lock'))).toBe(false);

    // With the key back for one start, the leaf is re-issued from the same CA.
    cpSync(offline, join(tlsDir, 'ca-key.pem'));
    const again = await ensureSelfSigned(dir, ['localhost']);
    expect(again.generated).toBe(true);
    expect(again.ca?.fingerprint256).toBe(first.ca?.fingerprint256);
    expectConsistent(tlsDir);
  });

  it('a server certificate due for renewal is renewed with the CA key, and used until its end without it', async () => {
    const dir = tempDir();
    const tlsDir = join(dir, 'tls');
    mkdirSync(tlsDir, { recursive: true });
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '100', '-subj', '/CN=local CA', '-keyout', join(tlsDir, 'ca-key.pem'), '-out', join(tlsDir, 'ca.pem'), '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], { stdio: 'pipe' });
    const work = tempDir('parley-soon-');
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=localhost', '-keyout', join(work, 'key.pem'), '-out', join(work, 'req.pem')], { stdio: 'pipe' });
    writeFileSync(join(work, 'ext.cnf'), 'basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,DNS:*.localhost\n');
    execFileSync('openssl', ['x509', '-req', '-in', join(work, 'req.pem'), '-CA', join(tlsDir, 'ca.pem'), '-CAkey', join(tlsDir, 'ca-key.pem'), '-set_serial', '7', '-days', '10', '-extfile', join(work, 'ext.cnf'), '-out', join(work, 'cert.pem')], { stdio: 'pipe' });
    const soon = `${readFileSync(join(work, 'cert.pem'), 'utf8').trim()}\n${readFileSync(join(tlsDir, 'ca.pem'), 'utf8').trim()}\n`;
    const install = () => {
      writeFileSync(join(tlsDir, 'cert.pem'), soon);
      cpSync(join(work, 'key.pem'), join(tlsDir, 'key.pem'));
    };
    install();
    cpSync(join(tlsDir, 'ca-key.pem'), join(work, 'ca-key.pem'));
    unlinkSync(join(tlsDir, 'ca-key.pem'));
    expect(await ensureSelfSigned(dir, ['localhost'])).toMatchObject({ generated: false });
    expect(readFileSync(join(tlsDir, 'cert.pem'), 'utf8')).toBe(soon);
    cpSync(join(work, 'ca-key.pem'), join(tlsDir, 'ca-key.pem'));
    expect((await ensureSelfSigned(dir, ['localhost'])).generated).toBe(true);
    const leaf = new X509Certificate(blocks(readFileSync(join(tlsDir, 'cert.pem'), 'utf8'))[0] as string);
    expect(Date.parse(leaf.validTo) - Date.now()).toBeGreaterThan(90 * DAY);
  });

  it('with ca-key.pem alone: refuses, overwrites nothing', async () => {
    const dir = tempDir();
    const tlsDir = join(dir, 'tls');
    await ensureSelfSigned(dir, ['localhost']);
    const key = readFileSync(join(tlsDir, 'ca-key.pem'), 'utf8');
    unlinkSync(join(tlsDir, 'ca.pem'));
    await expect(ensureSelfSigned(dir, ['localhost'])).rejects.toThrow(/ca-key\.pem exists without .*ca\.pem/);
    for (const f of ['cert.pem', 'key.pem']) unlinkSync(join(tlsDir, f));
    await expect(ensureSelfSigned(dir, ['localhost'])).rejects.toThrow(TlsSetupError);
    expect(readFileSync(join(tlsDir, 'ca-key.pem'), 'utf8')).toBe(key);
    expect(readdirSync(tlsDir)).toEqual(['ca-key.pem']);
  });
});
