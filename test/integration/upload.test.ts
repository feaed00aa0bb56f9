// XEP-0363 HTTP File Upload end to end: disco of the host and of upload.<host>, slot requests from
// a real client, PUT and GET over the web container's HTTPS listener (bytes, headers, CORS, HEAD),
// and the refusals: over-size (file-too-large with max-file-size), over quota, wrong
// Content-Length, a second PUT, bad or missing signatures, content-type mismatch, path traversal
// (encoded and raw), a requester from another server; then expired slots and file expiry with a
// short-lived configuration.
import { existsSync, readdirSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HANDLED } from '../../src/core/hooks.js';
import { parseElement } from '../../src/xmpp/parser.js';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { waitUntil } from '../helpers/raw.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';

const NS_UP = 'urn:xmpp:http:upload:0';
const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const MAX = 1000;
const QUOTA = 2500;


async function start(upload: Record<string, unknown>): Promise<{ srv: TestServer; base: string }> {
  const port = await freePort();
  const base = `https://127.0.0.1:${port}`;
  const srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: port }, modules: { upload: { baseUrl: base, ...upload } } });
  return { srv, base };
}

let idSeq = 0;
/** Sends an iq and resolves the raw reply (result or error), so error payloads can be inspected. */
async function rawIq(c: TestClient, el: Element): Promise<Element> {
  const id = `up${++idSeq}`;
  el.attrs.id = id;
  await c.send(el);
  return c.waitFor((s) => s.name === 'iq' && s.attrs.id === id);
}

function slotRequest(filename: string, size: number, contentType?: string): Element {
  const attrs: Record<string, string> = { xmlns: NS_UP, filename, size: String(size) };
  if (contentType) attrs['content-type'] = contentType;
  return xml('iq', { type: 'get', to: 'upload.localhost' }, xml('request', attrs));
}

async function slot(c: TestClient, filename: string, size: number, contentType?: string): Promise<{ put: string; get: string }> {
  const res = await rawIq(c, slotRequest(filename, size, contentType));
  expect(res.attrs.type, String(res)).toBe('result');
  const s = res.getChild('slot', NS_UP) as Element;
  return { put: s.getChild('put')?.attrs.url as string, get: s.getChild('get')?.attrs.url as string };
}

function errorOf(res: Element): { type: string; condition: string; text: string | undefined; error: Element } {
  expect(res.attrs.type, String(res)).toBe('error');
  const error = res.getChild('error') as Element;
  const cond = error.getChildElements().find((e) => e.attrs.xmlns === NS_STANZAS && e.name !== 'text');
  return { type: error.attrs.type as string, condition: cond?.name ?? '', text: error.getChildText('text', NS_STANZAS) ?? undefined, error };
}

const bytes = (n: number, seed = 7) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

function putFile(url: string, body: Buffer, contentType?: string): Promise<Response> {
  return fetch(url, { method: 'PUT', body: new Uint8Array(body), headers: contentType ? { 'Content-Type': contentType } : {} });
}

/** A request whose path is sent exactly as given (fetch would normalize dot segments). */
function rawGet(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path, method, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A PUT with a declared Content-Length that the body does not honour (fetch would not allow it):
 * writes `body`, then drops the connection once `started()` says the server is writing it.
 */
function rawPut(url: string, declared: number, body: Buffer, started: () => boolean): Promise<number> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const done = (status: number) => {
      clearInterval(poll);
      resolve(status);
    };
    const req = https.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'PUT', rejectUnauthorized: false, headers: { 'Content-Length': String(declared) } },
      (res) => {
        res.resume();
        done(res.statusCode ?? 0);
      },
    );
    req.on('error', () => done(0));
    req.write(body);
    // Leave the body short and end the connection: the server must not keep a partial file.
    const poll = setInterval(() => {
      if (!started()) return;
      clearInterval(poll);
      req.destroy();
    }, 5);
  });
}

