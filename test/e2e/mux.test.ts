// The multiplexor end to end (issue 3): clients on two embedded muxes chat with each other; the
// server sees each client's real address; STARTTLS, direct TLS and SCRAM-SHA-256-PLUS through the
// mux; kill -9 of a mux ends exactly its sessions and the supervisor restarts it; standalone
// `parley mux` processes survive a server kill -9 and reconnect by themselves; a slow reader behind
// the mux blocks nobody else; `parley status` shows the muxes.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import type { ConnectionOptions } from 'node:tls';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountService } from '../../src/auth/index.js';
import { openConfiguredStorage } from '../../src/cli/app.js';
import { validateConfig } from '../../src/core/config.js';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { PARLEY_BIN, runCli, startServerProcess, tempConfig, waitExit, type ServerProcess } from '../helpers/process.js';
import { RawClient, assertServing, sleep, waitUntil } from '../helpers/raw.js';
import { RawXmppClient } from '../helpers/scram-client.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

const PASSWORD = 'secret-password';
const NS_SASL_CB = 'urn:xmpp:sasl-cb:0';

/** Connections each mux link carries, by mux name. */
function linkLoad(srv: TestServer): Record<string, number> {
  return Object.fromEntries((srv.muxLink?.status() ?? []).map((s) => [s.name, s.connections]));
}

/** The server session of a full JID. */
function sessionOf(srv: TestServer, full: string) {
  return [...srv.server.sessions.all()].find((s) => s.jid?.full === full);
}

/** TLS client options binding the local address (tls.connect passes it on to the socket; the type omits it). */
function fromAddress(localAddress: string): ConnectionOptions {
  return { localAddress } as ConnectionOptions;
}

/** A RawClient over a plain TCP connection from a chosen local address (RawClient.connect has no such option). */
function rawFrom(port: number, localAddress: string): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress });
    sock.once('error', reject);
    sock.once('connect', () => {
      sock.off('error', reject);
      sock.setNoDelay(true);
      const Ctor = RawClient as unknown as new (s: net.Socket, secure: boolean) => RawClient;
      resolve(new Ctor(sock, false));
    });
  });
}

async function mutual(srv: TestServer, users: string[]): Promise<void> {
  for (const a of users) {
    for (const b of users) {
      if (a !== b) await srv.storage.roster.setItem(a, { jid: b, subscription: 'both', ask: false, approved: false, groups: [] });
    }
  }
}

