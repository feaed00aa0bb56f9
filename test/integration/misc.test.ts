// Small server services over real connections: XEP-0199 ping (client to server/account, and the
// server's idle-client ping with its timeout), XEP-0092 software version, XEP-0202 entity time.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { NS_STREAMS, RawXmppClient } from '../helpers/scram-client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PING = 'urn:xmpp:ping';

function isServerPing(el: Element): boolean {
  return el.name === 'iq' && el.attrs.type === 'get' && el.attrs.from === 'localhost' && !!el.getChild('ping', PING);
}

describe('ping, version, time', () => {
  let srv: TestServer;
  let alice: string;
  let a: TestClient;

  beforeAll(async () => {
    srv = await startTestServer();
    alice = uniqueUser('alice');
    await srv.addUser(alice);
    a = await connect({ port: srv.ports.c2s as number, username: alice, mechanism: 'PLAIN' });
  });
  afterAll(async () => {
    await a?.stop();
    await srv?.close();
  });

  it('XEP-0199: ping to the server and to the own bare JID', async () => {
    const s = await a.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: PING })));
    expect(s.attrs).toMatchObject({ type: 'result', from: 'localhost', to: a.jid });
    expect(s.getChildElements()).toHaveLength(0);
    const own = await a.iq(xml('iq', { type: 'get', to: `${alice}@localhost` }, xml('ping', { xmlns: PING })));
    expect(own.attrs).toMatchObject({ type: 'result', from: `${alice}@localhost`, to: a.jid });
  });

  it('XEP-0199: a ping to a full JID of the server is not answered as the server (RFC 6120 §10.4.3)', async () => {
    await expect(a.iq(xml('iq', { type: 'get', to: 'localhost/some-resource' }, xml('ping', { xmlns: PING })))).rejects.toMatchObject({ condition: 'service-unavailable' });
  });

  it('XEP-0092: software version', async () => {
    const res = await a.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'jabber:iq:version' })));
    const q = res.getChild('query', 'jabber:iq:version') as Element;
    expect(q.getChildText('name')).toBe('Parley');
    expect(q.getChildText('version')).toMatch(/^\d+\.\d+\.\d+/);
    // The operating system is not disclosed unless configured.
    expect(q.getChild('os')).toBeUndefined();
  });

  it('XEP-0202: entity time (UTC between the request and the answer, tzo as ±hh:mm)', async () => {
    const before = Date.now();
    const res = await a.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('time', { xmlns: 'urn:xmpp:time' })));
    const after = Date.now();
    const t = res.getChild('time', 'urn:xmpp:time') as Element;
    const utc = t.getChildText('utc') as string;
    const tzo = t.getChildText('tzo') as string;
    expect(utc).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    // Read while the request was pending (the answer may be rounded down to the second).
    expect(Date.parse(utc)).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(Date.parse(utc)).toBeLessThanOrEqual(after);
    expect(tzo).toMatch(/^(?:[+-](?:0\d|1[0-4]):[0-5]\d|Z)$/);
    // tzo agrees with the server process' local offset (same process here).
    const off = 0 - new Date().getTimezoneOffset(); // (avoid -0)
    const [, sign, hh, mm] = /^([+-])(\d\d):(\d\d)$/.exec(tzo) ?? [];
    if (sign) expect((sign === '-' ? -1 : 1) * (Number(hh) * 60 + Number(mm))).toBe(off);
  });
});

describe('server-initiated idle ping (XEP-0199 §4.2)', () => {
  let srv: TestServer;
  let user: string;
  beforeAll(async () => {
    srv = await startTestServer({ limits: { idlePingSeconds: 1, pingTimeoutSeconds: 1 } });
    user = uniqueUser('idle');
    await srv.addUser(user);
  });
  afterAll(async () => {
    await srv?.close();
  });

  it('a client that answers stays connected; one that does not is dropped with connection-timeout', async () => {
    const port = srv.ports.c2s as number;
    const good = await connect({ port, username: user, resource: 'answers', mechanism: 'PLAIN' });
    const bad = await RawXmppClient.connect({ port });
    try {
      await bad.login(user, 'secret-password', 'silent');

      // The silent client is pinged, ignores it, and is disconnected with a stream error.
      const ping = await bad.next(isServerPing, 6000);
      expect(ping.attrs.to).toBe(`${user}@localhost/silent`);
      const err = await bad.next((el) => el.name === 'stream:error', 8000);
      expect(err.getChild('connection-timeout', NS_STREAMS)).toBeDefined();
      await bad.waitClosed(3000);

      // Meanwhile @xmpp/client (which answers pings) was pinged too and is still online. The idle
      // sweep that would have dropped it had it not answered (the first one more than
      // pingTimeoutSeconds after the ping) is, at the latest, the sweep after the one that pings it
      // again: two more pings after the first, and that sweep has run.
      await good.waitFor(isServerPing, 3000);
      await good.waitFor(isServerPing, 5000);
      await good.waitFor(isServerPing, 5000);
      expect((good.xmpp as unknown as { status: string }).status).toBe('online');
      const pong = await good.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: PING })));
      expect(pong.attrs.type).toBe('result');
      expect(srv.server.sessions.get({ bare: `${user}@localhost`, resource: 'answers' })).toBeDefined();
      expect(srv.server.sessions.get({ bare: `${user}@localhost`, resource: 'silent' })).toBeUndefined();
    } finally {
      bad.destroy();
      await good.stop();
    }
  });
});
