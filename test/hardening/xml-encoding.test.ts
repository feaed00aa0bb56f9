// HARDENING.md "XML and streams": invalid UTF-8 and characters outside XML 1.0 (RFC 6120 §11.6)
// -> not-well-formed; raw bytes are never forwarded (routed stanzas are re-serialized).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/server.js';
import { RawClient, assertServing, barrier, startAttackServer, stopAttackServer, sleep, streamHeader } from '../helpers/raw.js';

const HEADER = streamHeader('localhost', { xmlDecl: false });
const b = (s: string) => Buffer.from(s, 'utf8');

/** Byte sequences that are not valid UTF-8 (RFC 3629). */
const BAD_UTF8: [string, number[]][] = [
  ['lone lead byte 0xC3', [0xc3]],
  ['overlong 0xC0 0xAF', [0xc0, 0xaf]],
  ['overlong 3-byte 0xE0 0x80 0xAF', [0xe0, 0x80, 0xaf]],
  ['UTF-8 encoded surrogate 0xED 0xA0 0x80', [0xed, 0xa0, 0x80]],
  ['0xFF', [0xff]],
  ['lone continuation byte 0x80', [0x80]],
  ['above U+10FFFF 0xF4 0x90 0x80 0x80', [0xf4, 0x90, 0x80, 0x80]],
];

/** Valid UTF-8 for characters XML 1.0 forbids. */
const BAD_CHARS: [string, string][] = [
  ['C0 control U+0001', '\u0001'],
  ['C0 control U+001B (ESC)', '\u001b'],
  ['NUL', '\u0000'],
  ['U+FFFE', '\ufffe'],
  ['U+FFFF', '\uffff'],
];

const BAD_REFS = ['&#1;', '&#0;', '&#x1B;', '&#xD800;', '&#xFFFE;', '&#x110000;'];

describe('hardening: invalid UTF-8 and forbidden characters', () => {
  let srv: TestServer;
  let port: number;
  let alice: RawClient;
  let bob: RawClient;

  beforeAll(async () => {
    ({ srv, port, alice, bob } = await startAttackServer());
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

  describe('before authentication', () => {
    for (const [name, bytes] of BAD_UTF8) {
      it(`${name} in the stream header -> not-well-formed`, async () => {
        const c = await RawClient.connect(port);
        await c.send(Buffer.concat([b("<stream:stream to='local"), Buffer.from(bytes), b("host' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")]));
        expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
        expect(c.text).not.toContain('<stream:features');
      });
    }

    for (const [name, ch] of BAD_CHARS) {
      it(`${name} before the stream header -> not-well-formed`, async () => {
        const c = await RawClient.connect(port);
        await c.send(b(`${ch}${HEADER}`));
        expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
      });
    }

    it('&#1; in a stream header attribute -> not-well-formed', async () => {
      const c = await RawClient.connect(port);
      await c.send(b(`<stream:stream to='localhost' xml:lang='e&#1;n' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`));
      expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
    });
  });

  describe('after authentication: SE and never delivered', () => {
    for (const [name, bytes] of BAD_UTF8) {
      it(`${name} in a message body`, async () => {
        const marker = `m-utf8-${bytes.join('-')}`;
        const c = await postauth();
        await c.send(Buffer.concat([b(`<message to='bob@localhost' type='chat'><body>${marker} `), Buffer.from(bytes), b(' tail</body></message>')]));
        expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
        await expectNotDelivered(marker);
      });
    }

    it('invalid UTF-8 in an attribute value', async () => {
      const c = await postauth();
      await c.send(Buffer.concat([b("<message to='bob@localhost' id='m-attr-"), Buffer.from([0xed, 0xa0, 0x80]), b("'><body>m-attr-utf8</body></message>")]));
      expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
      await expectNotDelivered('m-attr-utf8');
    });

    it('a truncated sequence completed by ASCII in the next write', async () => {
      const c = await postauth();
      await c.send(Buffer.concat([b("<message to='bob@localhost'><body>m-split-bad "), Buffer.from([0xe2, 0x82])]));
      await sleep(50);
      await c.send(b('x</body></message>'));
      expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
      await expectNotDelivered('m-split-bad');
    });

    it('a valid multi-byte character split across writes is fine (control)', async () => {
      const c = await postauth();
      await c.send(Buffer.concat([b("<message to='bob@localhost' type='chat'><body>m-split-ok "), Buffer.from([0xe2, 0x82])]));
      await sleep(50);
      await c.send(Buffer.concat([Buffer.from([0xac]), b('</body></message>')]));
      await bob.waitFor(/m-split-ok €/, 5000, 0);
      await barrier(c); // a stream error for those bytes would come before the pong (and end the stream)
      expect(c.streamError()).toBeUndefined();
      c.destroy();
    });

    for (const [name, ch] of BAD_CHARS) {
      it(`${name} in a message body`, async () => {
        const marker = `m-char-${ch.charCodeAt(0)}`;
        const c = await postauth();
        await c.send(b(`<message to='bob@localhost' type='chat'><body>${marker} ${ch} tail</body></message>`));
        expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
        await expectNotDelivered(marker);
      });
    }

    for (const ref of BAD_REFS) {
      it(`character reference ${ref} -> not-well-formed`, async () => {
        const marker = `m-ref-${ref.replace(/\W/g, '')}`;
        const c = await postauth();
        await c.send(b(`<message to='bob@localhost' type='chat'><body>${marker} ${ref}</body></message>`));
        expect(await c.expectStreamErrorAndClose()).toBe('not-well-formed');
        await expectNotDelivered(marker);
      });
    }
  });

  it('a stanza above the default 256 KiB limit -> policy-violation, not delivered', async () => {
    const c = await postauth();
    expect(srv.config.limits.maxStanzaBytes).toBe(256 * 1024);
    const body = 'z'.repeat(64 * 1024);
    await c.send(b("<message to='bob@localhost' type='chat'><body>m-default-limit "));
    for (let i = 0; i < 6 && !c.isClosed; i++) await c.send(b(body));
    expect(await c.expectStreamErrorAndClose()).toBe('policy-violation');
    await expectNotDelivered('m-default-limit');
  });

  it('routed stanzas are re-serialized from the parsed tree, never forwarded raw', async () => {
    const c = await postauth();
    await c.send(
      b(
        `<message  to="bob@localhost"   type="chat" from="mallory@localhost"><body><![CDATA[m-reser <b>&]]>&#x41;</body>` +
          `<x xmlns="urn:example:x"   a="&apos;1&apos;"   ><y/></x></message>`,
      ),
    );
    const m = await bob.waitFor(/<message\b[^>]*>(?:(?!<\/message>)[\s\S])*m-reser[\s\S]*?<\/message>/, 5000, 0);
    const out = m[0];
    expect(out).not.toContain('CDATA');
    expect(out).toContain('m-reser &lt;b&gt;&amp;A');
    expect(out).not.toContain('   ');
    // 'from' is stamped with the sender's full JID even though the client sent its bare JID.
    expect(out).toMatch(new RegExp(`from=["']${c.jid.replace(/[.]/g, '\\.')}["']`));
    c.destroy();
  });
});