/** The process exists and is not a zombie (an orphan's zombie lingers where PID 1 does not reap). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function vmRssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

describe('two embedded muxes', () => {
  let srv: TestServer;
  let port: number;
  let tlsPort: number;
  const clients: TestClient[] = [];
  const raws: (RawClient | RawXmppClient)[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ mux: { count: 2 }, log: { level: 'error' } });
    port = srv.ports.c2s as number;
    tlsPort = srv.ports.c2sDirectTls as number;
    for (const u of ['romeo', 'juliet', 'tybalt', 'mercutio', 'benvolio', 'nurse']) await srv.addUser(u);
  });
  afterAll(async () => {
    for (const c of clients) await c.stop();
    for (const r of raws) r.destroy();
    await srv?.close();
  });

  it('clients on different muxes subscribe, chat both ways, and see each other’s presence', async () => {
    expect(srv.muxes?.readyCount()).toBe(2);
    expect(Object.keys(linkLoad(srv)).sort()).toEqual(['mux-1', 'mux-2']);
    const romeo = await connect({ port, username: 'romeo', resource: 'balcony', mechanism: 'PLAIN' });
    clients.push(romeo);
    const juliet = await connect({ port, username: 'juliet', resource: 'garden', mechanism: 'PLAIN' });
    clients.push(juliet);
    // Round-robin: one connection on each mux.
    expect(linkLoad(srv)).toEqual({ 'mux-1': 1, 'mux-2': 1 });
    await romeo.send(xml('presence'));
    await juliet.send(xml('presence'));

    // Subscription handshake across muxes (RFC 6121 §3.1).
    await romeo.send(xml('presence', { to: 'juliet@localhost', type: 'subscribe' }));
    await juliet.waitFor((el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.from === 'romeo@localhost');
    await juliet.send(xml('presence', { to: 'romeo@localhost', type: 'subscribed' }));
    await juliet.send(xml('presence', { to: 'romeo@localhost', type: 'subscribe' }));
    await romeo.waitFor((el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.from === 'juliet@localhost');
    await romeo.send(xml('presence', { to: 'juliet@localhost', type: 'subscribed' }));
    // Each now gets the other's available presence.
    await romeo.waitFor((el) => el.name === 'presence' && el.attrs.from === juliet.jid && el.attrs.type === undefined);
    await juliet.waitFor((el) => el.name === 'presence' && el.attrs.from === romeo.jid && el.attrs.type === undefined);

    // Chat both ways.
    await romeo.send(xml('message', { to: 'juliet@localhost', type: 'chat', id: 'r1' }, xml('body', {}, 'But soft!')));
    const m1 = await juliet.waitFor((el) => el.name === 'message' && el.attrs.id === 'r1');
    expect(m1.attrs.from).toBe(romeo.jid);
    expect(m1.getChildText('body')).toBe('But soft!');
    await juliet.send(xml('message', { to: romeo.jid, type: 'chat', id: 'j1' }, xml('body', {}, 'Wherefore art thou')));
    const m2 = await romeo.waitFor((el) => el.name === 'message' && el.attrs.id === 'j1');
    expect(m2.attrs.from).toBe(juliet.jid);

    // A presence change is broadcast across muxes.
    await romeo.send(xml('presence', {}, xml('show', {}, 'away'), xml('status', {}, 'under the balcony')));
    const away = await juliet.waitFor((el) => el.name === 'presence' && el.attrs.from === romeo.jid && el.getChildText('show') === 'away');
    expect(away.getChildText('status')).toBe('under the balcony');
    // Going offline: the contact on the other mux learns it.
    await romeo.stop();
    await juliet.waitFor((el) => el.name === 'presence' && el.attrs.from === romeo.jid && el.attrs.type === 'unavailable');
    await juliet.stop();
    await waitUntil(() => srv.server.connectionCount === 0, 5000, 'connections closed');
    expect(linkLoad(srv)).toEqual({ 'mux-1': 0, 'mux-2': 0 });
  });

  describe('STARTTLS, direct TLS and SCRAM-SHA-256-PLUS through the mux', () => {
    async function plus(c: RawXmppClient, cbType: 'tls-exporter' | 'tls-server-end-point' | 'tls-unique', cbDataOverride?: Buffer) {
      return c.scram({ mechanism: 'SCRAM-SHA-256-PLUS', username: 'tybalt', password: PASSWORD, cbType, cbDataOverride });
    }

    function offered(c: RawXmppClient): { mechs: string[]; cb: string[] } {
      const cb = (c.features?.getChild('sasl-channel-binding', NS_SASL_CB)?.getChildren('channel-binding') ?? []).map((e: Element) => e.attrs.type as string);
      return { mechs: c.mechanisms(), cb: cb.sort() };
    }

    for (const directTls of [false, true]) {
      const how = directTls ? 'direct TLS' : 'STARTTLS';
      for (const cbType of ['tls-exporter', 'tls-server-end-point', 'tls-unique'] as const) {
        it(`${how}: SCRAM-SHA-256-PLUS with ${cbType} succeeds and the server signature verifies`, async () => {
          const c = await RawXmppClient.connect({ port: directTls ? tlsPort : port, directTls });
          raws.push(c);
          expect(c.tlsSocket?.getProtocol()).toBe('TLSv1.3');
          const o = offered(c);
          expect(o.mechs).toContain('SCRAM-SHA-256-PLUS');
          expect(o.cb).toEqual(['tls-exporter', 'tls-server-end-point', 'tls-unique']);
          const r = await plus(c, cbType);
          expect(r.ok && r.serverSignatureValid).toBe(true);
          await c.restart();
          const jid = await c.bind();
          expect(jid).toMatch(/^tybalt@localhost\//);
          const pong = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
          expect(pong.attrs.type).toBe('result');
          expect(sessionOf(srv, jid)?.secure).toBe(true);
          await c.close();
        });
      }

      it(`${how}: wrong channel-binding data fails (the mux reports what the client computes)`, async () => {
        for (const cbType of ['tls-exporter', 'tls-server-end-point', 'tls-unique'] as const) {
          const c = await RawXmppClient.connect({ port: directTls ? tlsPort : port, directTls });
          raws.push(c);
          const r = await plus(c, cbType, randomBytes(32));
          expect(r.ok, cbType).toBe(false);
          if (!r.ok) expect(r.condition).toBe('not-authorized');
          c.destroy();
        }
        // tls-exporter data of another connection (through the same mux) does not match either.
        const other = await RawXmppClient.connect({ port: directTls ? tlsPort : port, directTls });
        raws.push(other);
        const c = await RawXmppClient.connect({ port: directTls ? tlsPort : port, directTls });
        raws.push(c);
        const r = await plus(c, 'tls-exporter', other.channelBinding('tls-exporter'));
        expect(r.ok).toBe(false);
        other.destroy();
        c.destroy();
      });

      it(`${how}: on TLS 1.2 tls-unique and tls-server-end-point are offered (no tls-exporter), and both work`, async () => {
        for (const cbType of ['tls-unique', 'tls-server-end-point'] as const) {
          const c = await RawXmppClient.connect({ port: directTls ? tlsPort : port, directTls, maxVersion: 'TLSv1.2' });
          raws.push(c);
          expect(c.tlsSocket?.getProtocol()).toBe('TLSv1.2');
          expect(offered(c).cb).toEqual(['tls-server-end-point', 'tls-unique']);
          const r = await plus(c, cbType);
          expect(r.ok && r.serverSignatureValid, cbType).toBe(true);
          c.destroy();
        }
      });
    }

    it('plaintext pipelined after <starttls/> is discarded, not processed (RFC 6120 §5.4.3.3)', async () => {
      for (const separateWrites of [false, true]) {
        const c = await RawClient.connect(port);
        raws.push(c);
        await c.openStream();
        // A valid PLAIN auth for tybalt right behind <starttls/>: had the server processed it, the
        // stream after TLS would offer resource binding instead of SASL.
        const starttls = `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`;
        const auth = `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\u0000tybalt\u0000${PASSWORD}`).toString('base64')}</auth>`;
        if (separateWrites) {
          await c.send(starttls);
          await c.send(auth);
        } else await c.send(starttls + auth);
        await c.waitFor(/<proceed\b/);
        await c.upgradeTls();
        const features = await c.openStream();
        expect(features).toMatch(/<mechanism>PLAIN<\/mechanism>/);
        expect(features).not.toMatch(/urn:ietf:params:xml:ns:xmpp-bind/);
        // ... and the client can still log in normally on the TLS stream.
        expect(await c.authPlain('tybalt', PASSWORD)).toBe(true);
        c.destroy();
      }
    });
  });

  it('kill -9 of a mux: its clients drop, the others keep working, no ghost sessions, the mux is restarted and its clients come back', async () => {
    await waitUntil(() => srv.server.connectionCount === 0, 5000, 'earlier connections closed');
    const users = ['romeo', 'juliet', 'tybalt', 'mercutio', 'benvolio', 'nurse'];
    await mutual(
      srv,
      users.map((u) => `${u}@localhost`),
    );
    // Log everyone in and note which mux each one landed on.
    const onMux = new Map<string, string>();
    const cl = new Map<string, RawClient>();
    for (const u of users) {
      const before = linkLoad(srv);
      const c = await RawClient.login(port, u, PASSWORD, { resource: 'r', presence: true });
      raws.push(c);
      cl.set(u, c);
      const after = linkLoad(srv);
      const mux = Object.keys(after).find((k) => (after[k] ?? 0) > (before[k] ?? 0));
      onMux.set(u, mux as string);
    }
    for (const u of users) await waitUntil(() => srv.server.sessions.available(`${u}@localhost`).length === 1, 5000, `${u} available`);
    const victimMux = onMux.get('romeo') as string;
    const dropped = users.filter((u) => onMux.get(u) === victimMux);
    const kept = users.filter((u) => onMux.get(u) !== victimMux);
    expect(dropped.length).toBe(3);
    expect(kept.length).toBe(3);
    const victimPid = srv.muxLink?.status().find((s) => s.name === victimMux)?.stats?.pid as number;
    const oldPids = srv.muxes?.pids() ?? [];
    expect(oldPids).toContain(victimPid);
    const marks = new Map(kept.map((u) => [u, (cl.get(u) as RawClient).mark()]));

    process.kill(victimPid, 'SIGKILL');

    // Its clients see the connection drop.
    for (const u of dropped) await (cl.get(u) as RawClient).closed(5000);
    // The server ends exactly those sessions; their contacts get presence unavailable.
    for (const u of dropped) await waitUntil(() => srv.server.sessions.count(`${u}@localhost`) === 0, 5000, `${u} session gone`);
    for (const k of kept) {
      const c = cl.get(k) as RawClient;
      for (const u of dropped) await c.waitFor(new RegExp(`<presence\\b(?=[^>]*from=['"]${u}@localhost/r['"])(?=[^>]*type=['"]unavailable['"])`), 5000, marks.get(k));
    }
    expect(srv.server.sessions.size).toBe(kept.length);
    expect(srv.server.connectionCount).toBe(kept.length);
    for (const k of kept) expect(srv.server.sessions.count(`${k}@localhost`)).toBe(1);
    // Everyone else keeps working: chat and ping between the kept clients.
    const [k1, k2, k3] = kept.map((k) => cl.get(k) as RawClient) as [RawClient, RawClient, RawClient];
    await assertServing(k1, k2);
    await assertServing(k2, k3);
    await assertServing(k3, k1);

    // The supervisor restarts the mux.
    await waitUntil(() => srv.muxes?.readyCount() === 2, 15_000, 'mux restarted');
    const newPids = srv.muxes?.pids() ?? [];
    expect(newPids).toHaveLength(2);
    expect(newPids).not.toContain(victimPid);
    await waitUntil(() => (srv.muxLink?.status().length ?? 0) === 2, 5000, 'two links');
    // The dropped clients reconnect and chat again (with the clients that stayed, on any mux).
    for (const u of dropped) {
      const c = await RawClient.login(port, u, PASSWORD, { resource: 'r', presence: true });
      raws.push(c);
      cl.set(u, c);
    }
    for (const u of dropped) await waitUntil(() => srv.server.sessions.available(`${u}@localhost`).length === 1, 5000, `${u} back`);
    for (let i = 0; i < dropped.length; i++) {
      const back = cl.get(dropped[i] as string) as RawClient;
      const stayed = cl.get(kept[i] as string) as RawClient;
      await assertServing(back, stayed);
      await assertServing(stayed, back);
    }
    const load = linkLoad(srv);
    expect(Object.values(load).reduce((a, b) => a + b, 0)).toBe(users.length);
  }, 45_000);
});

describe('XEP-0198 across a mux crash', () => {
  let srv: TestServer;
  const raws: RawClient[] = [];
  const SM = 'urn:xmpp:sm:3';

  beforeAll(async () => {
    srv = await startTestServer({ mux: { count: 2 }, log: { level: 'error' } });
    for (const u of ['alice', 'bob']) await srv.addUser(u);
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    await srv?.close();
  });

  it('kill -9 of the mux under a resumable session: the session hibernates (still available, messages held) and resumes through another mux with nothing lost', async () => {
    const port = srv.ports.c2s as number;
    await mutual(srv, ['alice@localhost', 'bob@localhost']);
    // Log Alice in until she and Bob are on different muxes.
    const b = await RawClient.login(port, 'bob', PASSWORD, { resource: 'r', presence: true });
    raws.push(b);
    const bobMux = (srv.muxLink?.status() ?? []).find((st) => st.connections === 1)?.name;
    let a: RawClient | null = null;
    for (let i = 0; i < 6 && !a; i++) {
      const c = await RawClient.login(port, 'alice', PASSWORD, { resource: `r${i}`, presence: true });
      raws.push(c);
      if (linkLoad(srv)[bobMux as string] === 1) a = c;
      else c.end();
    }
    if (!a) throw new Error('the supervisor never put Alice on the other mux');
    await a.send(`<enable xmlns='${SM}' resume='true'/>`);
    const id = /\bid=['"]([^'"]+)['"]/.exec((await a.waitFor(/<enabled\b[^>]*\/>/))[0])?.[1] as string;
    const full = a.jid;
    const aliceMux = Object.keys(linkLoad(srv)).find((k) => k !== bobMux) as string;
    const victimPid = srv.muxLink?.status().find((st) => st.name === aliceMux)?.stats?.pid as number;
    const bobMark = b.mark();

    process.kill(victimPid, 'SIGKILL');
    await a.closed(5000);
    await waitUntil(() => sessionOf(srv, full)?.hibernated === true, 5000, 'session hibernated');
    // Still available: Bob hears no unavailable presence and his messages are held for her.
    expect(srv.server.sessions.available('alice@localhost')).toHaveLength(1);
    await b.send(`<message type='chat' to='${full}'><body>held:1</body></message>`);
    await b.send(`<message type='chat' to='alice@localhost'><body>held:2</body></message>`);
    await b.ping();

    // Back through whichever mux accepts her (the restarted one or Bob's).
    await waitUntil(() => srv.muxes?.readyCount() === 2, 15_000, 'mux restarted');
    const a2 = await RawClient.connect(port);
    raws.push(a2);
    await a2.authenticate('alice', PASSWORD);
    await a2.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>`);
    await a2.waitFor(/<resumed\b/);
    await a2.waitFor(/held:2</);
    expect([...a2.text.matchAll(/<body>(held:\d)<\/body>/g)].map((m) => m[1])).toEqual(['held:1', 'held:2']);
    await a2.ping();
    expect(b.textSince(bobMark)).not.toMatch(/type=['"]unavailable['"]/);
    expect(sessionOf(srv, full)?.hibernated).toBe(false);
  }, 45_000);
});

describe('the server sees the client’s address, not the mux’s', () => {
  let srv: TestServer;
  const raws: RawClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ mux: { count: 1 }, log: { level: 'error' }, limits: { preAuthPerAddress: 2 } });
    for (const u of ['alice', 'bob', 'carol']) await srv.addUser(u);
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    await srv?.close();
  });

  it('remoteAddress is the client’s (STARTTLS and direct TLS), and per-address caps count per client address', async () => {
    // The mux listens on 127.0.0.1; the clients come from other loopback addresses.
    const alice = await RawClient.connect(srv.ports.c2sDirectTls as number, { directTls: true, tls: fromAddress('127.0.0.2') });
    raws.push(alice);
    await alice.login('alice', PASSWORD, { resource: 'tls' });
    expect(sessionOf(srv, alice.jid)?.remoteAddress).toBe('127.0.0.2');
    const bob = await rawFrom(srv.ports.c2s as number, '127.0.0.2');
    raws.push(bob);
    await bob.login('bob', PASSWORD, { resource: 'starttls' });
    expect(sessionOf(srv, bob.jid)?.remoteAddress).toBe('127.0.0.2');
    expect(sessionOf(srv, bob.jid)?.secure).toBe(true);

    // Two unauthenticated connections from 127.0.0.2 use up its pre-auth allowance ...
    const base = srv.server.connectionCount;
    const idle = [await rawFrom(srv.ports.c2s as number, '127.0.0.2'), await rawFrom(srv.ports.c2s as number, '127.0.0.2')];
    raws.push(...idle);
    await waitUntil(() => srv.server.connectionCount === base + 2, 5000, 'idle connections open');
    // ... so a third one from 127.0.0.2 takes the place of the oldest (closed with a stream error) ...
    const third = await rawFrom(srv.ports.c2s as number, '127.0.0.2');
    raws.push(third);
    expect(await idle[0]!.expectStreamErrorAndClose(5000)).toBe('policy-violation');
    idle[0] = third;
    // ... while 127.0.0.3 is not affected (the cap does not apply to the mux's own address).
    const carol = await rawFrom(srv.ports.c2s as number, '127.0.0.3');
    raws.push(carol);
    await carol.login('carol', PASSWORD, { resource: 'other', presence: true });
    expect(sessionOf(srv, carol.jid)?.remoteAddress).toBe('127.0.0.3');
    const viaTls = await RawClient.connect(srv.ports.c2sDirectTls as number, { directTls: true, tls: fromAddress('127.0.0.3') });
    raws.push(viaTls);
    await viaTls.login('carol', PASSWORD, { resource: 'other2' });
    expect(sessionOf(srv, viaTls.jid)?.remoteAddress).toBe('127.0.0.3');
    // Closing the idle ones frees 127.0.0.2's allowance again (CLOSE through the mux is counted).
    for (const c of idle) c.destroy();
    // (base: alice and bob; now carol's two sessions instead of the two idle connections)
    await waitUntil(() => srv.server.connectionCount === base + 2, 5000, 'idle connections closed');
    const again = await rawFrom(srv.ports.c2s as number, '127.0.0.2');
    raws.push(again);
    await again.login('alice', PASSWORD, { resource: 'again', presence: true });
    await assertServing(again, carol);
  });
});

describe('a slow reader behind the mux', () => {
  let srv: TestServer;
  const raws: RawClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer({
      mux: { count: 1 },
      log: { level: 'error' },
      limits: {
        outputBufferBytes: 16_384,
        bytesPerSecond: 256 * 1024 * 1024,
        burstBytes: 256 * 1024 * 1024,
        stanzasPerSecond: 100_000,
        burstStanzas: 100_000,
      },
    });
    for (const u of ['victim', 'flooder', 'canary', 'friend']) await srv.addUser(u);
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    await srv?.close();
  });

  it('does not block other clients on the same mux, is disconnected, and the mux memory stays bounded', async () => {
    const port = srv.ports.c2s as number;
    const login = async (u: string, presence = true) => {
      const c = await RawClient.login(port, u, PASSWORD, { resource: 'r', presence });
      raws.push(c);
      return c;
    };
    const victim = await login('victim');
    const flooder = await login('flooder', false);
    const canary = await login('canary');
    const friend = await login('friend');
    expect(linkLoad(srv)).toEqual({ 'mux-1': 4 });
    await waitUntil(() => srv.server.sessions.available('victim@localhost').length === 1, 5000, 'victim available');
    const muxPid = srv.muxes?.pids()[0] as number;
    const rssBefore = vmRssBytes(muxPid);

    victim.pauseReading();
    let victimGone = false;
    const body = 'y'.repeat(12_000);
    let sent = 0;
    const flood = (async () => {
      for (let i = 0; !victimGone && sent < 64 * 1024 * 1024; i++) {
        const m = `<message to='${victim.jid}' type='chat' id='big${i}'><body>${body}</body></message>`;
        await flooder.send(m);
        sent += m.length;
        // Keep several messages in flight, but let the server answer now and then.
        if (i % 4 === 3) await flooder.ping(10_000);
      }
    })();

    // Meanwhile the other clients on the same mux are served (each round trip within its timeout).
    let rounds = 0;
    while (!victimGone) {
      await assertServing(friend, canary, 5000);
      await assertServing(canary, friend, 5000);
      rounds++;
      victimGone = srv.server.sessions.count('victim@localhost') === 0;
      if (rounds > 400) break;
    }
    await flood;
    expect(victimGone).toBe(true);
    expect(rounds).toBeGreaterThan(0);
    // The slow client is disconnected (once its socket buffers are read out).
    victim.resumeReading();
    await victim.closed(10_000);
    expect(srv.server.connectionCount).toBe(3);
    expect(linkLoad(srv)).toEqual({ 'mux-1': 3 });
    await assertServing(flooder, canary);
    // Bounded memory in the mux: far less than what was sent to the victim.
    const growth = vmRssBytes(muxPid) - rssBefore;
    expect(growth).toBeLessThan(200 * 1024 * 1024);
    expect(sent).toBeGreaterThan(100_000);
  }, 60_000);
});

// ---- real processes -------------------------------------------------------------------------


interface Proc {
  child: ChildProcess;
  output(): string;
}

/** Spawns the parley CLI and resolves once its output matches `ready`. */
function spawnParley(args: string[], ready: RegExp, timeoutMs = 20_000): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(PARLEY_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve({ child, output: () => out });
      }
    };
    const onExit = (code: number | null) => reject(new Error(`parley ${args.join(' ')} exited (${code}):\n${out}`));
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('exit', onExit);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`parley ${args.join(' ')} did not start in time:\n${out}`));
    }, timeoutMs);
  });
}

