// The web container (issue 6): both listeners, static files with safe headers, module routes from
// the registry, 404s, and client address / security from trusted proxies only.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('web container', () => {
  let srv: TestServer;

  beforeAll(async () => {
    srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, trustedProxies: ['127.0.0.2', '10.0.0.0/8'] } });
  });
  afterAll(async () => {
    await srv?.close();
  });

  it('serves static files over HTTP and HTTPS (no SNI: the default certificate) with nosniff, and 404 for the rest', async () => {
    for (const base of [`http://127.0.0.1:${srv.ports.http}`, `https://127.0.0.1:${srv.ports.https}`]) {
      const r = await fetch(`${base}/`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toMatch(/^text\/html/);
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
      expect(r.headers.get('x-powered-by')).toBeNull();
      // Issue 16 §7: a CSP on every page, no framing, HSTS on HTTPS only.
      expect(r.headers.get('content-security-policy')).toBe("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'");
      expect(r.headers.get('x-frame-options')).toBe('DENY');
      expect(r.headers.get('strict-transport-security')).toBe(base.startsWith('https:') ? 'max-age=31536000' : null);
      expect(await r.text()).toContain('Parley');
      const missing = await fetch(`${base}/no/such/file`);
      expect(missing.status).toBe(404);
      const traversal = await fetch(`${base}/..%2f..%2fpackage.json`);
      expect(traversal.status).toBe(404);
    }
  });

  it('dispatches to routes that modules register, and stops when they are removed', async () => {
    const undo = srv.server.http.add({ method: 'GET', path: '/test-route/:x', owner: 'test', handler: (req, res) => void res.type('text/plain').send(`got ${req.params.x}`) });
    const r = await fetch(`http://127.0.0.1:${srv.ports.http}/test-route/abc`);
    expect(await r.text()).toBe('got abc');
    // A parameter that is not valid percent-encoding is the client's error, not a 500.
    expect((await fetch(`http://127.0.0.1:${srv.ports.http}/test-route/%E0%A4%A`)).status).toBe(400);
    undo();
    expect((await fetch(`http://127.0.0.1:${srv.ports.http}/test-route/abc`)).status).toBe(404);
  });

  it('believes X-Forwarded-For / -Proto only from a trusted proxy', async () => {
    const seen: { addr: string; secure: boolean }[] = [];
    const web = srv.web as NonNullable<TestServer['web']>;
    const undo = srv.server.http.add({
      method: 'GET',
      path: '/whoami',
      owner: 'test',
      handler: (req, res) => {
        const info = web.requestInfo(req);
        seen.push({ addr: info.remoteAddress, secure: info.secure });
        res.end();
      },
    });
    const get = (localAddress: string, xff = '203.0.113.7') =>
      new Promise<number>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: srv.ports.http as number, path: '/whoami', localAddress, headers: { 'X-Forwarded-For': xff, 'X-Forwarded-Proto': 'https' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
      });
    await get('127.0.0.2'); // the trusted proxy
    // Another proxy on this machine (loopback, forwarding headers, not trusted): refused (issue 16 §3).
    expect(await get('127.0.0.3')).toBe(403);
    // Two trusted proxies in a row (the portal gateway in front of the company proxy): the chain
    // is walked back to the first untrusted hop (proxy-addr), not just the last entry taken.
    await get('127.0.0.2', '203.0.113.8, 10.1.2.3');
    // What a client puts in front of the header is not believed past an untrusted hop.
    await get('127.0.0.2', '10.9.9.9, 198.51.100.4, 10.1.2.3');
    // Plain HTTP from loopback with no forwarding headers: secure (secureLoopback, a local TLS proxy).
    await new Promise<void>((resolve, reject) => http.get({ host: '127.0.0.1', port: srv.ports.http as number, path: '/whoami', localAddress: '127.0.0.3' }, (res) => res.resume().on('end', resolve)).on('error', reject));
    undo();
    expect(seen[0]).toEqual({ addr: '203.0.113.7', secure: true });
    expect(seen[1]).toEqual({ addr: '203.0.113.8', secure: true });
    expect(seen[2]).toEqual({ addr: '198.51.100.4', secure: true });
    expect(seen[3]).toEqual({ addr: '127.0.0.3', secure: true });
    expect(seen).toHaveLength(4);
  });
});

describe('web container embedded by a portal', () => {
  it('lets the configured origins frame its pages, and only those', async () => {
    const srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, frameAncestors: ['https://intranet.example.com'], hstsSeconds: 0 } });
    try {
      const r = await fetch(`https://127.0.0.1:${srv.ports.https}/`);
      expect(r.headers.get('content-security-policy')).toMatch(/frame-ancestors https:\/\/intranet\.example\.com$/);
      expect(r.headers.get('x-frame-options')).toBeNull();
      expect(r.headers.get('strict-transport-security')).toBeNull();
    } finally {
      await srv.close();
    }
  });
});

describe('web container without secureLoopback', () => {
  it('plain HTTP from loopback is not secure when secureLoopback is off, and the listeners can be off', async () => {
    const srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: null, secureLoopback: false } });
    try {
      expect(srv.ports.https).toBeNull();
      let secure: boolean | undefined;
      srv.server.http.add({ method: 'GET', path: '/s', owner: 'test', handler: (req, res) => { secure = srv.web?.requestInfo(req).secure; res.end(); } });
      await fetch(`http://127.0.0.1:${srv.ports.http}/s`);
      expect(secure).toBe(false);
    } finally {
      await srv.close();
    }
    const off = await startTestServer({ http: { port: null, tlsPort: null } });
    expect(off.web).toBeNull();
    await off.close();
  });
});
