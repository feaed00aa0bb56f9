// XEP-0215 External Service Discovery between a real client and the server: service listing and
// type filtering, TURN REST credentials (recomputed here from the configured secret), §3.4
// credential requests and their errors, a secret read from a file, and a module without a secret.
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const NS = 'urn:xmpp:extdisco:2';
const SECRET = 'turn-shared-secret-for-tests';
const TTL = 3600;
const SERVICES = [
  { type: 'stun', host: 'stun.example.net', port: 3478, transport: 'udp' },
  { type: 'turn', host: 'turn.example.net', port: 3478, transport: 'udp', name: 'Relay' },
  { type: 'turn', host: 'turn.example.net', port: 3479, transport: 'tcp' },
  { type: 'turns', host: 'turn.example.net', port: 5349, transport: 'tcp' },
];

/** The condition of an iq error as @xmpp/client's iq caller reports it. */
function errorCondition(err: unknown): string | undefined {
  return (err as { condition?: string }).condition;
}

function services(res: Element, name = 'services'): Element[] {
  const q = res.getChild(name, NS);
  expect(q).toBeDefined();
  return (q as Element).getChildElements().filter((c) => c.name === 'service');
}

function expectValidCredentials(s: Element, secret: string, bare: string): void {
  const { username, password, expires } = s.attrs;
  expect(username).toBeDefined();
  const [expiry, user] = (username as string).split(':');
  expect(user).toBe(bare);
  const now = Date.now() / 1000;
  expect(Number(expiry)).toBeGreaterThan(now);
  expect(Number(expiry)).toBeLessThanOrEqual(now + TTL + 5);
  expect(password).toBe(createHmac('sha1', secret).update(username as string).digest('base64'));
  expect(expires).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  expect(Date.parse(expires as string) / 1000).toBe(Number(expiry));
}

describe('external service discovery (XEP-0215)', () => {
  let srv: TestServer;
  let c: TestClient;
  let bare: string;

  beforeAll(async () => {
    srv = await startTestServer({ modules: { extdisco: { services: SERVICES, secret: SECRET, credentialTtlSeconds: TTL } } });
    const u = uniqueUser('ext');
    bare = await srv.addUser(u);
    c = await connect({ port: srv.ports.c2s as number, username: u, mechanism: 'PLAIN' });
  });
  afterAll(async () => {
    await c?.stop();
    await srv?.close();
  });

  it('announces the feature on the server', async () => {
    const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const features = res.getChild('query')?.getChildren('feature').map((f) => f.attrs.var);
    expect(features).toContain(NS);
  });

  it('lists every service, with time-limited credentials for the restricted ones', async () => {
    const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('services', { xmlns: NS })));
    const list = services(res);
    expect(list.map((s) => `${s.attrs.type} ${s.attrs.host}:${s.attrs.port}/${s.attrs.transport}`)).toEqual([
      'stun stun.example.net:3478/udp',
      'turn turn.example.net:3478/udp',
      'turn turn.example.net:3479/tcp',
      'turns turn.example.net:5349/tcp',
    ]);
    const [stun, turn] = list as [Element, Element];
    expect(stun.attrs.restricted).toBeUndefined();
    expect(stun.attrs.username).toBeUndefined();
    expect(stun.attrs.password).toBeUndefined();
    expect(turn.attrs.name).toBe('Relay');
    for (const s of list.slice(1)) {
      expect(s.attrs.restricted).toBe('1');
      expectValidCredentials(s, SECRET, bare);
    }
  });

  it('filters by type', async () => {
    const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('services', { xmlns: NS, type: 'turn' })));
    expect(res.getChild('services', NS)?.attrs.type).toBe('turn');
    const list = services(res);
    expect(list.map((s) => s.attrs.port)).toEqual(['3478', '3479']);
    const none = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('services', { xmlns: NS, type: 'ftp' })));
    expect(services(none)).toEqual([]);
  });

  it('issues credentials for a service by host and type, narrowed by port', async () => {
    const both = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('credentials', { xmlns: NS }, xml('service', { host: 'turn.example.net', type: 'turn' }))));
    const two = services(both, 'credentials');
    expect(two.map((s) => s.attrs.port)).toEqual(['3478', '3479']);
    for (const s of two) expectValidCredentials(s, SECRET, bare);
    const one = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('credentials', { xmlns: NS }, xml('service', { host: 'turn.example.net', type: 'turn', port: '3479' }))));
    const list = services(one, 'credentials');
    expect(list).toHaveLength(1);
    expectValidCredentials(list[0] as Element, SECRET, bare);
  });

  it('answers item-not-found for an unknown service and bad-request for an incomplete one', async () => {
    const ask = (attrs: Record<string, string>) => c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('credentials', { xmlns: NS }, xml('service', attrs))));
    await expect(ask({ host: 'nowhere.example.net', type: 'turn' })).rejects.toSatisfy((e) => errorCondition(e) === 'item-not-found');
    await expect(ask({ host: 'turn.example.net', type: 'turn', port: '9999' })).rejects.toSatisfy((e) => errorCondition(e) === 'item-not-found');
    await expect(ask({ host: 'turn.example.net', type: 'stun' })).rejects.toSatisfy((e) => errorCondition(e) === 'item-not-found');
    await expect(ask({ type: 'turn' })).rejects.toSatisfy((e) => errorCondition(e) === 'bad-request');
    await expect(c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('credentials', { xmlns: NS })))).rejects.toSatisfy((e) => errorCondition(e) === 'bad-request');
  });

  it('keeps serving after the errors', async () => {
    const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('services', { xmlns: NS, type: 'stun' })));
    expect(services(res)).toHaveLength(1);
  });
});