async function kill9(p: Proc | null): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGKILL');
  await waitExit(p.child);
}

/** Retries a login until it works (the mux refuses clients while its link is down). */
async function loginWhenUp(port: number, user: string, resource: string, timeoutMs: number): Promise<RawClient> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await RawClient.login(port, user, PASSWORD, { resource, presence: true, timeoutMs: 3000 });
    } catch (err) {
      if (Date.now() > end) throw err;
      await sleep(200);
    }
  }
}

describe('standalone muxes and the server as separate processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'parley-mux-e2e-'));
  const dataDir = join(dir, 'data');
  const secret = randomBytes(24).toString('base64');
  let server: Proc | null = null;
  const muxProcs: (Proc | null)[] = [null, null];
  const raws: RawClient[] = [];
  let serverConfig = '';
  const muxConfigs: string[] = [];
  const muxPorts: { c2s: number; tls: number }[] = [];

  const startServer = () => spawnParley(['--config', serverConfig, 'start', '--no-mux'], /Parley is running/);
  const startMux = (i: number) => spawnParley(['--config', muxConfigs[i] as string, 'mux', '--name', `m${i + 1}`], /parley mux m\d: client ports/);

  beforeAll(async () => {
    const linkPort = await freePort();
    serverConfig = join(dir, 'server.yaml');
    writeFileSync(
      serverConfig,
      `hosts: [localhost]\ndataDir: ${dataDir}\nlisten: { address: 127.0.0.1, c2s: null, c2sDirectTls: null }\nhttp: { port: null, tlsPort: null }\nmux: { linkAddress: 127.0.0.1, linkPort: ${linkPort}, secret: "${secret}" }\nlog: { level: warn }\n`,
    );
    for (let i = 0; i < 2; i++) {
      const ports = { c2s: await freePort(), tls: await freePort() };
      muxPorts.push(ports);
      const file = join(dir, `mux${i + 1}.yaml`);
      writeFileSync(
        file,
        `hosts: [localhost]\ndataDir: ${dataDir}\nlisten: { address: 127.0.0.1, c2s: ${ports.c2s}, c2sDirectTls: ${ports.tls} }\nmux: { server: { host: 127.0.0.1, port: ${linkPort} }, secret: "${secret}" }\nlog: { level: warn }\n`,
      );
      muxConfigs.push(file);
    }
    // Accounts and a mutual subscription, written before the server starts.
    const cfg = validateConfig({ hosts: ['localhost'], dataDir });
    const storage = await openConfiguredStorage(cfg);
    const accounts = new AccountService(storage);
    for (const u of ['ann', 'ben']) await accounts.create(`${u}@localhost`, PASSWORD);
    await storage.roster.setItem('ann@localhost', { jid: 'ben@localhost', subscription: 'both', ask: false, approved: false, groups: [] });
    await storage.roster.setItem('ben@localhost', { jid: 'ann@localhost', subscription: 'both', ask: false, approved: false, groups: [] });
    await storage.close();
  });
  afterAll(async () => {
    for (const r of raws) r.destroy();
    for (const m of muxProcs) await kill9(m);
    await kill9(server);
    rmSync(dir, { recursive: true, force: true });
  });

  it('survive kill -9 of the server (clients get system-shutdown, muxes reconnect), and kill -9 of a mux ends exactly its sessions', async () => {
    // The server first: it generates the certificate the muxes then load from the shared dataDir.
    server = await startServer();
    expect(existsSync(join(dataDir, 'tls', 'cert.pem'))).toBe(true);
    [muxProcs[0], muxProcs[1]] = await Promise.all([startMux(0), startMux(1)]);
    const m1 = muxPorts[0] as { c2s: number; tls: number };
    const m2 = muxPorts[1] as { c2s: number; tls: number };

    let ann = await loginWhenUp(m1.c2s, 'ann', 'one', 10_000);
    raws.push(ann);
    let ben = await loginWhenUp(m2.c2s, 'ben', 'two', 10_000);
    raws.push(ben);
    await assertServing(ann, ben);
    await assertServing(ben, ann);

    // kill -9 the server: each mux closes its clients with a stream error.
    await kill9(server);
    server = null;
    for (const c of [ann, ben]) {
      await c.closed(5000);
      expect(c.streamError()).toBe('system-shutdown');
    }
    // While there is no server, a mux refuses clients rather than holding them.
    const refused = await RawClient.connect(m1.c2s).catch(() => null);
    if (refused) {
      raws.push(refused);
      await refused.closed(5000);
    }

    // Restart the server: the muxes reconnect by themselves (backoff at most 10 s).
    server = await startServer();
    ann = await loginWhenUp(m1.c2s, 'ann', 'one', 15_000);
    raws.push(ann);
    ben = await loginWhenUp(m2.c2s, 'ben', 'two', 15_000);
    raws.push(ben);
    await assertServing(ann, ben);
    // Direct TLS through a reconnected mux too.
    const annTls = await RawClient.connect(m2.tls, { directTls: true });
    raws.push(annTls);
    await annTls.login('ann', PASSWORD, { resource: 'tls', presence: true });
    await annTls.ping();

    // kill -9 mux m1: exactly its client (ann/one) goes; ben and ann/tls on m2 stay.
    ben.cursor = ben.mark();
    await kill9(muxProcs[0] as Proc);
    muxProcs[0] = null;
    await ann.closed(5000);
    await ben.waitFor(/<presence\b(?=[^>]*from=['"]ann@localhost\/one['"])(?=[^>]*type=['"]unavailable['"])/, 5000, ben.cursor);
    await assertServing(ben, annTls);
    await assertServing(annTls, ben);
    expect(ben.isClosed || annTls.isClosed).toBe(false);

    // Restart m1: logins through it work again.
    muxProcs[0] = await startMux(0);
    ann = await loginWhenUp(m1.c2s, 'ann', 'one', 15_000);
    raws.push(ann);
    await assertServing(ann, ben);
    await assertServing(ben, ann);
  }, 60_000);
});

describe('parley status', () => {
  const { dir, config } = tempConfig();
  let proc: ServerProcess | null = null;
  let client: RawClient | null = null;
  afterAll(async () => {
    client?.destroy();
    if (proc && proc.child.exitCode === null) {
      proc.child.kill('SIGKILL');
      await waitExit(proc.child);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists the mux of `parley start` with its connection count and link health', async () => {
    const add = await runCli(['--config', config, 'user', 'add', 'stat@localhost', '--password', PASSWORD]);
    expect(add.code).toBe(0);
    proc = await startServerProcess(config);
    expect(proc.output()).toMatch(/through 1 multiplexor process \(pids \d+\)/);
    client = await RawClient.login(proc.c2sPort, 'stat', PASSWORD, { resource: 'r' });
    // The status file is refreshed every 5 s.
    let out = '';
    const end = Date.now() + 15_000;
    while (Date.now() < end) {
      const r = await runCli(['--config', config, 'status']);
      expect(r.code).toBe(0);
      out = r.stdout;
      if (/mux-1: 1 connection\b/.test(out)) break;
      await sleep(500);
    }
    expect(out).toMatch(/parley is running/);
    expect(out).toMatch(/muxes: 1/);
    expect(out).toMatch(/mux-1: 1 connection, link healthy \(last seen \d+ ms ago/);
    expect(out).toMatch(/pid \d+, rss [\d.]+ MiB, cpu [\d.]+ s/);
    const muxPid = Number(/through 1 multiplexor process \(pids (\d+)\)/.exec(proc.output())?.[1]);
    expect(out).toContain(`pid ${muxPid}`);
    // kill -9 of `parley start` leaves no orphaned mux holding client connections.
    proc.child.kill('SIGKILL');
    await waitExit(proc.child);
    await client.closed(5000);
    await waitUntil(() => !alive(muxPid), 5000, 'embedded mux exited with its server');
  }, 40_000);
});
