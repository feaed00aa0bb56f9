// XMPP over WebSocket (RFC 7395) with a raw `ws` client, and XEP-0156 host-meta: framing, stream
// restarts, the subprotocol, Origin and TLS checks, oversized and non-XMPP messages, see-other-uri,
// ping liveness and per-address caps. The server must keep serving other clients after each error.
import { get as httpGet } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStreamError, plainPayload, sleep, waitUntil } from '../helpers/raw.js';
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
    // A client that keeps reading (ws answers the pings itself), connected first.
    const d = await login();
    const c = await login();
    // Stop reading: our pongs stop too (ws answers pings only as it reads).
    c.ws.pause();
    const slash = c.jid.indexOf('/');
    const key = { bare: c.jid.slice(0, slash), resource: c.jid.slice(slash + 1) };
    await waitUntil(() => srv.server.sessions.get(key) === undefined, 10_000, 'the silent connection to be dropped');
    // The barrier: one sweep pings and checks every connection, so D has been through every
    // round that dropped C; had its answers not counted, it would have gone in the same sweep.
    expect(d.closeCode).toBeNull();
    d.send(`<iq xmlns='jabber:client' type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await d.waitFor(/id=["']alive["']/);
    d.terminate();
    c.ws.resume();
    await c.waitClosed();
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

  it('a full per-address pre-auth quota closes the oldest waiting connection (with a stream error) to admit the newcomer', async () => {
    const wss = `wss://127.0.0.1:${srv.ports.https}/xmpp-websocket`;
    const held: WsClient[] = [];
    for (let i = 0; i < 3; i++) held.push(await WsClient.connect(wss)); // waiting, no stream opened
    const extra = await WsClient.connect(wss);
    extra.send(openFrame());
    await extra.waitFor(/^<stream:features\b/);
    // The oldest waiting one made room, and was told why.
    await held[0]!.waitClosed();
    expect(held[0]!.messages.join('')).toMatch(/policy-violation[\s\S]*too many unauthenticated connections from your address/);
    // The others are still there and can open their streams.
    for (const h of held.slice(1)) {
      h.send(openFrame());
      await h.waitFor(/^<stream:features\b/);
    }
    for (const h of [...held, extra]) h.terminate();
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

/** GET /.well-known/host-meta with a chosen Host header (fetch does not let a caller set Host). */
function getWithHost(port: number, host: string): Promise<{ body: string; cacheControl: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: '127.0.0.1', port, path: '/.well-known/host-meta', headers: { Host: host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ body, cacheControl: res.headers['cache-control'] }));
    });
    req.on('error', reject);
  });
}

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
      // A well-formed Host naming another server is not advertised either (issue 16 §6): a shared
      // cache would hand that answer to other clients; the answer is private to the requester.
      const forged = await getWithHost(plain.ports.http as number, 'attacker.example:443');
      expect(forged.body).not.toContain('attacker');
      expect(forged.body).toContain(`href='ws://localhost:${plain.ports.http}/xmpp-websocket'`);
      expect(forged.cacheControl).toBe('private, max-age=300');
      // The served domain itself is advertised as asked.
      expect((await getWithHost(plain.ports.http as number, `LOCALHOST:${plain.ports.http}`)).body).toContain(`href='ws://LOCALHOST:${plain.ports.http}/xmpp-websocket'`);
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
