// XEP-0065 SOCKS5 Bytestreams proxy, with two real @xmpp/client users and a SOCKS5 client written
// here: discovery (host disco#items -> proxy disco#info -> <streamhost/>), the S5B offer routed
// from alice to bob, both connecting to the proxy, activation by alice and a file relayed intact;
// who may activate (not another local user, not a remote JID, not before both sides connected,
// not twice); refused SOCKS5 handshakes and garbage; timeouts and limits.
import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import { connectRequest, s5bHash, socks5Connect, SockReader, tcpConnect } from '../helpers/socks5.js';

const NS_BS = 'http://jabber.org/protocol/bytestreams';
const NS_INFO = 'http://jabber.org/protocol/disco#info';
const NS_ITEMS = 'http://jabber.org/protocol/disco#items';

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

interface StreamHost {
  jid: string;
  host: string;
  port: number;
}

/** XEP-0065 §4: find the proxy through the host's disco#items, check its identity, ask its address. */
async function discoverProxy(c: TestClient, domain: string): Promise<StreamHost> {
  const items = await c.iq(xml('iq', { type: 'get', to: domain }, xml('query', { xmlns: NS_ITEMS })));
  const jids = (items.getChild('query', NS_ITEMS) as Element).getChildren('item').map((i) => i.attrs.jid as string);
  for (const jid of jids) {
    const info = await c.iq(xml('iq', { type: 'get', to: jid }, xml('query', { xmlns: NS_INFO })));
    const q = info.getChild('query', NS_INFO) as Element;
    const isProxy = q.getChildren('identity').some((i) => i.attrs.category === 'proxy' && i.attrs.type === 'bytestreams');
    if (!isProxy) continue;
    expect(q.getChildren('feature').map((f) => f.attrs.var)).toContain(NS_BS);
    const res = await c.iq(xml('iq', { type: 'get', to: jid }, xml('query', { xmlns: NS_BS })));
    const sh = (res.getChild('query', NS_BS) as Element).getChild('streamhost') as Element;
    return { jid: sh.attrs.jid as string, host: sh.attrs.host as string, port: Number(sh.attrs.port) };
  }
  throw new Error(`no proxy among ${jids.join(', ')}`);
}

function activateIq(proxy: string, sid: string, target: string): Element {
  return xml('iq', { type: 'set', to: proxy }, xml('query', { xmlns: NS_BS, sid }, xml('activate', {}, target)));
}

/** Bob answers S5B offers (§6.3.1) by connecting to the offered proxy with the §6.3.2 hash. */
function acceptOffers(bob: TestClient): { next(): Promise<{ sid: string; sock: net.Socket; reader: SockReader }> } {
  const queue: { sid: string; sock: net.Socket; reader: SockReader }[] = [];
  const waiters: ((v: { sid: string; sock: net.Socket; reader: SockReader }) => void)[] = [];
  const callee = (bob.xmpp as unknown as { iqCallee: { set(ns: string, name: string, h: (ctx: { stanza: Element }) => Promise<Element>): void } }).iqCallee;
  callee.set(NS_BS, 'query', async ({ stanza }) => {
    const q = stanza.getChild('query', NS_BS) as Element;
    const sh = q.getChild('streamhost') as Element;
    const sid = q.attrs.sid as string;
    const conn = await socks5Connect(Number(sh.attrs.port), s5bHash(sid, stanza.attrs.from as string, bob.jid), sh.attrs.host as string);
    const entry = { sid, ...conn };
    const w = waiters.shift();
    if (w) w(entry);
    else queue.push(entry);
    return xml('query', { xmlns: NS_BS, sid }, xml('streamhost-used', { jid: sh.attrs.jid }));
  });
  return {
    next: () => {
      const e = queue.shift();
      return e ? Promise.resolve(e) : new Promise((r) => waiters.push(r));
    },
  };
}

