// PROXY protocol on the client ports (issue 15 §2): a raw-socket client sends a v2 header (as a TCP
// load balancer would) and then logs in, on the STARTTLS port and the direct TLS port of the server,
// through a standalone mux and through the embedded mux; the session, its log records and the
// per-address connection limit see the forwarded address, not 127.0.0.1. Untrusted senders of a
// header, and trusted ones without it, are closed.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/core/config.js';
import { runMux, type RunningMux } from '../../src/mux/index.js';
import { proxyV1, proxyV2 } from '../helpers/proxy.js';
import { RawClient, sleep, waitUntil } from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';

const PASSWORD = 'secret-password';
const SECRET = 'a-shared-link-secret-for-tests';

/** Connects, writes `prefix` (a PROXY header) first, and wraps the socket in a RawClient (TLS from the start with directTls). */
async function rawWithHeader(port: number, prefix: Buffer, directTls = false): Promise<RawClient> {
  const sock = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve();
    });
  });
  sock.setNoDelay(true);
  sock.write(prefix);
  const Ctor = RawClient as unknown as new (s: net.Socket, secure: boolean) => RawClient;
  const c = new Ctor(sock, false);
  if (directTls) await c.upgradeTls();
  return c;
}

function sessionOf(srv: TestServer, jid: string) {
  return [...srv.server.sessions.all()].find((s) => s.jid?.full === jid);
}

describe('PROXY protocol on the server’s own client listeners', () => {
  let srv: TestServer;
  const records: Record<string, unknown>[] = [];
  const raws: RawClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer(
      {
        mux: { count: 0 },
        listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: 0, proxyProtocol: { trusted: ['127.0.0.0/8'], timeoutMs: 1000 } },
        limits: { connectionsPerAddress: 2 },
      },
      { log: pino({ level: 'info' }, { write: (l: string) => void records.push(JSON.parse(l) as Record<string, unknown>) }) },
    );
    for (const u of ['amy', 'ben', 'cy']) await srv.addUser(u, PASSWORD);
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    await srv?.close();
  });

  it('STARTTLS port: a v2 header then a login; the session and its log records carry the forwarded address', async () => {
    const c = await rawWithHeader(srv.ports.c2s as number, proxyV2('203.0.113.7', 40001, '198.51.100.1', 5222));
    raws.push(c);
    const jid = await c.login('amy', PASSWORD, { resource: 'lb' });
    await c.ping();
    expect(sessionOf(srv, jid)?.remoteAddress).toBe('203.0.113.7');
    expect(records.some((r) => r.addr === '203.0.113.7')).toBe(true);
    c.destroy();
  });

  it('direct TLS port: the header precedes the ClientHello; IPv6 and v1 headers too', async () => {
    const c = await rawWithHeader(srv.ports.c2sDirectTls as number, proxyV2('2001:db8::7', 40002, '2001:db8::1', 5223), true);
    raws.push(c);
    const jid = await c.login('ben', PASSWORD, { resource: 'lb6' });
    expect(sessionOf(srv, jid)?.remoteAddress).toBe('2001:db8::7');
    expect(sessionOf(srv, jid)?.secure).toBe(true);
    c.destroy();
    const v1 = await rawWithHeader(srv.ports.c2s as number, proxyV1('192.0.2.44', 1234, '192.0.2.1', 5222));
    raws.push(v1);
    const j1 = await v1.login('ben', PASSWORD, { resource: 'v1' });
    expect(sessionOf(srv, j1)?.remoteAddress).toBe('192.0.2.44');
    v1.destroy();
  });

  it('the per-address connection limit applies to the forwarded address, not to the load balancer', async () => {
    await waitUntil(() => srv.server.connectionCount === 0, 5000, 'earlier connections closed');
    const header = (a: string) => proxyV2(a, 50000, '198.51.100.1', 5222);
    const one = await rawWithHeader(srv.ports.c2s as number, header('203.0.113.9'));
    const two = await rawWithHeader(srv.ports.c2s as number, header('203.0.113.9'));
    raws.push(one, two);
    await one.openStream();
    await two.openStream();
    // A third from the same office address: refused (limit 2), although every socket comes from 127.0.0.1.
    const three = await rawWithHeader(srv.ports.c2s as number, header('203.0.113.9'));
    raws.push(three);
    await three.send("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    expect(await three.expectStreamErrorAndClose()).toBe('policy-violation');
    expect(records.some((r) => r.msg === 'connection refused: per-address limit' && r.addr === '203.0.113.9')).toBe(true);
    // Another forwarded address through the same load balancer is not affected.
    const other = await rawWithHeader(srv.ports.c2s as number, header('203.0.113.10'));
    raws.push(other);
    const jid = await other.login('cy', PASSWORD);
    expect(sessionOf(srv, jid)?.remoteAddress).toBe('203.0.113.10');
    for (const c of [one, two, other]) c.destroy();
  });

  it('a trusted sender without the header, or with a malformed one, is closed without a stream', async () => {
    const bare = await RawClient.connect(srv.ports.c2s as number);
    raws.push(bare);
    await bare.send("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    await bare.closed(3000);
    expect(bare.text).toBe('');
    const bad = Buffer.from(proxyV2('203.0.113.7', 1, '198.51.100.1', 2));
    bad[12] = 0x23; // version 2, command 3
    const broken = await rawWithHeader(srv.ports.c2s as number, bad);
    raws.push(broken);
    await broken.closed(3000);
    expect(broken.text).toBe('');
    expect(records.some((r) => r.msg === 'connection refused: PROXY protocol' && /without a PROXY protocol header/.test(String(r.reason)))).toBe(true);
  });
});

