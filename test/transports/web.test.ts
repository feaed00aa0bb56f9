// The web container (issue 6): both listeners, static files with safe headers, module routes from
// the registry, 404s, and client address / security from trusted proxies only.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('web container', () => {
  let srv: TestServer;

  beforeAll(async () => {
    srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, trustedProxies: ['127.0.0.2'] } });
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
    const get = (localAddress: string) =>
      new Promise<void>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: srv.ports.http as number, path: '/whoami', localAddress, headers: { 'X-Forwarded-For': '203.0.113.7', 'X-Forwarded-Proto': 'https' } }, (res) => {
          res.resume();
          res.on('end', () => resolve());
        });
        req.on('error', reject);
      });
    await get('127.0.0.2'); // the trusted proxy
    await get('127.0.0.3'); // anyone else on loopback
    undo();
    expect(seen[0]).toEqual({ addr: '203.0.113.7', secure: true });
    // Not trusted: its own address; secure only because plain HTTP from loopback counts (secureLoopback).
    expect(seen[1]).toEqual({ addr: '127.0.0.3', secure: true });
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
