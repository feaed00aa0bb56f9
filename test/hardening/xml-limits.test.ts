// HARDENING.md "XML and streams": stanza size limit counted on buffered unparsed bytes, nesting
// depth, attribute and namespace-declaration counts. This file's server uses a small stanza limit.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { RawClient, assertServing, startAttackServer, stopAttackServer, parseStreamErrorText, streamHeader } from '../helpers/raw.js';

const MAX_STANZA = 10_000;
const HEADER = streamHeader('localhost', { xmlDecl: false });

describe('hardening: size, depth and attribute limits', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    ({ srv, port, alice, bob } = await startAttackServer({ limits: { maxStanzaBytes: MAX_STANZA } }));
  });
  afterAll(() => stopAttackServer({ srv, alice, bob }));
  afterEach(async () => {
    await assertServing(alice, bob);
  });

  async function postauth(): Promise<RawClient> {
    const c = await RawClient.login(port, 'mallory', 'secret-password');
    c.cursor = c.mark();
    return c;
  }

  async function expectNotDelivered(marker: string): Promise<void> {
    await assertServing(alice, bob);
    expect(bob.text).not.toContain(marker);
  }

  /**
   * Sends `prefix` then 1000-byte chunks of `fill`, never completing the element, and stops one
   * chunk past MAX_STANZA (or at a stream error). Then the caller waits for the stream error: with
   * no more bytes coming and the element unfinished, only a limit on the buffered bytes explains
   * it, however fast or slow the server read them.
   */
  async function trickle(c: RawClient, prefix: string, fill = 'A'): Promise<void> {
    let sent = prefix.length;
    await c.send(prefix);
    while (sent <= MAX_STANZA && !c.streamError() && !c.isClosed) {
      await c.send(fill.repeat(1000));
      sent += 1000;
    }
  }

  it('stanza above the limit, sent in chunks -> policy-violation before it completes', async () => {
    const c = await postauth();
    await trickle(c, "<message to='bob@localhost' type='chat'><body>m-huge ");
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    await expectNotDelivered('m-huge');
  });

  it('stanza above the limit in one write -> policy-violation', async () => {
    const c = await postauth();
    await c.send(`<message to='bob@localhost' type='chat'><body>m-huge1 ${'B'.repeat(MAX_STANZA)}</body></message>`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    await expectNotDelivered('m-huge1');
  });

  it('stanza above the limit before authentication -> policy-violation', async () => {
    const c = await RawClient.connect(port);
    await trickle(c, `${HEADER}<iq type='get' id='x'><query xmlns='jabber:iq:register'>`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
  });

  it('unterminated huge attribute value -> policy-violation', async () => {
    const c = await postauth();
    await trickle(c, "<message to='bob@localhost' id='", 'a');
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
  });

  it('unterminated huge attribute in the stream header -> policy-violation (pre-auth memory bounded)', async () => {
    const c = await RawClient.connect(port);
    await trickle(c, "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' to='", 'a');
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
  });

  it('many stanzas whose total exceeds the limit are fine (the limit is per stanza)', async () => {
    const c = await postauth();
    let batch = '';
    for (let i = 0; i < 30; i++) batch += `<message to='bob@localhost' type='chat'><body>m-many-${i} ${'C'.repeat(800)}</body></message>`;
    await c.send(batch);
    await bob.waitFor(/m-many-29 /, 5000, 0);
    expect(c.streamError()).toBeUndefined();
    c.destroy();
  });

  it('nesting deeper than the limit -> policy-violation, not delivered', async () => {
    const c = await postauth();
    await c.send(`<message to='bob@localhost' type='chat'><body>m-deep</body>${'<a>'.repeat(100)}`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    expect(parseStreamErrorText(c.text)).toMatch(/nested|depth/i);
    await expectNotDelivered('m-deep');
  });

  it('very deep nesting (half the stanza limit of open tags) is cut off without recursion', async () => {
    const c = await postauth();
    await c.send(`<message to='bob@localhost'>${'<a>'.repeat(3000)}`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
  });

  it('nesting within the limit is delivered (control)', async () => {
    const c = await postauth();
    const depth = srv.config.limits.maxDepth - 2; // message > body-level elements
    await c.send(`<message to='bob@localhost' type='chat'><body>m-okdeep</body><x xmlns='urn:example'>${'<a>'.repeat(depth - 1)}${'</a>'.repeat(depth - 1)}</x></message>`);
    await bob.waitFor(/m-okdeep/, 5000, 0);
    expect(c.streamError()).toBeUndefined();
    c.destroy();
  });

  it('thousands of attributes -> policy-violation', async () => {
    const c = await postauth();
    let attrs = '';
    for (let i = 0; i < 2000 && attrs.length < MAX_STANZA - 200; i++) attrs += ` a${i}=''`;
    await c.send(`<message to='bob@localhost' type='chat'${attrs}><body>m-attrs</body></message>`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    expect(parseStreamErrorText(c.text)).toMatch(/attributes/);
    await expectNotDelivered('m-attrs');
  });

  it('thousands of attributes on a child element -> policy-violation', async () => {
    const c = await postauth();
    let attrs = '';
    for (let i = 0; i < 2000 && attrs.length < MAX_STANZA - 200; i++) attrs += ` b${i}='1'`;
    await c.send(`<message to='bob@localhost' type='chat'><body>m-childattrs</body><x xmlns='urn:example'${attrs}/></message>`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    await expectNotDelivered('m-childattrs');
  });

  it('thousands of namespace declarations -> policy-violation', async () => {
    const c = await postauth();
    let decls = '';
    for (let i = 0; i < 2000 && decls.length < MAX_STANZA - 200; i++) decls += ` xmlns:p${i}='urn:p:${i}'`;
    await c.send(`<message to='bob@localhost' type='chat'${decls}><body>m-xmlns</body></message>`);
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    expect(parseStreamErrorText(c.text)).toMatch(/attributes/);
    await expectNotDelivered('m-xmlns');
  });

  it('thousands of namespace declarations on the stream header -> policy-violation', async () => {
    const c = await RawClient.connect(port);
    let decls = '';
    for (let i = 0; i < 1000; i++) decls += ` xmlns:p${i}='urn:p:${i}'`;
    await c.send(streamHeader('localhost', { attrs: decls.trim() }));
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    expect(c.text).not.toContain('<stream:features');
  });

  it('duplicate attributes -> not-well-formed', async () => {
    const c = await postauth();
    await c.send(`<message to='bob@localhost' to='alice@localhost' type='chat'><body>m-dup</body></message>`);
    expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
    await expectNotDelivered('m-dup');
  });
});