describe('PROXY protocol from an untrusted address', () => {
  it('a header closes the connection; a client without one logs in as itself', async () => {
    const srv = await startTestServer({ mux: { count: 0 }, listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: null, proxyProtocol: { trusted: ['10.0.0.0/8'] } } });
    try {
      await srv.addUser('dot', PASSWORD);
      const spoof = await rawWithHeader(srv.ports.c2s as number, proxyV2('203.0.113.7', 1, '198.51.100.1', 5222));
      await spoof.closed(3000);
      expect(spoof.text).toBe('');
      const c = await RawClient.connect(srv.ports.c2s as number);
      const jid = await c.login('dot', PASSWORD);
      expect(sessionOf(srv, jid)?.remoteAddress).toBe('127.0.0.1');
      c.destroy();
    } finally {
      await srv.close();
    }
  });
});

describe('PROXY protocol: untrusted peers never wait for a header (security review)', () => {
  /** Opens n connections that send nothing; resolves how many are still open after `ms`. */
  async function silentOpen(port: number, n: number, ms: number): Promise<{ open: () => number; destroy: () => void }> {
    const socks: net.Socket[] = [];
    let open = 0;
    await Promise.all(
      Array.from({ length: n }, () => {
        const s = net.connect({ host: '127.0.0.1', port });
        socks.push(s);
        s.on('error', () => {});
        s.on('data', () => {});
        return new Promise<void>((r) => {
          s.once('connect', () => {
            open++;
            s.once('close', () => open--);
            r();
          });
          s.once('close', () => r());
        });
      }),
    );
    await sleep(ms);
    return { open: () => open, destroy: () => socks.forEach((s) => s.destroy()) };
  }

  it('the server: silent connections from an untrusted address are counted by the per-address caps at once', async () => {
    const srv = await startTestServer({
      mux: { count: 0 },
      listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: null, proxyProtocol: { trusted: ['10.0.0.0/8'], timeoutMs: 60_000 } },
      limits: { preAuthPerAddress: 3 },
    });
    try {
      // Before the fix all 40 waited in the gate (up to timeoutMs), unseen by the caps.
      const socks = await silentOpen(srv.ports.c2s as number, 40, 300);
      await waitUntil(() => socks.open() <= 3, 5000, 'pre-authentication cap applied');
      expect(srv.server.connectionCount).toBeLessThanOrEqual(3);
      socks.destroy();
    } finally {
      await srv.close();
    }
  });

  it('a mux: an untrusted client is OPENed on the server at once (the server counts it), and its header is refused', async () => {
    const linkPort = await freePort();
    const srv = await startTestServer({ mux: { count: 0, linkPort, secret: SECRET }, limits: { preAuthPerAddress: 3 } });
    const dir = mkdtempSync(join(tmpdir(), 'parley-proxy-mux-'));
    let mux: RunningMux | null = null;
    try {
      await srv.addUser('gil', PASSWORD);
      const config = validateConfig({
        hosts: ['localhost'],
        dataDir: dir,
        listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: null, proxyProtocol: { trusted: ['10.0.0.0/8'], timeoutMs: 60_000 } },
        mux: { server: { host: '127.0.0.1', port: linkPort }, secret: SECRET },
      });
      mux = await runMux({ config, link: { host: '127.0.0.1', port: linkPort }, secret: Buffer.from(SECRET), name: 'edge2', log: pino({ level: 'silent' }) });
      await mux.waitLink();
      const socks = await silentOpen(mux.ports.c2s as number, 40, 300);
      await waitUntil(() => socks.open() <= 3, 5000, 'the server’s pre-authentication cap applied through the mux');
      socks.destroy();
      await waitUntil(() => srv.server.connectionCount === 0, 5000, 'silent ones gone');
      const spoof = await rawWithHeader(mux.ports.c2s as number, proxyV2('203.0.113.7', 1, '198.51.100.1', 5222));
      await spoof.closed(3000);
      expect(spoof.text).toBe('');
      const c = await RawClient.connect(mux.ports.c2s as number);
      const jid = await c.login('gil', PASSWORD);
      expect(sessionOf(srv, jid)?.remoteAddress).toBe('127.0.0.1');
      c.destroy();
    } finally {
      await mux?.stop();
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('mux stop() closes clients waiting in the PROXY gate and resolves; they are never OPENed', async () => {
    const linkPort = await freePort();
    const srv = await startTestServer({ mux: { count: 0, linkPort, secret: SECRET } });
    const dir = mkdtempSync(join(tmpdir(), 'parley-proxy-mux-'));
    try {
      const config = validateConfig({
        hosts: ['localhost'],
        dataDir: dir,
        // A deadline longer than the test: had stop() waited for the gate, the test would time out.
        listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: null, proxyProtocol: { trusted: ['127.0.0.1'], required: false, timeoutMs: 60_000 } },
        mux: { server: { host: '127.0.0.1', port: linkPort }, secret: SECRET },
      });
      const mux = await runMux({ config, link: { host: '127.0.0.1', port: linkPort }, secret: Buffer.from(SECRET), name: 'stopping', log: pino({ level: 'silent' }) });
      await mux.waitLink();
      const waiting = net.connect({ host: '127.0.0.1', port: mux.ports.c2s as number });
      waiting.on('error', () => {});
      await new Promise<void>((r) => waiting.once('connect', () => r()));
      const closed = new Promise<void>((r) => waiting.once('close', () => r()));
      await sleep(100);
      const stopped = mux.stop();
      // The header arriving while stop() runs must not get the client OPENed on the server.
      waiting.write(proxyV2('203.0.113.9', 1, '198.51.100.1', 5222));
      await stopped;
      await closed;
      await sleep(100);
      expect(srv.server.connectionCount).toBe(0);
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('PROXY protocol through the muxes', () => {
  it('a standalone mux sends the forwarded address to the server in OPEN (STARTTLS and direct TLS)', async () => {
    const linkSrv = net.createServer();
    await new Promise<void>((r) => linkSrv.listen(0, '127.0.0.1', () => r()));
    const linkPort = (linkSrv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => linkSrv.close(() => r()));
    const srv = await startTestServer({ mux: { count: 0, linkPort, secret: SECRET } });
    const dir = mkdtempSync(join(tmpdir(), 'parley-proxy-mux-'));
    let mux: RunningMux | null = null;
    try {
      await srv.addUser('eve', PASSWORD);
      const config = validateConfig({
        hosts: ['localhost'],
        dataDir: dir,
        listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: 0, proxyProtocol: { trusted: ['127.0.0.1'] } },
        mux: { server: { host: '127.0.0.1', port: linkPort }, secret: SECRET },
      });
      mux = await runMux({ config, link: { host: '127.0.0.1', port: linkPort }, secret: Buffer.from(SECRET), name: 'edge', log: pino({ level: 'silent' }) });
      await mux.waitLink();
      const c = await rawWithHeader(mux.ports.c2s as number, proxyV2('198.51.100.23', 41000, '192.0.2.1', 5222));
      const jid = await c.login('eve', PASSWORD, { resource: 'starttls' });
      expect(sessionOf(srv, jid)?.remoteAddress).toBe('198.51.100.23');
      const t = await rawWithHeader(mux.ports.c2sDirectTls as number, proxyV2('2001:db8:1::23', 41001, '2001:db8::1', 5223), true);
      const tj = await t.login('eve', PASSWORD, { resource: 'direct' });
      expect(sessionOf(srv, tj)?.remoteAddress).toBe('2001:db8:1::23');
      // No header from the trusted balancer: the mux closes it before the server hears of it.
      const before = srv.server.connectionCount;
      const bare = await RawClient.connect(mux.ports.c2s as number);
      await bare.send("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
      await bare.closed(3000);
      await sleep(100);
      expect(srv.server.connectionCount).toBe(before);
      for (const x of [c, t]) x.destroy();
    } finally {
      await mux?.stop();
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the embedded mux of `parley start` reads the header of the sockets handed to it', async () => {
    const srv = await startTestServer({ mux: { count: 1 }, listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: 0, proxyProtocol: { trusted: ['127.0.0.1'] } } });
    try {
      await srv.addUser('fay', PASSWORD);
      const c = await rawWithHeader(srv.ports.c2s as number, proxyV2('203.0.113.77', 42000, '192.0.2.1', 5222));
      const jid = await c.login('fay', PASSWORD);
      expect(sessionOf(srv, jid)?.remoteAddress).toBe('203.0.113.77');
      c.destroy();
    } finally {
      await srv.close();
    }
  });
});