describe('SOCKS5 bytestreams proxy (XEP-0065)', () => {
  let srv: TestServer;
  let alice: TestClient;
  let bob: TestClient;
  let carol: TestClient;
  let proxy: StreamHost;
  let offers: ReturnType<typeof acceptOffers>;
  const open: net.Socket[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ modules: { proxy65: { port: 0 } } });
    const [a, b, c] = [uniqueUser('alice'), uniqueUser('bob'), uniqueUser('carol')];
    for (const u of [a, b, c]) await srv.addUser(u);
    alice = await connect({ port: srv.ports.c2s as number, username: a });
    bob = await connect({ port: srv.ports.c2s as number, username: b });
    carol = await connect({ port: srv.ports.c2s as number, username: c });
    offers = acceptOffers(bob);
    proxy = await discoverProxy(alice, srv.domain);
  });
  afterAll(async () => {
    for (const s of open) s.destroy();
    for (const c of [alice, bob, carol]) await c?.stop();
    await srv?.close();
  });

  /** alice offers the proxy to bob (routed through the server); bob connects; alice connects. */
  async function negotiate(): Promise<{ sid: string; a: { sock: net.Socket; reader: SockReader }; b: { sock: net.Socket; reader: SockReader } }> {
    const sid = randomBytes(8).toString('hex');
    const offer = xml('iq', { type: 'set', to: bob.jid }, xml('query', { xmlns: NS_BS, sid }, xml('streamhost', { jid: proxy.jid, host: proxy.host, port: String(proxy.port) })));
    const res = await alice.iq(offer);
    expect((res.getChild('query', NS_BS) as Element).getChild('streamhost-used')?.attrs.jid).toBe(proxy.jid);
    const b = await offers.next();
    expect(b.sid).toBe(sid);
    const a = await socks5Connect(proxy.port, s5bHash(sid, alice.jid, bob.jid), proxy.host);
    open.push(a.sock, b.sock);
    return { sid, a, b };
  }

  it('is listed in the host disco#items and announces its address', () => {
    expect(proxy.jid).toBe(`proxy.${srv.domain}`);
    expect(proxy.host).toBe('127.0.0.1');
    expect(proxy.port).toBeGreaterThan(0);
  });

  it('relays a file from alice to bob once alice activates, and nothing before', async () => {
    const { sid, a, b } = await negotiate();
    // Nothing crosses before activation: what alice sends now is dropped (§9.1). Checked below by
    // what reaches Bob first once the stream is active; the round trips to the server in between
    // let the proxy read these bytes (already in its socket when the write completes) first.
    await new Promise((r) => a.sock.write('early:', r));

    // Outsiders cannot activate it: another local user (her hash names nobody's stream), a
    // remote JID, a wrong target.
    expect((await iqError(carol, activateIq(proxy.jid, sid, bob.jid))).condition).toBe('item-not-found');
    expect((await iqError(alice, activateIq(proxy.jid, sid, carol.jid))).condition).toBe('item-not-found');
    expect(await remoteActivate(srv, proxy.jid, sid, bob.jid)).toBe('forbidden');
    expect(b.reader.buf.length).toBe(0);

    const res = await alice.iq(activateIq(proxy.jid, sid, bob.jid));
    expect(res.attrs.type).toBe('result');
    // The barrier on the same path: bytes sent now cross; had the early ones crossed (then or
    // now), Bob would read them first.
    a.sock.write('late:');
    expect((await b.reader.take(5)).toString()).toBe('late:');
    expect(b.reader.buf.length).toBe(0);
    // §6.3.5: a second activation is refused.
    expect((await iqError(alice, activateIq(proxy.jid, sid, bob.jid))).condition).toBe('not-allowed');
    // §9.1: no third party joins an active stream.
    const third = await tcpConnect(proxy.port);
    open.push(third);
    const tr = new SockReader(third);
    third.write(Buffer.from([0x05, 0x01, 0x00]));
    await tr.take(2);
    third.write(connectRequest(s5bHash(sid, alice.jid, bob.jid)));
    expect((await tr.take(2))[1]).toBe(0x02);
    await tr.waitClosed();

    const file = randomBytes(300 * 1024);
    a.sock.end(file);
    const got = await b.reader.rest();
    expect(got.length).toBe(file.length);
    expect(sha256(got)).toBe(sha256(file));
    // Bob's reply direction still works after alice's half-close, then bob closes too.
    b.sock.end('thanks');
    expect((await a.reader.rest()).toString()).toBe('thanks');
  });

  it('refuses activation before both parties are connected', async () => {
    const sid = randomBytes(8).toString('hex');
    // Nobody connected with this hash.
    expect((await iqError(alice, activateIq(proxy.jid, sid, bob.jid))).condition).toBe('item-not-found');
    // Only the target connected (§6.3.5: not-allowed): alice offers, bob connects, alice does not.
    await alice.iq(xml('iq', { type: 'set', to: bob.jid }, xml('query', { xmlns: NS_BS, sid }, xml('streamhost', { jid: proxy.jid, host: proxy.host, port: String(proxy.port) }))));
    const b = await offers.next();
    open.push(b.sock);
    expect((await iqError(alice, activateIq(proxy.jid, sid, bob.jid))).condition).toBe('not-allowed');
    // Malformed requests.
    expect((await iqError(alice, xml('iq', { type: 'set', to: proxy.jid }, xml('query', { xmlns: NS_BS }, xml('activate', {}, bob.jid))))).condition).toBe('bad-request');
    expect((await iqError(alice, activateIq(proxy.jid, sid, '@@bad'))).condition).toBe('jid-malformed');
  });

  it('refuses a connection for a stream nobody offered through the server (issue 16 §4)', async () => {
    // The right hash of a real pair of users, but alice never sent the offer: refused at once.
    const err = await socks5Connect(proxy.port, s5bHash(randomBytes(8).toString('hex'), alice.jid, bob.jid)).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toBe('CONNECT refused with 2'); // RFC 1928: connection not allowed by ruleset
  });

  it('serves its address to local users only', async () => {
    const err = await remoteIq(srv, xml('iq', { type: 'get', to: proxy.jid, from: 'mallory@remote.example/x', id: 'r1' }, xml('query', { xmlns: NS_BS })));
    expect(err).toBe('forbidden');
    // A message to the service is not accepted.
    const m = await remoteIq(srv, xml('message', { to: proxy.jid, from: 'mallory@remote.example/x', id: 'm1' }, xml('body', {}, 'hi')));
    expect(m).toBe('service-unavailable');
  });

  it('refuses bad SOCKS5 handshakes and survives garbage', async () => {
    // Not SOCKS5 at all: closed without a reply.
    {
      const s = await tcpConnect(proxy.port);
      const r = new SockReader(s);
      s.write(Buffer.from([0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, 0]));
      await r.waitClosed();
      expect(r.buf.length).toBe(0);
    }
    // Only username/password offered: X'FF' and close (RFC 1928 §3).
    {
      const s = await tcpConnect(proxy.port);
      const r = new SockReader(s);
      s.write(Buffer.from([0x05, 0x01, 0x02]));
      expect([...(await r.take(2))]).toEqual([0x05, 0xff]);
      await r.waitClosed();
    }
    // After a good greeting: BIND, IPv4, a name that is not a hash, a non-zero port.
    const cases: [Buffer, number][] = [
      [connectRequest(s5bHash('x', 'a', 'b'), 0, 0x03, 0x02), 0x07],
      [Buffer.from([0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 80]), 0x08],
      [connectRequest('example.com', 0), 0x02],
      [connectRequest(s5bHash('x', 'a', 'b'), 80), 0x02],
    ];
    for (const [req, rep] of cases) {
      const s = await tcpConnect(proxy.port);
      const r = new SockReader(s);
      s.write(Buffer.from([0x05, 0x01, 0x00]));
      expect([...(await r.take(2))]).toEqual([0x05, 0x00]);
      s.write(req);
      const head = await r.take(2);
      expect(head[1]).toBe(rep);
      await r.waitClosed();
    }
    // Garbage, and an oversized never-ending greeting.
    for (const junk of [randomBytes(4096), Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.concat([Buffer.from([0x05, 0xff]), Buffer.alloc(300, 0x01)])]) {
      const s = await tcpConnect(proxy.port);
      const r = new SockReader(s);
      s.write(junk);
      await r.waitClosed();
    }
    // Still serving: a complete transfer works, and the XMPP side is unaffected.
    const { sid, a, b } = await negotiate();
    await alice.iq(activateIq(proxy.jid, sid, bob.jid));
    const file = randomBytes(64 * 1024);
    a.sock.end(file);
    expect(sha256(await b.reader.rest())).toBe(sha256(file));
    await alice.iq(xml('iq', { type: 'get', to: srv.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  });
});

describe('SOCKS5 proxy limits and timeouts', () => {
  let srv: TestServer;
  let alice: TestClient;
  let bob: TestClient;
  let carol: TestClient;
  let port: number;
  const open: net.Socket[] = [];

  /** `from` offers the proxy to `to` for `sid` (the offer passes the server, which is what counts; `to` need not accept). */
  async function offer(sid: string, from: TestClient = alice, to: TestClient = bob): Promise<string | null> {
    const iq = xml('iq', { type: 'set', to: to.jid }, xml('query', { xmlns: NS_BS, sid }, xml('streamhost', { jid: `proxy.${srv.domain}`, host: '127.0.0.1', port: String(port) })));
    return from.iq(iq).then(
      () => null,
      (e: { condition?: string }) => e.condition ?? 'error',
    );
  }

  beforeAll(async () => {
    srv = await startTestServer({
      modules: {
        proxy65: { port: 0, maxPendingPerAddress: 3, handshakeTimeoutSeconds: 1, pairTimeoutSeconds: 1, activationTimeoutSeconds: 1, maxBytesPerStream: 100_000, maxStreamsPerUser: 5, publicHost: 'files.example.net' },
      },
    });
    const [a, b, c] = [uniqueUser('alice'), uniqueUser('bob'), uniqueUser('carol')];
    for (const u of [a, b, c]) await srv.addUser(u);
    alice = await connect({ port: srv.ports.c2s as number, username: a });
    bob = await connect({ port: srv.ports.c2s as number, username: b });
    carol = await connect({ port: srv.ports.c2s as number, username: c });
    const res = await alice.iq(xml('iq', { type: 'get', to: `proxy.${srv.domain}` }, xml('query', { xmlns: NS_BS })));
    const sh = (res.getChild('query', NS_BS) as Element).getChild('streamhost') as Element;
    // The announced host is the configured public one; the port is the bound one.
    expect(sh.attrs.host).toBe('files.example.net');
    port = Number(sh.attrs.port);
  });
  afterAll(async () => {
    for (const s of open) s.destroy();
    for (const c of [alice, bob, carol]) await c?.stop();
    await srv?.close();
  });

  it('caps the streams one user may offer through the proxy at once', async () => {
    // bob's client does not take S5B offers: it answers service-unavailable, after the server saw the offer.
    for (let i = 0; i < 5; i++) expect(await offer(`cap${i}`, carol)).toBe('service-unavailable');
    expect(await offer('cap5', carol)).toBe('resource-constraint');
    // Others are not affected.
    expect(await offer('other-user', alice)).toBe('service-unavailable');
  });

  it('closes the first connection of a stream when the second does not come in time', async () => {
    await offer('unpaired');
    const lone = await socks5Connect(port, s5bHash('unpaired', alice.jid, bob.jid));
    open.push(lone.sock);
    await lone.reader.waitClosed(4000);
  });

  it('closes a connection that does not finish the handshake', async () => {
    const s = await tcpConnect(port);
    open.push(s);
    const r = new SockReader(s);
    s.write(Buffer.from([0x05]));
    await r.waitClosed(4000);
  });

  it('closes a stream that is never activated', async () => {
    const sid = randomBytes(8).toString('hex');
    await offer(sid);
    const h = s5bHash(sid, alice.jid, bob.jid);
    const a = await socks5Connect(port, h);
    const b = await socks5Connect(port, h);
    open.push(a.sock, b.sock);
    await a.reader.waitClosed(4000);
    await b.reader.waitClosed(4000);
    expect((await iqError(alice, activateIq(`proxy.${srv.domain}`, sid, bob.jid))).condition).toBe('item-not-found');
  });

  it('caps pending connections per address', async () => {
    const conns = [];
    for (let i = 0; i < 3; i++) {
      await offer(`p${i}`);
      conns.push(await socks5Connect(port, s5bHash(`p${i}`, alice.jid, bob.jid)));
    }
    for (const c of conns) open.push(c.sock);
    const extra = await tcpConnect(port);
    open.push(extra);
    const r = new SockReader(extra);
    extra.write(Buffer.from([0x05, 0x01, 0x00]));
    await r.waitClosed();
    expect(r.buf.length).toBe(0);
    for (const c of conns) c.sock.destroy();
    for (const c of conns) await c.reader.waitClosed();
    // Closed ones no longer count, once the proxy has seen them close (it is told asynchronously;
    // until then a new one is refused like `extra`).
    await offer('again');
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        const again = await socks5Connect(port, s5bHash('again', alice.jid, bob.jid));
        again.sock.destroy();
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
    }
  });

  it('cuts a connection that streams data before activation', async () => {
    await offer('flood');
    const { sock, reader } = await socks5Connect(port, s5bHash('flood', alice.jid, bob.jid));
    open.push(sock);
    sock.write(randomBytes(200 * 1024));
    await reader.waitClosed();
  });

  it('closes a stream past its byte limit', async () => {
    const sid = randomBytes(8).toString('hex');
    await offer(sid);
    const h = s5bHash(sid, alice.jid, bob.jid);
    const b = await socks5Connect(port, h);
    const a = await socks5Connect(port, h);
    open.push(a.sock, b.sock);
    await alice.iq(activateIq(`proxy.${srv.domain}`, sid, bob.jid));
    a.sock.write(randomBytes(300 * 1024));
    const got = await b.reader.rest();
    expect(got.length).toBeLessThan(300 * 1024);
    await a.reader.waitClosed();
  });
});

