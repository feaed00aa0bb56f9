// Operations endpoints of the web container (issue 6): /healthz, /readyz and /metrics against a
// real server, with real @xmpp/client sessions driving the counters; readiness failures (storage
// rejecting, hanging, closed; listeners down; no mux link), /metrics access control (allow list
// behind a trusted proxy, bearer token) and the configuration's validation.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../../src/core/config.js';
import { addressInList as addressAllowed, compileAddressList as compileAllowList } from '../../src/core/addresses.js';
import { startOps, tokenMatches } from '../../src/transports/ops.js';
import type { WebContainer } from '../../src/transports/web.js';
import { barrier, connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const TOKEN = 'metrics-token-0123456789abcdef';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format strictly enough to catch a malformed line. */
function parseMetrics(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) {
      expect(line).toMatch(/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$/);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      expect(m, line).not.toBeNull();
      types.set(m![1]!, m![2]!);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    expect(m, `malformed sample line: ${line}`).not.toBeNull();
    const labels: Record<string, string> = {};
    const body = m![2] ?? '';
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
    let lm: RegExpExecArray | null;
    let consumed = 0;
    while ((lm = re.exec(body))) {
      labels[lm[1]!] = lm[2]!;
      consumed = re.lastIndex;
    }
    expect(consumed, `malformed labels: ${line}`).toBe(body.length);
    const raw = m![3]!;
    // prom-client writes NaN as "Nan"; Prometheus (Go's ParseFloat) reads NaN and Inf in any case.
    const value = /^nan$/i.test(raw) ? NaN : /^\+?inf$/i.test(raw) ? Infinity : /^-inf$/i.test(raw) ? -Infinity : Number(raw);
    expect(Number.isNaN(value) && !/^nan$/i.test(raw), `bad value: ${line}`).toBe(false);
    expect(raw, `bad value: ${line}`).toMatch(/^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|[+-]?inf)$/i);
    samples.push({ name: m![1]!, labels, value });
  }
  return { samples, types };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels);
  const s = samples.find((x) => x.name === name && want.every(([k, v]) => x.labels[k] === v) && Object.keys(x.labels).length === want.length);
  return s?.value;
}

