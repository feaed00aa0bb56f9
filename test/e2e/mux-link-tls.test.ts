// The mux link over TLS (issue 15 §5): a standalone mux (in this process) links to the server over
// TLS through a byte-capturing TCP relay on loopback; clients log in (SASL PLAIN) and chat through
// it, and nothing of their streams, passwords or messages crosses the link in the clear (the same
// relay on a plaintext link shows all of it). A mux that cannot verify the server (other CA, wrong
// pin, wrong name) never links; a plaintext mux never reaches a TLS listener; certificate
// authentication; embedded muxes over a pinned TLS link; a Unix socket link; plaintext off
// loopback refused by the configuration and at connect/listen time.
import { X509Certificate, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls, { TLSSocket } from 'node:tls';
import pino from 'pino';
import { generate } from 'selfsigned';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../../src/core/config.js';
import { runMux, type RunningMux } from '../../src/mux/index.js';
import { MuxLinkServer } from '../../src/transports/mux-link.js';
import { FrameDecoder, FrameType, authProof, encodeJson } from '../../src/xmpp/muxframe.js';
import { RawClient, plainPayload, elementWith, sleep, waitUntil } from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';

const PASSWORD = 'secret-password';
const SECRET = 'a-shared-link-secret-for-tests';


/** A TCP relay on loopback that records every byte crossing it, both ways. */
async function captureRelay(targetPort: number) {
  const chunks: Buffer[] = [];
  const socks = new Set<net.Socket>();
  const srv = net.createServer((a) => {
    const b = net.connect(targetPort, '127.0.0.1');
    for (const s of [a, b]) {
      socks.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        a.destroy();
        b.destroy();
      });
      s.on('data', (d: Buffer) => chunks.push(Buffer.from(d)));
    }
    a.pipe(b);
    b.pipe(a);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    bytes: () => Buffer.concat(chunks),
    async close() {
      for (const s of socks) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** The problems validateConfig reports for `raw` (none when it is valid). */
function problems(raw: Record<string, unknown>): string[] {
  try {
    validateConfig(raw);
    return [];
  } catch (err) {
    return (err as ConfigError).problems;
  }
}

/** A pino logger whose records land in `records`. */
function recordingLogger(records: Record<string, unknown>[]) {
  return pino({ level: 'info' }, { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
}

/** The CA that signed the server's generated certificate (its own certificate before the local CA existed). */
function serverCa(srv: TestServer): string {
  const ca = join(srv.dataDir, 'tls', 'ca.pem');
  return existsSync(ca) ? ca : srv.certPath;
}

describe('a standalone mux linked over TLS', () => {
  let srv: TestServer;
  let linkPort: number;
  const dir = mkdtempSync(join(tmpdir(), 'parley-mux-tls-'));
  const muxes: RunningMux[] = [];
  const raws: RawClient[] = [];
  const relays: Awaited<ReturnType<typeof captureRelay>>[] = [];
  const records: Record<string, unknown>[] = [];

  /** A mux in this process with its own data directory (its own client-side certificate). */
  async function startMux(server: Record<string, unknown>, linkTo: number, extra: Record<string, unknown> = {}): Promise<RunningMux> {
    const config = validateConfig({
      hosts: ['localhost'],
      dataDir: join(dir, `mux-${muxes.length}`),
      listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: 0 },
      mux: { server: { host: '127.0.0.1', port: linkTo, ...server }, secret: SECRET, ...extra },
    });
    const mux = await runMux({ config, link: { host: '127.0.0.1', port: linkTo }, secret: Buffer.from(SECRET, 'utf8'), name: `dmz-${muxes.length}`, log: recordingLogger(records) });
    muxes.push(mux);
    return mux;
  }

  async function linkWithin(mux: RunningMux, ms: number): Promise<boolean> {
    return Promise.race([mux.waitLink().then(() => true), sleep(ms).then(() => false)]);
  }

  beforeAll(async () => {
    linkPort = await freePort();
    srv = await startTestServer({ mux: { count: 0, linkAddress: '127.0.0.1', linkPort, linkTls: 'on', secret: SECRET } });
    for (const u of ['alice', 'bob']) await srv.addUser(u, PASSWORD);
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    for (const m of muxes) await m.stop();
    for (const r of relays) await r.close();
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('carries a PLAIN login and a chat end to end, and the link shows none of it in the clear', async () => {
    const relay = await captureRelay(linkPort);
    relays.push(relay);
    const mux = await startMux({ tls: 'on', ca: serverCa(srv) }, relay.port);
    expect(await linkWithin(mux, 10_000)).toBe(true);
    const link = [...(srv.muxLink?.links ?? [])].find((l) => l.name === 'dmz-0');
    expect(link?.socket).toBeInstanceOf(TLSSocket);
    expect((link?.socket as TLSSocket).getProtocol()).toBe('TLSv1.3');

    const alice = await RawClient.login(mux.ports.c2s as number, 'alice', PASSWORD, { resource: 'dmz', presence: true });
    raws.push(alice);
    const bob = await RawClient.login(mux.ports.c2s as number, 'bob', PASSWORD, { resource: 'dmz', presence: true });
    raws.push(bob);
    const marker = 'meet-me-at-the-usual-place-7f3a';
    await alice.send(`<message to='bob@localhost' type='chat' id='m1'><body>${marker}</body></message>`);
    await bob.waitFor(elementWith('message', marker));
    await bob.send(`<message to='${alice.jid}' type='chat' id='m2'><body>${marker}-reply</body></message>`);
    await alice.waitFor(elementWith('message', `${marker}-reply`));
    const session = [...srv.server.sessions.all()].find((s) => s.jid?.full === alice.jid);
    expect(session?.remoteAddress).toBe('127.0.0.1');
    expect(session?.secure).toBe(true);

    const seen = relay.bytes();
    expect(seen.length).toBeGreaterThan(2000);
    expect(seen[0]).toBe(0x16); // a TLS handshake record starts the link
    for (const secret of ['<stream', 'stream:features', PASSWORD, marker, plainPayload('alice', PASSWORD), 'alice@localhost', 'jabber:client', SECRET]) {
      expect(seen.includes(Buffer.from(secret)), `"${secret}" crossed the link in the clear`).toBe(false);
    }
  });

  it('control: the same relay on a plaintext loopback link shows the stream, the password and the message', async () => {
    const plainLinkPort = await freePort();
    const plainSrv = await startTestServer({ mux: { count: 0, linkAddress: '127.0.0.1', linkPort: plainLinkPort, secret: SECRET } });
    try {
      await plainSrv.addUser('carol', PASSWORD);
      const relay = await captureRelay(plainLinkPort);
      relays.push(relay);
      const mux = await startMux({}, relay.port); // auto on loopback: plaintext
      expect(await linkWithin(mux, 10_000)).toBe(true);
      const carol = await RawClient.login(mux.ports.c2s as number, 'carol', PASSWORD, { presence: true });
      raws.push(carol);
      await carol.send(`<message to='carol@localhost' type='chat'><body>visible-marker</body></message>`);
      await carol.waitFor(elementWith('message', 'visible-marker'));
      const seen = relay.bytes();
      for (const s of ['<stream', plainPayload('carol', PASSWORD), 'visible-marker']) expect(seen.includes(Buffer.from(s)), s).toBe(true);
      await mux.stop();
    } finally {
      await plainSrv.close();
    }
  });

  it('a mux whose CA did not sign the server certificate, whose pin differs, or which expects another name refuses to link', async () => {
    const other = await generate([{ name: 'commonName', value: 'Some other CA' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      extensions: [{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, critical: true }],
    });
    const otherCa = join(dir, 'other-ca.pem');
    writeFileSync(otherCa, other.cert);
    const before = records.length;
    const wrongCa = await startMux({ tls: 'on', ca: otherCa }, linkPort);
    const wrongPin = await startMux({ tls: 'on', fingerprint: 'AB'.repeat(32) }, linkPort);
    const wrongName = await startMux({ tls: 'on', ca: serverCa(srv), servername: 'chat.example.org' }, linkPort);
    for (const m of [wrongCa, wrongPin, wrongName]) expect(await linkWithin(m, 1500)).toBe(false);
    expect([...(srv.muxLink?.links ?? [])].map((l) => l.name)).not.toContain('dmz-1');
    const msgs = records.slice(before).map((r) => `${r.msg} ${r.err ?? ''}`);
    expect(msgs.some((m) => /TLS link to the server failed/.test(m))).toBe(true);
    expect(msgs.some((m) => /does not match mux.server.fingerprint/.test(m))).toBe(true);
    expect(msgs.some((m) => /altnames|Hostname\/IP does not match/i.test(m))).toBe(true);
    for (const m of [wrongCa, wrongPin, wrongName]) await m.stop();

    // The right pin alone (no CA) links.
    const pin = new X509Certificate(readFileSync(srv.certPath)).fingerprint256;
    const pinned = await startMux({ tls: 'on', fingerprint: pin.toLowerCase() }, linkPort);
    expect(await linkWithin(pinned, 10_000)).toBe(true);
    await pinned.stop();
  });

  it('a plaintext mux never gets a link from a TLS listener', async () => {
    const plain = await startMux({ tls: 'off' }, linkPort);
    expect(await linkWithin(plain, 1500)).toBe(false);
    await plain.stop();
  });
});

describe('client certificate authentication of the link (auth: certificate)', () => {
  it('a mux with a certificate from linkClientCa links without the shared secret; one without is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-mux-cert-'));
    const ca = await generate([{ name: 'commonName', value: 'Mux CA' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      extensions: [{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, digitalSignature: true, critical: true }],
    });
    const client = await generate([{ name: 'commonName', value: 'dmz-mux-1' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      ca: { key: ca.private, cert: ca.cert },
      extensions: [{ name: 'extKeyUsage', clientAuth: true }],
    });
    writeFileSync(join(dir, 'mux-ca.pem'), ca.cert);
    writeFileSync(join(dir, 'client.pem'), client.cert);
    writeFileSync(join(dir, 'client.key'), client.private);
    const linkPort = await freePort();
    const srv = await startTestServer({ mux: { count: 0, linkPort, linkTls: 'on', auth: 'certificate', linkClientCa: join(dir, 'mux-ca.pem'), secret: SECRET } });
    const started: RunningMux[] = [];
    try {
      await srv.addUser('dave', PASSWORD);
      const mk = async (name: string, server: Record<string, unknown>, secret: string, auth = 'certificate') => {
        const config = validateConfig({
          hosts: ['localhost'],
          dataDir: join(dir, name),
          listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: null },
          mux: { auth, server: { host: '127.0.0.1', port: linkPort, tls: 'on', ca: serverCa(srv), ...server }, secret },
          log: { level: 'silent' },
        });
        const m = await runMux({ config, link: { host: '127.0.0.1', port: linkPort }, secret: Buffer.from(secret), name, log: pino({ level: 'silent' }) });
        started.push(m);
        return m;
      };
      // Another secret than the server's: only the certificate authenticates this mux.
      const good = await mk('with-cert', { cert: join(dir, 'client.pem'), key: join(dir, 'client.key') }, 'not-the-servers-secret-at-all');
      await Promise.race([good.waitLink(), sleep(10_000).then(() => Promise.reject(new Error('no link')))]);
      // Its name is its certificate's (CN dmz-mux-1), not the one it was given.
      expect([...(srv.muxLink?.links ?? [])].map((l) => l.name)).toEqual(['dmz-mux-1']);
      const dave = await RawClient.login(good.ports.c2s as number, 'dave', PASSWORD);
      await dave.ping();
      dave.destroy();
      // A mux presenting no certificate is refused by the TLS layer.
      const none = await mk('without-cert', {}, SECRET, 'secret');
      expect(await Promise.race([none.waitLink().then(() => true), sleep(1500).then(() => false)])).toBe(false);

      // The same certificate claiming another name, or the name of the mux already linked: refused.
      const claim = async (name: string): Promise<number[]> => {
        const sock = tls.connect({ host: '127.0.0.1', port: linkPort, ca: readFileSync(serverCa(srv)), servername: 'localhost', cert: client.cert, key: client.private });
        sock.on('error', () => {});
        const types: number[] = [];
        const d = new FrameDecoder((type, _c, payload) => {
          types.push(type);
          if (type === FrameType.HELLO) {
            const nonce = randomBytes(32).toString('base64');
            sock.write(encodeJson(FrameType.AUTH, 0, { name, nonce, proof: authProof(Buffer.from(SECRET), 'parley-mux-auth', JSON.parse(payload.toString()).nonce, nonce, name).toString('base64') }));
          }
        });
        sock.on('data', (c: Buffer) => d.push(c));
        await new Promise<void>((r) => sock.once('close', () => r()));
        return types;
      };
      expect(await claim('ceo-laptop')).toEqual([FrameType.HELLO]);
      expect(await claim('dmz-mux-1')).toEqual([FrameType.HELLO]); // taken: the first stays
      expect([...(srv.muxLink?.links ?? [])].map((l) => l.name)).toEqual(['dmz-mux-1']);
      const again = await RawClient.login(good.ports.c2s as number, 'dave', PASSWORD);
      await again.ping();
      again.destroy();

      // The embedded muxes of such a server link over their own loopback listener, with the secret.
      const withEmbedded = await startTestServer({ mux: { count: 1, linkPort: await freePort(), linkTls: 'on', auth: 'certificate', linkClientCa: join(dir, 'mux-ca.pem') } });
      try {
        await withEmbedded.addUser('dave', PASSWORD);
        const d2 = await RawClient.login(withEmbedded.ports.c2s as number, 'dave', PASSWORD);
        await d2.ping();
        d2.destroy();
      } finally {
        await withEmbedded.close();
      }
    } finally {
      for (const m of started) await m.stop();
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('auth: certificate on a mux needs a verified TLS link and a client certificate (security review)', () => {

  it('is refused by the configuration over a plaintext link or without server.cert/key; a server with linkClientCa is fine', () => {
    const plain = problems({ mux: { auth: 'certificate', server: { host: '127.0.0.1', cert: '/c.pem', key: '/k.pem' } } });
    expect(plain.join('\n')).toMatch(/mux\.auth: certificate on a mux needs a TLS link to the server/);
    const noCert = problems({ mux: { auth: 'certificate', server: { host: '127.0.0.1', tls: 'on', fingerprint: 'AB'.repeat(32) } } });
    expect(noCert.join('\n')).toMatch(/needs mux\.server\.cert and mux\.server\.key/);
    expect(problems({ mux: { auth: 'secret+certificate', server: { host: '127.0.0.1' } } }).length).toBe(2);
    expect(problems({ mux: { auth: 'certificate', server: { host: '127.0.0.1', tls: 'on', cert: '/c.pem', key: '/k.pem' } } })).toEqual([]);
    expect(problems({ mux: { auth: 'certificate', linkTls: 'on', linkClientCa: '/ca.pem' } })).toEqual([]);
  });

  it('a standalone mux without mux.server.ca or fingerprint fails at start with the clear error, before generating a CA of its own', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-mux-noca-'));
    try {
      const config = validateConfig({ hosts: ['localhost'], dataDir: dir, listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: null }, mux: { server: { host: '127.0.0.1', port: 1, tls: 'on' }, secret: SECRET } });
      for (let i = 0; i < 2; i++) {
        await expect(runMux({ config, link: { host: '127.0.0.1', port: 1 }, secret: Buffer.from(SECRET), name: 'noca', log: pino({ level: 'silent' }) })).rejects.toThrow(
          /mux\.server\.ca or mux\.server\.fingerprint is needed/,
        );
        expect(existsSync(join(dir, 'tls', 'ca.pem'))).toBe(false);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('embedded muxes with mux.linkTls: on', () => {
  it('link over TLS pinned to the server certificate and carry a login', async () => {
    const srv = await startTestServer({ mux: { count: 1, linkTls: 'on' } });
    try {
      await srv.addUser('erin', PASSWORD);
      await waitUntil(() => (srv.muxLink?.links.size ?? 0) === 1, 10_000, 'embedded mux link');
      const link = [...(srv.muxLink?.links ?? [])][0];
      expect(link?.socket).toBeInstanceOf(TLSSocket);
      const erin = await RawClient.login(srv.ports.c2s as number, 'erin', PASSWORD);
      await erin.ping();
      erin.destroy();
    } finally {
      await srv.close();
    }
  });

  it('by default (loopback) the embedded link stays plaintext', async () => {
    const srv = await startTestServer({ mux: { count: 1 } });
    try {
      await waitUntil(() => (srv.muxLink?.links.size ?? 0) === 1, 10_000, 'embedded mux link');
      const link = [...(srv.muxLink?.links ?? [])][0];
      expect(link?.socket).not.toBeInstanceOf(TLSSocket);
    } finally {
      await srv.close();
    }
  });
});

describe('a link over a Unix domain socket', () => {
  it('is plaintext by default (it never leaves the machine), owner-only, and carries a login', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-mux-unix-'));
    const sockPath = join(dir, 'link.sock');
    const srv = await startTestServer({ mux: { count: 0, linkAddress: `unix:${sockPath}`, secret: SECRET } });
    let mux: RunningMux | null = null;
    try {
      await srv.addUser('gus', PASSWORD);
      expect(statSync(sockPath).mode & 0o777).toBe(0o600);
      const config = validateConfig({
        hosts: ['localhost'],
        dataDir: join(dir, 'mux'),
        listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: null },
        mux: { server: { host: `unix:${sockPath}` }, secret: SECRET },
      });
      mux = await runMux({ config, link: { host: `unix:${sockPath}`, port: 0 }, secret: Buffer.from(SECRET), name: 'local', log: pino({ level: 'silent' }) });
      await mux.waitLink();
      const c = await RawClient.login(mux.ports.c2s as number, 'gus', PASSWORD);
      await c.ping();
      c.destroy();
    } finally {
      await mux?.stop();
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a plaintext link off loopback is refused', () => {

  it('by the configuration, on both sides, unless mux.insecure says so', () => {
    const listener = problems({ mux: { linkAddress: '10.20.30.40', linkPort: 5270, linkTls: 'off' } });
    expect(listener.join('\n')).toMatch(/^mux\.linkTls: a plaintext mux link listener on 10\.20\.30\.40, which is not a loopback address/m);
    const wildcard = problems({ mux: { linkAddress: '0.0.0.0', linkPort: 5270, linkTls: 'off' } });
    expect(wildcard.join('\n')).toMatch(/mux\.linkTls/);
    const mux = problems({ mux: { server: { host: 'im-core.corp.example.com', port: 5270, tls: 'off' } } });
    expect(mux.join('\n')).toMatch(/^mux\.server\.tls: a plaintext link to im-core\.corp\.example\.com, which is not a loopback address/m);
    expect(problems({ mux: { linkAddress: '10.20.30.40', linkTls: 'off', server: { host: '10.20.30.40', tls: 'off' }, insecure: true } })).toEqual([]);
    // auto is TLS off loopback, plaintext on it
    expect(problems({ mux: { linkAddress: '10.20.30.40', server: { host: '10.20.30.40' } } })).toEqual([]);
    expect(problems({ mux: { linkAddress: '127.0.0.1', linkTls: 'off', server: { host: '::1', tls: 'off' } } })).toEqual([]);
    expect(problems({ mux: { linkAddress: 'unix:/run/parley/mux.sock', linkTls: 'off', server: { host: 'unix:/run/parley/mux.sock', tls: 'off' } } })).toEqual([]);
  });

  it('by the server at listen time and by the mux before it connects (no socket is opened)', async () => {
    const srv = await startTestServer({ mux: { count: 0 } });
    const dir = mkdtempSync(join(tmpdir(), 'parley-mux-refuse-'));
    try {
      const links = new MuxLinkServer(srv.server, Buffer.from(SECRET));
      await expect(links.listen('0.0.0.0', 0, { tls: null })).rejects.toThrow(/refusing a plaintext mux link listener on 0\.0\.0\.0/);
      await expect(links.listen('192.0.2.1', 0, { tls: null })).rejects.toThrow(/not a loopback address/);
      await links.close();
      const config = validateConfig({ hosts: ['localhost'], dataDir: dir, listen: { address: '127.0.0.1', c2s: null, c2sDirectTls: null }, mux: { secret: SECRET } });
      // An explicit plaintext link to a documentation address (RFC 5737): refused before connecting.
      await expect(runMux({ config, link: { host: '192.0.2.10', port: 5270 }, linkTls: 'off', secret: Buffer.from(SECRET), name: 'x', log: pino({ level: 'silent' }) })).rejects.toThrow(
        /refusing a plaintext link to 192\.0\.2\.10, which is not a loopback address/,
      );
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
