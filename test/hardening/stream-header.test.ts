// HARDENING.md "XML and streams": wrong stream namespace, unknown `to` host, missing `to`, junk
// bytes. The canaries here are a real @xmpp/client session and a raw session.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { connect, xml, type TestClient } from '../helpers/client.js';
import { RawClient, NS_TLS } from '../helpers/raw.js';

const STREAM_NS = 'http://etherx.jabber.org/streams';

describe('hardening: stream header checks and junk', () => {
  let srv: TestServer;
  let port: number;
  let alice: TestClient;
  let bob: RawClient;
  let n = 0;

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
    await srv.addUser('alice');
    await srv.addUser('bob');
    alice = await connect({ port, username: 'alice', resource: 'canary' });
    await alice.send(xml('presence'));
    bob = await RawClient.login(port, 'bob', 'secret-password', { resource: 'canary', presence: true });
  });
  afterAll(async () => {
    await alice?.stop();
    bob?.destroy();
    await srv?.close();
  });
  // Other sessions keep working: ping answered, messages flow both ways.
  afterEach(async () => {
    const pong = await alice.iq(xml('iq', { type: 'get', to: 'localhost', id: `p${++n}` }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    expect(pong.attrs.type).toBe('result');
    const token = `hello-${n}`;
    await alice.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, token)));
    await bob.waitFor(new RegExp(`<body>${token}</body>`), 5000, 0);
    await bob.send(`<message to='alice@localhost' type='chat'><body>back-${token}</body></message>`);
    await alice.waitFor((el) => el.name === 'message' && el.getChildText('body') === `back-${token}`);
  });

  async function attack(bytes: string | Buffer): Promise<RawClient> {
    const c = await RawClient.connect(port);
    await c.send(bytes);
    return c;
  }

  /** RFC 6120 §4.9.1.3: an error before the server's header is still sent after a header. */
  function expectServerHeaderFirst(c: RawClient): void {
    expect(c.text).toMatch(/^(?:<\?xml[^>]*\?>)?<stream:stream\b[^>]*>\s*<stream:error>/);
  }

  it('wrong stream namespace -> invalid-namespace', async () => {
    const c = await attack(`<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://wrong.example/streams' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('invalid-namespace');
    expectServerHeaderFirst(c);
    expect(c.text).not.toContain('<stream:features');
  });

  it('root element not <stream> -> invalid-namespace', async () => {
    const c = await attack(`<stream:flow to='localhost' xmlns='jabber:client' xmlns:stream='${STREAM_NS}' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('invalid-namespace');
  });

  it("wrong default namespace (jabber:server on a client port) -> invalid-namespace", async () => {
    const c = await attack(`<stream:stream to='localhost' xmlns='jabber:server' xmlns:stream='${STREAM_NS}' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('invalid-namespace');
  });

  it('missing default namespace -> invalid-namespace', async () => {
    const c = await attack(`<stream:stream to='localhost' xmlns:stream='${STREAM_NS}' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('invalid-namespace');
  });

  it('unknown `to` host -> host-unknown', async () => {
    const c = await attack(`<stream:stream to='evil.example' xmlns='jabber:client' xmlns:stream='${STREAM_NS}' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('host-unknown');
    expectServerHeaderFirst(c);
    expect(c.text).not.toContain('<stream:features');
  });

  it('malformed `to` -> host-unknown', async () => {
    const c = await attack(`<stream:stream to='@@@' xmlns='jabber:client' xmlns:stream='${STREAM_NS}' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('host-unknown');
  });

  it('missing `to` -> improper-addressing', async () => {
    const c = await attack(`<stream:stream xmlns='jabber:client' xmlns:stream='${STREAM_NS}' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('improper-addressing');
    expectServerHeaderFirst(c);
  });

  it("empty `to` -> improper-addressing", async () => {
    const c = await attack(`<stream:stream to='' xmlns='jabber:client' xmlns:stream='${STREAM_NS}' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('improper-addressing');
  });

  it('a different `to` host after the STARTTLS restart -> host-unknown', async () => {
    const c = await RawClient.connect(port);
    const f = await c.openStream('localhost');
    expect(f).toContain(NS_TLS);
    await c.startTls();
    await c.send(`<stream:stream to='evil.example' xmlns='jabber:client' xmlns:stream='${STREAM_NS}' version='1.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('host-unknown');
  });

  it("missing or unknown XMPP version -> unsupported-version", async () => {
    const c = await attack(`<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='${STREAM_NS}' version='2.0'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('unsupported-version');
  });

  it('junk bytes (an HTTP request) -> not-well-formed', async () => {
    const c = await attack('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
    expectServerHeaderFirst(c);
  });

  it('junk bytes (a TLS ClientHello on the STARTTLS port) -> not-well-formed', async () => {
    const hello = Buffer.from('16030100a5010000a10303', 'hex');
    const c = await attack(Buffer.concat([hello, Buffer.alloc(64, 0x41)]));
    expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
  });

  it('junk text after a valid header -> not-well-formed', async () => {
    const c = await RawClient.connect(port);
    await c.openStream();
    await c.send('this is not xml<x/>');
    expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
  });

  it('junk text without any markup is bounded: SE once it passes the stanza limit at the latest', async () => {
    const c = await RawClient.connect(port);
    await c.openStream();
    const chunk = 'x'.repeat(16_384);
    for (let sent = 0; sent <= srv.config.limits.maxStanzaBytes + chunk.length && !c.isClosed; sent += chunk.length) await c.send(chunk);
    expect(['not-well-formed', 'policy-violation']).toContain(await c.expectStreamErrorAndClose());
  });

  it('mismatched end tag -> not-well-formed', async () => {
    const c = await RawClient.connect(port);
    await c.openStream();
    await c.send(`<starttls xmlns='${NS_TLS}'></proceed>`);
    expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
    expect(c.text).not.toContain('<proceed');
  });
});