/** Sends a stanza as if from a remote server and returns the error condition of the reply. */
async function remoteIq(srv: TestServer, stanza: Element): Promise<string | undefined> {
  let resolveReply: (el: Element) => void = () => {};
  const reply = new Promise<Element>((r) => (resolveReply = r));
  const off = srv.server.hooks.on('route.remote', (ev) => {
    if (ev.to.domain !== 'remote.example') return undefined;
    resolveReply(ev.stanza);
    return true;
  }, 100);
  try {
    await srv.server.route(stanza);
    const el = await Promise.race([reply, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no reply')), 3000))]);
    expect(el.attrs.type).toBe('error');
    return (el.getChild('error') as Element).getChildElements()[0]?.name;
  } finally {
    off();
  }
}

async function remoteActivate(srv: TestServer, proxy: string, sid: string, target: string): Promise<string | undefined> {
  const iq = activateIq(proxy, sid, target);
  iq.attrs.from = 'mallory@remote.example/x';
  iq.attrs.id = 'act1';
  return remoteIq(srv, iq);
}

describe('SOCKS5 proxy configuration', () => {
  it('announces a configured public port and service name, and can be disabled', async () => {
    const srv = await startTestServer({ modules: { proxy65: { port: 0, publicPort: 7625, subdomain: 'streamer' } } });
    try {
      const u = uniqueUser('cfg');
      await srv.addUser(u);
      const c = await connect({ port: srv.ports.c2s as number, username: u });
      try {
        const host = await c.iq(xml('iq', { type: 'get', to: srv.domain }, xml('query', { xmlns: NS_ITEMS })));
        expect((host.getChild('query', NS_ITEMS) as Element).getChildren('item').map((i) => i.attrs.jid)).toContain(`streamer.${srv.domain}`);
        const res = await c.iq(xml('iq', { type: 'get', to: `streamer.${srv.domain}` }, xml('query', { xmlns: NS_BS })));
        const sh = (res.getChild('query', NS_BS) as Element).getChild('streamhost') as Element;
        expect(sh.attrs).toMatchObject({ jid: `streamer.${srv.domain}`, port: '7625' });
      } finally {
        await c.stop();
      }
    } finally {
      await srv.close();
    }
    const off = await startTestServer({ modules: { proxy65: false } });
    try {
      const u = uniqueUser('off');
      await off.addUser(u);
      const c = await connect({ port: off.ports.c2s as number, username: u });
      try {
        const host = await c.iq(xml('iq', { type: 'get', to: off.domain }, xml('query', { xmlns: NS_ITEMS })));
        expect((host.getChild('query', NS_ITEMS) as Element).getChildren('item').map((i) => i.attrs.jid)).not.toContain(`proxy.${off.domain}`);
        expect((await iqError(c, xml('iq', { type: 'get', to: `proxy.${off.domain}` }, xml('query', { xmlns: NS_BS })))).condition).toBe('remote-server-not-found');
      } finally {
        await c.stop();
      }
    } finally {
      await off.close();
    }
  });
});