describe('operations endpoints', () => {
  let srv: TestServer;
  let base: string;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({
      // /metrics is closed to every address by default (issue 16 §3): this scraper is allowed by name.
      http: { address: '127.0.0.1', port: 0, tlsPort: 0, metrics: { allow: ['127.0.0.1'], probeSeconds: 0, storageTimeoutMs: 300 } },
    });
    base = `http://127.0.0.1:${srv.ports.http}`;
  });
  afterAll(async () => {
    for (const c of clients) await c.stop();
    await srv?.close();
  });

  async function scrape(): Promise<Sample[]> {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseMetrics(await res.text()).samples;
  }

  async function login(local: string, password?: string): Promise<TestClient> {
    const c = await connect({ port: srv.ports.c2s as number, username: local, password, mechanism: 'PLAIN' });
    clients.push(c);
    return c;
  }

  it('/healthz answers 200 ok', async () => {
    const res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok\n');
    expect(res.headers.get('cache-control')).toBe('no-store');
  });

  it('/readyz answers 200 when storage answers and the listeners are up', async () => {
    const res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ready\n');
  });

  it('/metrics is well-formed text with process, event-loop and parley metrics, all typed', async () => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    const { samples, types } = parseMetrics(await res.text());
    for (const [name, type] of [
      ['parley_sessions', 'gauge'],
      ['parley_connections', 'gauge'],
      ['parley_stanzas_in_total', 'counter'],
      ['parley_stanzas_out_total', 'counter'],
      ['parley_auth_failures_total', 'counter'],
      ['parley_offline_messages', 'gauge'],
      ['parley_storage_ping_seconds', 'histogram'],
      ['parley_storage_up', 'gauge'],
      ['parley_mux_links_up', 'gauge'],
      ['nodejs_eventloop_lag_seconds', 'gauge'],
      ['nodejs_eventloop_lag_p99_seconds', 'gauge'],
      ['process_cpu_seconds_total', 'counter'],
      ['process_resident_memory_bytes', 'gauge'],
    ]) {
      expect(types.get(name as string), name).toBe(type);
    }
    for (const t of ['tcp', 'mux', 'websocket', 'bosh']) expect(value(samples, 'parley_sessions', { transport: t })).toBeGreaterThanOrEqual(0);
    expect(value(samples, 'parley_mux_links_up')).toBe(0);
    expect(value(samples, 'parley_storage_up')).toBe(1);
    expect(value(samples, 'parley_storage_ping_last_seconds')).toBeGreaterThanOrEqual(0);
    // Every sample belongs to a declared family (histogram series carry their suffixes).
    for (const s of samples) {
      const family = s.name.replace(/_(bucket|sum|count)$/, '');
      expect(types.has(s.name) || types.has(family), s.name).toBe(true);
    }
  });

  it('counts sessions by transport, connections, and stanzas in and out by type after real logins and messages', async () => {
    const before = await scrape();
    const [a, b] = [uniqueUser('opsa'), uniqueUser('opsb')];
    await srv.addUser(a);
    await srv.addUser(b);
    const alice = await login(a);
    const bob = await login(b);
    for (const c of [alice, bob]) {
      await c.send(xml('presence'));
      await c.waitFor((el) => el.name === 'presence' && el.attrs.from === c.jid);
    }
    for (let i = 0; i < 3; i++) await alice.send(xml('message', { to: `${b}@localhost`, type: 'chat', id: `ops-${i}` }, xml('body', {}, `hi ${i}`)));
    for (let i = 0; i < 3; i++) await bob.waitFor((el) => el.name === 'message' && el.attrs.id === `ops-${i}`);
    await alice.iq(xml('iq', { type: 'get', to: 'localhost', id: 'ops-ping' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string>) => (value(after, name, labels) ?? NaN) - (value(before, name, labels) ?? 0);
    expect(delta('parley_sessions', { transport: 'tcp' })).toBe(2);
    expect(delta('parley_sessions', { transport: 'bosh' })).toBe(0);
    expect(delta('parley_connections', {})).toBe(2);
    expect(delta('parley_stanzas_in_total', { type: 'message' })).toBe(3);
    expect(delta('parley_stanzas_in_total', { type: 'presence' })).toBe(2);
    expect(delta('parley_stanzas_in_total', { type: 'iq' })).toBeGreaterThanOrEqual(1);
    expect(delta('parley_stanzas_out_total', { type: 'message' })).toBe(3);
    expect(delta('parley_stanzas_out_total', { type: 'presence' })).toBeGreaterThanOrEqual(2); // each own presence reflected
    expect(delta('parley_stanzas_out_total', { type: 'iq' })).toBeGreaterThanOrEqual(1); // the ping result
    await alice.stop();
    await bob.stop();
    // The gauges follow the registry down again (the session ends once the server sees the close).
    let end = await scrape();
    for (let i = 0; i < 50 && value(end, 'parley_sessions', { transport: 'tcp' }) !== value(before, 'parley_sessions', { transport: 'tcp' }); i++) {
      await new Promise((r) => setTimeout(r, 50));
      end = await scrape();
    }
    expect(value(end, 'parley_sessions', { transport: 'tcp' })).toBe(value(before, 'parley_sessions', { transport: 'tcp' }));
  });

  it('counts an authentication failure by mechanism and condition after a wrong password', async () => {
    const labels = { mechanism: 'PLAIN', condition: 'not-authorized' };
    const before = value(await scrape(), 'parley_auth_failures_total', labels) ?? 0;
    const u = uniqueUser('opsfail');
    await srv.addUser(u);
    await expect(login(u, 'not-the-password')).rejects.toThrow(/not-authorized/);
    const after = await scrape();
    expect(value(after, 'parley_auth_failures_total', labels)).toBe(before + 1);
    // A successful login adds nothing.
    const ok = await login(u);
    await ok.stop();
    expect(value(await scrape(), 'parley_auth_failures_total', labels)).toBe(before + 1);
  });

  it('reports offline messages stored for an account without sessions', async () => {
    const before = value(await scrape(), 'parley_offline_messages') ?? NaN;
    expect(before).toBeGreaterThanOrEqual(0);
    const [s, r] = [uniqueUser('opssender'), uniqueUser('opsaway')];
    await srv.addUser(s);
    await srv.addUser(r);
    const sender = await login(s);
    await sender.send(xml('message', { to: `${r}@localhost`, type: 'chat', id: 'ops-off' }, xml('body', {}, 'while you were away')));
    await sender.send(xml('message', { to: `${r}@localhost`, type: 'chat', id: 'ops-off2' }, xml('body', {}, 'and again')));
    await barrier(sender); // both are stored before the pong
    expect(await srv.storage.offline.count(`${r}@localhost`)).toBe(2);
    expect(value(await scrape(), 'parley_offline_messages')).toBe(before + 2);
    await sender.stop();
  });

  it('/readyz is 503 with the reason, and /metrics shows storage down, when the storage ping rejects', async () => {
    const storage = srv.storage as { ping: () => Promise<void> };
    const original = storage.ping;
    storage.ping = () => Promise.reject(new Error('connection refused to db.internal:5432'));
    try {
      const res = await fetch(`${base}/readyz`);
      expect(res.status).toBe(503);
      const text = await res.text();
      expect(text).toBe('not ready\nstorage: ping failed\n');
      expect(text).not.toMatch(/db\.internal/); // the driver's detail stays in the server
      expect(value(await scrape(), 'parley_storage_up')).toBe(0);
      expect(value(await scrape(), 'parley_storage_ping_last_seconds')).toBeNaN();
    } finally {
      storage.ping = original;
    }
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect(value(await scrape(), 'parley_storage_up')).toBe(1);
  });

  it('/readyz is 503 when the storage ping hangs past the deadline, and a scrape still answers', async () => {
    const storage = srv.storage as { ping: () => Promise<void> };
    const original = storage.ping;
    storage.ping = () => new Promise<void>(() => {});
    try {
      const res = await fetch(`${base}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.text()).toBe('not ready\nstorage: no answer within 300 ms\n');
      expect(value(await scrape(), 'parley_storage_up')).toBe(0);
    } finally {
      storage.ping = original;
    }
  });

  it('refuses requests with forwarding headers from a proxy on this machine that is not trusted, saying what to configure', async () => {
    for (const path of ['/metrics', '/healthz', '/']) {
      const res = await fetch(`${base}${path}`, { headers: { 'X-Forwarded-For': '203.0.113.9' } });
      expect(res.status, path).toBe(403);
      expect(await res.text()).toMatch(/not in http\.trustedProxies/);
    }
    // Whatever the proxy's dialect.
    const dialects: Record<string, string>[] = [{ Forwarded: 'for=203.0.113.9' }, { Via: '1.1 proxy' }, { 'X-Real-IP': '203.0.113.9' }, { 'X-Forwarded-Proto': 'https' }, { 'X-Forwarded-Ssl': 'on' }];
    for (const headers of dialects) {
      expect((await fetch(`${base}/metrics`, { headers })).status, JSON.stringify(headers)).toBe(403);
    }
    // Without forwarding headers the same scraper is served.
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
  });
});

describe('/metrics by default', () => {
  it('is closed to every address without a token, loopback included', async () => {
    const srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0 } });
    try {
      const res = await fetch(`http://127.0.0.1:${srv.ports.http}/metrics`);
      expect(res.status).toBe(403);
      expect((await fetch(`http://127.0.0.1:${srv.ports.http}/healthz`)).status).toBe(200);
    } finally {
      await srv.close();
    }
  });
});

describe('/readyz with the storage closed', () => {
  it('answers 503 once the database is closed', async () => {
    const srv = await startTestServer();
    try {
      const base = `http://127.0.0.1:${srv.ports.http}`;
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      await srv.storage.close();
      const res = await fetch(`${base}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/^not ready\nstorage: /);
      expect((await fetch(`${base}/healthz`)).status).toBe(200); // liveness is not readiness
    } finally {
      await srv.close();
    }
  });
});

describe('/metrics access control', () => {
  let srv: TestServer;
  let base: string;

  beforeAll(async () => {
    srv = await startTestServer({
      http: {
        address: '127.0.0.1',
        port: 0,
        tlsPort: 0,
        trustedProxies: ['127.0.0.1'],
        metrics: { allow: ['127.0.0.1', '198.51.100.0/24', '2001:db8::/32'], token: TOKEN, probeSeconds: 0 },
      },
    });
    base = `http://127.0.0.1:${srv.ports.http}/metrics`;
  });
  afterAll(async () => {
    await srv?.close();
  });

  const get = (headers: Record<string, string>) => fetch(base, { headers });

  it('allows the trusted proxy itself and forwarded addresses in the allow list (addresses and CIDR ranges)', async () => {
    expect((await get({})).status).toBe(200);
    expect((await get({ 'X-Forwarded-For': '198.51.100.77' })).status).toBe(200);
    expect((await get({ 'X-Forwarded-For': '2001:db8::5' })).status).toBe(200);
  });

  it('refuses other forwarded addresses with 403, whatever they put in front of the header', async () => {
    for (const xff of ['203.0.113.5', '127.0.0.1, 203.0.113.5', '198.51.101.1', 'not-an-address']) {
      const res = await get({ 'X-Forwarded-For': xff });
      expect(res.status, xff).toBe(403);
      expect(await res.text()).toBe('forbidden\n');
    }
  });

  it('answers 200 to a disallowed address carrying the right bearer token, 403 to a wrong, truncated or empty one', async () => {
    const outside = { 'X-Forwarded-For': '203.0.113.5' };
    const ok = await get({ ...outside, Authorization: `Bearer ${TOKEN}` });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toMatch(/^# HELP /m);
    expect((await get({ ...outside, Authorization: `bearer ${TOKEN}` })).status).toBe(200); // the scheme is case-insensitive
    for (const auth of [`Bearer ${TOKEN.slice(0, -1)}`, `Bearer ${TOKEN}x`, `Bearer ${TOKEN.toUpperCase()}`, 'Bearer ', `Basic ${TOKEN}`, TOKEN, `Bearer ${TOKEN} extra`]) {
      expect((await get({ ...outside, Authorization: auth })).status, auth).toBe(403);
    }
  });

  it('keeps /healthz and /readyz open to every address', async () => {
    const outside = { 'X-Forwarded-For': '203.0.113.5' };
    expect((await fetch(`http://127.0.0.1:${srv.ports.http}/healthz`, { headers: outside })).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${srv.ports.http}/readyz`, { headers: outside })).status).toBe(200);
  });
});

describe('/metrics disabled', () => {
  it('is not served (404) while health and readiness still are', async () => {
    const srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, metrics: { enabled: false } } });
    try {
      const base = `http://127.0.0.1:${srv.ports.http}`;
      expect((await fetch(`${base}/metrics`)).status).toBe(404);
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
    } finally {
      await srv.close();
    }
  });
});

describe('readiness of listeners and mux links', () => {
  let srv: TestServer;
  let httpServer: http.Server;
  let base: string;
  let listenersUp = true;
  const links: { name: string; connections: number }[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ http: { address: '127.0.0.1', port: null, tlsPort: null, metrics: { allow: ['127.0.0.1'] } } });
    // A second ops instance on its own express app, with listener and link state under test control.
    const app = express();
    const web = {
      mount: (_path: string, router: express.Router) => app.use(router),
      requestInfo: (req: http.IncomingMessage) => ({ remoteAddress: (req.socket.remoteAddress ?? '').replace(/^::ffff:/, ''), secure: false }),
    } as unknown as WebContainer;
    const ops = startOps(srv.server, web, { listenersUp: () => listenersUp, muxLink: { status: () => links }, muxRequired: true });
    httpServer = app.listen(0, '127.0.0.1');
    await new Promise((r) => httpServer.once('listening', r));
    base = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
    return () => ops.close();
  });
  afterAll(async () => {
    httpServer?.closeAllConnections();
    await new Promise((r) => httpServer?.close(r));
    await srv?.close();
  });

  it('is 503 without a mux link when muxes are configured, 200 once one is up', async () => {
    const res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.text()).toBe('not ready\nmux: no link up\n');
    links.push({ name: 'mux-1', connections: 7 });
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const { samples } = parseMetrics(await (await fetch(`${base}/metrics`)).text());
    expect(value(samples, 'parley_mux_links_up')).toBe(1);
    expect(value(samples, 'parley_mux_link_connections', { mux: 'mux-1' })).toBe(7);
  });

  it('is 503 when a listener is down, listing every reason', async () => {
    listenersUp = false;
    links.length = 0;
    try {
      const res = await fetch(`${base}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.text()).toBe('not ready\nlisteners: not listening\nmux: no link up\n');
    } finally {
      listenersUp = true;
    }
  });
});

describe('metrics configuration and helpers', () => {
  it('validates the allow list and the token length', () => {
    const ok = validateConfig({ http: { metrics: { allow: ['10.0.0.0/8', '192.0.2.1', '::1', 'fd00::/8'], token: TOKEN } } });
    expect(ok.http.metrics.allow).toHaveLength(4);
    expect(validateConfig({}).http.metrics).toMatchObject({ enabled: true, allow: [], probeSeconds: 15 });
    for (const bad of ['10.0.0.0/33', 'fd00::/129', 'example.com', '10.0.0.1/8/1', '10.0.0.0/', '10.0.0.0/-1', '']) {
      expect(() => validateConfig({ http: { metrics: { allow: [bad] } } }), bad).toThrow(ConfigError);
    }
    try {
      validateConfig({ http: { metrics: { token: 'short' } } });
      expect.unreachable();
    } catch (e) {
      expect((e as ConfigError).problems.join('\n')).toMatch(/^http\.metrics\.token: /m);
    }
  });

  it('matches addresses against the allow list by family and prefix', () => {
    const list = compileAllowList(['127.0.0.0/8', '::1', '2001:db8::/32', '192.0.2.10']);
    expect(addressAllowed(list, '127.5.6.7')).toBe(true);
    expect(addressAllowed(list, '::1')).toBe(true);
    expect(addressAllowed(list, '2001:db8:1::9')).toBe(true);
    expect(addressAllowed(list, '192.0.2.10')).toBe(true);
    expect(addressAllowed(list, '192.0.2.11')).toBe(false);
    expect(addressAllowed(list, '2001:db9::1')).toBe(false);
    expect(addressAllowed(list, 'unknown')).toBe(false);
    expect(addressAllowed(compileAllowList([]), '127.0.0.1')).toBe(false);
  });

  it('compares tokens exactly: not a prefix, not an extension, not case-folded, never empty', () => {
    expect(tokenMatches(TOKEN, TOKEN)).toBe(true);
    expect(tokenMatches(TOKEN.slice(0, 8), TOKEN)).toBe(false);
    expect(tokenMatches(`${TOKEN}0`, TOKEN)).toBe(false);
    expect(tokenMatches(TOKEN.toUpperCase(), TOKEN)).toBe(false);
    expect(tokenMatches('', TOKEN)).toBe(false);
    expect(tokenMatches('', '')).toBe(false);
    // Inputs of any length are hashed to equal-length digests first; timingSafeEqual would throw on unequal lengths.
    expect(tokenMatches('x'.repeat(10_000), TOKEN)).toBe(false);
  });
});
