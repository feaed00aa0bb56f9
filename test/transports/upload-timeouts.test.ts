// Issue 16 §8: the web container times out on inactivity, not on a request's total duration, so
// a large upload over a slow line completes while a stalled one is cut. HTTP only (no mux path).
import https from 'node:https';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';

const NS_UP = 'urn:xmpp:http:upload:0';


async function slot(c: TestClient, filename: string, size: number): Promise<{ put: string; get: string }> {
  const res: Element = await c.iq(xml('iq', { type: 'get', to: 'upload.localhost' }, xml('request', { xmlns: NS_UP, filename, size: String(size) })));
  const s = res.getChild('slot', NS_UP) as Element;
  return { put: s.getChild('put')?.attrs.url as string, get: s.getChild('get')?.attrs.url as string };
}

const bytes = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff));

describe('HTTP file upload over a slow line (issue 16 §8)', () => {
  let srv: TestServer;
  let alice: TestClient;

  beforeAll(async () => {
    const port = await freePort();
    srv = await startTestServer({
      // An idle limit of 6 s (BOSH's maxWait 1 + 5): the upload below takes longer than that in all.
      http: { address: '127.0.0.1', port: 0, tlsPort: port, idleTimeoutSeconds: 5, bosh: { maxWait: 1 } },
      modules: { upload: { baseUrl: `https://127.0.0.1:${port}`, maxFileSize: 100_000 } },
    });
    const a = uniqueUser('alice');
    await srv.addUser(a);
    alice = await connect({ port: srv.ports.c2s as number, username: a, mechanism: 'PLAIN' });
  });
  afterAll(async () => {
    await alice?.stop();
    await srv?.close();
  });

  /** A PUT that sends `body` in `parts` pieces, `gapMs` apart; resolves the status (0: connection cut). */
  function trickle(url: string, body: Buffer, parts: number, gapMs: number): Promise<number> {
    return new Promise((resolve) => {
      const u = new URL(url);
      const req = https.request(
        { host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'PUT', rejectUnauthorized: false, headers: { 'Content-Length': String(body.length) } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', () => resolve(0));
      const size = Math.ceil(body.length / parts);
      let i = 0;
      const next = () => {
        if (req.destroyed) return;
        const chunk = body.subarray(i * size, (i + 1) * size);
        i++;
        if (i >= parts) req.end(chunk);
        else {
          req.write(chunk);
          setTimeout(next, gapMs);
        }
      };
      next();
    });
  }

  it('an upload that keeps moving may take longer than the idle limit; one that stalls past it is cut', async () => {
    const body = bytes(12_000);
    // 9 pieces a second apart: 8 s in all, more than the 6 s idle limit, never idle for 6 s.
    const s = await slot(alice, 'slow.bin', body.length);
    expect(await trickle(s.put, body, 9, 1000)).toBe(201);
    const got = await fetch(s.get);
    expect(Buffer.from(await got.arrayBuffer()).equals(body)).toBe(true);
    // A stalled upload: the second half never comes; the connection is closed, no file is kept.
    const stalled = await slot(alice, 'stalled.bin', body.length);
    expect(await trickle(stalled.put, body, 2, 60_000)).toBe(0);
    expect((await fetch(stalled.get)).status).toBe(404);
  }, 60_000);
});