describe('HTTP file upload (XEP-0363)', () => {
  let srv: TestServer;
  let base: string;
  let alice: TestClient;
  let bob: TestClient;
  let dir: string;

  beforeAll(async () => {
    ({ srv, base } = await start({ maxFileSize: MAX, quotaBytes: QUOTA }));
    dir = join(srv.dataDir, 'uploads');
    const a = uniqueUser('alice');
    const b = uniqueUser('bob');
    await srv.addUser(a);
    await srv.addUser(b);
    alice = await connect({ port: srv.ports.c2s as number, username: a, mechanism: 'PLAIN' });
    bob = await connect({ port: srv.ports.c2s as number, username: b, mechanism: 'PLAIN' });
  });
  afterAll(async () => {
    await alice?.stop();
    await bob?.stop();
    await srv?.close();
  });

  it('lists the service in the host disco#items; its disco#info has store/file, the feature and max-file-size', async () => {
    const items = await rawIq(alice, xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })));
    const listed = (items.getChild('query') as Element).getChildElements().map((i) => i.attrs.jid);
    expect(listed).toContain('upload.localhost');

    const info = await rawIq(alice, xml('iq', { type: 'get', to: 'upload.localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(info.attrs.type).toBe('result');
    expect(info.attrs.from).toBe('upload.localhost');
    const q = info.getChild('query') as Element;
    expect(q.getChildren('identity').map((i) => `${i.attrs.category}/${i.attrs.type}`)).toEqual(['store/file']);
    expect(q.getChildren('feature').map((f) => f.attrs.var)).toContain(NS_UP);
    const form = q.getChild('x', 'jabber:x:data') as Element;
    const fields = Object.fromEntries(form.getChildren('field').map((f) => [f.attrs.var, f.getChildText('value')]));
    expect(fields).toEqual({ FORM_TYPE: NS_UP, 'max-file-size': String(MAX), 'x-parley-quota-bytes': String(QUOTA), 'x-parley-quota-files': '1000' });

    const svcItems = await rawIq(alice, xml('iq', { type: 'get', to: 'upload.localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })));
    expect(svcItems.attrs.type).toBe('result');
    // Anything else the service does not offer.
    const other = await rawIq(alice, xml('iq', { type: 'get', to: 'upload.localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    expect(errorOf(other).condition).toBe('service-unavailable');
    // A sibling subdomain that is not the service is still unknown.
    const unknown = await rawIq(alice, xml('iq', { type: 'get', to: 'files.localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(errorOf(unknown).condition).toBe('remote-server-not-found');
  });

  it('hands out a slot, takes the PUT and serves the bytes to another user with safe headers', async () => {
    const body = bytes(700);
    const s = await slot(alice, 'très cool.png', body.length, 'image/png');
    expect(s.get.startsWith(`${base}/upload/`)).toBe(true);
    expect(s.get).toContain('/tr%C3%A8s%20cool.png');
    expect(s.put.startsWith(`${s.get}?`)).toBe(true);
    // The slot id is long and random.
    const id = new URL(s.get).pathname.split('/')[2] as string;
    expect(id).toMatch(/^[A-Za-z0-9_-]{32}$/);

    // Browsers preflight the PUT.
    const pre = await fetch(s.put, { method: 'OPTIONS', headers: { Origin: 'https://web.example', 'Access-Control-Request-Method': 'PUT' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-methods')).toContain('PUT');
    expect(pre.headers.get('access-control-allow-headers')).toContain('Content-Type');

    const put = await putFile(s.put, body, 'image/png');
    expect(put.status).toBe(201);
    expect(put.headers.get('access-control-allow-origin')).toBe('*');

    // Alice shares the link; Bob downloads it.
    await alice.send(xml('message', { to: bob.jid, type: 'chat' }, xml('body', {}, s.get), xml('x', { xmlns: 'jabber:x:oob' }, xml('url', {}, s.get))));
    const msg = await bob.waitFor((m) => m.name === 'message' && m.getChildText('body') === s.get);
    const got = await fetch(msg.getChildText('body') as string);
    expect(got.status).toBe(200);
    expect(Buffer.from(await got.arrayBuffer()).equals(body)).toBe(true);
    expect(got.headers.get('content-type')).toBe('image/png');
    expect(got.headers.get('content-length')).toBe('700');
    expect(got.headers.get('content-disposition')).toBe(`inline; filename="tr_s cool.png"; filename*=UTF-8''tr%C3%A8s%20cool.png`);
    expect(got.headers.get('x-content-type-options')).toBe('nosniff');
    expect(got.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(got.headers.get('cache-control')).toMatch(/^private, max-age=\d+, immutable$/);
    expect(got.headers.get('access-control-allow-origin')).toBe('*');

    const head = await fetch(s.get, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe('700');
    expect((await head.arrayBuffer()).byteLength).toBe(0);

    // Range requests work (players seek in audio and video).
    const part = await fetch(s.get, { headers: { Range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(body.subarray(10, 20))).toBe(true);

    // The file is on disk under its slot id only, next to nothing half-written.
    expect(existsSync(join(dir, id))).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith('.tmp-'))).toEqual([]);

    // The same id with another name is not the file.
    expect((await fetch(`${base}/upload/${id}/other.png`)).status).toBe(404);
  });

  it('serves unsafe types as attachments with a neutral type, and checks the announced Content-Type', async () => {
    const html = Buffer.from('<script>alert(1)</script>');
    const s = await slot(alice, 'page.html', html.length, 'text/html');
    expect((await putFile(s.put, html, 'image/png')).status).toBe(415);
    expect((await putFile(s.put, html, 'text/html; charset=utf-8')).status).toBe(201);
    const got = await fetch(s.get);
    expect(got.headers.get('content-type')).toBe('application/octet-stream');
    expect(got.headers.get('content-disposition')).toMatch(/^attachment; filename="page.html"/);
    expect(await got.text()).toBe(html.toString());

    // No content-type in the request: anything may be PUT, served as an octet stream.
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>');
    const s2 = await slot(alice, 'x.svg', svg.length);
    expect((await putFile(s2.put, svg, 'image/svg+xml')).status).toBe(201);
    const g2 = await fetch(s2.get);
    expect(g2.headers.get('content-type')).toBe('application/octet-stream');
    expect(g2.headers.get('content-disposition')).toMatch(/^attachment;/);
  });

  it('refuses an oversized file with file-too-large and max-file-size', async () => {
    const res = await rawIq(alice, slotRequest('big.bin', MAX + 1));
    const e = errorOf(res);
    expect(e.type).toBe('modify');
    expect(e.condition).toBe('not-acceptable');
    expect(e.error.getChild('file-too-large', NS_UP)?.getChildText('max-file-size')).toBe(String(MAX));
    expect(e.text).toContain(String(MAX));
  });

  it('refuses bad requests: missing or invalid size, unusable name, invalid content-type', async () => {
    for (const req of [
      xml('request', { xmlns: NS_UP, filename: 'a.txt' }),
      xml('request', { xmlns: NS_UP, filename: 'a.txt', size: '-1' }),
      xml('request', { xmlns: NS_UP, filename: 'a.txt', size: '1e3' }),
      xml('request', { xmlns: NS_UP, filename: '...', size: '1' }),
      xml('request', { xmlns: NS_UP, filename: 'a.txt', size: '1', 'content-type': 'text/html\r\nX-Evil: 1' }),
    ]) {
      const res = await rawIq(alice, xml('iq', { type: 'get', to: 'upload.localhost' }, req));
      expect(errorOf(res).condition, String(req)).toBe('bad-request');
    }
  });

  it('enforces the per-user quota over live uploads, pending slots included', async () => {
    const u = uniqueUser('carol');
    await srv.addUser(u);
    const carol = await connect({ port: srv.ports.c2s as number, username: u, mechanism: 'PLAIN' });
    try {
      const a = await slot(carol, 'a.bin', 1000);
      expect((await putFile(a.put, bytes(1000))).status).toBe(201);
      await slot(carol, 'b.bin', 1000); // pending, still counts
      const res = await rawIq(carol, slotRequest('c.bin', 501));
      const e = errorOf(res);
      expect(e.type).toBe('wait');
      expect(e.condition).toBe('resource-constraint');
      expect(e.text).toMatch(/quota/i);
      // What still fits is granted.
      await slot(carol, 'd.bin', 500);
    } finally {
      await carol.stop();
    }
  });

  it('refuses a Content-Length other than the slot size, and keeps no partial file', async () => {
    const body = bytes(300);
    const s = await slot(alice, 'len.bin', body.length);
    expect((await putFile(s.put, body.subarray(0, 299))).status).toBe(400);
    expect((await putFile(s.put, Buffer.concat([body, Buffer.from('x')]))).status).toBe(413);
    // A body shorter than its declared length, then a dropped connection.
    // Dropped once the partial file exists, so that its removal (not its absence) is what is seen.
    const temps = () => readdirSync(dir).filter((f) => f.startsWith('.tmp-'));
    await rawPut(s.put, 300, body.subarray(0, 100), () => temps().length > 0);
    await waitUntil(() => temps().length === 0, 5000, 'the partial upload to be removed');
    expect((await fetch(s.get)).status).toBe(404);
    // The slot is still usable with the right body.
    expect((await putFile(s.put, body)).status).toBe(201);
    expect(Buffer.from(await (await fetch(s.get)).arrayBuffer()).equals(body)).toBe(true);
  });

  it('refuses a second PUT to the same slot', async () => {
    const s = await slot(alice, 'once.txt', 5, 'text/plain');
    expect((await putFile(s.put, Buffer.from('first'), 'text/plain')).status).toBe(201);
    expect((await putFile(s.put, Buffer.from('again'), 'text/plain')).status).toBe(409);
    const got = await fetch(s.get);
    expect(await got.text()).toBe('first');
    expect(got.headers.get('content-type')).toBe('text/plain; charset=utf-8');
  });

  it('refuses PUTs with a bad, missing or re-dated signature, or to another name', async () => {
    const s = await slot(alice, 'signed.bin', 10);
    const u = new URL(s.put);
    const sig = u.searchParams.get('s') as string;
    const e = u.searchParams.get('e') as string;
    const flipped = (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1);
    const variants = [
      `${s.get}?e=${e}&s=${flipped}`,
      `${s.get}?e=${e}`,
      `${s.get}?e=${Number(e) + 3_600_000}&s=${sig}`, // a later deadline is not signed
      `${s.get}?e=${e}&s=${sig}x`,
      s.put.replace('/signed.bin?', '/other.bin?'),
    ];
    for (const v of variants) expect((await putFile(v, bytes(10))).status, v).toBe(403);
    expect((await putFile(s.put, bytes(10))).status).toBe(201);
  });

  it('never serves anything outside the upload directory (encoded and raw traversal)', async () => {
    // A file name with separators is flattened, not followed.
    const s = await slot(alice, '../../evil.txt', 4, 'text/plain');
    const name = decodeURIComponent(new URL(s.get).pathname.split('/')[3] as string);
    expect(name).not.toMatch(/[/\\]/);
    expect(name.startsWith('.')).toBe(false);
    expect((await putFile(s.put, Buffer.from('evil'), 'text/plain')).status).toBe(201);
    expect(readdirSync(join(dir, '..')).filter((f) => f.includes('evil'))).toEqual([]);

    const port = Number(new URL(base).port);
    const id = new URL(s.get).pathname.split('/')[2] as string;
    for (const path of [
      `/upload/${id}/..%2F..%2Fsecret.key`,
      `/upload/..%2F..%2Fsecret.key/x`,
      `/upload/%2e%2e/secret.key`,
      `/upload/.upload.key/x`,
      `/upload/${id}/%2e%2e%2f%2e%2e%2fsecret.key`,
      `/upload/${id}/..%5C..%5Csecret.key`,
      `/upload/${encodeURIComponent(join(srv.dataDir, 'secret.key'))}/x`,
    ]) {
      const r = await fetch(`${base}${path}`);
      expect(r.status, path).toBe(404);
    }
    for (const path of [`/upload/../secret.key`, `/upload/${id}/../../secret.key`, `/upload/../../../../../../etc/passwd`, `/upload/${id}/../.upload.key`]) {
      const r = await rawGet(port, path);
      expect([400, 403, 404], path).toContain(r.status);
      expect(r.body).not.toMatch(/root:|^[A-Za-z0-9+/]{40,}={0,2}$/);
    }
    // A PUT by traversal does not create files either.
    const r = await rawGet(port, `/upload/${id}/../../planted.txt?e=1&s=x`, 'PUT');
    expect([400, 403, 404]).toContain(r.status);
    expect(existsSync(join(srv.dataDir, 'planted.txt'))).toBe(false);
  });

  it('refuses slot requests from a user of another server', async () => {
    const seen: Element[] = [];
    // Capture what the service sends back to the foreign domain (there is no federation here).
    const undo = srv.server.hooks.on('route.remote', (ev: { stanza: Element; to: { domain: string } }) => {
      if (ev.to.domain !== 'evil.example') return undefined;
      seen.push(ev.stanza);
      return HANDLED;
    }, 100);
    try {
      const iq = parseElement(`<iq type='get' id='remote1' from='mallory@evil.example/x' to='upload.localhost'><request xmlns='${NS_UP}' filename='a.txt' size='10'/></iq>`);
      await srv.server.route(iq);
      expect(seen).toHaveLength(1);
      const e = errorOf(seen[0] as Element);
      expect(e.condition).toBe('forbidden');
      expect(seen[0]?.attrs.from).toBe('upload.localhost');
    } finally {
      undo();
    }
    // The domain's own (serverless) JID is not a user either.
    const res = await rawIq(alice, slotRequest('a.txt', 1));
    expect(res.attrs.type).toBe('result');
  });

  it('answers 404 for unknown slots, and plain HTTP serves the same routes', async () => {
    expect((await fetch(`${base}/upload/${'A'.repeat(32)}/x.png`)).status).toBe(404);
    expect((await fetch(`${base}/upload/short/x.png`)).status).toBe(404);
    const s = await slot(alice, 'plain.txt', 2, 'text/plain');
    expect((await putFile(s.put, Buffer.from('hi'), 'text/plain')).status).toBe(201);
    const viaHttp = await new Promise<number>((resolve, reject) => {
      http.get(`http://127.0.0.1:${srv.ports.http}${new URL(s.get).pathname}`, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
    expect(viaHttp).toBe(200);
  });
});

describe('HTTP file upload expiry', () => {
  let srv: TestServer;
  let alice: TestClient;
  let dir: string;

  beforeAll(async () => {
    ({ srv } = await start({ slotTtlSeconds: 1, fileTtlSeconds: 1, sweepIntervalSeconds: 1, quotaBytes: 100, maxFiles: 2 }));
    dir = join(srv.dataDir, 'uploads');
    const a = uniqueUser('exp');
    await srv.addUser(a);
    alice = await connect({ port: srv.ports.c2s as number, username: a, mechanism: 'PLAIN' });
  });
  afterAll(async () => {
    await alice?.stop();
    await srv?.close();
  });

  it('refuses a PUT after the slot expired, and the expired slot no longer counts against the quota', async () => {
    const s = await slot(alice, 'late.bin', 100);
    expect(errorOf(await rawIq(alice, slotRequest('more.bin', 1))).condition).toBe('resource-constraint');
    await new Promise((r) => setTimeout(r, 1200));
    expect((await putFile(s.put, bytes(100))).status).toBe(403);
    await slot(alice, 'more.bin', 100);
  });

  it('deletes files and their rows once they are older than fileTtlSeconds', async () => {
    await new Promise((r) => setTimeout(r, 1100)); // let the previous test's slot lapse
    const s = await slot(alice, 'short-lived.bin', 50);
    expect((await putFile(s.put, bytes(50))).status).toBe(201);
    const id = new URL(s.get).pathname.split('/')[2] as string;
    expect(existsSync(join(dir, id))).toBe(true);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (existsSync(join(dir, id)) || (await srv.storage.uploads.get(id)))) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(existsSync(join(dir, id))).toBe(false);
    expect(await srv.storage.uploads.get(id)).toBeNull();
    expect((await fetch(s.get)).status).toBe(404);
    expect(await srv.storage.uploads.usage(alice.jid.split('/')[0] as string, Date.now())).toEqual({ files: 0, bytes: 0 });
  });

  it('caps the number of live uploads per account (maxFiles), empty files included', async () => {
    await slot(alice, 'empty1.txt', 0);
    await slot(alice, 'empty2.txt', 0);
    const e = errorOf(await rawIq(alice, slotRequest('empty3.txt', 0)));
    expect(e.condition).toBe('resource-constraint');
    expect(e.text).toMatch(/2 of 2 files/);
  });
});