describe('external service discovery without a secret, and with a secret file', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'parley-extdisco-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lists restricted services without credentials and refuses credential requests for them', async () => {
    const srv = await startTestServer({ modules: { extdisco: { services: SERVICES } } });
    const u = uniqueUser('ext');
    await srv.addUser(u);
    const c = await connect({ port: srv.ports.c2s as number, username: u, mechanism: 'PLAIN' });
    try {
      const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('services', { xmlns: NS })));
      const list = services(res);
      expect(list).toHaveLength(4);
      for (const s of list) {
        expect(s.attrs.username).toBeUndefined();
        expect(s.attrs.password).toBeUndefined();
        expect(s.attrs.expires).toBeUndefined();
      }
      expect(list.filter((s) => s.attrs.restricted === '1').map((s) => s.attrs.type)).toEqual(['turn', 'turn', 'turns']);
      const ask = c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('credentials', { xmlns: NS }, xml('service', { host: 'turn.example.net', type: 'turn' }))));
      await expect(ask).rejects.toSatisfy((e) => errorCondition(e) === 'item-not-found');
      // An unrestricted service needs no credentials: it is simply returned.
      const stun = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('credentials', { xmlns: NS }, xml('service', { host: 'stun.example.net', type: 'stun' }))));
      const got = services(stun, 'credentials');
      expect(got).toHaveLength(1);
      expect(got[0]?.attrs.password).toBeUndefined();
    } finally {
      await c.stop();
      await srv.close();
    }
  });

  it('reads the secret from a file', async () => {
    const file = join(dir, 'turn-secret');
    writeFileSync(file, 'file-secret\n', { mode: 0o600 });
    const srv = await startTestServer({ modules: { extdisco: { services: SERVICES, secretFile: file, credentialTtlSeconds: TTL } } });
    const u = uniqueUser('ext');
    const bare = await srv.addUser(u);
    const c = await connect({ port: srv.ports.c2s as number, username: u, mechanism: 'PLAIN' });
    try {
      const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('services', { xmlns: NS, type: 'turns' })));
      const [s] = services(res);
      expectValidCredentials(s as Element, 'file-secret', bare);
    } finally {
      await c.stop();
      await srv.close();
    }
  });

  it('rejects invalid options at start', async () => {
    await expect(startTestServer({ modules: { extdisco: { services: [{ type: 'turn', host: 'x', port: 70000 }] } } })).rejects.toThrow(/modules\.extdisco/);
    await expect(startTestServer({ modules: { extdisco: { secret: 'a', secretFile: join(dir, 'x') } } })).rejects.toThrow(/secret/);
  });
});
