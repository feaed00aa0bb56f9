// XMPP over WebSocket (RFC 7395) with a raw `ws` client, and XEP-0156 host-meta: framing, stream
// restarts, the subprotocol, Origin and TLS checks, oversized and non-XMPP messages, see-other-uri,
// ping liveness and per-address caps. The server must keep serving other clients after each error.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStreamError, plainPayload, sleep } from '../helpers/raw.js';
import { startTestServer, uniqueUser, type TestServer } from '../helpers/server.js';
import { NS_FRAMING, WsClient, openFrame } from '../helpers/ws.js';

const PW = 'secret-password';
const STREAM_NS = /xmlns:stream=['"]http:\/\/etherx\.jabber\.org\/streams['"]/;

/** The stream error condition among the messages received (one element per message). */
function streamErrorOf(c: WsClient): string | undefined {
  const m = c.messages.find((x) => x.startsWith('<stream:error'));
  return m === undefined ? undefined : parseStreamError(m);
}

async function expectStreamErrorAndClose(c: WsClient, condition: string): Promise<void> {
  const code = await c.waitClosed();
  expect(streamErrorOf(c), c.messages.join('\n')).toBe(condition);
  // §3.3.3/§3.6: the error, then <close/>, then the WebSocket closes normally.
  const i = c.messages.findIndex((x) => x.startsWith('<stream:error'));
  expect(c.messages[i]).toMatch(STREAM_NS);
  expect(c.messages[i + 1]).toMatch(new RegExp(`^<close xmlns=['"]${NS_FRAMING}['"]/>$`));
  expect(code).toBe(1000);
}

describe('XMPP over WebSocket (RFC 7395)', () => {
  let srv: TestServer;
  let url: string;
  const limit = 8192;

  beforeAll(async () => {
    srv = await startTestServer({ limits: { maxStanzaBytes: limit, preAuthPerAddress: 15 }, http: { address: '127.0.0.1', port: 0, tlsPort: 0, websocket: { pingSeconds: 1 } } });
    url = `ws://127.0.0.1:${srv.ports.http}/xmpp-websocket`;
  });
  afterAll(async () => {
    await srv?.close();
  });

  /** A bound WebSocket session, proving the server still serves after an error case. */
  async function login(): Promise<WsClient> {
    const user = uniqueUser('ws');
    await srv.addUser(user, PW);
    const c = await WsClient.connect(url);
    await c.authenticate(user, PW);
    await c.bind();
    return c;
  }

  it('frames the stream: <open/> and features with namespaces, SASL restart, stanzas qualified by jabber:client, <close/> answered with <close/>', async () => {
    const user = uniqueUser('ws');
    await srv.addUser(user, PW);
    const c = await WsClient.connect(url);
    expect(c.ws.protocol).toBe('xmpp');
    c.send(openFrame());
    const open = await c.waitFor(/^<open\b/);
    // §3.3.2: the server's <open/> carries from, id, version and xml:lang, no stream prefix.
    expect(open).toMatch(new RegExp(`^<open xmlns='${NS_FRAMING}'[^>]*/>$`));
    for (const attr of [/\bfrom='localhost'/, /\bid='[^']+'/, /\bversion='1\.0'/, /\bxml:lang='en'/]) expect(open).toMatch(attr);
    const features = await c.waitFor(/^<stream:features\b/);
    expect(features).toMatch(STREAM_NS);
    expect(features).toMatch(/<mechanism>PLAIN<\/mechanism>/);
    expect(features).not.toMatch(/starttls/); // TLS is the WebSocket's business
    c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${plainPayload(user, PW)}</auth>`);
    await c.waitFor(/^<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/);
    // §3.3.2 stream restart: a new <open/>, a new <open/> and features in answer.
    c.send(openFrame());
    await c.waitFor(/^<open\b/);
    const after = await c.waitFor(/^<stream:features\b/);
    expect(after).toMatch(/<bind xmlns=/);
    expect(after).toMatch(/<sm xmlns=/);
    const jid = await c.bind('phone');
    expect(jid).toBe(`${user}@localhost/phone`);
    c.send(`<iq xmlns='jabber:client' type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    const pong = await c.waitFor(/id=["']p1["']/);
    expect(pong).toMatch(/^<iq xmlns='jabber:client'[^>]*type="result"/);
    // Every server message is exactly one element.
    for (const m of c.messages) expect(m).toMatch(/^<[^>]+>[\s\S]*>$|^<[^>]+\/>$/);
    c.send(`<close xmlns='${NS_FRAMING}'/>`);
    expect(await c.waitClosed()).toBe(1000);
    expect(c.messages.at(-1)).toBe(`<close xmlns='${NS_FRAMING}'/>`);
  });

  it('refuses a handshake without the xmpp subprotocol, or with another one only', async () => {
    for (const protocols of [[], ['chat'], ['xmpp-ish', 'mqtt']]) {
      const err = await WsClient.connect(url, { protocols }).then(
        () => null,
        (e: Error & { status?: number }) => e,
      );
      expect(err?.status, JSON.stringify(protocols)).toBe(400);
    }
    // Offered among others, xmpp is chosen.
    const c = await WsClient.connect(url, { protocols: ['chat', 'xmpp'] });
    expect(c.ws.protocol).toBe('xmpp');
    c.terminate();
  });

  it('answers a message above the stanza limit with policy-violation, and one far above it with WebSocket close 1009', async () => {
    const a = await login();
    a.send(`<message xmlns='jabber:client' to='${a.jid}'><body>${'x'.repeat(limit + 200)}</body></message>`);
    await expectStreamErrorAndClose(a, 'policy-violation');

    const b = await login();
    b.send(`<message xmlns='jabber:client' to='${b.jid}'><body>${'x'.repeat(limit * 4)}</body></message>`);
    // ws refuses it from the frame header, before buffering: no stream error is possible any more.
    expect(await b.waitClosed()).toBe(1009);

    // Fragments count together: many small fragments of one huge message are refused too.
    const f = await login();
    const chunk = 'y'.repeat(2048);
    f.ws.send(`<message xmlns='jabber:client' to='${f.jid}'><body>`, { fin: false });
    for (let i = 0; i < 10 && f.closeCode === null; i++) {
      f.ws.send(chunk, { fin: false });
      await sleep(10);
    }
    expect(await f.waitClosed()).toBe(1009);
    const ok = await login();
    ok.terminate();
  });

  it('ends the stream on messages that are not one well-formed element: text, JSON, two elements, half an element, binary, restricted XML', async () => {
    const cases: [string | Buffer, string, boolean?][] = [
      ['hello world', 'not-well-formed'],
      ['{"type":"message","body":"hi"}', 'not-well-formed'],
      [`<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>`, 'not-well-formed'],
      [`<message xmlns='jabber:client' to='x@localhost'><body>half`, 'not-well-formed'],
      [Buffer.from(`<presence xmlns='jabber:client'/>`), 'not-well-formed', true],
      [`<!DOCTYPE x [<!ENTITY a "b">]><presence xmlns='jabber:client'/>`, 'restricted-xml'],
      [`<message xmlns='jabber:client'><!-- c --></message>`, 'restricted-xml'],
      [`<open xmlns='jabber:client' to='localhost' version='1.0'/>`, 'invalid-namespace'],
    ];
    for (const [frame, condition, binary] of cases) {
      const c = await login();
      c.send(frame, binary);
      await expectStreamErrorAndClose(c, condition);
    }
    // Before any <open/>: still a stream error (with an <open/> of ours first), not a crash.
    const early = await WsClient.connect(url);
    early.send('not xml at all');
    await expectStreamErrorAndClose(early, 'not-well-formed');
    expect(early.messages[0]).toMatch(/^<open\b/);
    // A TCP-style stream header is not an element.
    const tcpish = await WsClient.connect(url);
    tcpish.send(`<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`);
    await expectStreamErrorAndClose(tcpish, 'not-well-formed');
    // Unknown host and missing version are the session's usual stream errors.
    const unknown = await WsClient.connect(url);
    unknown.send(openFrame('elsewhere.example'));
    await expectStreamErrorAndClose(unknown, 'host-unknown');
    const ok = await login();
    ok.terminate();
  });

  it('ignores whitespace keepalives', async () => {
    const c = await login();
    c.send(' ');
    c.send(`<iq xmlns='jabber:client' type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await c.waitFor(/id=["']p2["']/);
    c.terminate();
  });

  it('pings every pingSeconds and drops a connection that stops answering', async () => {
    const c = await login();
    const before = srv.server.connectionCount;
    // Stop reading: our pongs stop too (ws answers pings only as it reads).
    c.ws.pause();
    await sleep(3500);
    expect(srv.server.connectionCount).toBe(before - 1);
    c.ws.resume();
    await c.waitClosed();
    // A client that keeps reading stays (ws answers the pings itself).
    const d = await login();
    await sleep(2500);
    expect(d.closeCode).toBeNull();
    d.terminate();
  });
});

describe('WebSocket policies: Origin allow-list, TLS, see-other-uri, connection caps', () => {
  let srv: TestServer;

  beforeAll(async () => {
    srv = await startTestServer({
      limits: { preAuthPerAddress: 3 },
      http: { address: '127.0.0.1', port: 0, tlsPort: 0, secureLoopback: false, websocket: { origins: ['https://chat.example.com'] } },
    });
  });
  afterAll(async () => {
    await srv?.close();
  });

  it('refuses a foreign Origin (403) and accepts the allowed one or none (non-browser clients)', async () => {
    const wss = `wss://127.0.0.1:${srv.ports.https}/xmpp-websocket`;
    const err = await WsClient.connect(wss, { origin: 'https://evil.example' }).then(
      () => null,
      (e: Error & { status?: number }) => e,
    );
    expect(err?.status).toBe(403);
    for (const origin of ['https://chat.example.com', undefined]) {
      const c = await WsClient.connect(wss, { origin });
      c.send(openFrame());
      await c.waitFor(/^<stream:features\b/);
      c.terminate();
    }
  });

  it('refuses plain ws:// when TLS is required and the request is not secure', async () => {
    const err = await WsClient.connect(`ws://127.0.0.1:${srv.ports.http}/xmpp-websocket`).then(
      () => null,
      (e: Error & { status?: number }) => e,
    );
    expect(err?.status).toBe(403);
  });

  it('closes connections above the per-address pre-auth cap with 1013', async () => {
    const wss = `wss://127.0.0.1:${srv.ports.https}/xmpp-websocket`;
    const held = await Promise.all([0, 1, 2].map(() => WsClient.connect(wss)));
    const extra = await WsClient.connect(wss);
    expect(await extra.waitClosed()).toBe(1013);
    for (const h of held) h.terminate();
    await sleep(100);
    const again = await WsClient.connect(wss);
    again.send(openFrame());
    await again.waitFor(/^<stream:features\b/);
    again.terminate();
  });
});

describe('see-other-uri (RFC 7395 §3.6.1)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, websocket: { seeOtherUri: 'wss://other.example/xmpp-websocket' } } });
  });
  afterAll(async () => {
    await srv?.close();
  });

  it('answers <open/> with <close see-other-uri/> and closes', async () => {
    const c = await WsClient.connect(`wss://127.0.0.1:${srv.ports.https}/xmpp-websocket`);
    c.send(openFrame());
    expect(await c.waitClosed()).toBe(1000);
    expect(c.messages).toEqual([`<close xmlns='${NS_FRAMING}' see-other-uri='wss://other.example/xmpp-websocket'/>`]);
  });
});

describe('XEP-0156 host-meta', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(async () => {
    await srv?.close();
  });

  it('lists the WebSocket (wss on the HTTPS port) and BOSH endpoints in XRD and JRD, with CORS *', async () => {
    const https = srv.ports.https as number;
    for (const base of [`http://localhost:${srv.ports.http}`, `https://localhost:${https}`]) {
      const xrd = await fetch(`${base}/.well-known/host-meta`);
      expect(xrd.status).toBe(200);
      expect(xrd.headers.get('content-type')).toMatch(/^application\/xrd\+xml/);
      expect(xrd.headers.get('access-control-allow-origin')).toBe('*');
      const text = await xrd.text();
      expect(text).toMatch(/<XRD xmlns='http:\/\/docs\.oasis-open\.org\/ns\/xri\/xrd-1\.0'>/);
      expect(text).toContain(`<Link rel='urn:xmpp:alt-connections:websocket' href='wss://localhost:${https}/xmpp-websocket'/>`);
      expect(text).toContain(`<Link rel='urn:xmpp:alt-connections:xbosh' href='https://localhost:${https}/http-bind'/>`);

      const jrd = await fetch(`${base}/.well-known/host-meta.json`);
      expect(jrd.status).toBe(200);
      expect(jrd.headers.get('content-type')).toMatch(/^application\/json/);
      expect(jrd.headers.get('access-control-allow-origin')).toBe('*');
      expect(await jrd.json()).toEqual({
        links: [
          { rel: 'urn:xmpp:alt-connections:websocket', href: `wss://localhost:${https}/xmpp-websocket` },
          { rel: 'urn:xmpp:alt-connections:xbosh', href: `https://localhost:${https}/http-bind` },
        ],
      });
    }
    // The advertised WebSocket URL works.
    const c = await WsClient.connect(`wss://localhost:${https}/xmpp-websocket`);
    c.send(openFrame());
    await c.waitFor(/^<stream:features\b/);
    c.terminate();
  });

  it('uses http.publicUrl when set, ws:// when only plain HTTP is on, and leaves BOSH out when it is disabled', async () => {
    const pub = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, publicUrl: 'https://chat.example.com/xmpp/' } });
    const plain = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: null, bosh: { enabled: false } } });
    try {
      const a = (await (await fetch(`http://127.0.0.1:${pub.ports.http}/.well-known/host-meta.json`)).json()) as { links: { rel: string; href: string }[] };
      expect(a.links.map((l) => l.href)).toEqual(['wss://chat.example.com/xmpp/xmpp-websocket', 'https://chat.example.com/xmpp/http-bind']);
      const b = await (await fetch(`http://127.0.0.1:${plain.ports.http}/.well-known/host-meta`)).text();
      expect(b).toContain(`href='ws://127.0.0.1:${plain.ports.http}/xmpp-websocket'`);
      expect(b).not.toContain('xbosh');
      // A hostile Host header never reaches the document.
      const res = await fetch(`http://127.0.0.1:${plain.ports.http}/.well-known/host-meta`, { headers: { Host: "x'/><Link rel='evil" } }).catch(() => null);
      if (res) expect(await res.text()).not.toContain('evil');
    } finally {
      await pub.close();
      await plain.close();
    }
  });
});

describe('server shutdown', () => {
  it('closes open WebSocket streams with <close/> instead of waiting for them', async () => {
    const srv = await startTestServer();
    const user = uniqueUser('ws');
    await srv.addUser(user, PW);
    const c = await WsClient.connect(`ws://127.0.0.1:${srv.ports.http}/xmpp-websocket`);
    await c.authenticate(user, PW);
    await c.bind();
    await srv.close();
    expect(await c.waitClosed()).toBe(1000);
    expect(c.messages.at(-1)).toBe(`<close xmlns='${NS_FRAMING}'/>`);
  });
});
